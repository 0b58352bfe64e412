"""Task reports: every registered metric the task's inputs allow, with scikit-learn's values and an interval
each; binary metrics at the operating point; multi-label unknowns masked; ordinal grades."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer.metrics import METRICS
from medxfer.metrics.bootstrap import Resampling
from medxfer.metrics.registry import CONFIDENCE, DECISION, LABEL, PROBABILITY, RANKING
from medxfer.metrics.reports import classification_report, multilabel_report, ordinal_report


def test_multiclass_report_matches_sklearn():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rep = classification_report(y, p, list("abcd"), positive=3, threshold=0.5, resampling=Resampling(200, seed=1))
    m = rep["metrics"]
    assert m["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert m["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert m["balanced_accuracy"]["value"] == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))
    assert m["sensitivity"]["value"] == pytest.approx(skm.recall_score(y == 3, p[:, 3] >= 0.5))
    assert m["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, p, labels=list(range(k))))
    assert np.array(rep["confusion_matrix"]["matrix"]).sum() == n
    assert rep["per_class"]["auroc"]["a"] == pytest.approx(skm.roc_auc_score(y == 0, p[:, 0]))
    assert rep["calibration"]["kind"] == "top-label confidence"


def test_binary_report_is_about_the_positive_class_at_the_threshold(binary):
    y, s = binary()
    rep = classification_report(y.astype(int), np.c_[1 - s, s], ["neg", "pos"], positive=1, threshold=0.5,
                                 resampling=Resampling(0))
    m = rep["metrics"]
    assert list(m) == ["auroc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy",
                       "brier", "ece"]
    assert m["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, s))
    assert m["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    assert m["npv"]["value"] == pytest.approx(skm.precision_score(~y, s < 0.5))
    assert math.isnan(m["auroc"]["ci"][0])  # no resamples asked for
    # Every metric the registry has for these inputs is reported, each with a seeded interval around it.
    rep = classification_report(y.astype(int), np.c_[1 - s, s], ["neg", "pos"], 1, 0.5, Resampling(300, seed=2))
    for name, v in rep["metrics"].items():
        assert v["ci"][0] <= v["value"] <= v["ci"][1] and v["method"] == "BCa", name
    kinds = {CONFIDENCE, DECISION, LABEL, PROBABILITY, RANKING}
    assert set(rep["metrics"]) == {m.name for m in METRICS.values() if m.inputs in kinds}


def test_multilabel_masks_unknown_labels():
    rng = np.random.default_rng(1)
    n = 200
    Y = (rng.random((n, 3)) < 0.3).astype(float)
    P = np.clip(Y * 0.4 + rng.random((n, 3)) * 0.6, 0, 1)
    Y[rng.random((n, 3)) < 0.2] = np.nan
    Y[:, 2] = np.where(np.isnan(Y[:, 2]), np.nan, 0.0)  # no positive known: left out of the mean
    rep = multilabel_report(Y, P, ["a", "b", "c"], Resampling(200))
    per = []
    for j, name in enumerate("ab"):
        m = ~np.isnan(Y[:, j])
        want = skm.roc_auc_score(Y[m, j], P[m, j])
        assert rep["per_finding"][name]["auroc"] == pytest.approx(want)
        per.append(want)
    assert math.isnan(rep["per_finding"]["c"]["auroc"]) and rep["auroc_mean_over"] == ["a", "b"]
    mean = rep["metrics"]["auroc"]
    assert mean["value"] == pytest.approx(np.mean(per))
    assert mean["ci"][0] <= mean["value"] <= mean["ci"][1]


def test_ordinal_metrics_hand_checked_and_vs_sklearn():
    y = np.array([0, 1, 2, 3, 4, 2])
    g = np.array([0.2, 1.4, 2.6, 3.0, 3.4, 2.1])
    rep = ordinal_report(y, g, ["0", "1", "2", "3", "4"], Resampling(0))
    assert set(rep["metrics"]) == {"mae", "qwk", "accuracy", "balanced_accuracy"}
    assert rep["metrics"]["mae"]["value"] == pytest.approx(np.mean([0.2, 0.4, 0.6, 0, 0.6, 0.1]))
    assert rep["metrics"]["accuracy"]["value"] == pytest.approx(4 / 6)  # 2.6->3 and 3.4->3 miss
    rounded = np.array([0, 1, 3, 3, 3, 2])
    want = skm.cohen_kappa_score(y, rounded, weights="quadratic", labels=list(range(5)))
    assert rep["metrics"]["qwk"]["value"] == pytest.approx(want)
    assert rep["confusion_matrix"]["matrix"][2] == [0, 0, 1, 1, 0]
