"""Validation metrics computed on the whole (gathered) validation set.

Why gathered: every worker evaluates a disjoint part of the validation set; AUROC is not
an average of per-part AUROCs, so the scores and labels of all parts are gathered and
the metrics computed once — the same numbers one process would get on the whole set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def _safe_auc(y: np.ndarray, s: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def macro_auroc(task: str, scores: np.ndarray, labels: np.ndarray, num_outputs: int) -> float:
    """multiclass: one-vs-rest macro (binary: AUROC of the last class); multilabel: mean over
    findings with both outcomes among known labels; ordinal: mean over cut-offs ``grade >= k``."""
    if len(labels) == 0:
        return float("nan")
    if task == "multiclass":
        if scores.shape[1] == 2:
            return _safe_auc(labels == 1, scores[:, 1])
        aucs = [_safe_auc(labels == k, scores[:, k]) for k in range(scores.shape[1])]
    elif task == "multilabel":
        aucs = []
        for k in range(scores.shape[1]):
            known = ~np.isnan(labels[:, k])
            aucs.append(_safe_auc(labels[known, k], scores[known, k]))
    else:
        grades = np.rint(labels).astype(int)
        aucs = [_safe_auc(grades >= k, scores) for k in range(1, int(grades.max(initial=0)) + 1)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def accuracy(task: str, scores: np.ndarray, labels: np.ndarray, num_grades: int) -> float:
    if len(labels) == 0:
        return float("nan")
    if task == "multiclass":
        return float((scores.argmax(1) == labels).mean())
    if task == "multilabel":
        known = ~np.isnan(labels)
        return float(((scores > 0.5) == (labels > 0.5))[known].mean()) if known.any() else float("nan")
    pred = np.clip(np.rint(scores), 0, max(0, num_grades - 1))
    return float((pred == np.rint(labels)).mean())


def validation_metrics(task: str, logits: np.ndarray, labels: np.ndarray, loss_fn, num_outputs: int,
                       num_grades: int | None = None) -> dict[str, float]:
    """val_loss, val_acc, val_auroc (and val_mae for ordinal) from raw logits and labels."""
    from medxfer.inference import outputs_to_scores

    lt = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(labels))
    loss = float(loss_fn(lt, yt)) if len(labels) else float("nan")
    scores = outputs_to_scores(lt, task).numpy()
    out = {
        "val_loss": loss,
        "val_acc": accuracy(task, scores, np.asarray(labels), num_grades or num_outputs),
        "val_auroc": macro_auroc(task, scores, np.asarray(labels), num_outputs),
        "val_n": int(len(labels)),
    }
    if task == "ordinal":
        out["val_mae"] = float(np.abs(scores - np.asarray(labels, dtype=np.float32)).mean())
    return out
