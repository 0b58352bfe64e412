"""``medxfer evaluate`` end to end: a bundle fine-tuned on real BreastMNIST (real Ray, S3 storage on moto) is
evaluated, registered and used by predict with the report's operating point; the bundle never changes."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from evalutil import breast_job, breast_manifest, file_hashes

from medxfer import storage
from medxfer.cli import main
from medxfer.evaluate import evaluate_bundle
from medxfer.evaluate.inputs import prepare_for
from medxfer.evaluate.report import default_out
from medxfer.evaluate.scoring import score_splits_local
from medxfer.lifecycle.bundle import load_bundle
from medxfer.metrics.operating_point import choose_operating_point, rates_at


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
    from medxfer.supervised.stage import run_training

    cfg = breast_job(store, manifest, train={"epochs": 1})
    result = run_training(cfg, "finetune")
    return cfg, result["bundle"]


@pytest.mark.slow
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
    assert op["chosen_on"] == "val" and op["positive_class"] == "malignant" and op["val"]["sensitivity"] >= 0.8
    # The positive class is the one training named (data.positive_class, stored in the card), and the report
    # says so; no evaluate.positive_class was given.
    assert cfg.evaluate.positive_class is None and load_bundle(bundle).positive_class == "malignant"
    assert rep["positive_class"] == "malignant" and "data.positive_class" in rep["positive_class_reason"]
    assert rep["classes"] == ["malignant", "normal_or_benign"]  # MedMNIST's names, in its index order
    b = load_bundle(bundle)
    scored = score_splits_local(b, prepare_for(b, cfg), ["val", "test"])
    v, t = scored["val"], scored["test"]
    again = choose_operating_point(v["label"] == 0, v["scores"][:, 0], "sensitivity>=0.8")
    assert again.threshold == pytest.approx(op["threshold"])
    sens, spec = rates_at(t["label"] == 0, t["scores"][:, 0], op["threshold"])
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
    # The report says how its intervals were drawn: method, resamples, seed (evaluate.bootstrap: 300 here).
    assert rep["bootstrap"] == {"resamples": 300, "seed": 0, "level": 0.95, "method": "BCa", "paired": True,
                                "n": 156, "library": "scipy.stats.bootstrap"}
    assert "95% BCa bootstrap intervals, paired (every metric on the same resamples), 300 resamples, seed 0" in md
    # The operating point lives in the report only: not one byte of the bundle changed.
    assert file_hashes(bundle) == before and "operating_point" not in load_bundle(bundle).card.model_dump()


@pytest.mark.slow
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
    local = score_splits_local(b, prepare_for(b, cfg), ["test"])["test"]
    idx = {p: i for i, p in enumerate(local["path"])}
    want = np.stack([local["scores"][idx[p]] for p in pred["path"]])
    # Same spec, same preprocessing function: PNG bytes -> prediction equals cache -> evaluation.
    np.testing.assert_allclose(pred[["prob_malignant", "prob_normal_or_benign"]].to_numpy(), want, atol=1e-5)
    thr = storage.read_json(report_a)["operating_point"]["threshold"]
    assert thr != storage.read_json(storage.join(rep_b, "report.json"))["operating_point"]["threshold"]
    assert list(pred["decision"]) == ["malignant" if s >= thr else "not malignant" for s in pred["prob_malignant"]]
    assert set(pred["threshold_source"]) == {f"report {report_a}"}
    # The registry version recorded report A's operating point next to both hashes.
    record = storage.read_json(storage.join(store, "registry", "breast-imm", "versions", "v0001", "version.json"))
    assert record["operating_point"]["threshold"] == pytest.approx(thr)
    assert (record["weights_sha256"], record["card_sha256"]) == (b.card.weights_sha256, b.card.card_sha256)
