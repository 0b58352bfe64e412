"""The session of one rank inside Ray Train: checkpoints, agreement between ranks, progress lines.

The same class serves Ray Train's worker groups and its local mode (``num_workers=0``: a run in
the command's own process, or an experiment's trial): in local mode ``get_checkpoint`` has
nothing, collectives return their input and no preemption is ever announced. The one difference
is where checkpoints go: to ``ray.train.report`` in a worker group, into the run folder by
medxfer itself in local mode (:mod:`medxfer.train.resume`), and nowhere for a trial. Progress
goes to the command through the run's control channel when there is one
(:mod:`medxfer.train.control`), else to the log.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time

from medxfer.train.checkpoint import (
    TrainState,
    load_checkpoint,
    read_best_weights,
    read_extra,
    read_state,
    save_checkpoint,
)
from medxfer.train.engine import Trainee
from medxfer.train.resume import RunCheckpoints, checkpoint_name, local_copy, publish

log = logging.getLogger("medxfer.train")

SHOWN = ("train_loss", "loss", "val_loss", "val_acc", "val_auroc", "repr_std")


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


class RaySession:
    """Rank, world, checkpoints and agreement through ``ray.train``'s public API."""

    def __init__(self, stage: str, scored: bool, metric: str, control=None,
                 checkpoints: RunCheckpoints | None = None):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.stage, self.scored, self.metric = stage, scored, metric
        self.control = control
        self.checkpoints = checkpoints
        self._t0 = time.perf_counter()
        self._saved_for_preemption = False

    # -- state
    def restore(self, trainee: Trainee) -> tuple[TrainState, dict | None]:
        """Resume from the newest of Ray Train's checkpoint (a restarted worker group) and the one handed
        over by the command (written in another mode); a new run starts from epoch 0."""
        import contextlib

        import ray.train

        ckpt = ray.train.get_checkpoint()
        handed = self.checkpoints.handed if self.checkpoints else None
        with contextlib.ExitStack() as stack:
            dirs = ([stack.enter_context(ckpt.as_directory())] if ckpt else []) + \
                   ([stack.enter_context(local_copy(handed))] if handed else [])
            if not dirs:
                self.event("start", epoch=0)
                return TrainState(), None
            d = max(dirs, key=lambda d: read_state(d).epoch)
            state = load_checkpoint(d, trainee.model, trainee.optimizer, trainee.scheduler)
            extra = read_extra(d)
            if extra:
                trainee.load_extra_state(extra)
            best = read_best_weights(d) if self.scored and self.rank == 0 else None
        self.post(f"resuming {self.stage} after epoch {state.epoch}")
        self.event("start", epoch=state.epoch)
        return state, best

    def decide(self, due: bool) -> tuple[bool, str | None]:
        """Whether to checkpoint now, and a stop request, agreed by every rank (rank 0 decides).

        A node about to be preempted gets a checkpoint right away and training goes on (Ray Train
        restarts the group from it once the node is gone); a stop request from the command (a
        signal) gets a checkpoint and ends the run.
        """
        import ray.train
        import ray.train.collective

        if ray.train.get_preemption_info() is not None and not self._saved_for_preemption:  # a collective
            due, self._saved_for_preemption = True, True
        stop = self.control.stop_requested() if self.rank == 0 and self.control is not None else None
        if self.world > 1:
            due, stop = ray.train.collective.broadcast_from_rank_zero((due, stop))
        return due, stop

    def save(self, trainee: Trainee, state: TrainState, best: dict | None, metrics: dict, stop: str | None) -> None:
        import ray.train

        score = _finite(metrics.get(self.metric))
        report = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "stopped": stop, "best_epoch": state.best_epoch, "score": score}
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.rank == 0:
                save_checkpoint(d, trainee.model, trainee.optimizer, trainee.scheduler, state, best,
                                trainee.extra_state())
                if self.checkpoints is not None and self.checkpoints.writes:  # local mode: medxfer keeps it
                    publish(d, self.checkpoints.run_uri, state.epoch, self.checkpoints.keep)
                else:
                    checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(report, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(state.epoch))

    def finish(self, state: TrainState) -> None:
        self.post(f"{self.stage}: nothing to train (epoch {state.epoch} reached)")

    # -- progress
    def epoch_done(self, state: TrainState, metrics: dict, improved: bool, total_epochs: int) -> None:
        if self.rank != 0:
            return
        shown = " ".join(f"{m} {metrics[m]:.4f}" for m in SHOWN if _finite(metrics.get(m)) is not None)
        self.post(f"epoch {state.epoch}/{total_epochs} {shown}{' *' if improved else ''} | "
                  f"{metrics.get('images_per_s', 0):.0f} img/s, {time.perf_counter() - self._t0:.0f}s elapsed")
        self.event("epoch", epoch=state.epoch)

    def step_progress(self, epoch: int, step: int, steps: int) -> None:
        if self.rank == 0 and self.control is not None:
            self.control.progress(epoch, step, steps)

    def event(self, kind: str, **fields) -> None:
        """News for the command (rank 0 only): a worker group started from an epoch, an epoch ended."""
        if self.rank == 0 and self.control is not None:
            self.control.event(kind, **fields)

    def post(self, line: str) -> None:
        if self.rank != 0:
            return
        if self.control is not None:
            self.control.post(line)
        else:
            log.debug(line)
