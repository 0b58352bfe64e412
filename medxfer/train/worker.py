"""What each Ray Train worker runs: take the shard, prepare the model, loop, report.

Kept short on purpose (Ray's own examples do the same): building the model, the
optimiser, the epoch and the validation live in plain functions elsewhere. This file only
wires them to Ray: the dataset shards, the process group (to gather validation outputs
from every rank) and ``ray.train.report`` with a checkpoint written by rank 0.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time

import torch

from medxfer.config import JobConfig
from medxfer.models import create_model, load_source_weights, reinit_last_stage
from medxfer.train.augment import random_affine_flip
from medxfer.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from medxfer.train.loop import StepSettings, evaluate_epoch, pick_amp_dtype, shard_rows, train_epoch
from medxfer.train.losses import build_loss
from medxfer.train.optim import (
    apply_freeze,
    build_optimizer,
    build_scheduler,
    l2sp_reference,
    set_frozen_norm_eval,
)

log = logging.getLogger("medxfer.train")


def init_model(cfg: JobConfig, plan: dict) -> tuple[torch.nn.Module, dict | None]:
    """The starting network: scratch, ImageNet or a source bundle, then reinit/freeze as configured."""
    init = cfg.model.init
    model = create_model(cfg.model.backbone, plan["num_outputs"], plan["in_chans"], cfg.model.dropout,
                         pretrained="imagenet" if init == "imagenet" else None, stem=plan["stem"])
    report = None
    if init not in ("scratch", "imagenet"):
        from medxfer.bundle import load_bundle

        report = load_source_weights(model, load_bundle(init).state_dict)
    if cfg.train.reinit_last_stage:
        reinit_last_stage(model, seed=cfg.train.seed)
    apply_freeze(model, cfg.train.freeze)
    return model, report


def _all_gather(obj) -> list:
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _broadcast_buffers(model: torch.nn.Module, world: int) -> None:
    import torch.distributed as dist

    if world > 1 and dist.is_available() and dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b.data, src=0)


def sum_across_workers(values: list[float]) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def worker_context(config: dict):
    """What every medxfer worker function starts with: the re-validated config, the plan,
    rank and world size, the device, the seed and the CPU thread count (train and pretrain)."""
    import ray.train
    import ray.train.torch

    from medxfer.runtime import quiet_ray_logs

    quiet_ray_logs()
    cfg = JobConfig.model_validate(config["cfg"])  # re-validated on the worker
    plan = config["plan"]
    ctx = ray.train.get_context()
    torch.manual_seed(cfg.train.seed)
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    if not on_gpu:
        torch.set_num_threads(max(1, int(plan["cpus_per_worker"])))
    return cfg, plan, ctx.get_world_rank(), ctx.get_world_size(), device, on_gpu


def train_func(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg, plan, rank, world, device, on_gpu = worker_context(config)
    tc = cfg.train

    model, _ = init_model(cfg, plan)
    ref = l2sp_reference(model) if tc.l2sp > 0 and cfg.model.init not in ("scratch",) else None
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    raw = getattr(model, "module", model)
    if ref is not None:
        ref = {n: t.to(device) for n, t in ref.items()}
    optimizer = build_optimizer(raw, tc)
    scheduler = build_scheduler(optimizer, tc, plan["steps_per_epoch"])
    state, resumed_from = TrainState(), None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = load_checkpoint(d, raw, optimizer, scheduler)
        resumed_from = state.epoch
    state.run_start_epochs.append(state.epoch)

    task, k = plan["task"], plan["num_outputs"]
    loss_fn = build_loss(task, tc, plan["class_counts"], k)
    val_loss_fn = build_loss(task, tc, train=False)
    settings = StepSettings(device=device, amp_dtype=pick_amp_dtype(device, tc.amp), channels_last=on_gpu,
                            grad_clip=tc.grad_clip, l2sp_reference=ref, l2sp_alpha=tc.l2sp)
    train_shard, val_data = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    gather = _all_gather if world > 1 else None
    es = tc.early_stopping
    end = tc.epochs if tc.max_epochs_this_run is None else min(tc.epochs, state.epoch + tc.max_epochs_this_run)
    run_info = {"resumed_from_epoch": resumed_from, "epochs_total": tc.epochs}
    if state.epoch >= end or (es.patience and state.bad_epochs >= es.patience):
        last = state.history[-1] if state.history else {}
        ray.train.report({**last, **run_info, "epoch": state.epoch, "epochs_this_run": 0, "stopped": "done"})
        return

    t_run = time.perf_counter()
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        model.train()
        set_frozen_norm_eval(model, backbone_too=epoch < tc.head_warmup_epochs)
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch * 101 + rank)
        settings.augment = (functools.partial(random_affine_flip, generator=gen, hflip=tc.hflip)
                            if tc.augment else None)
        batches = train_shard.iter_batches(
            batch_size=tc.batch_size, batch_format="numpy", drop_last=plan["drop_last"],
            local_shuffle_buffer_size=min(plan["rows_per_worker"], max(4 * tc.batch_size, 512)),
            local_shuffle_seed=tc.seed * 7919 + epoch * 31 + rank,
        )
        tr = train_epoch(model, batches, loss_fn, optimizer, scheduler, settings)
        val_batches = shard_rows(val_data.iter_batches(batch_size=cfg.evaluate.batch_size, batch_format="numpy"),
                                 rank, world)
        # The unwrapped model: a rank may get one batch more than another, and a DDP forward is a
        # collective. Rank 0's batch-norm statistics first, so every rank evaluates the same weights.
        _broadcast_buffers(raw, world)
        va = evaluate_epoch(raw, val_batches, task, val_loss_fn, k, settings, gather, plan["num_grades"])
        loss_sum, images, secs = sum_across_workers([tr["train_loss"] * tr["train_images"], tr["train_images"],
                                       tr["train_seconds"]])
        state.epoch = epoch + 1
        metrics = {"epoch": state.epoch, "train_loss": loss_sum / max(images, 1), **va,
                   "lr": optimizer.param_groups[-1]["lr"], "skipped_steps": tr["skipped_steps"],
                   "images_per_s": images / max(secs / world, 1e-9), "epoch_seconds": time.perf_counter() - t0,
                   "time": time.time()}
        improved = state.improved(metrics.get(es.metric), es.mode)
        state.history.append(metrics)
        stop = "early_stopping" if es.patience and state.bad_epochs >= es.patience else None
        if state.epoch >= tc.epochs:
            stop = "complete"
        elif stop is None and state.epoch >= end:
            stop = "max_epochs_this_run"
        if rank == 0:
            shown = " ".join(f"{m} {metrics[m]:.4f}" for m in ("train_loss", "val_loss", "val_acc", "val_auroc")
                             if m in metrics)
            # Through logging, not print: Ray Train tees print() to stdout and its logger (twice on screen).
            log.info("epoch %d/%d %s%s | %.1fs elapsed, %.0f img/s", state.epoch, tc.epochs, shown,
                     " *" if improved else "", time.perf_counter() - t_run, metrics["images_per_s"])
        worst = -1e30 if es.mode == "max" else 1e30
        report = {**metrics, **run_info, "epochs_this_run": state.epoch - state.run_start_epochs[-1],
                  "score": _finite(metrics.get(es.metric)) if _finite(metrics.get(es.metric)) is not None else worst,
                  "best_epoch": state.best_epoch, "stopped": stop}
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                save_checkpoint(d, raw, optimizer, scheduler, state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(report, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{state.epoch:04d}")
        if stop:
            break
