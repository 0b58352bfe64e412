"""medxfer.train.engine.run_epochs, the one epoch driver, on a scripted trainee and session: no Ray, no
data, a one-weight model.

What could break unnoticed in a real run and is pinned here: epochs run in order from where the
restored checkpoint left off; the checkpoint policy (every N epochs, always at the end, on a stop
request, never for a trial); a stop request ends the run after the epoch in progress; the history
and the best epoch carry over a resume; the weights a run ends with (the best epoch's when scored,
the last ones otherwise) and what a checkpoint stores besides the latest model.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from medxfer.config import TrainConfig
from medxfer.train.checkpoint import TrainState
from medxfer.train.engine import Outcome, run_epochs


class ScriptedTrainee:
    """Trains by setting its one weight to the number of the epoch it trained (1-based), and validates
    with the AUROC scripted for that epoch; ``exports_model=False`` stands for a weight average."""

    def __init__(self, val_auroc: dict[int, float] | None = None, exports_model: bool = True):
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = None
        self.exports_model = exports_model
        self.val_auroc = val_auroc
        self.trained: list[int] = []

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.trained.append(epoch)
        with torch.no_grad():
            self.model.weight.fill_(epoch + 1)
        return {"train_loss": 1.0 / (epoch + 1)}

    def validate(self) -> dict[str, float]:
        if self.val_auroc is None:
            raise AssertionError("an unscored run must not validate")
        return {"val_auroc": self.val_auroc[self.trained[-1] + 1]}

    def export_weights(self) -> dict[str, torch.Tensor]:
        w = self.model.weight.detach().clone()
        return {"weight": w if self.exports_model else -w}  # an average differs from the model

    def extra_state(self) -> dict[str, torch.Tensor] | None:
        return None

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


class ScriptedSession:
    """One rank that keeps its checkpoints in memory; ``stop_in_epoch``: a stop request arrives while
    that epoch of this invocation (1-based, counted from the resume point) runs."""

    rank, world = 0, 1

    def __init__(self, checkpoint: tuple[TrainState, dict | None] | None = None, stop_in_epoch: int | None = None):
        self.checkpoint = checkpoint
        self.stop_in_epoch = stop_in_epoch
        self.due: list[bool] = []
        self.saves: list[dict] = []
        self.epochs_done: list[tuple[int, bool]] = []
        self.finished: list[int] = []

    def restore(self, trainee) -> tuple[TrainState, dict | None]:
        return copy.deepcopy(self.checkpoint) if self.checkpoint is not None else (TrainState(), None)

    def decide(self, due: bool) -> tuple[bool, str | None]:
        self.due.append(due)
        return due, "signal SIGTERM" if len(self.due) == self.stop_in_epoch else None

    def save(self, trainee, state: TrainState, best: dict | None, metrics: dict, stop: str | None) -> None:
        stored = best["weight"].item() if best is not None else None
        self.saves.append({"epoch": state.epoch, "stop": stop, "stored": stored, "metrics_epoch": metrics["epoch"]})
        # What a checkpoint holds: the state, and the export weights (the model's own when ``best`` is None).
        self.checkpoint = (copy.deepcopy(state), copy.deepcopy(best) if best is not None else trainee.export_weights())

    def finish(self, state: TrainState) -> None:
        self.finished.append(state.epoch)

    def epoch_done(self, state: TrainState, metrics: dict, improved: bool, total_epochs: int) -> None:
        assert metrics["epoch"] == state.epoch and total_epochs >= state.epoch
        self.epochs_done.append((state.epoch, improved))


def train_cfg(epochs: int, every_epochs: int | None = None, patience: int | None = None, **kw) -> TrainConfig:
    """Checkpoints by epochs only (``every_minutes: None``), so nothing here depends on the clock."""
    return TrainConfig(epochs=epochs, checkpoint={"every_minutes": None, "every_epochs": every_epochs},
                       early_stopping={"metric": "val_auroc", "patience": patience}, **kw)


def weight(out: Outcome) -> float:
    return out.weights["weight"].item()


def test_epochs_run_in_order_and_the_run_ends_with_the_best_epochs_weights():
    trainee, session = ScriptedTrainee({1: 0.6, 2: 0.8, 3: 0.7, 4: 0.75}), ScriptedSession()
    out = run_epochs(trainee, session, train_cfg(4), scored=True)
    assert trainee.trained == [0, 1, 2, 3]
    assert (out.stopped, out.state.epoch, out.state.best_epoch, out.state.best_metric) == ("complete", 4, 2, 0.8)
    assert weight(out) == 2.0  # the best epoch's export, not the last one
    assert [h["epoch"] for h in out.state.history] == [1, 2, 3, 4]
    assert [h["val_auroc"] for h in out.state.history] == [0.6, 0.8, 0.7, 0.75]
    assert all({"train_loss", "lr", "epoch_seconds", "time"} <= set(h) for h in out.state.history)
    assert out.state.history[0]["lr"] == pytest.approx(0.1)
    assert session.epochs_done == [(1, True), (2, True), (3, False), (4, False)]
    assert out.state.run_start_epochs == [0]
    # No policy: one checkpoint, at the end; it stores the best weights, which are not the latest.
    assert session.due == [False, False, False, True]
    assert session.saves == [{"epoch": 4, "stop": "complete", "stored": 2.0, "metrics_epoch": 4}]


def test_a_checkpoint_every_n_epochs_and_always_at_the_end():
    session = ScriptedSession()
    run_epochs(ScriptedTrainee({e: 0.5 + e / 100 for e in range(1, 6)}), session, train_cfg(5, every_epochs=2),
               scored=True)
    assert session.due == [False, True, False, True, True]
    assert [(s["epoch"], s["stop"]) for s in session.saves] == [(2, None), (4, None), (5, "complete")]
    # Each epoch improved and the model is its own export: the latest weights are the best, nothing extra stored.
    assert [s["stored"] for s in session.saves] == [None, None, None]


def test_a_stop_request_ends_the_run_after_the_epoch_in_progress_with_a_checkpoint():
    trainee, session = ScriptedTrainee({e: 0.7 for e in range(1, 6)}), ScriptedSession(stop_in_epoch=2)
    out = run_epochs(trainee, session, train_cfg(5, every_epochs=10), scored=True)
    assert trainee.trained == [0, 1] and out.state.epoch == 2
    assert out.stopped == "signal SIGTERM"
    assert session.due == [False, False]  # not due by the policy: the request alone writes the checkpoint
    assert [(s["epoch"], s["stop"]) for s in session.saves] == [(2, "signal SIGTERM")]
    assert [h["epoch"] for h in out.state.history] == [1, 2]


def test_early_stopping_ends_the_run_with_a_checkpoint():
    trainee, session = ScriptedTrainee({1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.95}), ScriptedSession()
    out = run_epochs(trainee, session, train_cfg(5, patience=2), scored=True)
    assert trainee.trained == [0, 1, 2] and out.stopped == "early_stopping"
    assert (out.state.best_epoch, out.state.bad_epochs, weight(out)) == (1, 2, 1.0)
    assert session.saves == [{"epoch": 3, "stop": "early_stopping", "stored": 1.0, "metrics_epoch": 3}]


def test_a_resumed_run_continues_from_its_checkpoint_with_its_history_and_best():
    val = {1: 0.6, 2: 0.9, 3: 0.7, 4: 0.8, 5: 0.85}
    first_trainee, first = ScriptedTrainee(val), ScriptedSession()
    out1 = run_epochs(first_trainee, first, train_cfg(5, max_epochs_this_run=3), scored=True)
    assert first_trainee.trained == [0, 1, 2] and out1.stopped == "max_epochs_this_run"
    assert first.saves == [{"epoch": 3, "stop": "max_epochs_this_run", "stored": 2.0, "metrics_epoch": 3}]

    trainee, session = ScriptedTrainee(val), ScriptedSession(checkpoint=first.checkpoint)
    out = run_epochs(trainee, session, train_cfg(5, max_epochs_this_run=3), scored=True)
    assert trainee.trained == [3, 4]  # from the resume point, not from 0, and no further than train.epochs
    assert out.stopped == "complete" and out.state.epoch == 5
    assert [h["epoch"] for h in out.state.history] == [1, 2, 3, 4, 5]
    assert out.state.run_start_epochs == [0, 3]
    # Epoch 2 (of the first invocation) stays the best: its weights come from the checkpoint, not this run.
    assert (out.state.best_epoch, out.state.bad_epochs, weight(out)) == (2, 3, 2.0)
    assert session.epochs_done == [(4, False), (5, False)]
    assert session.saves == [{"epoch": 5, "stop": "complete", "stored": 2.0, "metrics_epoch": 5}]


def test_a_finished_run_resumed_trains_nothing_and_returns_its_best_weights():
    done = TrainState(epoch=4, best_metric=0.8, best_epoch=3, history=[{"epoch": e} for e in range(1, 5)])
    trainee = ScriptedTrainee({})
    session = ScriptedSession(checkpoint=(done, {"weight": torch.tensor([[3.0]])}))
    out = run_epochs(trainee, session, train_cfg(4), scored=True)
    assert trainee.trained == [] and out.stopped == "done" and weight(out) == 3.0
    assert session.finished == [4] and session.saves == [] and session.due == []
    assert out.state.run_start_epochs == [4]


def test_an_unscored_run_never_validates_and_ends_with_its_last_export():
    trainee, session = ScriptedTrainee(None, exports_model=False), ScriptedSession()
    out = run_epochs(trainee, session, train_cfg(3, every_epochs=2), scored=False)
    assert trainee.trained == [0, 1, 2] and out.state.best_epoch is None
    assert weight(out) == -3.0  # the export (a weight average here) of the last epoch
    assert all(math.isclose(h["train_loss"], 1 / h["epoch"]) for h in out.state.history)
    # The export differs from the model, so every checkpoint stores it beside the latest weights.
    assert [(s["epoch"], s["stored"]) for s in session.saves] == [(2, -2.0), (3, -3.0)]


def test_a_trial_writes_no_checkpoint_even_when_asked_to_stop():
    trainee, session = ScriptedTrainee({1: 0.5, 2: 0.7, 3: 0.6}), ScriptedSession(stop_in_epoch=2)
    out = run_epochs(trainee, session, train_cfg(3, every_epochs=1), scored=True, persist=False)
    assert trainee.trained == [0, 1] and session.saves == []
    assert session.due == [False, False]  # nothing is ever due without persistence
    assert (out.stopped, weight(out)) == ("signal SIGTERM", 2.0)
