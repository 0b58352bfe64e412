"""The self-supervised trainee (``medxfer pretrain``): two views, the SSL loss, one epoch.

It plugs into the same epoch driver as supervised training (:mod:`medxfer.train.engine`): the
driver owns checkpoints, resume, the checkpoint policy and stop requests; this module owns what
is particular to pretraining — the SSL wrapper around the backbone, the epoch over two views,
and the export of the backbone's tensors. The model, the epoch and the export are plain
functions that a test runs in-process on a few real images.

Reused from the training plane, so a pretraining run behaves like a training run: the
backbone registry (``create_model``: same key names, same small-image stem), the
optimiser and warm-up + cosine schedule (``build_optimizer``/``build_scheduler``, with the
fine-tuning-only knobs neutralised), the checkpoint folder format (weights, optimiser,
schedule, progress) and its resume, and the non-finite-gradient guard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medxfer.config import JobConfig
from medxfer.errors import MedxferError
from medxfer.models import BACKBONES, create_model, load_source_weights, unwrap
from medxfer.ssl.methods import build_method, byol_momentum
from medxfer.ssl.view_pairs import ViewSpec, two_views
from medxfer.train.loop import Stepper, pick_amp_dtype
from medxfer.train.plan import RunPlan
from medxfer.train.rankdata import RankData

BACKBONE_PREFIX = "backbone."  # Classifier.backbone; the SSL modules name theirs the same way


# ----------------------------------------------------------------------------- model


def build_ssl_model(cfg: JobConfig, in_chans: int, stem: str) -> nn.Module:
    """The SSL module around a fresh medxfer backbone (scratch, ImageNet or a bundle's backbone).

    The backbone is ``create_model(...).backbone`` (the torchvision/SmallCNN net whose
    classifier is already ``Identity``), so the SSL module's ``backbone.*`` tensors carry the
    exact names a ``Classifier`` gives them. ``model.init`` may name a bundle: a supervised
    source model then continues with self-supervision (``supervised+ssl``).
    """
    init = cfg.model.init
    clf = create_model(cfg.model.backbone, 1, in_chans, pretrained="imagenet" if init == "imagenet" else None,
                       stem=stem)
    if init not in ("scratch", "imagenet"):
        from medxfer.lifecycle.bundle import load_bundle

        load_source_weights(clf, load_bundle(init).state_dict)
    feat = BACKBONES[cfg.model.backbone].num_features
    return build_method(cfg.pretrain.method, clf.backbone, feat, cfg.pretrain)


def export_backbone(model_or_state: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors under the standard medxfer names (``backbone.*``), nothing else.

    Projector, predictor and BYOL's target network stay behind: a fine-tuning model loads
    every tensor of this dict and keeps a fresh head.
    """
    sd = model_or_state if isinstance(model_or_state, dict) else unwrap(model_or_state).state_dict()
    out = {k: v.detach().cpu().contiguous() for k, v in sd.items() if k.startswith(BACKBONE_PREFIX)}
    if not out:
        raise MedxferError("no backbone.* tensors in the pretraining checkpoint; was it written by medxfer pretrain?")
    return out


def optim_settings(train_cfg):
    """``train`` settings for pretraining: one learning rate for everything, no head warm-up.

    ``backbone_lr_mult`` and ``head_warmup_epochs`` are fine-tuning knobs; applied here they
    would slow or freeze the very network being pretrained.
    """
    return train_cfg.model_copy(update={"backbone_lr_mult": 1.0, "head_warmup_epochs": 0})


# ----------------------------------------------------------------------------- epoch


@dataclass
class SSLSettings:
    """How a pretraining step runs on this device."""

    views: ViewSpec
    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_clip: float | None = None
    ema_momentum: float = 0.99  # BYOL: base momentum of the target network
    total_steps: int = 0  # BYOL: the momentum reaches 1 at the last step


def _images(batch) -> torch.Tensor:
    x = batch["image"] if isinstance(batch, dict) else batch
    return torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)


def ssl_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    settings: SSLSettings,
    generator: torch.Generator,
    step: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """One pass over ``batches`` (dicts with ``image`` (B,C,H,W), or tensors): two views, loss, step.

    Returns per-step ``losses``, mean ``loss`` and ``repr_std``, ``images``, ``seconds``,
    ``skipped_steps`` and the global ``step`` reached. As in the training loop, a step whose
    (DDP-averaged) gradient norm is not finite is skipped on every rank alike; ten in a row stop.
    """
    t0 = time.perf_counter()
    inner = unwrap(model)
    stepper = Stepper(model, optimizer, scheduler, settings.grad_clip)
    losses, stds, n, k = [], [], 0, 0
    model.train()
    for batch in batches:
        x = _images(batch).to(settings.device, dtype=torch.float32, non_blocking=True)
        v1, v2 = two_views(x, settings.views, generator)
        if settings.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        with torch.autocast(settings.device.type, dtype=settings.amp_dtype or torch.float32,
                            enabled=settings.amp_dtype is not None):
            loss, stats = model(v1, v2)
        if stepper(loss) and hasattr(inner, "update_target"):
            inner.update_target(byol_momentum(settings.ema_momentum, step, settings.total_steps))
        step += 1
        if torch.isfinite(loss):
            losses.append(float(loss.detach()))
            stds.append(float(stats["repr_std"]))
        n += len(x)
        k += 1
        if on_step is not None:
            on_step(k)
    return {
        "losses": losses,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "repr_std": float(np.mean(stds)) if stds else float("nan"),
        "images": n,
        "seconds": time.perf_counter() - t0,
        "skipped_steps": stepper.skipped,
        "step": step,
    }


class SSLTrainee:
    """Pretraining for one rank: ``wrap`` is Ray Train's ``prepare_model`` (DDP when world > 1)."""

    def __init__(self, cfg: JobConfig, plan: RunPlan, data: RankData, device: torch.device, wrap, session):
        from medxfer.train.optim import build_optimizer, build_scheduler

        tc = cfg.train
        self.cfg, self.plan, self.data, self.session = cfg, plan, data, session
        model = build_ssl_model(cfg, plan.in_chans, plan.stem)
        on_gpu = device.type == "cuda"
        if on_gpu:
            model = model.to(memory_format=torch.channels_last)
        self.wrapped = wrap(model)
        self.model = unwrap(self.wrapped)
        otc = optim_settings(tc)
        self.optimizer = build_optimizer(self.model, otc)
        self.scheduler = build_scheduler(self.optimizer, otc, plan.steps_per_epoch)
        self.settings = SSLSettings(
            views=ViewSpec.from_config(cfg), device=device, amp_dtype=pick_amp_dtype(device, tc.amp),
            channels_last=on_gpu, grad_clip=tc.grad_clip, ema_momentum=cfg.pretrain.ema_momentum,
            total_steps=plan.steps_per_epoch * tc.epochs)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        from medxfer.train.batches import augment_seed
        from medxfer.train.collectives import sum_across_workers

        gen = torch.Generator().manual_seed(augment_seed(self.cfg.train.seed, epoch, self.session.rank))
        steps = self.plan.steps_per_epoch
        ep = ssl_epoch(self.wrapped, self.data.train(epoch), self.optimizer, self.scheduler, self.settings, gen,
                       step=epoch * steps, on_step=lambda k: self.session.step_progress(epoch, k, steps))
        n = len(ep["losses"])
        loss_sum, std_sum, n_steps, images, secs, wait = sum_across_workers([
            ep["loss"] * n if n else 0.0, ep["repr_std"] * n if n else 0.0, n, ep["images"], ep["seconds"],
            self.data.wait_s])
        return {"loss": loss_sum / max(n_steps, 1), "repr_std": std_sum / max(n_steps, 1),
                "skipped_steps": ep["skipped_steps"], "images": int(images),
                "images_per_s": images / max(secs / self.plan.world, 1e-9), "data_wait_s": wait / self.plan.world}

    exports_model = True

    def validate(self) -> dict[str, float]:
        return {}

    def export_weights(self) -> dict[str, torch.Tensor]:
        from medxfer.train.checkpoint import state_dict_cpu

        return state_dict_cpu(self.model)

    def extra_state(self) -> None:
        return None

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass
