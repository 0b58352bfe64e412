"""A task's labels and scores as the inputs registered metrics read (see :mod:`medxfer.metrics.registry`).

Validation during training, the experiments' test AUROC and evaluation reports all average
AUROC over the same columns, built here: a binary model's positive-class column, one column per
class (one-vs-rest) or per finding, and for an ordinal grade one column per cut-off
``grade >= k``. Columns where AUROC is undefined on the whole set (one outcome only) are left
out, so the average is over what can be measured; the bootstrap then treats a resample in which
a kept column loses an outcome as undefined.
"""

from __future__ import annotations

import numpy as np

from medxfer.metrics.registry import GRADE, LABEL, RANKING


def defined_columns(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the columns (leading axis) whose known labels hold both outcomes."""
    truth = np.asarray(truth, dtype=np.float64)
    keep = np.array([(t == 1).any() and (t == 0).any() for t in truth], dtype=bool).reshape(len(truth))
    return truth[keep], np.asarray(score, dtype=np.float64)[keep]


def binary_columns(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One column: whether each case is positive, and its positive-class score."""
    return defined_columns(np.asarray(positive, dtype=np.float64)[None], np.asarray(score)[None])


def one_vs_rest(labels: np.ndarray, probs: np.ndarray, positive: int) -> tuple[np.ndarray, np.ndarray]:
    """The AUROC columns of class indices and probabilities (N, K): the positive class alone when K is 2."""
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return binary_columns(labels == positive, probs[:, positive])
    return defined_columns(np.eye(probs.shape[1])[labels].T, probs.T)


def ranking(task: str, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC columns of a task's scores: multiclass one-vs-rest (binary: the last class), multilabel per
    finding (unknown labels, NaN, left out), ordinal per cut-off ``grade >= k``."""
    if task == "multiclass":
        return one_vs_rest(labels, scores, scores.shape[1] - 1)
    if task == "multilabel":
        return defined_columns(np.asarray(labels, dtype=np.float64).T, np.asarray(scores).T)
    grades = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
    score = np.asarray(scores, dtype=np.float64).reshape(len(grades))
    cuts = np.array([grades >= k for k in range(1, int(grades.max(initial=0)) + 1)], dtype=np.float64)
    cuts = cuts.reshape(-1, len(grades))
    return defined_columns(cuts, np.tile(score, (len(cuts), 1)))


def task_kinds(task: str) -> tuple[str, ...]:
    """The inputs :func:`task_inputs` builds for a task."""
    return (RANKING, LABEL, GRADE) if task == "ordinal" else (RANKING, LABEL)


def task_inputs(task: str, scores: np.ndarray, labels: np.ndarray, num_grades: int) -> dict[str, tuple]:
    """What validation measures: AUROC columns, predicted labels, and (ordinal) the raw grade.

    Multiclass labels are the arg-max class; multilabel ones each known finding at 0.5; an
    ordinal grade is rounded and clipped to the grades.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    out: dict[str, tuple] = {RANKING: ranking(task, scores, labels)}
    if task == "multiclass":
        out[LABEL] = (labels.astype(np.int64), scores.argmax(axis=1))
    elif task == "multilabel":
        known = ~np.isnan(labels.astype(np.float64))
        out[LABEL] = ((labels[known] > 0.5).astype(np.int64), (scores[known] > 0.5).astype(np.int64))
    else:
        grade = scores.reshape(len(labels)).astype(np.float64)
        out[LABEL] = (np.rint(labels).astype(np.int64), np.clip(np.rint(grade), 0, max(0, num_grades - 1)).astype(np.int64))
        out[GRADE] = (labels.astype(np.float64), grade)
    return out
