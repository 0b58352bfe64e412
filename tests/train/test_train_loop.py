"""medxfer.train.loop: the train step and validation outputs every stage shares (with the supervised
stage's validation metrics), without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainutil import toy_batches

from medxfer.config import TrainConfig
from medxfer.models import create_model
from medxfer.supervised.valmetrics import evaluate_epoch
from medxfer.train.augment import random_affine_flip
from medxfer.train.loop import StepSettings, collect_outputs, train_epoch
from medxfer.train.losses import build_loss
from medxfer.train.optim import build_optimizer


def test_train_epoch_learns_and_skips_non_finite():
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    cfg = TrainConfig(lr=3e-3, warmup_epochs=0)
    loss_fn, val_loss = build_loss("multiclass", cfg), build_loss("multiclass", cfg, train=False)
    opt = build_optimizer(model, cfg)
    settings = StepSettings(
        grad_clip=1.0, augment=lambda t: random_affine_flip(t, torch.Generator().manual_seed(1))
    )
    for epoch in range(3):
        model.train()
        tr = train_epoch(model, toy_batches(seed=epoch), loss_fn, opt, None, settings)
    va = evaluate_epoch(model, toy_batches(seed=9), "multiclass", val_loss, 2, StepSettings())
    assert tr["train_images"] == 64 and va["val_n"] == 64
    assert va["val_auroc"] > 0.9 and va["val_acc"] > 0.8
    # a NaN image makes gradients non-finite: the step is skipped, weights stay finite and unchanged
    bad = toy_batches(n=16)
    bad[0]["image"][0, 0, 0, 0] = np.nan
    before = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    model.eval()  # keep BN stats out of it
    out = train_epoch(model, bad, loss_fn, opt, None, StepSettings(grad_clip=1.0))
    assert out["skipped_steps"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_distributed_validation_equals_single_process():
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1).eval()
    loss = build_loss("multiclass", TrainConfig(), train=False)
    batches = toy_batches(n=61, bs=8)
    whole = evaluate_epoch(model, batches, "multiclass", loss, 2, StepSettings())
    # two ranks each score every other batch (as streamed validation splits its pieces); the gather joins them
    parts = [collect_outputs(model, batches[rank::2], StepSettings()) for rank in (0, 1)]
    assert sum(len(p[1]) for p in parts) == 61 and all(len(p[1]) > 10 for p in parts)
    dist = evaluate_epoch(model, [], "multiclass", loss, 2, StepSettings(), gather=lambda _obj: parts)
    for k in ("val_loss", "val_acc", "val_auroc", "val_n"):
        assert dist[k] == pytest.approx(whole[k], rel=1e-6), k
    # rank 0 alone would give a different AUROC: the gather matters
    only0 = evaluate_epoch(model, batches[0::2], "multiclass", loss, 2, StepSettings())
    assert only0["val_n"] < 61
