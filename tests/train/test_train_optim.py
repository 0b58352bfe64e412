"""medxfer.train.optim: freezing, layer-wise LR groups, the schedule and L2-SP, without Ray."""

from __future__ import annotations

import pytest
import torch
from trainutil import toy_batches

from medxfer.config import TrainConfig
from medxfer.models import create_model
from medxfer.train.loop import StepSettings, train_epoch
from medxfer.train.losses import build_loss
from medxfer.train.optim import (
    apply_freeze,
    build_optimizer,
    build_scheduler,
    l2sp_penalty,
    l2sp_reference,
    lr_factor,
    param_groups,
    set_frozen_norm_eval,
)


@pytest.mark.parametrize("freeze", ["backbone", "partial:1"])
def test_frozen_parameters_do_not_change(freeze):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    frozen = apply_freeze(model, freeze)
    assert frozen and not any(n.startswith("head.") for n in frozen)
    if freeze == "partial:1":
        assert not any(n.startswith("backbone.block4") for n in frozen)
        assert any(n.startswith("backbone.block3") for n in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, warmup_epochs=0)
    opt = build_optimizer(model, cfg)
    model.train()
    set_frozen_norm_eval(model)
    train_epoch(model, toy_batches(), build_loss("multiclass", cfg), opt, None, StepSettings(grad_clip=1.0))
    after = model.state_dict()
    frozen_prefix = (
        ("backbone.",) if freeze == "backbone" else ("backbone.block1", "backbone.block2", "backbone.block3")
    )
    checked = [k for k in before if k.startswith(frozen_prefix)]
    assert len(checked) > len(frozen)  # weights and batch-norm statistics
    for k in checked:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_layerwise_lr_groups_and_schedule():
    model = create_model("smallcnn", 2, 1)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, backbone_lr_mult=0.1)
    by = {g["name"]: g for g in groups}
    assert by["head"]["lr"] == pytest.approx(1e-3) and by["backbone"]["lr"] == pytest.approx(1e-4)
    assert by["backbone_no_decay"]["weight_decay"] == 0.0 and by["backbone"]["weight_decay"] == 0.05
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))
    # warm-up rises linearly, cosine decays to 0
    assert lr_factor(0, 10, 5, 1.0, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_factor(49, 10, 5, 1.0, "cosine") < 0.01
    # head warm-up (LP-FT): backbone LR is 0 for the first epoch, then follows the schedule
    cfg = TrainConfig(lr=1e-3, backbone_lr_mult=0.1, head_warmup_epochs=1, warmup_epochs=0, epochs=3)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone"] == 0.0 and lrs["head"] == pytest.approx(1e-3)
    for _ in range(4):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["backbone"] > 0 and lrs["backbone"] == pytest.approx(lrs["head"] * 0.1)


def test_l2sp_pulls_toward_reference():
    model = create_model("smallcnn", 2, 1)
    ref = l2sp_reference(model)
    assert "head.weight" not in ref and float(l2sp_penalty(model, ref, 1.0)) == 0.0
    with torch.no_grad():
        model.backbone.block1[0].weight.add_(1.0)
    expect = 0.5 * 0.3 * model.backbone.block1[0].weight.numel()
    assert float(l2sp_penalty(model, ref, 0.3)) == pytest.approx(expect, rel=1e-4)
