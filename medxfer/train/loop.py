"""One training epoch and one validation pass, as plain functions (no Ray in here).

Why plain: the worker (``worker.py``) only wires these to Ray Train shards and a
process group; everything that decides the numbers — the step, clipping, the non-finite
guard, AMP, the metrics — is here and runs in a unit test on a few in-memory tensors.

The order inside a step follows torchtitan: forward, loss, backward, clip, check that
the gradient norm is finite, then ``optimizer.step()``. The finite check uses the norm of
the gradients *after* DDP averaged them, which is the same number on every rank, so all
ranks skip (or take) the same steps and their weights never drift apart; a NaN loss on
any rank makes the averaged gradients NaN everywhere.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medxfer.errors import MedxferError
from medxfer.train.valmetrics import validation_metrics

MAX_BAD_STEPS_IN_A_ROW = 10


@dataclass
class StepSettings:
    """How a step runs on this device."""

    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None  # bf16 on GPUs that support it, else None (fp32)
    channels_last: bool = False
    grad_clip: float | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    l2sp_reference: dict[str, torch.Tensor] | None = None
    l2sp_alpha: float = 0.0


def pick_amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """bf16 autocast on a CUDA device that supports it; fp32 otherwise (no loss scaling needed)."""
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


def batch_tensors(batch: dict, settings: StepSettings) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch["image"]
    y = batch["label"]
    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
    y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y))
    x = x.to(settings.device, dtype=torch.float32, non_blocking=True)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(settings.device, non_blocking=True)


def shard_rows(batches: Iterable[dict], rank: int, world: int) -> Iterable[dict]:
    """Keep the rows this rank evaluates: those whose path hashes to ``rank`` (mod ``world``).

    Every rank reads the whole (unsplit) validation set; selecting by a hash of the path,
    not by position, gives disjoint parts that cover every row whatever order each rank
    sees them in — so the gathered set is exactly the validation set, nothing dropped.
    """
    for b in batches:
        if world <= 1:
            yield b
            continue
        keep = np.array([zlib.crc32(str(p).encode()) % world == rank for p in b["path"]], dtype=bool)
        if keep.any():
            yield {k: (v[keep] if isinstance(v, np.ndarray) else np.asarray(v)[keep]) for k, v in b.items()}


def train_epoch(
    model: nn.Module,
    batches: Iterable[dict],
    loss_fn,
    optimizer: torch.optim.Optimizer,
    scheduler,
    settings: StepSettings,
) -> dict[str, float]:
    """Train over ``batches`` once; returns mean loss, images seen, skipped steps and seconds."""
    from medxfer.train.optim import l2sp_penalty

    t0 = time.perf_counter()
    total, n, skipped, bad_in_a_row = 0.0, 0, 0, 0
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        x, y = batch_tensors(batch, settings)
        if settings.augment is not None:
            x = settings.augment(x)
        with torch.autocast(settings.device.type, dtype=settings.amp_dtype or torch.float32,
                            enabled=settings.amp_dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if settings.l2sp_reference and settings.l2sp_alpha > 0:
            loss = loss + l2sp_penalty(model, settings.l2sp_reference, settings.l2sp_alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip or math.inf)
        if not torch.isfinite(norm):
            skipped += 1
            bad_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                raise MedxferError(
                    f"non-finite loss or gradients in {bad_in_a_row} steps in a row; lower train.lr, "
                    "keep train.grad_clip on, or check the data for NaN pixels"
                )
        else:
            bad_in_a_row = 0
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if torch.isfinite(loss):
            total += float(loss.detach()) * len(x)
        n += len(x)
    return {"train_loss": total / n if n else float("nan"), "train_images": n, "skipped_steps": skipped,
            "train_seconds": time.perf_counter() - t0}


@torch.no_grad()
def collect_outputs(model: nn.Module, batches: Iterable[dict], settings: StepSettings) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels of every row in ``batches``, in order."""
    model.eval()
    outs, labels = [], []
    for batch in batches:
        x, _ = batch_tensors(batch, settings)
        with torch.autocast(settings.device.type, dtype=settings.amp_dtype or torch.float32,
                            enabled=settings.amp_dtype is not None):
            logits = model(x)
        outs.append(logits.float().cpu().numpy())
        labels.append(np.asarray(batch["label"]))
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(outs), np.concatenate(labels)


def evaluate_epoch(
    model: nn.Module,
    batches: Iterable[dict],
    task: str,
    loss_fn,
    num_outputs: int,
    settings: StepSettings,
    gather: Callable[[object], list] | None = None,
    num_grades: int | None = None,
) -> dict[str, float]:
    """Validation metrics over the union of every rank's batches (``gather`` returns all ranks' parts)."""
    logits, labels = collect_outputs(model, batches, settings)
    parts = gather((logits, labels)) if gather is not None else [(logits, labels)]
    parts = [p for p in parts if len(p[1])]
    if parts:
        logits = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
    return validation_metrics(task, logits, labels, loss_fn, num_outputs, num_grades)
