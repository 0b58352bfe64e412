"""Metrics: hand-checked cases, agreement with scikit-learn, bootstrap and threshold behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer import metrics as M
from medxfer.errors import ConfigError


def _binary_data(n=300, seed=0, sep=1.0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + sep * (2 * y - 1))))
    return y, np.round(score, 2)  # rounding makes ties, which AUROC must count half


def _resample(n, seed):
    idx = np.random.default_rng(seed).integers(0, n, n)
    return idx, np.bincount(idx, minlength=n)[None, :].astype(float)


def test_weighted_auroc_matches_sklearn_on_data_and_on_a_resample():
    y, s = _binary_data()
    assert M.weighted_auroc(np.ones((1, len(y))), y, s)[0] == pytest.approx(skm.roc_auc_score(y, s))
    idx, W = _resample(len(y), 1)
    assert M.weighted_auroc(W, y, s)[0] == pytest.approx(skm.roc_auc_score(y[idx], s[idx]))
    # One class only: undefined, not an error.
    assert np.isnan(M.weighted_auroc(np.ones((1, 5)), np.zeros(5, bool), np.arange(5.0))[0])


def test_binary_metrics_hand_checked():
    # tp=2, fn=1, fp=1, tn=3
    y = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    st = M.binary_stats(y, pred)
    ones = np.ones((1, 7))
    expect = {"sensitivity": 2 / 3, "specificity": 3 / 4, "ppv": 2 / 3, "npv": 3 / 4, "f1": 2 / 3,
              "accuracy": 5 / 7, "balanced_accuracy": (2 / 3 + 3 / 4) / 2}
    for k, v in expect.items():
        assert st[k](ones)[0] == pytest.approx(v), k
    point = M._binary_point(y, pred)
    for k, v in expect.items():
        assert point[k] == pytest.approx(v), k


def test_binary_stats_match_sklearn_on_a_resample():
    y, s = _binary_data(seed=3)
    pred = s >= 0.5
    idx, W = _resample(len(y), 7)
    st = M.binary_stats(y, pred)
    yy, pp = y[idx], pred[idx]
    assert st["sensitivity"](W)[0] == pytest.approx(skm.recall_score(yy, pp))
    assert st["specificity"](W)[0] == pytest.approx(skm.recall_score(~yy, ~pp))
    assert st["ppv"](W)[0] == pytest.approx(skm.precision_score(yy, pp))
    assert st["npv"](W)[0] == pytest.approx(skm.precision_score(~yy, ~pp))
    assert st["f1"](W)[0] == pytest.approx(skm.f1_score(yy, pp))
    assert st["balanced_accuracy"](W)[0] == pytest.approx(skm.balanced_accuracy_score(yy, pp))


def test_multiclass_stats_match_sklearn():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = p.argmax(1)
    idx, W = _resample(n, 5)
    st = M.multiclass_accuracy_stats(y, pred, k)
    assert st["accuracy"](W)[0] == pytest.approx(skm.accuracy_score(y[idx], pred[idx]))
    assert st["balanced_accuracy"](W)[0] == pytest.approx(skm.balanced_accuracy_score(y[idx], pred[idx]))
    macro = M.macro_auroc_stat(np.eye(k)[y], p)
    assert macro(W)[0] == pytest.approx(skm.roc_auc_score(y[idx], p[idx], multi_class="ovr"))
    brier = M.weighted_mean_stat(((p - np.eye(k)[y]) ** 2).sum(1))
    assert brier(W)[0] == pytest.approx(skm.brier_score_loss(y[idx], p[idx], labels=list(range(k))))

    rep = M.classification_report(y, p, list("abcd"), positive=3, threshold=0.5, n_boot=200, seed=1)
    assert rep["metrics"]["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert np.array(rep["confusion_matrix"]["matrix"]).sum() == n
    assert rep["metrics"]["sensitivity"]["value"] == pytest.approx(skm.recall_score(y == 3, p[:, 3] >= 0.5))


def test_ece_hand_checked_and_brier_binary():
    conf = np.array([0.95, 0.95, 0.05, 0.05])
    hit = np.array([1, 0, 0, 0])
    # bin 0.9-1.0: observed 0.5 vs 0.95 -> 0.45 * 1/2; bin 0.0-0.1: 0 vs 0.05 -> 0.05 * 1/2
    assert M.expected_calibration_error(hit, conf) == pytest.approx(0.25)
    assert M.ece_stat(hit, conf)(np.ones((1, 4)))[0] == pytest.approx(0.25)
    y, s = _binary_data()
    rep = M.classification_report(y.astype(int), np.c_[1 - s, s], ["neg", "pos"], positive=1,
                                  threshold=0.5, n_boot=0)
    assert rep["metrics"]["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, s))
    assert rep["metrics"]["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    assert math.isnan(rep["metrics"]["auroc"]["ci"][0])  # no resamples asked for


def test_bootstrap_ci_brackets_estimate_is_seeded_and_skips_one_class_resamples():
    y, s = _binary_data(n=200, seed=4)
    p = np.c_[1 - s, s]
    a = M.classification_report(y.astype(int), p, ["n", "p"], 1, 0.5, n_boot=500, seed=3)
    b = M.classification_report(y.astype(int), p, ["n", "p"], 1, 0.5, n_boot=500, seed=3)
    for name, m in a["metrics"].items():
        lo, hi = m["ci"]
        assert lo <= m["value"] <= hi, name
        assert hi - lo > 0, name
        assert m == b["metrics"][name]
    # A rare positive (1 of 12): many resamples have none; those are left out, not zero.
    y2 = np.zeros(12, int)
    y2[0] = 1
    s2 = np.linspace(0.1, 0.9, 12)[::-1]
    r = M.classification_report(y2, np.c_[1 - s2, s2], ["n", "p"], 1, 0.5, n_boot=400, seed=0)
    au = r["metrics"]["auroc"]
    assert 100 < au["n_valid"] < 400
    assert au["value"] == 1.0 and au["ci"] == [1.0, 1.0]


@pytest.mark.parametrize("rule,check", [
    ("sensitivity>=0.9", lambda op: op.sensitivity >= 0.9),
    ("specificity>=0.85", lambda op: op.specificity >= 0.85),
    ("youden", lambda op: True),
    ("threshold=0.5", lambda op: op.threshold == 0.5),
])
def test_operating_point_meets_target_on_validation(rule, check):
    y, s = _binary_data(n=400, seed=9, sep=0.8)
    op = M.choose_operating_point(y, s, rule)
    assert check(op) and op.target_met
    sens, spec = M._sens_spec(y, s, op.threshold)
    assert (sens, spec) == pytest.approx((op.sensitivity, op.specificity))
    if rule == "youden":
        grid = np.unique(s)
        best = max(sum(M._sens_spec(y, s, t)) for t in grid)
        assert sens + spec == pytest.approx(best)
    if rule.startswith("sensitivity"):
        # The best specificity among thresholds that reach the target: one step up misses it.
        higher = np.unique(s[s > op.threshold])
        if higher.size:
            assert M._sens_spec(y, s, higher[0])[0] < 0.9


def test_operating_point_rule_errors():
    with pytest.raises(ConfigError, match="operating_point"):
        M.parse_rule("sens>0.9")
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        M.parse_rule("sensitivity>=1.5")
    with pytest.raises(ConfigError, match="only"):
        M.choose_operating_point(np.ones(4, bool), np.arange(4.0), "youden")


def test_multilabel_masks_unknown_labels():
    rng = np.random.default_rng(1)
    n = 200
    Y = (rng.random((n, 3)) < 0.3).astype(float)
    P = np.clip(Y * 0.4 + rng.random((n, 3)) * 0.6, 0, 1)
    Y[rng.random((n, 3)) < 0.2] = np.nan
    rep = M.multilabel_report(Y, P, ["a", "b", "c"], n_boot=200, seed=0)
    per = []
    for j, name in enumerate("abc"):
        m = ~np.isnan(Y[:, j])
        want = skm.roc_auc_score(Y[m, j], P[m, j])
        assert rep["per_finding"][name]["auroc"] == pytest.approx(want)
        per.append(want)
    mean = rep["metrics"]["auroc"]
    assert mean["value"] == pytest.approx(np.mean(per))
    assert mean["ci"][0] <= mean["value"] <= mean["ci"][1]


def test_ordinal_metrics_hand_checked_and_vs_sklearn():
    y = np.array([0, 1, 2, 3, 4, 2])
    g = np.array([0.2, 1.4, 2.6, 3.0, 3.4, 2.1])
    rep = M.ordinal_report(y, g, ["0", "1", "2", "3", "4"], n_boot=0)
    assert rep["metrics"]["mae"]["value"] == pytest.approx(np.mean([0.2, 0.4, 0.6, 0, 0.6, 0.1]))
    assert rep["metrics"]["accuracy"]["value"] == pytest.approx(4 / 6)  # 2.6->3 and 3.4->3 miss
    rounded = np.array([0, 1, 3, 3, 3, 2])
    want = skm.cohen_kappa_score(y, rounded, weights="quadratic", labels=list(range(5)))
    assert rep["metrics"]["qwk"]["value"] == pytest.approx(want)
    rng = np.random.default_rng(2)
    y2, r2 = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    idx, W = _resample(300, 3)
    assert M.qwk_stat(y2, r2, 5)(W)[0] == pytest.approx(
        skm.cohen_kappa_score(y2[idx], r2[idx], weights="quadratic", labels=list(range(5))))


def test_paired_difference():
    y, s = _binary_data(n=300, seed=5, sep=1.5)
    rng = np.random.default_rng(0)
    worse = np.clip(s + rng.normal(scale=0.3, size=len(s)), 0, 1)
    pa, pb = np.c_[1 - s, s], np.c_[1 - worse, worse]
    same = M.paired_difference(M.auroc_stat(y, pa), M.auroc_stat(y, pa), len(y), 300, 0)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    d = M.paired_difference(M.auroc_stat(y, pa), M.auroc_stat(y, pb), len(y), 300, 0)
    assert d["difference"] == pytest.approx(skm.roc_auc_score(y, s) - skm.roc_auc_score(y, worse))
    assert 0 < d["ci"][0] <= d["difference"] <= d["ci"][1]
    assert d["p_value"] < 0.05
