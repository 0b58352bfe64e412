"""What Ray Train's controller does with a run, told to the command: state changes and failures.

Why: a worker group that fails (a node lost, a worker killed) is restarted by Ray Train's
controller from the last checkpoint, and only the controller knows why and when. The command
wants both — for the watchdog (:mod:`medxfer.train.watchdog`: "waiting for a placement group"
needs to know the controller is scheduling) and for the restarts it prints and records in
``result.json``. This callback runs in the controller and posts each state change to the run's
control actor (:mod:`medxfer.train.control`).

It subclasses Ray Train's ``ControllerCallback``, a developer API that ``RunConfig(callbacks=...)``
accepts beside user callbacks. If a Ray release moves it, :func:`controller_callbacks` returns
none: the command still sees each new worker group when its rank 0 starts, only without the
controller's reason.
"""

from __future__ import annotations

import time

try:
    from ray.train.v2._internal.execution.callback import ControllerCallback
except ImportError:  # pragma: no cover - Ray moved its internals
    ControllerCallback = None


def failure_summary(error: BaseException | None) -> str | None:
    """One line naming what failed: the failing ranks and the first line of each error (Ray's
    ``WorkerGroupError``), or the controller's error."""
    if error is None:
        return None
    failures = getattr(error, "worker_failures", None)
    if failures:
        return "; ".join(f"rank {rank}: {_describe(exc)}" for rank, exc in sorted(failures.items()))
    return _describe(getattr(error, "controller_failure", None) or error)


def _describe(exc: BaseException) -> str:
    """``Type: line``: the line that names a node when there is one (a worker lost with its node), else the
    first; a failed health check is described by the failure behind it."""
    inner = getattr(exc, "health_check_failure", None)
    if isinstance(inner, BaseException):
        return f"{type(exc).__name__}, {_describe(inner)}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "node" in ln.lower()), lines[0] if lines else "")
    return f"{type(exc).__name__}: {line[:240]}" if line else type(exc).__name__


if ControllerCallback is not None:

    class StateReporter(ControllerCallback):
        """Posts ``{"state", "time", "error"}`` to the run's board on every controller state change."""

        def __init__(self, board):
            self.board = board

        def after_controller_state_update(self, previous_state, current_state):
            state = getattr(getattr(current_state, "_state_type", None), "state_name", type(current_state).__name__)
            error = failure_summary(getattr(current_state, "training_failed_error", None))
            try:
                self.board.event.remote({"kind": "state", "state": state, "time": time.time(), "error": error})
            except Exception:  # noqa: BLE001 - reporting must never fail the controller
                pass


def controller_callbacks(board) -> list:
    """The callbacks to hand ``RunConfig``: the state reporter, when this Ray has the interface."""
    return [StateReporter(board)] if ControllerCallback is not None else []
