"""Source training, fine-tuning and resume on a real local Ray cluster (2 workers) with S3 storage.

Real parts only: MedMNIST images (a seeded slice of PneumoniaMNIST, all of BreastMNIST) imported
as PNG files onto the moto S3 server, preprocessed by the data plane's Ray Data cache, trained
with Ray Train's TorchTrainer, checkpoints and bundles on S3.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from evalutil import file_hashes
from sklearn.metrics import roc_auc_score

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.lifecycle.bundle import load_bundle
from medxfer.lifecycle.inference import predict_arrays

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.slow]


def _slice_npz(src, dst, n_train, n_val, n_test, seed=0):
    """A seeded random slice of a MedMNIST file, written to a temp folder (never the repo)."""
    rng = np.random.default_rng(seed)
    z = np.load(src)
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        idx = rng.permutation(len(z[f"{split}_labels"]))[:n]
        out[f"{split}_images"], out[f"{split}_labels"] = z[f"{split}_images"][idx], z[f"{split}_labels"][idx]
    np.savez(dst, **out)
    return dst


@pytest.fixture(scope="module")
def data_root(s3_server, test_data, tmp_path_factory, ray_cluster):
    """One bucket for the module: pneumonia slice and breast imported once, caches shared by the runs."""
    from medxfer.data.importers import import_medmnist

    bucket = f"medxfer-train-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/root"
    tmp = tmp_path_factory.mktemp("npz")
    pneu = _slice_npz(test_data / "medmnist" / "pneumoniamnist.npz", tmp / "pneumoniamnist.npz", 600, 160, 10)
    import_medmnist(pneu, storage.join(root, "datasets", "pneumonia"), "pneumoniamnist")
    import_medmnist(test_data / "medmnist" / "breastmnist.npz", storage.join(root, "datasets", "breast"), "breastmnist")
    return root


def _cfg(root, name, dataset, **train):
    return {
        "name": name,
        "data": {"manifest": storage.join(root, "datasets", dataset, "manifest.csv")},
        "preprocess": {"channels": 1, "size": 28},
        "model": {"backbone": "smallcnn"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 0.5, **train},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "evaluate": {"batch_size": 48},  # several validation batches, a short last one
        "storage": {"root": root},
    }


def test_source_resume_then_finetune_on_s3(data_root, tmp_path, capsys):
    """Three trainer runs: source (stopped after 2 of 3 epochs), the same command again (resumes
    at epoch 2), then fine-tuning on BreastMNIST from the source bundle via ``finetune --source``."""
    from medxfer.cli.train_commands import cmd_finetune
    from medxfer.data.cache import prepare
    from medxfer.supervised.stage import run_training

    cfg = JobConfig.model_validate(_cfg(data_root, "src", "pneumonia", epochs=3, max_epochs_this_run=2))
    first = run_training(cfg, "source")
    assert first["status"] == "max_epochs_this_run" and first["epoch"] == 2 and first["epochs_run"] == 2
    assert not first["resumed"] and load_bundle(first["bundle"]).card.metrics["epoch"] in (1, 2)

    out = run_training(cfg, "source")  # same name: Ray restores the run, the worker its checkpoint
    assert out["resumed"] and out["resumed_from_epoch"] == 2 and out["epochs_run"] == 1
    assert out["status"] == "complete" and out["epoch"] == 3 and [h["epoch"] for h in out["history"]] == [1, 2, 3]
    assert out["best"]["val_auroc"] > 0.85, out["best"]  # learning happened (chance is 0.5)
    assert out["images_per_s"] > 0 and out["wall_time_s"] > 0
    run = storage.join(data_root, "runs", "src")
    assert storage.read_json(storage.join(run, "result.json"))["bundle_id"] == out["bundle_id"]
    assert yaml.safe_load(storage.read_text(storage.join(run, "config.yaml")))["name"] == "src"

    src = load_bundle(out["bundle"])
    assert src.card.task == "multiclass" and src.classes == ["normal", "pneumonia"] and src.card.in_chans == 1
    assert src.card.data_fingerprint == out["data_fingerprint"] and src.spec.size == 28
    assert src.card.metrics["epoch"] == out["best"]["epoch"]
    # Validation was gathered from both workers: the reported AUROC is the whole val set's.
    X, y = prepare(cfg).numpy("val")
    p = predict_arrays(src.build_model(), X, "multiclass")
    assert len(y) == out["best"]["val_n"] == 160
    assert roc_auc_score(y, p[:, 1]) == pytest.approx(out["best"]["val_auroc"], abs=1e-4)

    # The finished run is never rewritten: a changed setting that shapes the weights is refused (exit 2) naming
    # it and the way out; the same config reports "already complete"; not one file of the run changes.
    from medxfer.cli import main

    files = file_hashes(run)
    src_yaml = tmp_path / "src.yaml"
    src_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["source-train", "--config", str(src_yaml), "--set", "train.lr=0.01",
                 "--set", "train.early_stopping.patience=3"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.002 -> 0.01" in err and "train.early_stopping.patience: None -> 3" in err
    assert "new name" in err and "Traceback" not in err
    assert main(["source-train", "--config", str(src_yaml), "--set", "train.max_epochs_this_run=null"]) == 0
    assert "src: already complete, nothing to do (epoch 3/3)" in capsys.readouterr().out
    assert file_hashes(run) == files

    # Fine-tune through the CLI handler (--source), training only the last stage + head, so the
    # frozen stages must equal the source's weights exactly.
    ft = _cfg(data_root, "ft", "breast", epochs=3, freeze="partial:1", lr=2e-3)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(ft))
    assert cmd_finetune(SimpleNamespace(config=str(path), set=[], source=out["bundle"])) == 0
    res = storage.read_json(storage.join(data_root, "runs", "ft", "result.json"))
    assert res["stage"] == "finetune" and res["status"] == "complete" and not res["resumed"]
    assert res["best"]["val_auroc"] > 0.65, res["best"]
    tgt = load_bundle(res["bundle"])
    lin = tgt.card.lineage
    assert lin.source_bundle_id == src.id and lin.source_data_fingerprint == src.card.data_fingerprint
    assert lin.source_uri == out["bundle"] and tgt.card.config["model"]["init"] == out["bundle"]
    frozen = [k for k in src.state_dict if k.startswith(("backbone.block1", "backbone.block2", "backbone.block3"))]
    assert frozen and all(torch.equal(src.state_dict[k], tgt.state_dict[k]) for k in frozen)
    assert not torch.equal(src.state_dict["backbone.block4.0.weight"], tgt.state_dict["backbone.block4.0.weight"])
    # The same for fine-tuning: another source (here: none) for the finished run is refused, nothing written.
    ft_files = file_hashes(storage.join(data_root, "runs", "ft"))
    with pytest.raises(ConfigError, match=r"model\.init: .* -> 'scratch'"):
        cmd_finetune(SimpleNamespace(config=str(path), set=[], source="scratch"))
    assert file_hashes(storage.join(data_root, "runs", "ft")) == ft_files
