"""The metric registry: every metric's point (scikit-learn) and bootstrap statistic agree, on the data and
on a resample; hand-checked values; one AUROC; the directions early stopping and promotion use."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer.metrics import EPOCH_METRICS, METRICS
from medxfer.metrics.registry import (
    CONFIDENCE,
    DECISION,
    GRADE,
    LABEL,
    ORDERED_LABEL,
    PROBABILITY,
    RANKING,
)


def sample_inputs(binary, kind: str, n: int = 300, seed: int = 0) -> tuple:
    """Realistic inputs of every kind the registry knows: a new kind needs a line here."""
    rng = np.random.default_rng(seed)
    y, s = binary(n, seed)
    k = 4
    classes = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[classes]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if kind == RANKING:  # three columns, one with unknown labels
        truth = np.eye(k)[classes].T[:3].copy()
        truth[2, rng.random(n) < 0.2] = np.nan
        return truth, probs.T[:3]
    if kind == DECISION:
        return y, s >= 0.5
    if kind == LABEL:
        return classes, probs.argmax(1)
    if kind == ORDERED_LABEL:
        return classes, np.clip(classes + rng.integers(-1, 2, n), 0, k - 1)
    if kind == PROBABILITY:
        return np.eye(k)[classes].T, probs.T
    if kind == CONFIDENCE:
        return (probs.argmax(1) == classes).astype(float), probs.max(1)
    if kind == GRADE:
        return classes.astype(float), classes + rng.normal(scale=0.6, size=n)
    raise AssertionError(f"no sample inputs for {kind!r}: add them to sample_inputs")


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_statistic_equals_its_point_on_the_data_and_on_a_resample(binary, name):
    m = METRICS[name]
    inputs = sample_inputs(binary, m.inputs)
    assert m.statistic(*inputs) == pytest.approx(m.point(*inputs), rel=1e-9), "whole data"
    idx = np.random.default_rng(7).integers(0, inputs[0].shape[-1], (3, inputs[0].shape[-1]))
    resampled = [np.asarray(a)[..., idx] for a in inputs]  # (columns,) resamples, examples
    batch = m.statistic(*resampled)
    assert batch.shape == (3,)
    for b in range(3):
        one = [np.asarray(a)[..., idx[b]] for a in inputs]
        assert batch[b] == pytest.approx(m.point(*one), rel=1e-9), f"resample {b}"


def test_auroc_is_sklearn_ties_half_unknown_labels_left_out_and_undefined_is_nan(binary):
    auroc = METRICS["auroc"]
    y, s = binary()
    assert auroc.point(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert auroc.statistic(y[None].astype(float), s[None]) == pytest.approx(skm.roc_auc_score(y, s))
    truth = y.astype(float)
    truth[::5] = np.nan
    known = ~np.isnan(truth)
    assert auroc.statistic(truth[None], s[None]) == pytest.approx(skm.roc_auc_score(y[known], s[known]))
    # One class only: undefined, not an error; several columns average.
    assert np.isnan(auroc.point(np.zeros(5), np.arange(5.0)))
    assert np.isnan(auroc.statistic(np.zeros((1, 5)), np.arange(5.0)[None]))
    assert auroc.point(np.stack([y, ~y]), np.stack([s, 1 - s])) == pytest.approx(skm.roc_auc_score(y, s))


def test_binary_metrics_hand_checked():
    # tp=2, fn=1, fp=1, tn=3
    y = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0], bool)
    expect = {"sensitivity": 2 / 3, "specificity": 3 / 4, "ppv": 2 / 3, "npv": 3 / 4, "f1": 2 / 3}
    for k, v in expect.items():
        assert METRICS[k].point(y, pred) == pytest.approx(v), k
        assert METRICS[k].statistic(y, pred) == pytest.approx(v), k
    for k, v in {"accuracy": 5 / 7, "balanced_accuracy": (2 / 3 + 3 / 4) / 2}.items():
        assert METRICS[k].point(y.astype(int), pred.astype(int)) == pytest.approx(v), k
        assert METRICS[k].statistic(y.astype(int), pred.astype(int)) == pytest.approx(v), k


def test_grades_and_probabilities_hand_checked_and_vs_sklearn(binary):
    y = np.array([0, 1, 2, 3, 4, 2])
    g = np.array([0.2, 1.4, 2.6, 3.0, 3.4, 2.1])
    assert METRICS["mae"].point(y, g) == pytest.approx(np.mean([0.2, 0.4, 0.6, 0, 0.6, 0.1]))
    rounded = np.array([0, 1, 3, 3, 3, 2])
    want = skm.cohen_kappa_score(y, rounded, weights="quadratic", labels=list(range(5)))
    assert METRICS["qwk"].point(y, rounded) == pytest.approx(want)
    assert METRICS["qwk"].statistic(y, rounded) == pytest.approx(want)
    onehot, probs = sample_inputs(binary, PROBABILITY)
    assert METRICS["brier"].point(onehot, probs) == pytest.approx(
        skm.brier_score_loss(onehot.argmax(0), probs.T, labels=list(range(4))))
    ys, s = binary()
    assert METRICS["brier"].point(ys[None], s[None]) == pytest.approx(skm.brier_score_loss(ys, s))


def test_directions_feed_early_stopping_and_promotion():
    assert {m for m in METRICS if not METRICS[m].higher_is_better} == {"brier", "ece", "mae"}
    assert EPOCH_METRICS == {"val_auroc": "max", "val_acc": "max", "val_mae": "min", "val_loss": "min",
                             "train_loss": "min"}


def test_the_registry_imports_no_heavy_library():
    """The job config validates against the registry: importing it must not pull in scikit-learn,
    scipy, torch or matplotlib."""
    import subprocess
    import sys

    code = ("import sys, medxfer.config; "
            "print([m for m in ('sklearn', 'scipy', 'torch', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
