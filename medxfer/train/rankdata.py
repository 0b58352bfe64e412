"""A rank's view of its run's data: training batches per epoch and its part of the validation split.

In memory (``plan.data.mode == "memory"``) every rank reads the cached splits straight from the
cache with pyarrow and slices them itself (see :mod:`medxfer.train.batches`). Streaming, it reads
its own pieces of them, a few at a time (:mod:`medxfer.data.cache.stream`). Neither starts a Ray
Data pipeline. Callers see the same iterator of ``{"image", "label"}`` batches either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np

from medxfer.train.batches import Split, epoch_batches, eval_batches, order_seed, stream_batches
from medxfer.train.plan import RunPlan


def read_split(plan: RunPlan, split: str, labels: bool = True) -> Split:
    """The split of every cache in the plan, concatenated (pretraining pools several), ordered by row."""
    from medxfer.data.cache import PreparedData

    images, ys = [], []
    for uri in plan.data.caches:
        lf = plan.data.label_fraction if split == "train" else 1.0
        X, y = PreparedData.open(uri, lf, plan.data.label_seed).numpy(split)
        images.append(X)
        ys.append(y)
    image = images[0] if len(images) == 1 else np.concatenate(images)
    label = (ys[0] if len(ys) == 1 else np.concatenate(ys)) if labels else None
    return Split(image, label)


class RankData:
    """Training and validation batches for one rank of ``plan``."""

    def __init__(self, plan: RunPlan, rank: int, world: int, seed: int, eval_batch_size: int):
        self.plan, self.rank, self.world, self.seed = plan, rank, world, seed
        self.eval_batch_size = eval_batch_size
        self.memory = plan.data.mode == "memory"
        self.wait_s = 0.0  # this epoch's seconds waiting for training batches (a data path slower than the model)
        labels = plan.scored
        if self.memory:
            self.train_split = read_split(plan, "train", labels)
            self.val_split = read_split(plan, "val") if plan.data.validate else None
        else:
            self.labels = labels

    def train(self, epoch: int) -> Iterator[dict]:
        self.wait_s = 0.0
        return self._timed(self._train(epoch))

    def _timed(self, batches: Iterable[dict]) -> Iterator[dict]:
        it = iter(batches)
        while True:
            t = time.perf_counter()
            batch = next(it, None)
            self.wait_s += time.perf_counter() - t
            if batch is None:
                return
            yield batch

    def _train(self, epoch: int) -> Iterator[dict]:
        p = self.plan
        if self.memory:
            return epoch_batches(self.train_split, epoch, self.seed, self.rank, self.world, p.rows_per_worker,
                                 p.batch_size, p.drop_partial)
        from medxfer.data.cache.stream import train_batches

        order = order_seed(self.seed, epoch)  # the pieces' order, shared by every rank; then each rank's shuffle
        batches = train_batches(p.data.train, order, order + 1 + self.rank, self.rank, p.rows_per_worker, p.batch_size,
                                p.data.window_bytes, self.labels)
        return stream_batches(batches, p.drop_partial)

    def validation(self) -> Iterator[dict]:
        if self.memory:
            return eval_batches(self.val_split, self.rank, self.world, self.eval_batch_size)
        from medxfer.data.cache.stream import eval_batches as stream_eval

        return stream_eval(self.plan.data.val, self.rank, self.world, self.eval_batch_size)
