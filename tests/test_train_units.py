"""The training plane's plain functions, without Ray: losses, freezing, LR groups, schedule,
augmentation, the epoch loop, distributed validation and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medxfer.config import TrainConfig
from medxfer.models import create_model
from medxfer.train.augment import random_affine_flip
from medxfer.train.batches import hash_part
from medxfer.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from medxfer.train.loop import StepSettings, evaluate_epoch, train_epoch
from medxfer.train.losses import auto_class_weights, build_loss, focal_loss, masked_bce
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

# ----------------------------------------------------------------------------- losses


def test_class_weights_and_weighted_ce():
    assert auto_class_weights([30, 10]) == pytest.approx([40 / 60, 40 / 20])
    cfg = TrainConfig(loss="weighted_ce", class_weights="auto")
    loss = build_loss("multiclass", cfg, [30, 10])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # a mistake on the rare class costs more than the same mistake on the common one
    assert loss(logits, torch.tensor([1, 1])) > loss(logits, torch.tensor([0, 0]))
    with pytest.raises(Exception, match="expected 2 values"):
        build_loss("multiclass", TrainConfig(loss="weighted_ce", class_weights=[1.0]), [3, 1])


def test_label_smoothing_and_focal():
    logits, y = torch.tensor([[5.0, -5.0]]), torch.tensor([0])
    plain = build_loss("multiclass", TrainConfig())(logits, y)
    smooth = build_loss("multiclass", TrainConfig(label_smoothing=0.2))(logits, y)
    assert smooth > plain
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert focal_loss(logits, y, gamma=0.0) == pytest.approx(float(ce), rel=1e-5)
    assert focal_loss(logits, y, gamma=2.0) < ce  # easy examples are down-weighted


def test_masked_bce_ignores_unknown_and_ordinal_mse():
    logits = torch.tensor([[3.0, -100.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert masked_bce(logits, target) == pytest.approx(float(known))
    all_unknown = masked_bce(logits.requires_grad_(), torch.full((2, 2), float("nan")))
    assert float(all_unknown.detach()) == 0.0 and all_unknown.requires_grad
    mse = build_loss("ordinal", TrainConfig())
    assert mse(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 3.0])) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- freezing and LR


def _batches(n=64, bs=16, seed=0, size=16):
    """Two classes that differ in brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 1, size, size)).astype(np.float32) * 0.5 + (y[:, None, None, None] * 1.5 - 0.75)
    paths = np.array([f"img{i}.png" for i in range(n)])
    return [{"image": x[i : i + bs], "label": y[i : i + bs], "path": paths[i : i + bs]} for i in range(0, n, bs)]


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
    train_epoch(model, _batches(), build_loss("multiclass", cfg), opt, None, StepSettings(grad_clip=1.0))
    after = model.state_dict()
    frozen_prefix = ("backbone.",) if freeze == "backbone" else ("backbone.block1", "backbone.block2", "backbone.block3")
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


# ----------------------------------------------------------------------------- augmentation and loop


def test_augment_is_random_per_image_and_reproducible():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16).repeat(2, 1, 1, 1)
    a = random_affine_flip(x, torch.Generator().manual_seed(0))
    b = random_affine_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a[0], a[2])  # same input image, different draw
    assert a.min() >= x.min() - 1e-4 and a.max() <= x.max() + 1e-4  # border fill, no new extremes


def test_train_epoch_learns_and_skips_non_finite():
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    cfg = TrainConfig(lr=3e-3, warmup_epochs=0)
    loss_fn, val_loss = build_loss("multiclass", cfg), build_loss("multiclass", cfg, train=False)
    opt = build_optimizer(model, cfg)
    settings = StepSettings(grad_clip=1.0, augment=lambda t: random_affine_flip(t, torch.Generator().manual_seed(1)))
    for epoch in range(3):
        model.train()
        tr = train_epoch(model, _batches(seed=epoch), loss_fn, opt, None, settings)
    va = evaluate_epoch(model, _batches(seed=9), "multiclass", val_loss, 2, StepSettings())
    assert tr["train_images"] == 64 and va["val_n"] == 64
    assert va["val_auroc"] > 0.9 and va["val_acc"] > 0.8
    # a NaN image makes gradients non-finite: the step is skipped, weights stay finite and unchanged
    bad = _batches(n=16)
    bad[0]["image"][0, 0, 0, 0] = np.nan
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    model.eval()  # keep BN stats out of it
    out = train_epoch(model, bad, loss_fn, opt, None, StepSettings(grad_clip=1.0))
    assert out["skipped_steps"] == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_distributed_validation_equals_single_process():
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1).eval()
    loss = build_loss("multiclass", TrainConfig(), train=False)
    batches = _batches(n=61, bs=8)
    whole = evaluate_epoch(model, batches, "multiclass", loss, 2, StepSettings())
    # two ranks see the batches in different orders; each keeps its hash part; the gather joins them
    parts = []
    from medxfer.train.loop import collect_outputs

    for rank, order in ((0, batches), (1, batches[::-1])):
        parts.append(collect_outputs(model, hash_part(order, rank, 2), StepSettings()))
    assert sum(len(p[1]) for p in parts) == 61 and all(len(p[1]) > 10 for p in parts)
    dist = evaluate_epoch(model, [], "multiclass", loss, 2, StepSettings(), gather=lambda _obj: parts)
    for k in ("val_loss", "val_acc", "val_auroc", "val_n"):
        assert dist[k] == pytest.approx(whole[k], rel=1e-6), k
    # rank 0 alone would give a different AUROC: the gather matters
    only0 = evaluate_epoch(model, hash_part(batches, 0, 2), "multiclass", loss, 2, StepSettings())
    assert only0["val_n"] < 61


def test_checkpoint_roundtrip_restores_everything(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    cfg = TrainConfig(lr=1e-3, warmup_epochs=1, epochs=4)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 4)
    model.train()
    train_epoch(model, _batches(), build_loss("multiclass", cfg), opt, sched, StepSettings())
    state = TrainState(epoch=1)
    assert state.improved(0.7, "max") and not state.improved(0.6, "max") and state.bad_epochs == 1
    save_checkpoint(str(tmp_path), model, opt, sched, state)
    model2 = create_model("smallcnn", 2, 1)
    opt2 = build_optimizer(model2, cfg)
    sched2 = build_scheduler(opt2, cfg, 4)
    got = load_checkpoint(str(tmp_path), model2, opt2, sched2)
    assert got.best_metric == 0.7 and got.bad_epochs == 1 and got.epoch == 1
    assert sched2.last_epoch == sched.last_epoch == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True))
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and torch.equal(s1[0]["exp_avg"], s2[0]["exp_avg"])
    assert math.isclose(opt.param_groups[0]["lr"], opt2.param_groups[0]["lr"])


# ----------------------------------------------------------------------------- driver checks (no Ray)


def test_plan_and_source_checks(tmp_path, test_data):
    from evalutil import breast_job, breast_manifest

    from medxfer.bundle import save_bundle
    from medxfer.config import JobConfig, PreprocessConfig
    from medxfer.config_io import validate_dict
    from medxfer.data.cache import prepare
    from medxfer.errors import ConfigError
    from medxfer.train.jobs import check_source
    from medxfer.train.plan import plan_training

    cfg = breast_job(str(tmp_path / "root"), breast_manifest(test_data, tmp_path / "breast"),
                     train={"batch_size": 16, "loss": "weighted_ce"}, scaling={"num_workers": 2})
    prepared = prepare(cfg)  # a real cache of BreastMNIST, made in this process
    plan = plan_training(cfg, "finetune", prepared, 101, use_gpu=False)
    # 50 rows per rank: 3 full batches of 16 and a last batch of 2 (kept; only a batch of 1 is skipped)
    assert plan.rows_per_worker == 50 and plan.steps_per_epoch == 4 and not plan.drop_partial
    assert plan.stem == "standard" and plan.in_chans == 1 and plan.num_outputs == 2
    counts = prepared.card["counts"]["train"]
    assert plan.class_counts == tuple(counts["per_class"][c] for c in prepared.classes)
    assert sum(plan.class_counts) == counts["total"]
    assert plan.data.mode == "memory" and plan.data.caches == (prepared.uri,)
    with pytest.raises(ConfigError, match="train.early_stopping.metric: expected one of val_auroc"):
        validate_dict({"train": {"early_stopping": {"metric": "val_auc"}}})

    uri = str(tmp_path / "src")
    save_bundle(uri, create_model("smallcnn", 2, 1).state_dict(),
                {"task": "multiclass", "classes": ["a", "b"], "backbone": "smallcnn", "in_chans": 1,
                 "num_outputs": 2, "preprocess": PreprocessConfig(channels=1).model_dump(mode="json")})
    ok = JobConfig.model_validate({"model": {"backbone": "smallcnn", "init": uri}})
    assert check_source(ok).card["backbone"] == "smallcnn"
    with pytest.raises(ConfigError, match="set model.backbone: smallcnn"):
        check_source(JobConfig.model_validate({"model": {"backbone": "resnet18", "init": uri}}))


def test_reused_run_name_with_other_model_is_refused(tmp_path):
    from medxfer.config import JobConfig
    from medxfer.config_io import dump_yaml
    from medxfer.errors import ConfigError
    from medxfer.runs import SNAPSHOT, check_run

    cfg = JobConfig.model_validate({"name": "r", "model": {"backbone": "smallcnn"}})
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    other = JobConfig.model_validate({"name": "r", "model": {"backbone": "resnet18"}, "preprocess": {"size": 32}})
    assert check_run(other, str(tmp_path)) is None  # nothing trained yet (no checkpoint): the run starts afresh
    (tmp_path / SNAPSHOT).write_text("{}")
    resume = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_epochs_this_run": 3})})
    assert check_run(resume, str(tmp_path)) is None  # same model, another stopping point: resumes
    with pytest.raises(ConfigError, match=r"model\.backbone: 'smallcnn' -> 'resnet18'; preprocess\.size: 64 -> 32"):
        check_run(other, str(tmp_path))
    assert check_run(cfg.model_copy(update={"train": TrainConfig(epochs=99)}), str(tmp_path)) is None  # continues
    with pytest.raises(ConfigError, match=r"train\.epochs: 10 -> 5.*new name"):  # fewer than it was trained for
        check_run(cfg.model_copy(update={"train": TrainConfig(epochs=5)}), str(tmp_path))
