"""medxfer.train.checkpoint: a checkpoint restores model, optimiser, schedule and state."""

from __future__ import annotations

import math

import torch
from trainutil import toy_batches

from medxfer.config import TrainConfig
from medxfer.models import create_model
from medxfer.train.checkpoint import (
    TrainState,
    load_checkpoint,
    read_best_weights,
    read_weights,
    save_checkpoint,
)
from medxfer.train.loop import StepSettings, train_epoch
from medxfer.train.losses import build_loss
from medxfer.train.optim import build_optimizer, build_scheduler


def test_checkpoint_roundtrip_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    cfg = TrainConfig(lr=1e-3, warmup_epochs=1, epochs=4)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 4)
    model.train()
    train_epoch(model, toy_batches(), build_loss("multiclass", cfg), opt, sched, StepSettings())
    state = TrainState(epoch=1)
    assert state.improved(0.7, "max") and not state.improved(0.6, "max") and state.bad_epochs == 1
    save_checkpoint(str(tmp_path), model, opt, sched, state)
    model2 = create_model("smallcnn", 2, 1)
    opt2 = build_optimizer(model2, cfg)
    sched2 = build_scheduler(opt2, cfg, 4)
    got = load_checkpoint(str(tmp_path), model2, opt2, sched2)
    assert got.best_metric == 0.7 and got.bad_epochs == 1 and got.epoch == 1
    assert sched2.last_epoch == sched.last_epoch == 4
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True)
    )
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and torch.equal(s1[0]["exp_avg"], s2[0]["exp_avg"])
    assert math.isclose(opt.param_groups[0]["lr"], opt2.param_groups[0]["lr"])


def test_best_weights_ride_in_the_latest_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    best = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    save_checkpoint(str(tmp_path / "a"), model, None, None, TrainState(epoch=3, best_epoch=3), None)
    assert not (tmp_path / "a" / "best.safetensors").exists()
    assert all(torch.equal(read_best_weights(str(tmp_path / "a"))[k], v) for k, v in model.state_dict().items())
    save_checkpoint(str(tmp_path / "b"), model, None, None, TrainState(epoch=5, best_epoch=3), best)
    got = read_best_weights(str(tmp_path / "b"))
    assert all(torch.equal(got[k], best[k]) for k in best)
    assert all(torch.equal(read_weights(str(tmp_path / "b"))[k], v) for k, v in model.state_dict().items())
