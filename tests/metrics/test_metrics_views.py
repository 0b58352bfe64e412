"""The inputs a task's labels and scores give the registry: the AUROC columns validation, experiments and
reports share, and the labels validation measures accuracy on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer.metrics import METRICS
from medxfer.metrics.registry import GRADE, LABEL, RANKING
from medxfer.metrics.views import ranking, task_inputs


def _probs(n, k, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[y]
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_multiclass_columns_binary_is_the_last_class_and_k_classes_one_vs_rest():
    auroc = METRICS["auroc"].point
    y, p = _probs(200, 2)
    truth, score = ranking("multiclass", p, y)
    assert truth.shape == (1, 200) and auroc(truth, score) == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    y, p = _probs(300, 4)
    assert auroc(*ranking("multiclass", p, y)) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    # A class absent from the split is left out of the mean instead of making it undefined.
    present = y != 3
    truth, _ = ranking("multiclass", p[present], y[present])
    assert len(truth) == 3


def test_multilabel_columns_leave_unknown_labels_out_and_ordinal_columns_are_cut_offs():
    auroc = METRICS["auroc"].point
    y = np.array([[1, np.nan], [0, 1], [1, 0], [0, np.nan]], dtype=np.float32)
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.99]])
    assert auroc(*ranking("multilabel", s, y)) == 1.0
    grades = np.array([0, 1, 2, 2, 0, 1], dtype=np.float32)
    score = np.array([0.1, 1.2, 1.9, 2.4, 0.6, 0.5])
    truth, cols = ranking("ordinal", score, grades)
    assert truth.shape == (2, 6) and (truth[1] == (grades >= 2)).all() and (cols == score).all()
    want = np.mean([skm.roc_auc_score(grades >= k, score) for k in (1, 2)])
    assert auroc(truth, cols) == pytest.approx(want)


def test_validation_inputs_per_task():
    y, p = _probs(50, 3)
    got = task_inputs("multiclass", p, y, 3)
    assert set(got) == {RANKING, LABEL} and (got[LABEL][1] == p.argmax(1)).all()
    labels = np.array([[1, np.nan], [0, 1]], dtype=np.float32)
    got = task_inputs("multilabel", np.array([[0.9, 0.2], [0.6, 0.7]]), labels, 2)
    assert got[LABEL][0].tolist() == [1, 0, 1] and got[LABEL][1].tolist() == [1, 1, 1]
    got = task_inputs("ordinal", np.array([0.2, 1.6, 7.0]), np.array([0.0, 2.0, 4.0]), 5)
    assert got[LABEL][1].tolist() == [0, 2, 4] and set(got) == {RANKING, LABEL, GRADE}
