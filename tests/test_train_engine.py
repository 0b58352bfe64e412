"""The one training engine's pure parts, without Ray: batch rules, the plan's step count, the
checkpoint policy and the checkpoint folder's best weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer.models import create_model
from medxfer.train.batches import Split, epoch_batches, eval_batches, stream_batches
from medxfer.train.checkpoint import TrainState, read_best_weights, read_weights, save_checkpoint
from medxfer.train.engine import CheckpointPolicy, stop_reason
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


def test_checkpoint_policy_and_stop_reasons():
    p = CheckpointPolicy(every_minutes=10, every_epochs=None)
    assert not p.due(epochs_since=50, minutes_since=9.9) and p.due(1, 10.0)
    q = CheckpointPolicy(every_minutes=None, every_epochs=5)
    assert not q.due(4, 1000) and q.due(5, 0)
    assert not CheckpointPolicy(None, None).due(1000, 1e6)
    s = TrainState(epoch=4, bad_epochs=2)
    assert stop_reason(s, epochs=10, end=10, patience=2) == "early_stopping"
    assert stop_reason(s, epochs=10, end=4, patience=None) == "max_epochs_this_run"
    assert stop_reason(TrainState(epoch=10), epochs=10, end=10, patience=None) == "complete"
    assert stop_reason(s, epochs=10, end=10, patience=None) is None


def test_best_weights_ride_in_the_latest_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1)
    best = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    save_checkpoint(str(tmp_path / "a"), model, None, None, TrainState(epoch=3, best_epoch=3), None)
    assert not (tmp_path / "a" / "best.safetensors").exists()
    assert all(torch.equal(read_best_weights(str(tmp_path / "a"))[k], v) for k, v in model.state_dict().items())
    save_checkpoint(str(tmp_path / "b"), model, None, None, TrainState(epoch=5, best_epoch=3), best)
    got = read_best_weights(str(tmp_path / "b"))
    assert all(torch.equal(got[k], best[k]) for k in best)
    assert all(torch.equal(read_weights(str(tmp_path / "b"))[k], v) for k, v in model.state_dict().items())


class _Trainee:
    """The two things the checkpoint decision reads from a trainee."""

    def __init__(self, exports_model: bool):
        self.exports_model = exports_model

    def export_weights(self):
        return {"averaged": torch.zeros(1)}


def test_a_checkpoint_stores_export_weights_only_when_they_differ_from_the_latest():
    from medxfer.train.engine import _to_store

    best = {"best": torch.ones(1)}
    plain, averaged = _Trainee(True), _Trainee(False)
    assert _to_store(plain, TrainState(epoch=4, best_epoch=4), best, True, 0) is None  # latest is the best
    assert _to_store(plain, TrainState(epoch=5, best_epoch=4), best, True, 0) is best
    assert _to_store(averaged, TrainState(epoch=4, best_epoch=4), best, True, 0) is best  # EMA weights differ
    assert _to_store(plain, TrainState(epoch=5), None, False, 0) is None  # pretraining exports the latest
    assert set(_to_store(averaged, TrainState(epoch=5), None, False, 0)) == {"averaged"}
    assert _to_store(averaged, TrainState(epoch=5, best_epoch=1), best, True, 1) is None  # only rank 0 writes
