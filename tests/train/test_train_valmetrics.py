"""Validation metrics: the registry's epoch metrics for every task, from raw logits of the gathered split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medxfer.config import TrainConfig
from medxfer.metrics import EPOCH_METRICS
from medxfer.supervised.valmetrics import validation_metrics
from medxfer.train.losses import build_loss, masked_bce


def test_validation_metrics_per_task():
    y = np.array([[1, np.nan], [0, 1], [1, 0], [0, np.nan]], dtype=np.float32)
    logits = np.array([[3, 0], [-3, 2], [2, -2], [-1, 9]], dtype=np.float32)
    m = validation_metrics("multilabel", logits, y, masked_bce, 2)
    assert m["val_auroc"] == 1.0 and m["val_acc"] == 1.0
    g = np.array([0, 1, 2, 3, 4], dtype=np.float32)
    m = validation_metrics("ordinal", (g + 0.2)[:, None], g, build_loss("ordinal", TrainConfig()), 1, 5)
    assert m["val_acc"] == 1.0 and m["val_auroc"] == 1.0 and m["val_mae"] == pytest.approx(0.2)


def test_multiclass_validation_is_sklearn_and_every_key_can_stop_early():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    logits = (rng.normal(size=(80, 2)) + 1.0 * np.eye(2)[y]).astype(np.float32)
    loss = build_loss("multiclass", TrainConfig())
    m = validation_metrics("multiclass", logits, y, loss, 2)
    p1 = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    assert m["val_auroc"] == pytest.approx(skm.roc_auc_score(y, p1), rel=1e-6)
    assert m["val_acc"] == pytest.approx(np.mean(logits.argmax(1) == y)) and m["val_n"] == 80
    assert set(m) - {"val_n"} <= set(EPOCH_METRICS)
    empty = validation_metrics("multiclass", logits[:0], y[:0], loss, 2)
    assert empty["val_n"] == 0 and all(math.isnan(empty[k]) for k in ("val_auroc", "val_acc", "val_loss"))
