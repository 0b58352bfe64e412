"""Validation metrics computed on the whole (gathered) validation set.

Why gathered: every worker evaluates a disjoint part of the validation set; AUROC is not
an average of per-part AUROCs, so the scores and labels of all parts are gathered and
the metrics computed once — the same numbers one process would get on the whole set.

Which metrics: every registered metric with an epoch name (``val_auroc``, ``val_acc``,
``val_mae``: :data:`medxfer.metrics.EPOCH_METRICS`) whose inputs the task has, computed with the
registry's point functions on the inputs :func:`medxfer.metrics.views.task_inputs` builds, plus
the loss. Early stopping can pick the best epoch by any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from medxfer.metrics import metrics_for
from medxfer.metrics.views import task_inputs, task_kinds
from medxfer.train.loop import StepSettings, collect_outputs


def epoch_metrics(task: str, scores: np.ndarray, labels: np.ndarray, num_grades: int) -> dict[str, float]:
    """``{epoch name: value}`` of the registered epoch metrics; NaN for an empty split."""
    chosen = [m for m in metrics_for(task_kinds(task)) if m.epoch]
    if not len(labels):
        return {m.epoch: float("nan") for m in chosen}
    inputs = task_inputs(task, scores, labels, num_grades)
    return {m.epoch: m.point(*inputs[m.inputs]) for m in chosen}


def validation_metrics(task: str, logits: np.ndarray, labels: np.ndarray, loss_fn, num_outputs: int,
                       num_grades: int | None = None) -> dict[str, float]:
    """val_loss, val_n and the epoch metrics (val_auroc, val_acc; val_mae for ordinal) from raw logits."""
    from medxfer.lifecycle.inference import outputs_to_scores

    lt = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(labels))
    loss = float(loss_fn(lt, yt)) if len(labels) else float("nan")
    scores = outputs_to_scores(lt, task).numpy()
    return {"val_loss": loss, **epoch_metrics(task, scores, np.asarray(labels), num_grades or num_outputs),
            "val_n": int(len(labels))}


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
