"""The one epoch driver every stage runs: train, validate, keep the best, checkpoint by policy, stop.

Source training, fine-tuning, self-supervised pretraining and an experiment's trials all call
:func:`run_epochs`; what differs between them is the *trainee*, which the stage hands over (how
one epoch trains and how it is validated: :mod:`medxfer.supervised.classifier_trainee`,
:mod:`medxfer.ssl.trainee`), and the *session* (where progress, checkpoints and stop requests
go: :mod:`medxfer.train.session`). So the
recipe an experiment measures is the recipe ``medxfer finetune`` runs, step for step.

Checkpoints follow a policy (``train.checkpoint``) instead of every epoch: one is written when
``every_minutes`` or ``every_epochs`` has passed since the last, always at the end of the run,
and when the run is asked to stop (a signal to the command, or a node about to be preempted).
Every rank takes the same decision (the session agrees on it), because writing a checkpoint is
a collective step in Ray Train.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch

from medxfer.train.checkpoint import TrainState


class Trainee(Protocol):
    """One stage's training: the model and its optimiser, one epoch, one validation."""

    model: torch.nn.Module  # unwrapped (not the DDP wrapper): what checkpoints hold
    optimizer: torch.optim.Optimizer
    scheduler: object
    exports_model: bool  # whether export_weights() is the model's own weights (no weight average)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch; metrics already combined across ranks."""

    def validate(self) -> dict[str, float]:
        """Validation metrics over the whole split (every rank's part combined); {} when unscored."""

    def export_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights a bundle would hold now."""

    def extra_state(self) -> dict[str, torch.Tensor] | None:
        """Training state beyond model, optimiser and schedule (a weight average), for checkpoints."""

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None: ...


class TraineeFactory(Protocol):
    """How a stage's trainee is made on a worker (the trainee class itself): the job config, the run plan,
    this rank's data, its device, ``wrap`` (Ray Train's ``prepare_model``: DDP when world > 1) and the session."""

    def __call__(self, cfg, plan, data, device: torch.device, wrap, session: Session) -> Trainee: ...


class Session(Protocol):
    """Where a run's state goes: Ray Train (workers or local mode)."""

    rank: int
    world: int

    def restore(self, trainee: Trainee) -> tuple[TrainState, dict | None]: ...

    def decide(self, due: bool) -> tuple[bool, str | None]: ...

    def save(self, trainee: Trainee, state: TrainState, best: dict | None, metrics: dict,
             stop: str | None) -> None: ...

    def finish(self, state: TrainState) -> None: ...

    def epoch_done(self, state: TrainState, metrics: dict, improved: bool, total_epochs: int) -> None: ...


@dataclass(frozen=True)
class CheckpointPolicy:
    every_minutes: float | None = None
    every_epochs: int | None = None

    def due(self, epochs_since: int, minutes_since: float) -> bool:
        return bool((self.every_epochs and epochs_since >= self.every_epochs)
                    or (self.every_minutes is not None and minutes_since >= self.every_minutes))


@dataclass
class Outcome:
    """How a run ended: its progress, the weights to export (rank 0) and why it stopped."""

    state: TrainState
    weights: dict | None
    stopped: str


def stop_reason(state: TrainState, epochs: int, end: int, patience: int | None) -> str | None:
    if state.epoch >= epochs:
        return "complete"
    if patience and state.bad_epochs >= patience:
        return "early_stopping"
    if state.epoch >= end:
        return "max_epochs_this_run"
    return None


def run_epochs(trainee: Trainee, session: Session, train_cfg, scored: bool, persist: bool = True) -> Outcome:
    """Train from where the session's last checkpoint left off until the run's end or a stop.

    ``scored``: validate each epoch and export the best epoch's weights (else the last ones).
    ``persist``: write checkpoints (an experiment's trial keeps everything in memory instead).
    """
    tc, es = train_cfg, train_cfg.early_stopping
    state, best = session.restore(trainee)
    state.run_start_epochs.append(state.epoch)
    end = tc.epochs if tc.max_epochs_this_run is None else min(tc.epochs, state.epoch + tc.max_epochs_this_run)
    if stop_reason(state, tc.epochs, end, es.patience) is not None:
        session.finish(state)
        weights = best if scored else None
        if weights is None and session.rank == 0:
            weights = trainee.export_weights()
        return Outcome(state, weights, "done")
    policy = CheckpointPolicy(tc.checkpoint.every_minutes, tc.checkpoint.every_epochs)
    last_time, last_epoch = time.monotonic(), state.epoch
    stop = None
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        metrics = trainee.train_epoch(epoch)
        if scored:
            metrics.update(trainee.validate())
        state.epoch = epoch + 1
        metrics.update(epoch=state.epoch, lr=trainee.optimizer.param_groups[-1]["lr"],
                       epoch_seconds=time.perf_counter() - t0, time=time.time())
        improved = scored and state.improved(metrics.get(es.metric), es.direction)
        if improved and session.rank == 0:
            best = trainee.export_weights()
        state.history.append(metrics)
        stop = stop_reason(state, tc.epochs, end, es.patience)
        due = persist and (stop is not None
                           or policy.due(state.epoch - last_epoch, (time.monotonic() - last_time) / 60.0))
        write, requested = session.decide(due)
        stop = stop or requested
        session.epoch_done(state, metrics, improved, tc.epochs)
        if persist and (write or stop is not None):
            session.save(trainee, state, _to_store(trainee, state, best, scored, session.rank), metrics, stop)
            last_time, last_epoch = time.monotonic(), state.epoch
        if stop:
            break
    weights = best if scored else None
    if weights is None and session.rank == 0:
        weights = trainee.export_weights()
    return Outcome(state, weights, stop or "complete")


def _to_store(trainee: Trainee, state: TrainState, best: dict | None, scored: bool, rank: int) -> dict | None:
    """The export weights a checkpoint must hold besides the model's latest ones (None: they are the same)."""
    if rank != 0:
        return None
    if scored:
        latest_is_export = trainee.exports_model and state.best_epoch == state.epoch
        return None if latest_is_export else best
    return None if trainee.exports_model else trainee.export_weights()
