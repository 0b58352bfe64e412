"""A task's evaluation: every registered metric its inputs allow, each with its interval.

A report builds the inputs its task has (see :mod:`medxfer.metrics.registry` for the kinds) and
measures every metric that reads one of them, so a newly registered metric appears in the reports
of every task that can compute it. Binary models are measured the way they will be used: at the
operating point, for the positive class (accuracy included). Multi-class models: AUROC is the
one-vs-rest mean, accuracy and the confusion matrix use the arg-max class, and sensitivity,
specificity, PPV, NPV and F1 are the positive class against the rest at the threshold.
"""

from __future__ import annotations

import numpy as np

from medxfer.metrics.bootstrap import Resampling, intervals
from medxfer.metrics.calibration import reliability
from medxfer.metrics.registry import (
    CONFIDENCE,
    DECISION,
    GRADE,
    LABEL,
    METRICS,
    ORDERED_LABEL,
    PROBABILITY,
    RANKING,
    metrics_for,
)
from medxfer.metrics.views import binary_columns, defined_columns, one_vs_rest


def measure(inputs: dict[str, tuple], resampling: Resampling) -> dict[str, dict]:
    """``{metric: {"value", "ci", "n_valid", "method"}}`` for every registered metric ``inputs`` allow."""
    chosen = metrics_for(inputs)
    cis = intervals({m.name: (m.statistic, inputs[m.inputs]) for m in chosen}, resampling)
    return {m.name: {"value": float(m.point(*inputs[m.inputs])), **cis[m.name]} for m in chosen}


def _confusion_matrix(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(true, pred, labels=list(range(len(classes))))
    return {"labels": list(classes), "matrix": cm.tolist(), "rows": "true", "cols": "predicted"}


def _per_class(y: np.ndarray, probs: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import precision_score, recall_score

    labels = list(range(len(classes)))
    auroc = METRICS["auroc"].point
    scores = {"auroc": {c: auroc(y == i, probs[:, i]) for i, c in enumerate(classes)}}
    for name, fn in (("recall", recall_score), ("precision", precision_score)):
        values = fn(y, predicted, labels=labels, average=None, zero_division=np.nan)
        scores[name] = dict(zip(classes, values.tolist(), strict=True))
    return scores


def classification_report(y: np.ndarray, probs: np.ndarray, classes: list[str], positive: int, threshold: float,
                          resampling: Resampling) -> dict:
    """Metrics of a single-label classifier (binary or multi-class) at an operating point."""
    y = np.asarray(y).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    score = probs[:, positive]
    is_positive, decision = y == positive, score >= threshold
    if k == 2:
        predicted = np.where(decision, positive, 1 - positive)
        hit, confidence = is_positive.astype(np.float64), score
        probability = (is_positive[None].astype(np.float64), score[None])
        ranking = binary_columns(is_positive, score)
    else:
        predicted = probs.argmax(axis=1)
        hit, confidence = (predicted == y).astype(np.float64), probs.max(axis=1)
        probability = (np.eye(k)[y].T, probs.T)
        ranking = one_vs_rest(y, probs, positive)
    inputs = {RANKING: ranking, DECISION: (is_positive, decision), LABEL: (y, predicted),
              PROBABILITY: probability, CONFIDENCE: (hit, confidence)}
    return {
        "n": len(y),
        "class_counts": np.bincount(y, minlength=k).astype(int).tolist(),
        "metrics": measure(inputs, resampling),
        "per_class": _per_class(y, probs, predicted, classes),
        "confusion_matrix": _confusion_matrix(y, predicted, classes),
        "calibration": {"kind": "positive-class probability" if k == 2 else "top-label confidence",
                        **reliability(hit, confidence)},
        "accuracy_argmax": float(np.mean(probs.argmax(axis=1) == y)),
    }


def multilabel_report(Y: np.ndarray, P: np.ndarray, findings: list[str], resampling: Resampling) -> dict:
    """Per-finding AUROC (unknown labels, NaN, left out per finding) and their mean over the measurable ones."""
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    truth = np.where(np.isnan(Y), np.nan, Y > 0.5).T
    auroc = METRICS["auroc"].point
    per = {name: {"auroc": auroc(truth[j], P[:, j]), "n_known": int((~np.isnan(truth[j])).sum()),
                  "n_positive": int((truth[j] == 1).sum())} for j, name in enumerate(findings)}
    return {
        "n": len(Y),
        "metrics": measure({RANKING: defined_columns(truth, P.T)}, resampling),
        "per_finding": per,
        "auroc_mean_over": [name for name, v in per.items() if np.isfinite(v["auroc"])],
    }


def ordinal_report(y: np.ndarray, grade: np.ndarray, classes: list[str], resampling: Resampling) -> dict:
    """Mean absolute error of the raw grade; kappa, accuracy and balanced accuracy of the rounded grade."""
    y = np.asarray(y, dtype=np.float64)
    grade = np.asarray(grade, dtype=np.float64)
    k = len(classes)
    true, rounded = (np.clip(np.rint(v), 0, k - 1).astype(np.int64) for v in (y, grade))
    inputs = {GRADE: (y, grade), LABEL: (true, rounded), ORDERED_LABEL: (true, rounded)}
    return {
        "n": len(y),
        "class_counts": np.bincount(true, minlength=k).astype(int).tolist(),
        "metrics": measure(inputs, resampling),
        "confusion_matrix": _confusion_matrix(true, rounded, classes),
    }
