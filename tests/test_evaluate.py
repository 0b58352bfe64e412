"""Evaluate (and predict with) a bundle fine-tuned on real BreastMNIST; real Ray, S3 storage on moto."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from evalutil import breast_job, breast_manifest, tiny_bundle

from medxfer import metrics as M
from medxfer import storage
from medxfer.bundle import load_bundle
from medxfer.cli import main
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
    sha = load_bundle(bundle).card["weights_sha256"]
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
    # The operating point is in the card and the bundle still verifies (hash covers weights only).
    after = load_bundle(bundle)
    assert after.card["operating_point"]["threshold"] == pytest.approx(op["threshold"])
    assert after.card["weights_sha256"] == sha and rep["card_updated"]


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
    r = compare_bundles(bundle, untrained, cfg, "test", out=str(tmp_path / "cmp"))
    d = r["difference"]
    assert r["n_common"] == 156
    assert d["difference"] == pytest.approx(r["a"]["metrics"]["auroc"]["value"] - r["b"]["metrics"]["auroc"]["value"])
    assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    assert (tmp_path / "cmp" / "compare.md").exists() and (tmp_path / "cmp" / "roc_compare.png").exists()
    # The CLI with a manifest as --data; the spec comes from the bundle, so the cache is a hit.
    rc = main(["evaluate", "--bundle", untrained, "--data", manifest, "--set", f"storage.root={store}",
               "--set", "evaluate.positive_class='0'", "--set", "evaluate.bootstrap=100"])
    assert rc == 0
    assert "auroc" in capsys.readouterr().out
    assert (tmp_path / "untrained" / "report" / "report.md").exists()
    assert "operating_point" in load_bundle(untrained).card


def test_predict_on_breast_images_matches_evaluation(trained, manifest, tmp_path):
    cfg, bundle = trained
    df = pd.read_csv(manifest)
    base = storage.parent(manifest)
    rows = df[df["split"] == "test"].head(12)
    man = tmp_path / "few.csv"
    pd.DataFrame({"path": [storage.join(base, p) for p in rows["path"]]}).to_csv(man, index=False)
    assert main(["predict", "--bundle", bundle, "--input", str(man), "--output", str(tmp_path / "pred")]) == 0
    pred = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert len(pred) == 12 and (pred["error"] == "").all()
    b = load_bundle(bundle)
    local = score_splits_local(b, _prepare_for(b, cfg), ["test"])["test"]
    idx = {p: i for i, p in enumerate(local["path"])}
    want = np.stack([local["scores"][idx[p]] for p in pred["path"]])
    # Same spec, same preprocessing function: PNG bytes -> prediction equals cache -> evaluation.
    np.testing.assert_allclose(pred[["prob_0", "prob_1"]].to_numpy(), want, atol=1e-5)
    thr = b.card["operating_point"]["threshold"]
    assert list(pred["decision"]) == ["0" if s >= thr else "not 0" for s in pred["prob_0"]]


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
