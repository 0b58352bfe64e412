"""One training epoch and the outputs of a validation pass, as plain functions (no Ray in here).

Why plain: the worker (``worker.py``) only wires these to Ray Train shards and a
process group; everything that decides the numbers — the step, clipping, the non-finite
guard, AMP — is here and runs in a unit test on a few in-memory tensors. What a stage makes of
the validation outputs is the stage's (``medxfer.supervised.valmetrics``).

The order inside a step follows torchtitan: forward, loss, backward, clip, check that
the gradient norm is finite, then ``optimizer.step()``. The finite check uses the norm of
the gradients *after* DDP averaged them, which is the same number on every rank, so all
ranks skip (or take) the same steps and their weights never drift apart; a NaN loss on
any rank makes the averaged gradients NaN everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medxfer.errors import MedxferError

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
    mix: Callable | None = None  # (images, labels) -> (mixed images, soft labels): mixup / CutMix
    after_step: Callable[[], None] | None = None  # called after each step taken (a weight average)


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


class Stepper:
    """The optimizer step of every stage: backward, clip, check the gradient norm, step, schedule.

    A step whose gradient norm is not finite is skipped (the schedule still advances, so every
    rank stays on the same learning-rate curve); ``MAX_BAD_STEPS_IN_A_ROW`` in a row stop the run.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, grad_clip: float | None,
                 after_step: Callable[[], None] | None = None):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler, self.grad_clip = optimizer, scheduler, grad_clip
        self.after_step = after_step
        self.skipped, self.bad_in_a_row = 0, 0

    def __call__(self, loss: torch.Tensor) -> bool:
        """Take one step on ``loss``; False when it was skipped."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip or math.inf)
        taken = bool(torch.isfinite(norm))
        if taken:
            self.bad_in_a_row = 0
            self.optimizer.step()
            if self.after_step is not None:
                self.after_step()
        else:
            self.skipped += 1
            self.bad_in_a_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            if self.bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                raise MedxferError(
                    f"non-finite loss or gradients in {self.bad_in_a_row} steps in a row; lower train.lr, "
                    "keep train.grad_clip on, or check the data for NaN pixels"
                )
        if self.scheduler is not None:
            self.scheduler.step()
        return taken


def train_epoch(
    model: nn.Module,
    batches: Iterable[dict],
    loss_fn,
    optimizer: torch.optim.Optimizer,
    scheduler,
    settings: StepSettings,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train over ``batches`` once; returns mean loss, images seen, skipped steps and seconds.

    ``on_step(k)`` is called after the k-th step (progress display)."""
    from medxfer.train.optim import l2sp_penalty

    t0 = time.perf_counter()
    step = Stepper(model, optimizer, scheduler, settings.grad_clip, settings.after_step)
    total, n, k = 0.0, 0, 0
    for batch in batches:
        x, y = batch_tensors(batch, settings)
        if settings.augment is not None:
            x = settings.augment(x)
        if settings.mix is not None:
            x, y = settings.mix(x, y)
        with torch.autocast(settings.device.type, dtype=settings.amp_dtype or torch.float32,
                            enabled=settings.amp_dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if settings.l2sp_reference and settings.l2sp_alpha > 0:
            loss = loss + l2sp_penalty(model, settings.l2sp_reference, settings.l2sp_alpha)
        step(loss)
        if torch.isfinite(loss):
            total += float(loss.detach()) * len(x)
        n += len(x)
        k += 1
        if on_step is not None:
            on_step(k)
    return {"train_loss": total / n if n else float("nan"), "train_images": n, "skipped_steps": step.skipped,
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
