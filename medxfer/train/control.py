"""A run's control channel: progress from the workers to the command, stop requests back.

Why a channel of our own instead of Ray's log forwarding: the command's output should be what a
person follows — one line per epoch, a progress bar within long epochs on a terminal — while
Ray's forwarded worker logs carry every internal INFO line, deprecation warning and actor
prefix. So the driver starts Ray with ``log_to_driver`` off (``-v`` turns it back on) and rank 0
posts its lines to a small actor that the command polls and prints.

The same actor carries the other direction: the first SIGINT/SIGTERM to the command asks the
workers to write a checkpoint at the end of the current epoch and stop (the run resumes with the
same command); a second one aborts at once.

It also carries what the command needs to know about the run's life: a heartbeat from rank 0
(each progress update, or every few seconds without a progress bar), the start of each worker
group (rank 0 posts the epoch it resumes from) and Ray Train's controller states
(:mod:`medxfer.train.events`). From them the command prints one line per restart of the worker
group, records the restarts for ``result.json``, and, when nothing has come for
``failure.watchdog_s``, says why (:mod:`medxfer.train.watchdog`).

A run in the command's own process (``scaling.num_workers: 0``) has no workers to reach: the
board is then a plain object shared with the training thread, behind the same channel interface.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("medxfer.train")

_POLL_S = 0.5  # with a progress bar on a terminal: the bar moves smoothly
_POLL_QUIET_S = 2.0  # without one, only epoch lines come: each actor call costs CPU the worker needs
_PROGRESS_EVERY_S = 0.5
_HEARTBEAT_S = 10.0  # without a progress bar, rank 0 still says it is alive this often


class _Board:
    """The actor's state (or, in-process, the shared object): queued lines, the latest step progress, a stop
    request. The lock matters only in-process, where the training thread posts while the command takes."""

    def __init__(self):
        self.lines: list[str] = []
        self.events: list[dict] = []
        self.progress: tuple[int, int, int] | None = None
        self.stop: str | None = None
        self.beats = 0  # anything from a worker: a line, progress, a heartbeat, an event
        self._lock = threading.Lock()

    def post(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self.beats += 1

    def set_progress(self, epoch: int, step: int, steps: int) -> None:
        self.progress = (epoch, step, steps)
        self.beat()

    def beat(self) -> None:
        with self._lock:
            self.beats += 1

    def event(self, event: dict) -> None:
        """A worker's (``kind`` start/epoch) or the controller's (``kind`` state) news; only the workers' count
        as signs of progress."""
        with self._lock:
            self.events.append(event)
            self.beats += event.get("kind") != "state"

    def take(self) -> tuple[list[str], tuple[int, int, int] | None, int, list[dict]]:
        with self._lock:
            lines, self.lines = self.lines, []
            events, self.events = self.events, []
        return lines, self.progress, self.beats, events

    def request_stop(self, reason: str) -> None:
        self.stop = self.stop or reason

    def stop_requested(self) -> str | None:
        return self.stop


def _call(board, method: str, *args, wait: bool = False):
    """Call ``method`` on the board: directly when it is the plain object (a run in the command's
    process), else on the actor — fire and forget, or, with ``wait``, its answer within 30 s."""
    if isinstance(board, _Board):
        return getattr(board, method)(*args)
    ref = getattr(board, method).remote(*args)
    if not wait:
        return None
    import ray

    return ray.get(ref, timeout=30)


class WorkerChannel:
    """What a worker holds (picklable): post lines and progress, ask whether to stop.

    ``board``: the run's actor, or the board itself for a run in the command's process.
    ``progress``: whether the command shows a bar; without one, step progress is not sent at all."""

    def __init__(self, board, progress: bool = True):
        self.actor = board
        self.send_progress = progress
        self._last_progress = 0.0

    def post(self, line: str) -> None:
        _call(self.actor, "post", line)

    def event(self, kind: str, **fields) -> None:
        _call(self.actor, "event", {"kind": kind, "time": time.time(), **fields})

    def progress(self, epoch: int, step: int, steps: int) -> None:
        """Step progress for the command's bar; without a bar, a heartbeat every :data:`_HEARTBEAT_S`."""
        now = time.monotonic()
        if self.send_progress and (now - self._last_progress >= _PROGRESS_EVERY_S or step == steps):
            self._last_progress = now
            _call(self.actor, "set_progress", epoch, step, steps)
        elif not self.send_progress and now - self._last_progress >= _HEARTBEAT_S:
            self._last_progress = now
            _call(self.actor, "beat")

    def stop_requested(self) -> str | None:
        try:
            return _call(self.actor, "stop_requested", wait=True)
        except Exception:  # noqa: BLE001 - a lost channel must not stop training
            return None

    def __getstate__(self):
        return {"actor": self.actor, "progress": self.send_progress}

    def __setstate__(self, d):
        self.actor, self.send_progress, self._last_progress = d["actor"], d["progress"], 0.0


class _Bar:
    """A one-line progress bar on a terminal; nothing when output is not a terminal."""

    def __init__(self, stream):
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.shown = False

    def show(self, epoch: int, step: int, steps: int) -> None:
        if not self.enabled or steps <= 0:
            return
        width = 30
        done = int(width * step / steps)
        self.stream.write(f"\r  epoch {epoch + 1}: [{'#' * done}{'.' * (width - done)}] {step}/{steps} steps")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()
            self.shown = False


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") if t is not None else None


@dataclass
class Restart:
    """One restart of the worker group within a command: when and why it failed, where it resumed."""

    failed_at: float | None  # epoch seconds; None when the controller's report did not arrive
    reason: str | None
    resumed_at: float
    resumed_from_epoch: int

    def record(self) -> dict:
        return {"failed_at": _iso(self.failed_at), "reason": self.reason, "resumed_at": _iso(self.resumed_at),
                "resumed_from_epoch": self.resumed_from_epoch,
                "waited_s": round(self.resumed_at - self.failed_at, 1) if self.failed_at else None}

    def line(self, n: int) -> str:
        waited = f" after {self.resumed_at - self.failed_at:.0f} s" if self.failed_at else ""
        return (f"restart {n}: the worker group failed ({self.reason or 'reason not reported'}); a new one resumed"
                f"{waited} from epoch {self.resumed_from_epoch}")


@dataclass
class Watch:
    """What the watchdog needs to explain a silent run (see :mod:`medxfer.train.watchdog`)."""

    after_s: float | None  # failure.watchdog_s; None: never
    workers: int
    per_worker: dict
    run_uri: str
    job_id: str | None = None
    start_nodes: tuple = field(default_factory=tuple)


def _nodes_now(job_id: str | None, fallback: tuple) -> tuple:
    from medxfer.train.watchdog import observe

    try:
        return observe(job_id).nodes
    except Exception:  # noqa: BLE001 - keep the older view
        return fallback


class Monitor:
    """Driver side: creates the actor, prints what workers post, turns signals into stop requests,
    records restarts of the worker group and explains a run that has gone silent.

    ``in_process``: the run trains in this process (no Ray needed): the board is a plain object.
    ``watch``: how long a silence is allowed and what the run asked for (None: no watchdog)."""

    def __init__(self, name: str, in_process: bool = False, watch: Watch | None = None):
        if in_process:
            self.actor = _Board()
        else:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # On the command's own node: a board on a node that is lost would take the run's progress with it.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self.actor = ray.remote(num_cpus=0, max_restarts=0, scheduling_strategy=here)(_Board).remote()
        self.in_process = in_process
        self.name = name
        self.bar = _Bar(sys.stderr)
        self.signal: str | None = None
        self.watch = None if in_process else watch
        self.restarts: list[Restart] = []
        self.state: str | None = None
        self.epoch: int | None = None
        self._starts = 0
        self._failure: tuple[float, str | None] | None = None
        self._beats = -1
        self._active = self._state_since = self._warned = time.monotonic()

    def channel(self) -> WorkerChannel:
        return WorkerChannel(self.actor, progress=self.bar.enabled)

    def _drain(self) -> None:
        try:
            lines, progress, beats, events = _call(self.actor, "take", wait=True)
        except Exception:  # noqa: BLE001 - printing progress is best effort
            return
        if beats != self._beats:
            self._beats, self._active = beats, time.monotonic()
        for event in events:
            self._on_event(event)
        for line in lines:
            self.bar.clear()
            log.info("%s", line)
        if progress is not None and progress[1] < progress[2]:
            self.bar.show(*progress)
        else:
            self.bar.clear()

    def _on_event(self, event: dict) -> None:
        if event.get("kind") == "state":
            self.state, self._state_since = event.get("state"), time.monotonic()
            if event.get("error") and self._failure is None:  # the first failure since the group started
                self._failure = (event.get("time"), event.get("error"))
            return
        if event.get("kind") == "epoch":
            self.epoch = int(event.get("epoch", 0))
        if event.get("kind") != "start":
            return
        self._starts += 1
        if self.watch is not None:  # a node lost before this group started is no news any more
            self.watch.start_nodes = _nodes_now(self.watch.job_id, self.watch.start_nodes)
        if self._starts > 1:  # a second worker group within this command: Ray Train restarted the run
            failed_at, reason = self._failure or (None, None)
            restart = Restart(failed_at, reason, event.get("time", time.time()), int(event.get("epoch", 0)))
            self.restarts.append(restart)
            self.bar.clear()
            log.warning("%s: %s", self.name, restart.line(len(self.restarts)))
        self._failure = None

    def _check_silence(self) -> None:
        """When nothing has come from the workers for ``watch.after_s``, say why (again every ``after_s``)."""
        w = self.watch
        now = time.monotonic()
        if w is None or w.after_s is None or now - self._active < w.after_s or now - self._warned < w.after_s:
            return
        self._warned = now
        from medxfer.train import watchdog

        try:
            from medxfer.train.resume import latest

            cluster = watchdog.observe(w.job_id)
            found = latest(w.run_uri)
            silence = watchdog.Silence(
                self.name, now - self._active, w.workers, w.per_worker, self.state, now - self._state_since,
                watchdog.lost_since(w.start_nodes, cluster), self.epoch, found.epoch if found else None)
            message = watchdog.explain(silence, cluster)
        except Exception as e:  # noqa: BLE001 - the explanation is best effort; the silence is not
            message = f"{self.name}: no step or epoch for {now - self._active:.0f} s (the cluster could not be read: {e})"
        self.bar.clear()
        log.warning("%s", message)

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = name
        self.bar.clear()
        log.warning("%s: %s received; the run stops after this epoch with a checkpoint (send it again to "
                    "abort at once). The same command resumes it.", self.name, name)
        _call(self.actor, "request_stop", f"signal {name}")

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (``trainer.fit``) in a thread; print progress and handle signals meanwhile."""
        box: dict[str, Any] = {}

        def target():
            try:
                box["result"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                box["error"] = e

        thread = threading.Thread(target=target, name="medxfer-fit", daemon=True)
        main = threading.current_thread() is threading.main_thread()
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        for s in old:
            signal.signal(s, self._on_signal)
        self._active = self._state_since = self._warned = time.monotonic()
        try:
            thread.start()
            while thread.is_alive():
                thread.join(_POLL_S if self.bar.enabled or self.in_process else _POLL_QUIET_S)
                self._drain()
                self._check_silence()
            self._drain()
        finally:
            self.bar.clear()
            for s, h in old.items():
                signal.signal(s, h)
        if "error" in box:
            raise box["error"]
        return box["result"]
