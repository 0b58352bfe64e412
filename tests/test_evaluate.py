"""Evaluate (and predict with) a bundle fine-tuned on real BreastMNIST; real Ray, S3 storage on moto."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from evalutil import breast_job, breast_manifest, file_hashes, tiny_bundle

from medxfer import metrics as M
from medxfer import storage
from medxfer.bundle import load_bundle
from medxfer.cli import main
from medxfer.errors import ConfigError
from medxfer.evaluate import (
    _prepare_for,
    compare_bundles,
    default_out,
    evaluate_bundle,
    score_splits,
    score_splits_local,
)


@pytest.fixture(scope="module")
def store(s3_server) -> str:
    bucket = f"medxfer-eval-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture(scope="module")
def manifest(test_data, tmp_path_factory) -> str:
    return breast_manifest(test_data, tmp_path_factory.mktemp("breast"))


@pytest.fixture(scope="module")
def trained(ray_cluster, store, manifest):
    from medxfer.train.jobs import run_training

    cfg = breast_job(store, manifest, train={"epochs": 1})
    result = run_training(cfg, "finetune")
    return cfg, result["bundle"]


def test_evaluate_finetuned_bundle(trained):
    cfg, bundle = trained
    before = file_hashes(bundle)
    rep = evaluate_bundle(bundle, cfg, "test")
    assert rep["holdout"]["n"] == 156 and rep["class_counts"] == [42, 114]
    # Every headline metric has a seeded 95% CI around it.
    for name in ("auroc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy",
                 "brier", "ece"):
        m = rep["metrics"][name]
        assert m["ci"][0] <= m["value"] <= m["ci"][1], name
    # The operating point was chosen on validation for its target and applied unchanged to test.
    op = rep["operating_point"]
    assert op["chosen_on"] == "val" and op["positive_class"] == "0" and op["val"]["sensitivity"] >= 0.8
    # The positive class is the one training named (data.positive_class, stored in the card), and the report
    # says so; no evaluate.positive_class was given.
    assert cfg.evaluate.positive_class is None and load_bundle(bundle).positive_class == "0"
    assert rep["positive_class"] == "0" and "data.positive_class" in rep["positive_class_reason"]
    b = load_bundle(bundle)
    scored = score_splits_local(b, _prepare_for(b, cfg), ["val", "test"])
    v, t = scored["val"], scored["test"]
    again = M.choose_operating_point(v["label"] == 0, v["scores"][:, 0], "sensitivity>=0.8")
    assert again.threshold == pytest.approx(op["threshold"])
    sens, spec = M._sens_spec(t["label"] == 0, t["scores"][:, 0], op["threshold"])
    assert (sens, spec) == pytest.approx((op["test"]["sensitivity"], op["test"]["specificity"]))
    assert rep["metrics"]["sensitivity"]["value"] == pytest.approx(sens)
    # Report, markdown and PNG plots beside the bundle (on S3).
    out = default_out(bundle)
    for f in ("report.json", "report.md", "roc.png", "calibration.png", "confusion.png"):
        assert storage.exists(storage.join(out, f)), f
    assert storage.read_bytes(storage.join(out, "roc.png"))[:4] == b"\x89PNG"
    md = storage.read_text(storage.join(out, "report.md"))
    assert "![ROC curve](roc.png)" in md and f"{op['threshold']:.4f}" in md and "95% CI" in md
    assert storage.read_json(storage.join(out, "report.json"))["metrics"]["auroc"]["value"] == pytest.approx(
        rep["metrics"]["auroc"]["value"])
    assert "data.positive_class" in md
    # The operating point lives in the report only: not one byte of the bundle changed.
    assert file_hashes(bundle) == before and "operating_point" not in load_bundle(bundle).card


def test_ray_actor_pool_scores_equal_in_process_scores(trained):
    cfg, bundle = trained
    b = load_bundle(bundle)
    prepared = _prepare_for(b, cfg)
    via_ray = score_splits(bundle, prepared, ["val", "test"], batch_size=32)
    local = score_splits_local(b, prepared, ["val", "test"])
    for s in ("val", "test"):
        assert list(via_ray[s]["path"]) == list(local[s]["path"])
        np.testing.assert_array_equal(via_ray[s]["label"], local[s]["label"])
        np.testing.assert_allclose(via_ray[s]["scores"], local[s]["scores"], atol=1e-5)


def test_compare_and_evaluate_cli(trained, manifest, store, tmp_path, capsys):
    cfg, bundle = trained
    untrained = str(tmp_path / "untrained" / "bundle")
    tiny_bundle(untrained, classes=("0", "1"), size=28, seed=3)
    with pytest.raises(ConfigError, match="different positive classes"):  # '0' (named) vs '1' (default)
        compare_bundles(bundle, untrained, cfg, "test", out=str(tmp_path / "cmp"))
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"positive_class": "0"})})
    r = compare_bundles(bundle, untrained, cfg, "test", out=str(tmp_path / "cmp"))
    d = r["difference"]
    assert r["n_common"] == 156
    assert d["difference"] == pytest.approx(r["a"]["metrics"]["auroc"]["value"] - r["b"]["metrics"]["auroc"]["value"])
    assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    assert (tmp_path / "cmp" / "compare.md").exists() and (tmp_path / "cmp" / "roc_compare.png").exists()
    # The CLI with a manifest as --data; the spec comes from the bundle, so the cache is a hit.
    before = file_hashes(untrained)
    capsys.readouterr()
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", f"storage.root={store}",
               "--set", "evaluate.bootstrap=100"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "auroc" in out
    # The untrained card names no positive class: the output says it is the default and how to name it.
    assert "positive class: 1 (the default: the last class; name it with data.positive_class" in out
    assert f"--report {storage.join(str(tmp_path / 'untrained' / 'report'), 'report.json')}" in out
    assert (tmp_path / "untrained" / "report" / "report.md").exists()
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", f"storage.root={store}",
               "--set", "evaluate.positive_class='0'", "--set", "evaluate.bootstrap=100"])
    assert rc == 0 and "positive class: 0 (named for this evaluation (evaluate.positive_class))" in (
        capsys.readouterr().out)
    assert file_hashes(untrained) == before


def test_predict_on_breast_images_matches_evaluation(trained, manifest, store, tmp_path):
    cfg, bundle = trained
    df = pd.read_csv(manifest)
    base = storage.parent(manifest)
    rows = df[df["split"] == "test"].head(12)
    man = tmp_path / "few.csv"
    pd.DataFrame({"path": [storage.join(base, p) for p in rows["path"]]}).to_csv(man, index=False)
    # Evaluate (twice, different rules), register and promote, predict: the bundle's bytes never change, and
    # predict decides with the operating point of the report it is given, not the last evaluation's.
    before = file_hashes(bundle)
    rep_a, rep_b = str(tmp_path / "rep-a"), str(tmp_path / "rep-b")
    assert main(["evaluate", "--bundle", bundle, "--data", manifest, "--out", rep_a, "--set", f"storage.root={store}",
                 "--set", "evaluate.operating_point=sensitivity>=0.95", "--set", "evaluate.bootstrap=50"]) == 0
    assert main(["evaluate", "--bundle", bundle, "--data", manifest, "--out", rep_b, "--set", f"storage.root={store}",
                 "--set", "evaluate.operating_point=specificity>=0.95", "--set", "evaluate.bootstrap=50"]) == 0
    report_a = storage.join(rep_a, "report.json")
    assert main(["registry", "promote", "breast-imm", "--bundle", bundle, "--report", report_a, "--root", store]) == 0
    assert main(["predict", "--bundle", bundle, "--report", report_a, "--input", str(man),
                 "--output", str(tmp_path / "pred")]) == 0
    assert file_hashes(bundle) == before
    pred = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert len(pred) == 12 and (pred["error"] == "").all()
    b = load_bundle(bundle)
    local = score_splits_local(b, _prepare_for(b, cfg), ["test"])["test"]
    idx = {p: i for i, p in enumerate(local["path"])}
    want = np.stack([local["scores"][idx[p]] for p in pred["path"]])
    # Same spec, same preprocessing function: PNG bytes -> prediction equals cache -> evaluation.
    np.testing.assert_allclose(pred[["prob_0", "prob_1"]].to_numpy(), want, atol=1e-5)
    thr = storage.read_json(report_a)["operating_point"]["threshold"]
    assert thr != storage.read_json(storage.join(rep_b, "report.json"))["operating_point"]["threshold"]
    assert list(pred["decision"]) == ["0" if s >= thr else "not 0" for s in pred["prob_0"]]
    assert set(pred["threshold_source"]) == {f"report {report_a}"}
    # The registry version recorded report A's operating point next to both hashes.
    record = storage.read_json(storage.join(store, "registry", "breast-imm", "versions", "v0001", "version.json"))
    assert record["operating_point"]["threshold"] == pytest.approx(thr)
    assert (record["weights_sha256"], record["card_sha256"]) == (b.card["weights_sha256"], b.card_sha256)


@pytest.mark.parametrize("task", ["multilabel", "ordinal", "multiclass"])
def test_reports_for_every_task_without_ray(task, tmp_path):
    from medxfer.config import EvaluateSection
    from medxfer.evaluate import build_report, write_report

    classes = ("a", "b", "c")
    uri = str(tmp_path / "b")
    tiny_bundle(uri, classes=classes, task=task)
    b = load_bundle(uri)
    rng = np.random.default_rng(0)
    n = 120
    if task == "multilabel":
        y = (rng.random((n, 3)) < 0.4).astype(np.float32)
        y[rng.random((n, 3)) < 0.1] = np.nan
        scores = np.clip(np.nan_to_num(y) * 0.5 + rng.random((n, 3)) * 0.5, 0, 1)
    elif task == "ordinal":
        y = rng.integers(0, 3, n).astype(np.float32)
        scores = (y + rng.normal(scale=0.6, size=n))[:, None]
    else:
        y = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 2 * np.eye(3)[y]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    part = {"path": np.array([f"img{i:03d}.png" for i in range(n)]), "label": y, "scores": scores}
    scored = {"test": part, "val": part}
    ecfg = EvaluateSection(bootstrap=100, positive_class="c")
    rep = build_report(b, scored, "test", ecfg)
    out = str(tmp_path / "report")
    write_report(rep, scored, out)
    headline = {"multilabel": "auroc", "ordinal": "qwk", "multiclass": "auroc"}[task]
    m = rep["metrics"][headline]
    assert m["ci"][0] <= m["value"] <= m["ci"][1]
    md = (tmp_path / "report" / "report.md").read_text()
    assert headline in md
    for f in rep["plots"].values():
        assert (tmp_path / "report" / f).read_bytes()[:4] == b"\x89PNG"
    if task == "multiclass":
        assert rep["operating_point"]["positive_class"] == "c" and set(rep["plots"]) == {"roc", "calibration",
                                                                                         "confusion"}
    if task == "ordinal":
        assert set(rep["metrics"]) == {"mae", "qwk", "accuracy"} and "confusion" in rep["plots"]


def _plan():
    """The run plan of a one-channel, two-class smallcnn run (what the card records of it)."""
    from medxfer.train.plan import DataPlan, RunPlan

    return RunPlan(stage="finetune", task="multiclass", num_outputs=2, num_grades=2, in_chans=1, stem="standard",
                   class_counts=(10, 10), train_rows=20, world=1, rows_per_worker=20, batch_size=8, drop_partial=False,
                   steps_per_epoch=3, use_gpu=False, cpus_per_worker=1, data=DataPlan(caches=("c",), mode="memory"))


def test_positive_class_named_at_import_reaches_the_card_and_the_report(test_data, tmp_path, capsys):
    """ISIC-like class folders: 'nevus' sorts last, so by default "sensitivity" would be about benign moles.
    Named at import (or in the config), melanoma is the positive class of the card, and so of evaluation."""
    import json

    import cv2

    from medxfer.bundle import save_bundle
    from medxfer.card import build_card, resolve_positive_class
    from medxfer.config import EvaluateSection
    from medxfer.config_io import validate_dict
    from medxfer.evaluate import build_report
    from medxfer.models import create_model

    z = np.load(test_data / "medmnist" / "breastmnist.npz")
    labels = z["train_labels"].reshape(-1)
    for label, cls in ((0, "melanoma"), (1, "nevus")):
        d = tmp_path / "isic" / cls
        d.mkdir(parents=True)
        for i, img in enumerate(z["train_images"][labels == label][:6]):
            cv2.imwrite(str(d / f"{i}.png"), img)
    out = tmp_path / "ds"
    capsys.readouterr()
    assert main(["import", "folder", "--root", str(tmp_path / "isic"), "--out", str(out),
                 "--positive-class", "Melanoma"]) == 2  # not a class folder: refused, nothing written
    assert "melanoma, nevus" in capsys.readouterr().err and not out.exists()
    assert main(["import", "folder", "--root", str(tmp_path / "isic"), "--out", str(out),
                 "--positive-class", "melanoma"]) == 0
    assert "positive class: melanoma" in capsys.readouterr().out
    assert json.loads((out / "import.json").read_text())["positive_class"] == "melanoma"

    classes = ["melanoma", "nevus"]
    cfg = validate_dict({"data": {"manifest": str(out / "manifest.csv")}, "preprocess": {"size": 28},
                         "model": {"backbone": "smallcnn"}})
    assert resolve_positive_class(cfg, "multiclass", classes) == ("melanoma", "import.json")
    named = validate_dict({"data": {"manifest": str(out / "manifest.csv"), "positive_class": "nevus"}})
    assert resolve_positive_class(named, "multiclass", classes) == ("nevus", "data.positive_class")
    with pytest.raises(ConfigError, match="data.positive_class: 'cancer' is not one of the classes"):
        resolve_positive_class(validate_dict({"data": {"positive_class": "cancer"}}), "multiclass", classes)

    # The card training builds carries it; evaluation uses it and says why.
    positive = resolve_positive_class(cfg, "multiclass", classes)
    card = build_card(cfg, "finetune", task="multiclass", classes=classes,
                      plan=_plan(), spec=cfg.preprocess.model_copy(update={"channels": 1}),
                      data_fingerprint="k", positive=positive)
    uri = str(tmp_path / "bundle")
    save_bundle(uri, create_model("smallcnn", 2, 1).state_dict(), card)
    b = load_bundle(uri)
    assert b.positive_class == "melanoma" and b.card["positive_class_source"] == "import.json"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p0 = np.clip(0.6 - 0.3 * y + rng.normal(scale=0.2, size=60), 0, 1)
    part = {"path": np.array([f"i{i}.png" for i in range(60)]), "label": y, "scores": np.stack([p0, 1 - p0], 1)}
    rep = build_report(b, {"val": part, "test": part}, "test", EvaluateSection(bootstrap=50))
    assert rep["positive_class"] == "melanoma" and rep["operating_point"]["positive_class"] == "melanoma"
    assert "import folder --positive-class" in rep["positive_class_reason"]
