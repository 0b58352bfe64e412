"""Self-supervised pretraining: view augmentations, the three methods, a measured loss decrease on
real BreastMNIST images (in-process), and ``medxfer pretrain`` on a real 2-worker Ray cluster whose
bundle the fine-tuning loader takes whole (every backbone tensor loaded, the head new)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medxfer.config import JobConfig, PretrainConfig
from medxfer.models import create_model, load_source_weights
from medxfer.ssl.methods import BYOL, METHODS, build_method, byol_momentum, nt_xent
from medxfer.ssl.trainee import SSLSettings, build_ssl_model, export_backbone, optim_settings, ssl_epoch
from medxfer.ssl.view_pairs import ViewSpec, random_view, two_views


def _breast(test_data, n: int | None = None, split: str = "train") -> torch.Tensor:
    """Real BreastMNIST images, normalised as the default spec does (mean 0.5, std 0.5)."""
    d = np.load(test_data / "medmnist" / "breastmnist.npz")
    x = d[f"{split}_images"][:n].astype(np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5).unsqueeze(1)


# ----------------------------------------------------------------------------- augmentations


def test_views_keep_shape_dtype_range_and_differ(test_data):
    x = _breast(test_data, 32)
    spec = ViewSpec(blur_prob=0.5)
    v1, v2 = two_views(x, spec, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == x.dtype
        assert float(v.min()) >= -1.0 - 1e-5 and float(v.max()) <= 1.0 + 1e-5  # [0,1] pixels, normalised
        assert torch.isfinite(v).all()
    # Two views of one image differ, for every image of the batch.
    per_image = (v1 - v2).abs().flatten(1).mean(1)
    assert bool((per_image > 0.01).all()), per_image.min()
    # Same seed, same views; another seed, other views.
    w1, _ = two_views(x, spec, torch.Generator().manual_seed(0))
    u1, _ = two_views(x, spec, torch.Generator().manual_seed(1))
    assert torch.equal(v1, w1) and not torch.equal(v1, u1)


def test_view_without_randomness_is_the_image_and_3_channel_range_holds(test_data):
    x = _breast(test_data, 4)
    ident = ViewSpec(crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), rotation_deg=0, hflip=False,
                     brightness=0, contrast=0, blur_prob=0)
    assert torch.allclose(random_view(x, ident, torch.Generator().manual_seed(0)), x, atol=1e-5)
    # RGB, ImageNet-style normalisation: the range is that of [0,1] pixels under each channel's mean/std.
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgb = (x.repeat(1, 3, 1, 1) * 0.5 + 0.5 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    v = random_view(rgb, ViewSpec(mean=mean, std=std, blur_prob=1.0), torch.Generator().manual_seed(3))
    lo = (0 - torch.tensor(mean)) / torch.tensor(std)
    hi = (1 - torch.tensor(mean)) / torch.tensor(std)
    assert (v.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (v.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()


def test_viewspec_from_config_respects_hflip_and_rejects_bad_scale():
    cfg = JobConfig.model_validate({"train": {"hflip": False}, "pretrain": {"crop_scale": [0.2, 0.9]}})
    spec = ViewSpec.from_config(cfg)
    assert spec.hflip is False and spec.crop_scale == (0.2, 0.9)
    with pytest.raises(ValueError, match="crop_scale"):
        ViewSpec(crop_scale=(0.8, 0.5))


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", METHODS)
def test_method_loss_is_finite_and_backprops(method):
    torch.manual_seed(0)
    backbone = create_model("smallcnn", 1, 1).backbone
    m = build_method(method, backbone, 256, PretrainConfig(method=method, projection_dim=16))
    v1, v2 = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    loss, stats = m(v1, v2)
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(stats["repr_std"])
    loss.backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    if isinstance(m, BYOL):  # the target learns only through the EMA, never by gradient
        assert all(p.grad is None for p in m.target_backbone.parameters())
        before = [p.clone() for p in m.target_backbone.parameters()]
        with torch.no_grad():
            for p in m.backbone.parameters():
                p.add_(1.0)
        m.update_target(0.5)
        moved = [float((a - b).abs().max()) for a, b in zip(m.target_backbone.parameters(), before, strict=True)]
        assert min(moved) == pytest.approx(0.5, abs=1e-5)


def test_nt_xent_prefers_matching_pairs_and_byol_momentum_schedule():
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    aligned = nt_xent(torch.cat([z, z]), 0.2)
    shuffled = nt_xent(torch.cat([z, z[torch.randperm(8)]]), 0.2)
    assert aligned < shuffled
    assert byol_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert byol_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert 0.99 < byol_momentum(0.99, 50, 100) < 1.0


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_loss_decreases_on_real_images(test_data, method):
    """Measured, not assumed: 24 steps of real BreastMNIST training images, mean loss of the last
    six steps below the first six, and no collapse (repr_std stays well above 0)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = JobConfig.model_validate({
        "model": {"backbone": "smallcnn"},
        "pretrain": {"method": method, "projection_dim": 64},
        "train": {"batch_size": 16, "epochs": 1, "lr": 1e-3, "warmup_epochs": 0.1},
    })
    x = _breast(test_data, 384)
    steps = 24
    model = build_ssl_model(cfg, in_chans=1, stem="standard")
    from medxfer.train.optim import build_optimizer, build_scheduler

    otc = optim_settings(cfg.train)
    opt = build_optimizer(model, otc)
    sched = build_scheduler(opt, otc, steps)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    batches = [{"image": x[order[i * 16:(i + 1) * 16]].numpy()} for i in range(steps)]
    out = ssl_epoch(model, batches, opt, sched, SSLSettings(views=ViewSpec.from_config(cfg), total_steps=steps), g)
    losses = out["losses"]
    assert len(losses) == steps and out["images"] == 16 * steps and out["skipped_steps"] == 0
    first, last = float(np.mean(losses[:6])), float(np.mean(losses[-6:]))
    assert last < first - 0.03, (first, last, losses)
    assert out["repr_std"] > 0.3


def test_export_backbone_has_exactly_the_classifiers_backbone_names():
    cfg = JobConfig.model_validate({"model": {"backbone": "resnet18"}, "pretrain": {"method": "byol",
                                                                                   "projection_dim": 16}})
    sd = export_backbone(build_ssl_model(cfg, in_chans=1, stem="small"))
    clf = create_model("resnet18", 3, 1, stem="small")
    expected = {k for k in clf.state_dict() if not k.startswith("head.")}
    assert set(sd) == expected  # no projector, predictor or BYOL target tensors
    rep = load_source_weights(clf, sd)
    assert sorted(rep["new"]) == ["head.bias", "head.weight"] and not rep["skipped"]


def test_driver_plan_sources_and_errors():
    from medxfer.errors import ConfigError, DataError
    from medxfer.ssl.pretrain import data_fingerprint, manifests_of, plan_pretraining, source_config

    def plan_pretrain(cfg, n, chans, size, use_gpu):
        return plan_pretraining(cfg, ["/c"], n, (chans, size, size), use_gpu)

    cfg = JobConfig.model_validate({
        "data": {"manifest": "/d/a/manifest.csv", "extra_manifests": ["/d/b/manifest.csv", "/d/a/manifest.csv"],
                 "label_fraction": 0.1},
        "train": {"batch_size": 64}, "scaling": {"num_workers": 2}, "preprocess": {"size": 28},
    })
    assert manifests_of(cfg) == ["/d/a/manifest.csv", "/d/b/manifest.csv"]  # a repeat is used once
    one = source_config(cfg, "/d/b/manifest.csv")
    assert one.data.manifest == "/d/b/manifest.csv" and one.data.extra_manifests == []
    assert one.data.label_fraction == 1.0 and cfg.data.label_fraction == 0.1  # every training image, cfg intact
    plan = plan_pretrain(cfg, 100, 1, 28, use_gpu=False)
    assert plan.batch_size == 50 and plan.steps_per_epoch == 1 and plan.stem == "standard" and plan.drop_partial
    assert plan_pretrain(cfg, 1000, 1, 28, False).steps_per_epoch == 500 // 64
    auto = cfg.model_copy(update={"model": cfg.model.model_copy(update={"stem": "auto"})})
    assert plan_pretrain(auto, 100, 1, 28, use_gpu=False).stem == "small"  # auto: small for <= 64 px
    with pytest.raises(DataError, match="at least 2"):
        plan_pretrain(cfg, 3, 1, 28, False)
    with pytest.raises(ConfigError, match="batch_size"):
        plan_pretrain(cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 1})}), 100, 1, 28, False)
    with pytest.raises(ConfigError, match="data.manifest"):
        manifests_of(JobConfig())
    assert data_fingerprint(["k1"]) == "k1"
    assert data_fingerprint(["k1", "k2"]) != data_fingerprint(["k2", "k1"])


# ----------------------------------------------------------------------------- Ray


def _slice_dataset(test_data, tmp_path, name: str, n_train: int, n_held: int) -> tuple[str, int]:
    """Import a real MedMNIST slice (train + val + test images) with the data plane's importer."""
    from medxfer.data.importers import import_medmnist

    d = np.load(test_data / "medmnist" / f"{name}.npz")
    arrays = {}
    for split, n in (("train", n_train), ("val", n_held), ("test", n_held)):
        labels = d[f"{split}_labels"].reshape(len(d[f"{split}_labels"]), -1)[:, 0]
        # Half of each class, so every class has training examples (the manifest check wants them).
        idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[: n // 2] for c in (0, 1)]))
        arrays[f"{split}_images"] = d[f"{split}_images"][idx]
        arrays[f"{split}_labels"] = d[f"{split}_labels"][idx]
    npz = tmp_path / f"{name}_slice.npz"
    np.savez(npz, **arrays)
    out = tmp_path / name
    import_medmnist(npz, str(out), name)
    return str(out / "manifest.csv"), n_train


@pytest.mark.slow
@pytest.mark.ray
def test_pretrain_on_ray_writes_a_bundle_finetune_loads(test_data, tmp_path, ray_cluster):
    from medxfer.cli import main
    from medxfer.lifecycle.bundle import load_bundle

    breast, n_breast = _slice_dataset(test_data, tmp_path, "breastmnist", 48, 8)
    pneumo, n_pneumo = _slice_dataset(test_data, tmp_path, "pneumoniamnist", 32, 8)
    root = tmp_path / "root"
    cfg = {
        "name": "ssl-test",
        # Streamed (0: never in memory), from the two sources' pooled row groups.
        "data": {"manifest": breast, "extra_manifests": [pneumo], "label_fraction": 0.5, "in_memory_max_bytes": 0},
        "preprocess": {"size": 28},
        "model": {"backbone": "smallcnn", "stem": "standard"},
        "pretrain": {"method": "simsiam", "projection_dim": 32},
        "train": {"epochs": 2, "max_epochs_this_run": 1, "batch_size": 8, "lr": 1e-3},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "storage": {"root": str(root)},
    }
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pretrain", "--config", str(path)]) == 0

    from medxfer import storage

    run = root / "runs" / "ssl-test"
    result = storage.read_json(str(run / "result.json"))
    assert result["status"] == "max_epochs_this_run" and result["epoch"] == 1 and result["data_mode"] == "stream"
    # Every training image of both sources, none of their val/test images, labels' fraction ignored.
    assert result["train_images"] == n_breast + n_pneumo
    assert [s["train_images"] for s in result["sources"]] == [n_breast, n_pneumo]
    assert result["history"][0]["images"] == (n_breast + n_pneumo) // 16 * 16  # 2 workers x full batches of 8
    assert np.isfinite(result["history"][0]["loss"]) and result["history"][0]["images_per_s"] > 0

    # The same name with another network is refused with a message, not a shape error in a worker.
    assert main(["pretrain", "--config", str(path), "--set", "pretrain.method=byol"]) == 2

    # Resume: the same name continues from the checkpoint of epoch 1 and completes; here in this process
    # (Ray Train's local mode), from the checkpoint the worker group wrote.
    assert main(["pretrain", "--config", str(path), "--set", "train.max_epochs_this_run=null",
                 "--set", "scaling.num_workers=0"]) == 0
    result = storage.read_json(str(run / "result.json"))
    assert result["status"] == "complete" and result["epoch"] == 2 and result["data_mode"] == "stream"
    assert result["resumed_from_epoch"] == 1 and result["epochs_run"] == 1
    assert result["history"][1]["images"] == (n_breast + n_pneumo) // 8 * 8  # one process, full batches of 8
    # A finished pretraining is never rewritten by other settings (a shorter schedule included): refused
    # naming the fields (exit 2), nothing in the run folder written. The same settings start nothing.
    from evalutil import file_hashes

    from medxfer.config.loading import load_config
    from medxfer.ssl.pretrain import run_pretrain

    files = file_hashes(run)
    for change in ("pretrain.temperature=0.5", "train.epochs=1", "train.lr=0.01"):
        assert main(["pretrain", "--config", str(path), "--set", change]) == 2, change
    assert file_hashes(run) == files
    again = run_pretrain(load_config(str(path), ["train.max_epochs_this_run=null"]))
    assert again["epochs_run"] == 0 and again["bundle_id"] == result["bundle_id"] and again["already_complete"]
    assert file_hashes(run) == files

    b = load_bundle(str(run / "bundle"))
    card = b.card
    assert card.task == "self-supervised" and card.backbone == "smallcnn" and card.num_outputs == 0
    assert card.pretraining["method"] == "simsiam"
    assert [s["train_images"] for s in card.pretraining["sources"]] == [n_breast, n_pneumo]
    assert card.data_fingerprints == [s["cache_key"] for s in result["sources"]]
    assert card.preprocess.size == 28 and card.lineage.stage == "pretrain"

    # What finetune does with a source bundle: all backbone tensors loaded, the head new.
    target = create_model("smallcnn", 2, 1, stem="standard")
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    rep = load_source_weights(target, b.state_dict)
    assert sorted(rep["new"]) == ["head.bias", "head.weight"] and not rep["skipped"]
    assert len(rep["loaded"]) == len(b.state_dict) == len(fresh) - 2
    changed = [k for k in rep["loaded"] if k.endswith("weight") and not torch.equal(fresh[k], target.state_dict()[k])]
    assert changed  # the pretrained weights really arrived
