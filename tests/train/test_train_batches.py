"""Per-rank batches without Ray: every rank an equal, disjoint, seeded slice of an epoch; evaluation covers a
split once across ranks; streamed batches follow the same rule."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer.train.batches import Split, epoch_batches, eval_batches, stream_batches
from medxfer.train.plan import steps_per_epoch


def _split(n: int) -> Split:
    return Split(np.arange(n, dtype=np.float32)[:, None, None, None], np.arange(n))


@pytest.mark.parametrize("n,world,bs", [(101, 2, 16), (97, 3, 8), (33, 1, 16), (546, 1, 32)])
def test_epoch_batches_give_every_rank_an_equal_disjoint_slice_and_the_planned_steps(n, world, bs):
    split, rows = _split(n), n // world
    seen = []
    for rank in range(world):
        batches = list(epoch_batches(split, epoch=3, seed=7, rank=rank, world=world, rows_per_worker=rows,
                                     batch_size=bs, drop_partial=False))
        assert len(batches) == steps_per_epoch(rows, bs, False)  # the schedule's step count is what runs
        assert all(len(b["image"]) >= 2 for b in batches)  # batch norm never sees a batch of one
        assert all(np.array_equal(b["image"][:, 0, 0, 0], b["label"]) for b in batches)
        seen.append(np.concatenate([b["label"] for b in batches]))
    union = np.concatenate(seen)
    assert len(union) == len(set(union.tolist()))  # disjoint across ranks
    lost = rows - min(len(s) for s in seen)
    assert lost in (0, 1)  # only a last batch of a single image is skipped


def test_epoch_order_is_seeded_per_epoch_and_drop_partial_keeps_whole_batches():
    split = _split(50)
    a = [b["label"] for b in epoch_batches(split, 0, 1, 0, 1, 50, 16, False)]
    b = [b["label"] for b in epoch_batches(split, 0, 1, 0, 1, 50, 16, False)]
    c = [b["label"] for b in epoch_batches(split, 1, 1, 0, 1, 50, 16, False)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # same (seed, epoch): same order
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))  # next epoch: reshuffled
    whole = list(epoch_batches(split, 0, 1, 0, 1, 50, 16, True))
    assert [len(x["label"]) for x in whole] == [16, 16, 16] == [16] * steps_per_epoch(50, 16, True)


def test_eval_batches_cover_the_split_once_across_ranks():
    split = _split(61)
    parts = [np.concatenate([b["label"] for b in eval_batches(split, r, 3, 8)]) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(61))  # batches of one are kept here


def test_streamed_batches_follow_the_same_rule():
    def batches(sizes):
        return [{"image": np.zeros((n, 1, 2, 2))} for n in sizes]

    assert [len(b["image"]) for b in stream_batches(batches([8, 8, 1]), False)] == [8, 8]
    assert [len(b["image"]) for b in stream_batches(batches([8, 8, 3]), False)] == [8, 8, 3]
    assert [len(b["image"]) for b in stream_batches(batches([8, 8, 3]), True)] == [8, 8]
