"""Mini-batches for one rank: from arrays in memory or from a Ray Data shard, under one set of rules.

Why two sources: a split of a few thousand small images fits in every worker's memory, and
indexing an array costs nothing, while a Ray Data pipeline pays start-up and scheduling on
every epoch; large splits stream from the cache instead (see ``medxfer.train.plan``).

The in-memory order is a seeded permutation per (seed, epoch) shared by all ranks, each rank
taking its own equal slice — the same order whichever process runs the rank, so an
experiment's in-process trial and a Ray Train worker see the same batches. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

#: Seeds of the epoch permutation and of augmentation, derived from (seed, epoch, rank).
_ORDER, _AUGMENT = 7919, 100_003


def order_seed(seed: int, epoch: int) -> int:
    return seed * _ORDER + epoch * 31


def augment_seed(seed: int, epoch: int, rank: int) -> int:
    return seed * _AUGMENT + epoch * 101 + rank


@dataclass
class Split:
    """A split in memory: ``image`` float32 (N, C, H, W), ``label`` (N, ...), optional ``path``."""

    image: np.ndarray
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image)


def epoch_batches(split: Split, epoch: int, seed: int, rank: int, world: int, rows_per_worker: int,
                  batch_size: int, drop_partial: bool) -> Iterator[dict]:
    """This rank's training batches for ``epoch``: a shared permutation, an equal slice per rank.

    A last batch of one image is always skipped (batch norm); ``drop_partial`` skips any
    partial last batch.
    """
    order = np.random.default_rng(order_seed(seed, epoch)).permutation(len(split))
    mine = order[rank * rows_per_worker:(rank + 1) * rows_per_worker]
    yield from _batches(split, mine, batch_size, drop_partial)


def eval_batches(split: Split, rank: int, world: int, batch_size: int) -> Iterator[dict]:
    """This rank's part of an evaluated split (every ``world``-th row): together the whole split."""
    yield from _batches(split, np.arange(rank, len(split), world), batch_size, drop_partial=False, keep_single=True)


def _batches(split: Split, idx: np.ndarray, batch_size: int, drop_partial: bool,
             keep_single: bool = False) -> Iterator[dict]:
    for i in range(0, len(idx), batch_size):
        part = idx[i:i + batch_size]
        if len(part) < batch_size and (drop_partial or (len(part) == 1 and not keep_single)):
            return
        batch = {"image": split.image[part]}
        if split.label is not None:
            batch["label"] = split.label[part]
        yield batch


def stream_batches(batches: Iterable[dict], drop_partial: bool) -> Iterator[dict]:
    """A streamed split's batches under the same rule: skip a last batch of one (or any partial) image(s)."""
    size = None
    for b in batches:
        n = len(b["image"])
        size = size or n
        if n < size and (drop_partial or n == 1):
            continue
        yield b
