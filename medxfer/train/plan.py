"""The run plan: everything a worker needs besides the job config, decided once on the driver.

Each stage plans its own runs (:func:`medxfer.supervised.planning.plan_training`,
:func:`medxfer.ssl.pretrain.plan_pretraining`) with the rules here: the record, the shards, the
steps per epoch, and whether the splits fit in a worker's memory or stream.

Why a frozen dataclass and not a dict: the plan crosses a process boundary (driver -> Ray
Train workers, or an experiment's trial task) and every field is read in several places; a
typed, immutable record makes a missing or misspelt field an error at the driver, not a
``KeyError`` in a worker an hour later. Planning is pure (no Ray, no storage), so it is
unit-tested on its own.

The batch rules are the same for every stage and every executor, so that an experiment's
trial and ``medxfer finetune`` with the same settings take exactly the same steps:

- each of ``world`` ranks trains on ``rows_per_worker = rows // world`` images per epoch
  (equal shards keep DDP's step counts equal);
- supervised stages skip a last batch of a single image (batch norm cannot normalise one),
  self-supervised pretraining drops every partial last batch (its losses compare whole
  batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medxfer.config import JobConfig
from medxfer.errors import DataError

if TYPE_CHECKING:
    from medxfer.data.cache.stream import SplitStream

#: Without ``data.in_memory_max_bytes`` and without a Ray cluster to ask (a plan made offline):
#: the splits a worker holds up to this size (float32 tensors) are read into its memory.
IN_MEMORY_MAX_BYTES = 2 * 1024**3
#: With a cluster, the limit is this fraction of the memory one worker can count on: reading a
#: split into memory briefly holds it twice (Parquet's buffer and the float32 array), and the
#: model, its optimiser and the batches need the rest.
IN_MEMORY_FRACTION = 0.25
SSL_TASK = "self-supervised"


@dataclass(frozen=True)
class DataPlan:
    """Where a run's images come from and how workers read them."""

    caches: tuple[str, ...]  # cache folders (pretraining pools several; training reads one)
    mode: str  # "memory": each worker reads its splits whole; "stream": piece by piece (medxfer.data.cache.stream)
    label_fraction: float = 1.0
    label_seed: int = 0
    validate: bool = True  # read the validation split (supervised stages)
    limit_bytes: int = IN_MEMORY_MAX_BYTES  # the in-memory limit the mode was chosen by
    train: SplitStream | None = None  # streaming: the pieces (listed by the driver, see streamed())
    val: SplitStream | None = None

    @property
    def window_bytes(self) -> int:
        """How much of a streamed split a worker shuffles at once: a quarter of the in-memory limit, so
        that streaming holds far less than reading the split whole would have."""
        return self.limit_bytes // 4


@dataclass(frozen=True)
class RunPlan:
    """One run, as the workers execute it."""

    stage: str  # source | finetune | pretrain
    task: str  # multiclass | multilabel | ordinal | self-supervised
    num_outputs: int
    num_grades: int
    in_chans: int
    stem: str
    class_counts: tuple[int, ...] | None
    train_rows: int
    world: int
    rows_per_worker: int
    batch_size: int
    drop_partial: bool  # drop every partial last batch (pretraining) rather than only one of size 1
    steps_per_epoch: int
    use_gpu: bool
    cpus_per_worker: float
    data: DataPlan
    persist: bool = True  # write checkpoints to the run folder (False: an experiment's trial)

    @property
    def scored(self) -> bool:
        """Whether epochs are validated and a best epoch is chosen (not for pretraining)."""
        return self.task != SSL_TASK


def workers(cfg: JobConfig) -> int:
    """Ranks that train: ``scaling.num_workers``, or the one process of local mode (``num_workers: 0``)."""
    return max(1, cfg.scaling.num_workers)


def shard_rows(n_images: int, world: int) -> int:
    """The images each of ``world`` ranks trains on per epoch (equal shards); at least 2 (batch norm)."""
    rows = n_images // world
    if rows < 2:
        raise DataError(f"{n_images} training images for {world} worker(s): each worker needs at least 2 "
                        "(batch norm); add images or lower scaling.num_workers")
    return rows


def steps_per_epoch(rows: int, batch_size: int, drop_partial: bool) -> int:
    """Optimizer steps per epoch for ``rows`` images under the batch rules above."""
    full, rest = divmod(rows, batch_size)
    return max(1, full + (1 if rest > 1 and not drop_partial else 0))


def split_bytes(rows: int, image_shape: tuple[int, ...]) -> int:
    """What ``rows`` images take in a worker's memory as float32 tensors."""
    return rows * math.prod(image_shape) * 4


def in_memory_limit(cfg: JobConfig, worker_memory: float | None) -> int:
    """The most bytes of splits a worker reads into memory: ``data.in_memory_max_bytes``, else
    :data:`IN_MEMORY_FRACTION` of ``worker_memory`` (bytes one worker can count on), else
    :data:`IN_MEMORY_MAX_BYTES`."""
    if cfg.data.in_memory_max_bytes is not None:
        return cfg.data.in_memory_max_bytes
    if worker_memory:
        return int(worker_memory * IN_MEMORY_FRACTION)
    return IN_MEMORY_MAX_BYTES


def data_mode(nbytes: int, limit: int) -> str:
    return "memory" if nbytes <= limit else "stream"


def streamed(plan: RunPlan, train: SplitStream, val: SplitStream | None = None) -> RunPlan:
    """``plan`` with the pieces its workers stream (the driver lists them once, from storage)."""
    import dataclasses

    return dataclasses.replace(plan, data=dataclasses.replace(plan.data, train=train, val=val))
