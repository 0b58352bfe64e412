"""What each Ray Train worker runs for ``medxfer pretrain``, and the plain functions it is made of.

The shape follows ``medxfer.train.worker``: ``pretrain_func`` only wires Ray (the shard, DDP,
``report`` with a checkpoint written by rank 0); the model, the epoch and the export of the
backbone are plain functions that a test runs in-process on a few real images.

Reused from the training plane, so a pretraining run behaves like a training run: the
backbone registry (``create_model``: same key names, same small-image stem), the
optimiser and warm-up + cosine schedule (``build_optimizer``/``build_scheduler``, with the
fine-tuning-only knobs neutralised), the checkpoint folder format (weights, optimiser,
schedule, progress) and its resume, and the non-finite-gradient guard.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medxfer.config import JobConfig
from medxfer.errors import MedxferError
from medxfer.models import BACKBONES, create_model, load_source_weights, unwrap
from medxfer.ssl.augment import ViewSpec, two_views
from medxfer.ssl.methods import build_method, byol_momentum
from medxfer.train.loop import MAX_BAD_STEPS_IN_A_ROW, pick_amp_dtype

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
        from medxfer.bundle import load_bundle

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
) -> dict:
    """One pass over ``batches`` (dicts with ``image`` (B,C,H,W), or tensors): two views, loss, step.

    Returns per-step ``losses``, mean ``loss`` and ``repr_std``, ``images``, ``seconds``,
    ``skipped_steps`` and the global ``step`` reached. As in the training loop, a step whose
    (DDP-averaged) gradient norm is not finite is skipped on every rank alike; ten in a row stop.
    """
    t0 = time.perf_counter()
    inner = unwrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, stds, n, skipped, bad = [], [], 0, 0, 0
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
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip or math.inf)
        if not torch.isfinite(norm):
            skipped += 1
            bad += 1
            optimizer.zero_grad(set_to_none=True)
            if bad >= MAX_BAD_STEPS_IN_A_ROW:
                raise MedxferError(
                    f"non-finite pretraining loss or gradients in {bad} steps in a row; lower train.lr, "
                    "keep train.grad_clip on, or check the data for NaN pixels"
                )
        else:
            bad = 0
            optimizer.step()
            if hasattr(inner, "update_target"):
                inner.update_target(byol_momentum(settings.ema_momentum, step, settings.total_steps))
        if scheduler is not None:
            scheduler.step()
        step += 1
        if torch.isfinite(loss):
            losses.append(float(loss.detach()))
            stds.append(float(stats["repr_std"]))
        n += len(x)
    return {
        "losses": losses,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "repr_std": float(np.mean(stds)) if stds else float("nan"),
        "images": n,
        "seconds": time.perf_counter() - t0,
        "skipped_steps": skipped,
        "step": step,
    }


# ----------------------------------------------------------------------------- Ray worker


def pretrain_func(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from medxfer.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
    from medxfer.train.optim import build_optimizer, build_scheduler
    from medxfer.train.worker import sum_across_workers, worker_context

    cfg, plan, rank, world, device, on_gpu = worker_context(config)
    tc = cfg.train

    model = build_ssl_model(cfg, plan["in_chans"], plan["stem"])
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    raw = unwrap(model)
    otc = optim_settings(tc)
    optimizer = build_optimizer(raw, otc)
    scheduler = build_scheduler(optimizer, otc, plan["steps_per_epoch"])
    state, resumed_from = TrainState(), None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = load_checkpoint(d, raw, optimizer, scheduler)
        resumed_from = state.epoch
    state.run_start_epochs.append(state.epoch)

    settings = SSLSettings(
        views=ViewSpec.from_config(cfg), device=device, amp_dtype=pick_amp_dtype(device, tc.amp),
        channels_last=on_gpu, grad_clip=tc.grad_clip, ema_momentum=cfg.pretrain.ema_momentum,
        total_steps=plan["steps_per_epoch"] * tc.epochs,
    )
    shard = ray.train.get_dataset_shard("train")
    end = tc.epochs if tc.max_epochs_this_run is None else min(tc.epochs, state.epoch + tc.max_epochs_this_run)
    run_info = {"resumed_from_epoch": resumed_from, "epochs_total": tc.epochs}
    if state.epoch >= end:
        last = state.history[-1] if state.history else {}
        ray.train.report({**last, **run_info, "epoch": state.epoch, "epochs_this_run": 0, "stopped": "done"})
        return

    t_run = time.perf_counter()
    step = state.epoch * plan["steps_per_epoch"]
    bs = plan["batch_size"]
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch * 101 + rank)
        batches = shard.iter_batches(
            batch_size=bs, batch_format="numpy", drop_last=True,  # batch norm needs >= 2 images
            local_shuffle_buffer_size=min(plan["rows_per_worker"], max(4 * bs, 512)),
            local_shuffle_seed=tc.seed * 7919 + epoch * 31 + rank,
        )
        ep = ssl_epoch(model, batches, optimizer, scheduler, settings, gen, step)
        step = ep["step"]
        n_loss = len(ep["losses"])
        loss_sum, std_sum, n_steps, images, secs = sum_across_workers([ep["loss"] * n_loss if n_loss else 0.0,
                                                         ep["repr_std"] * n_loss if n_loss else 0.0,
                                                         n_loss, ep["images"], ep["seconds"]])
        state.epoch = epoch + 1
        metrics = {
            "epoch": state.epoch,
            "loss": loss_sum / max(n_steps, 1),
            "repr_std": std_sum / max(n_steps, 1),
            "lr": optimizer.param_groups[-1]["lr"],
            "skipped_steps": ep["skipped_steps"],
            "images": int(images),
            "images_per_s": images / max(secs / world, 1e-9),
            "epoch_seconds": time.perf_counter() - t0,
        }
        state.history.append(metrics)
        stop = "complete" if state.epoch >= tc.epochs else ("max_epochs_this_run" if state.epoch >= end else None)
        if rank == 0:
            print(f"[medxfer] pretrain ({cfg.pretrain.method}) epoch {state.epoch}/{tc.epochs} "
                  f"loss {metrics['loss']:.4f} repr_std {metrics['repr_std']:.3f} | "
                  f"{time.perf_counter() - t_run:.1f}s elapsed, {metrics['images_per_s']:.0f} img/s", flush=True)
        report = {**metrics, **run_info, "epochs_this_run": state.epoch - state.run_start_epochs[-1], "stopped": stop}
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                save_checkpoint(d, raw, optimizer, scheduler, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(report, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{state.epoch:04d}")
        if stop:
            break
