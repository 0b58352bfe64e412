"""The epoch driver's pure parts, without Ray: the checkpoint policy and stop reasons, what a checkpoint
stores."""

from __future__ import annotations

import torch

from medxfer.train.checkpoint import TrainState
from medxfer.train.engine import CheckpointPolicy, stop_reason


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
