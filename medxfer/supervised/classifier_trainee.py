"""The supervised trainee (source training and fine-tuning): the model, one epoch, one validation.

The stage hands this class to the engine (:class:`medxfer.train.launch.StageInputs`), which builds
it on every rank. Everything that decides the numbers lives in plain functions elsewhere — the step
(:mod:`medxfer.train.loop`), losses, optimiser and schedule, augmentation, the validation metrics
(:mod:`medxfer.supervised.valmetrics`) — and this class only
puts them together for one rank. Validation covers the whole split on any number of ranks:
each rank scores its part and the outputs are gathered, so val AUROC equals the one-process number.
"""

from __future__ import annotations

import functools

import torch

from medxfer.config import JobConfig
from medxfer.models import create_model, load_source_weights, reinit_last_stage, unwrap
from medxfer.supervised.valmetrics import evaluate_epoch
from medxfer.train.augment import random_affine_flip
from medxfer.train.batches import augment_seed
from medxfer.train.checkpoint import state_dict_cpu
from medxfer.train.collectives import all_gather, broadcast_buffers, sum_across_workers
from medxfer.train.loop import StepSettings, pick_amp_dtype, train_epoch
from medxfer.train.losses import build_loss
from medxfer.train.optim import (
    apply_freeze,
    build_optimizer,
    build_scheduler,
    l2sp_reference,
    set_frozen_norm_eval,
)
from medxfer.train.plan import RunPlan
from medxfer.train.rankdata import RankData


def init_model(cfg: JobConfig, plan: RunPlan) -> tuple[torch.nn.Module, dict | None]:
    """The starting network: scratch, ImageNet or a source bundle, then reinit/freeze as configured."""
    init = cfg.model.init
    model = create_model(cfg.model.backbone, plan.num_outputs, plan.in_chans, cfg.model.dropout,
                         pretrained="imagenet" if init == "imagenet" else None, stem=plan.stem)
    report = None
    if init not in ("scratch", "imagenet"):
        from medxfer.lifecycle.bundle import load_bundle

        report = load_source_weights(model, load_bundle(init).state_dict)
    if cfg.train.reinit_last_stage:
        reinit_last_stage(model, seed=cfg.train.seed)
    apply_freeze(model, cfg.train.freeze)
    return model, report


def build_mix(train_cfg, num_classes: int):
    """Mixup and/or CutMix on a batch (torchvision's), or None when both are off."""
    from torchvision.transforms import v2

    ops = [op(alpha=a, num_classes=num_classes) for op, a in ((v2.MixUp, train_cfg.mixup_alpha),
                                                             (v2.CutMix, train_cfg.cutmix_alpha)) if a > 0]
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


class SupervisedTrainee:
    """Classifier training for one rank: ``wrap`` is Ray Train's ``prepare_model`` (DDP when world > 1)."""

    def __init__(self, cfg: JobConfig, plan: RunPlan, data: RankData, device: torch.device, wrap, session):
        tc = cfg.train
        self.cfg, self.plan, self.data, self.session = cfg, plan, data, session
        model, _ = init_model(cfg, plan)
        ref = l2sp_reference(model) if tc.l2sp > 0 and cfg.model.init != "scratch" else None
        on_gpu = device.type == "cuda"
        if on_gpu:
            model = model.to(memory_format=torch.channels_last)
        self.wrapped = wrap(model)
        self.model = unwrap(self.wrapped)
        self.optimizer = build_optimizer(self.model, tc)
        self.scheduler = build_scheduler(self.optimizer, tc, plan.steps_per_epoch)
        self.loss_fn = build_loss(plan.task, tc, plan.class_counts, plan.num_outputs)
        self.val_loss_fn = build_loss(plan.task, tc, train=False)
        # A weight average (EMA) is validated and exported instead of the raw weights when configured.
        self.ema = None
        if tc.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True)
        self.exports_model = self.ema is None
        mix = None
        if tc.mixup_alpha or tc.cutmix_alpha:  # the config admits mixing for multiclass tasks only
            mix = build_mix(tc, plan.num_outputs)
        self.settings = StepSettings(
            device=device, amp_dtype=pick_amp_dtype(device, tc.amp), channels_last=on_gpu, grad_clip=tc.grad_clip,
            l2sp_reference={n: t.to(device) for n, t in ref.items()} if ref is not None else None,
            l2sp_alpha=tc.l2sp, mix=mix,
            after_step=(lambda: self.ema.update_parameters(self.model)) if self.ema is not None else None)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        tc, world = self.cfg.train, self.plan.world
        self.wrapped.train()
        set_frozen_norm_eval(self.model, backbone_too=epoch < tc.head_warmup_epochs)
        gen = torch.Generator().manual_seed(augment_seed(tc.seed, epoch, self.session.rank))
        self.settings.augment = (functools.partial(random_affine_flip, generator=gen, hflip=tc.hflip)
                                 if tc.augment else None)
        steps = self.plan.steps_per_epoch
        tr = train_epoch(self.wrapped, self.data.train(epoch), self.loss_fn, self.optimizer, self.scheduler,
                         self.settings, on_step=lambda k: self.session.step_progress(epoch, k, steps))
        loss_sum, images, secs, skipped, wait = sum_across_workers(
            [tr["train_loss"] * tr["train_images"], tr["train_images"], tr["train_seconds"], tr["skipped_steps"],
             self.data.wait_s])
        return {"train_loss": loss_sum / max(images, 1), "skipped_steps": int(skipped),
                "images_per_s": images / max(secs / world, 1e-9), "data_wait_s": wait / world}

    @property
    def scored_model(self) -> torch.nn.Module:
        """The network validation scores and bundles hold: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict[str, float]:
        # The unwrapped model: a rank may get one batch more than another, and a DDP forward is a collective.
        model = self.scored_model
        broadcast_buffers(model, self.plan.world)
        gather = all_gather if self.plan.world > 1 else None
        return evaluate_epoch(model, self.data.validation(), self.plan.task, self.val_loss_fn,
                              self.plan.num_outputs, self.settings, gather, self.plan.num_grades)

    def export_weights(self) -> dict[str, torch.Tensor]:
        return state_dict_cpu(self.scored_model)

    def extra_state(self) -> dict[str, torch.Tensor] | None:
        return {f"ema.{k}": v for k, v in self.ema.state_dict().items()} if self.ema is not None else None

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.ema is not None:
            self.ema.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
