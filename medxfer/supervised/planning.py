"""The plan of a supervised run — ``source-train``, ``finetune``, and an experiment's trial — on one
prepared dataset.

Why one planner for the command and the trial: a trial *is* a fine-tune with overrides, and the
label-efficiency experiment measures a recipe only if its trial takes the steps ``medxfer
finetune`` takes with the same settings. Both plan here; the engine's rules (shards, steps, the
in-memory limit) come from :mod:`medxfer.train.plan`. Pure: no Ray, no storage beyond the cache's
card and, with a label fraction, its row list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.config import JobConfig
from medxfer.train.plan import (
    DataPlan,
    RunPlan,
    data_mode,
    in_memory_limit,
    shard_rows,
    split_bytes,
    steps_per_epoch,
    workers,
)

if TYPE_CHECKING:
    from medxfer.data.cache import PreparedData


def plan_training(cfg: JobConfig, stage: str, prepared: PreparedData, n_train: int, use_gpu: bool,
                  persist: bool = True, worker_memory: float | None = None, n_val: int = 0) -> RunPlan:
    """The plan of a source-train or finetune run on ``prepared``.

    In memory, every worker holds the training and the validation split (``n_val`` images), so
    both count against the limit (:func:`medxfer.train.plan.in_memory_limit`)."""
    from medxfer.models import stem_for_size
    from medxfer.train.losses import resolve_class_weights

    world, bs = workers(cfg), cfg.train.batch_size
    rows = shard_rows(n_train, world)
    counts = tuple(int(c) for c in prepared.class_counts("train")) if prepared.task == "multiclass" else None
    if counts is not None and cfg.train.loss in ("weighted_ce", "focal"):
        resolve_class_weights(cfg.train.class_weights, counts, prepared.num_outputs)  # validates early
    spec = prepared.spec
    limit = in_memory_limit(cfg, worker_memory)
    mode = data_mode(split_bytes(n_train + n_val, tuple(prepared.image_shape)), limit)
    return RunPlan(
        stage=stage, task=prepared.task, num_outputs=int(prepared.num_outputs), num_grades=len(prepared.classes),
        in_chans=int(spec.channels), stem=stem_for_size(spec.size, cfg.model.stem),
        class_counts=counts, train_rows=n_train, world=world, rows_per_worker=rows, batch_size=bs,
        drop_partial=False, steps_per_epoch=steps_per_epoch(rows, bs, False), use_gpu=use_gpu,
        cpus_per_worker=cfg.scaling.cpus_per_worker,
        data=DataPlan(caches=(prepared.uri,), mode=mode, label_fraction=prepared.label_fraction,
                      label_seed=prepared.label_seed, limit_bytes=limit),
        persist=persist,
    )


def plan_trial(cfg: JobConfig, prepared: PreparedData) -> RunPlan:
    """The plan of an experiment's trial: the fine-tune run of ``cfg`` on its training rows as served
    (after ``label_fraction``), on the CPU, with nothing written (the trial returns its weights)."""
    return plan_training(cfg, "finetune", prepared, prepared.rows("train"), use_gpu=False, persist=False)
