"""The metric registry: every metric medxfer reports, once, with its direction and both forms.

A metric is one :class:`Metric` entry at the bottom of this file: its name, whether higher is
better, the inputs it reads (below), a **point** function (scikit-learn where it has one: the
reference everyone checks against) and a **statistic**, the same metric vectorised over the
examples' axis so that one call scores every bootstrap resample. The registry feeds evaluation
reports (every metric whose inputs a report builds), validation during training and early
stopping (the metrics with an ``epoch`` name, see :data:`EPOCH_METRICS`), promotion (the
direction of ``promotion.metric``), experiments and comparisons. Adding a metric is one entry
here plus its test, which holds the point and the statistic equal.

Inputs. Each metric reads one kind of input, arrays with the examples on the last axis; any
axes before them are resamples (the statistic) and, for the column kinds, a leading axis of
columns (classes, findings, seeds) that the metric averages:

- ``ranking``: (truth, score), columns first; truth 1/0, NaN where the label is unknown.
- ``decision``: (truth, decision), bool: the positive class against the rest at the operating point.
- ``label``: (true class, predicted class), int.
- ``ordered_label``: (true grade, predicted grade), int, for metrics that weigh how far apart they are.
- ``probability``: (one-hot truth, probability), columns first.
- ``confidence``: (hit, confidence): whether a prediction was right and the probability it was given.
- ``grade``: (true grade, predicted grade), float.

A statistic returns NaN where the metric is undefined (a resample without positives); the
bootstrap leaves those resamples out (:mod:`medxfer.metrics.bootstrap`).

Import-light on purpose: the job config validates metric names against this module, so it
imports numpy only; scikit-learn and scipy are imported when a metric is computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medxfer.metrics.calibration import calibration_error, calibration_error_statistic

RANKING, DECISION, LABEL, ORDERED_LABEL = "ranking", "decision", "label", "ordered_label"
PROBABILITY, CONFIDENCE, GRADE = "probability", "confidence", "grade"


@dataclass(frozen=True)
class Metric:
    """One metric: ``point(*inputs) -> float`` on one set, ``statistic(*inputs)`` on every resample at once."""

    name: str
    higher_is_better: bool
    inputs: str
    point: Callable[..., float]
    statistic: Callable[..., np.ndarray]
    epoch: str | None = None  # the name validation reports it under each epoch (None: not per epoch)

    @property
    def direction(self) -> str:
        """'max' or 'min', as early stopping and checkpoints take it."""
        return "max" if self.higher_is_better else "min"


def _div(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _column_mean(values: np.ndarray) -> np.ndarray:
    """The mean over the leading column axis; NaN when a column is undefined (or there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        return np.full(values.shape[1:], np.nan)
    return values.mean(axis=0)


def _sk():
    from sklearn import metrics

    return metrics


# ----------------------------------------------------------------------------- ranking


def _auroc_point(truth, score) -> float:
    truth, score = np.atleast_2d(np.asarray(truth, dtype=np.float64)), np.atleast_2d(score)
    values = []
    for t, s in zip(truth, score, strict=True):
        known = ~np.isnan(t)
        t, s = t[known] == 1, s[known]
        values.append(_sk().roc_auc_score(t, s) if t.any() and not t.all() else np.nan)
    return float(_column_mean(np.asarray(values)))


def _auroc_statistic(truth, score) -> np.ndarray:
    """Mann-Whitney: the rank sum of the positives among the known labels, ties counted half."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, dtype=np.float64)
    pos, neg = truth == 1, truth == 0
    ranks = rankdata(np.where(pos | neg, score, np.nan), axis=-1, nan_policy="omit")
    n_pos, n_neg = pos.sum(axis=-1), neg.sum(axis=-1)
    u = np.where(pos, ranks, 0.0).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return _column_mean(_div(u, n_pos * n_neg))


# ----------------------------------------------------------------------------- decisions at the operating point


def _rate(numerator_denominator: Callable) -> Callable[..., np.ndarray]:
    """A statistic of (truth, decision) from its confusion counts: ``(tp, fp, tn, fn) -> (numerator, denominator)``."""

    def statistic(truth, decision):
        t, d = np.asarray(truth, dtype=bool), np.asarray(decision, dtype=bool)
        counts = ((t & d).sum(-1), (~t & d).sum(-1), (~t & ~d).sum(-1), (t & ~d).sum(-1))
        return _div(*numerator_denominator(*counts))

    return statistic


def _bools(fn: Callable) -> Callable[..., float]:
    """A scikit-learn score of (truth, decision) as bools; NaN where it divides by zero."""
    return lambda t, d: float(fn(np.asarray(t, dtype=bool), np.asarray(d, dtype=bool)))


# ----------------------------------------------------------------------------- labels


def _accuracy_statistic(true, pred):
    return np.mean(np.asarray(true) == np.asarray(pred), axis=-1)


def _balanced_accuracy_statistic(true, pred):
    """Mean recall over the classes present, as scikit-learn's balanced_accuracy_score."""
    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    k = int(max(true.max(initial=0), pred.max(initial=0))) + 1
    recall = np.stack([_div(((true == c) & (pred == c)).sum(-1), (true == c).sum(-1)) for c in range(k)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no class present in a resample: NaN
        return np.nanmean(recall, axis=0)


def _balanced_accuracy_point(true, pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a predicted class absent from the truth
        return float(_sk().balanced_accuracy_score(true, pred))


def _quadratic_kappa_point(true, pred) -> float:
    k = int(max(np.max(true, initial=0), np.max(pred, initial=0))) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one grade only: undefined
        return float(_sk().cohen_kappa_score(true, pred, weights="quadratic", labels=list(range(k))))


def _quadratic_kappa_statistic(true, pred):
    """Cohen's kappa with quadratic weights, from each resample's grade-by-grade counts."""
    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    k = int(max(true.max(initial=0), pred.max(initial=0))) + 1
    batch = true.shape[:-1]
    rows = int(np.prod(batch))
    cells = (true * k + pred).reshape(rows, -1) + (np.arange(rows) * k * k)[:, None]
    counts = np.bincount(cells.ravel(), minlength=rows * k * k).reshape(rows, k, k).astype(np.float64)
    total = counts.sum(axis=(1, 2))
    expected = counts.sum(2)[:, :, None] * counts.sum(1)[:, None, :] / np.where(total > 0, total, 1)[:, None, None]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    weights = (i - j) ** 2
    observed_w, expected_w = (counts * weights).sum(axis=(1, 2)), (expected * weights).sum(axis=(1, 2))
    return (1.0 - _div(observed_w, expected_w)).reshape(batch)


# ----------------------------------------------------------------------------- probabilities and grades


def _brier_point(onehot, prob) -> float:
    onehot, prob = np.atleast_2d(onehot), np.atleast_2d(prob)
    if len(onehot) == 1:
        return float(_sk().brier_score_loss(onehot[0], prob[0]))
    return float(_sk().brier_score_loss(onehot.argmax(0), prob.T, labels=list(range(len(onehot)))))


def _brier_statistic(onehot, prob):
    return ((np.asarray(prob, dtype=np.float64) - onehot) ** 2).sum(axis=0).mean(axis=-1)


def _mae_statistic(true, pred):
    return np.abs(np.asarray(pred, dtype=np.float64) - true).mean(axis=-1)


# ----------------------------------------------------------------------------- the registry

_ENTRIES = (
    Metric("auroc", True, RANKING, _auroc_point, _auroc_statistic, epoch="val_auroc"),
    Metric("sensitivity", True, DECISION, _bools(lambda t, d: _sk().recall_score(t, d, zero_division=np.nan)),
           _rate(lambda tp, fp, tn, fn: (tp, tp + fn))),
    Metric("specificity", True, DECISION, _bools(lambda t, d: _sk().recall_score(~t, ~d, zero_division=np.nan)),
           _rate(lambda tp, fp, tn, fn: (tn, tn + fp))),
    Metric("ppv", True, DECISION, _bools(lambda t, d: _sk().precision_score(t, d, zero_division=np.nan)),
           _rate(lambda tp, fp, tn, fn: (tp, tp + fp))),
    Metric("npv", True, DECISION, _bools(lambda t, d: _sk().precision_score(~t, ~d, zero_division=np.nan)),
           _rate(lambda tp, fp, tn, fn: (tn, tn + fn))),
    Metric("f1", True, DECISION, _bools(lambda t, d: _sk().f1_score(t, d, zero_division=np.nan)),
           _rate(lambda tp, fp, tn, fn: (2 * tp, 2 * tp + fp + fn))),
    Metric("accuracy", True, LABEL, lambda t, p: float(_sk().accuracy_score(t, p)), _accuracy_statistic,
           epoch="val_acc"),
    Metric("balanced_accuracy", True, LABEL, _balanced_accuracy_point, _balanced_accuracy_statistic),
    Metric("brier", False, PROBABILITY, _brier_point, _brier_statistic),
    Metric("ece", False, CONFIDENCE, calibration_error, calibration_error_statistic),
    Metric("mae", False, GRADE, lambda t, p: float(_sk().mean_absolute_error(t, p)), _mae_statistic, epoch="val_mae"),
    Metric("qwk", True, ORDERED_LABEL, _quadratic_kappa_point, _quadratic_kappa_statistic),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ENTRIES}

#: What an epoch reports that can pick the best epoch, and its direction: the registered metrics
#: validation computes, and the training objective (lower is better), which the engine reports.
EPOCH_METRICS: dict[str, str] = {
    **{m.epoch: m.direction for m in _ENTRIES if m.epoch},
    "val_loss": "min",
    "train_loss": "min",
}


def metrics_for(inputs) -> list[Metric]:
    """The registered metrics that read one of ``inputs`` (the kinds of input a caller has built), in order."""
    return [m for m in _ENTRIES if m.inputs in inputs]
