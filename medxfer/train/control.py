"""A run's control channel: progress from the workers to the command, stop requests back.

Why a channel of our own instead of Ray's log forwarding: the command's output should be what a
person follows — one line per epoch, a progress bar within long epochs on a terminal — while
Ray's forwarded worker logs carry every internal INFO line, deprecation warning and actor
prefix. So the driver starts Ray with ``log_to_driver`` off (``-v`` turns it back on) and rank 0
posts its lines to a small actor that the command polls and prints.

The same actor carries the other direction: the first SIGINT/SIGTERM to the command asks the
workers to write a checkpoint at the end of the current epoch and stop (the run resumes with the
same command); a second one aborts at once.

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
from typing import Any

log = logging.getLogger("medxfer.train")

_POLL_S = 0.5  # with a progress bar on a terminal: the bar moves smoothly
_POLL_QUIET_S = 2.0  # without one, only epoch lines come: each actor call costs CPU the worker needs
_PROGRESS_EVERY_S = 0.5


class _Board:
    """The actor's state (or, in-process, the shared object): queued lines, the latest step progress, a stop
    request. The lock matters only in-process, where the training thread posts while the command takes."""

    def __init__(self):
        self.lines: list[str] = []
        self.progress: tuple[int, int, int] | None = None
        self.stop: str | None = None
        self._lock = threading.Lock()

    def post(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def set_progress(self, epoch: int, step: int, steps: int) -> None:
        self.progress = (epoch, step, steps)

    def take(self) -> tuple[list[str], tuple[int, int, int] | None]:
        with self._lock:
            lines, self.lines = self.lines, []
        return lines, self.progress

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

    def progress(self, epoch: int, step: int, steps: int) -> None:
        if not self.send_progress:
            return
        now = time.monotonic()
        if now - self._last_progress >= _PROGRESS_EVERY_S or step == steps:
            self._last_progress = now
            _call(self.actor, "set_progress", epoch, step, steps)

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


class Monitor:
    """Driver side: creates the actor, prints what workers post, turns signals into stop requests.

    ``in_process``: the run trains in this process (no Ray needed): the board is a plain object."""

    def __init__(self, name: str, in_process: bool = False):
        if in_process:
            self.actor = _Board()
        else:
            import ray

            self.actor = ray.remote(num_cpus=0, max_restarts=0)(_Board).remote()
        self.in_process = in_process
        self.name = name
        self.bar = _Bar(sys.stderr)
        self.signal: str | None = None

    def channel(self) -> WorkerChannel:
        return WorkerChannel(self.actor, progress=self.bar.enabled)

    def _drain(self) -> None:
        try:
            lines, progress = _call(self.actor, "take", wait=True)
        except Exception:  # noqa: BLE001 - printing progress is best effort
            return
        for line in lines:
            self.bar.clear()
            log.info("%s", line)
        if progress is not None and progress[1] < progress[2]:
            self.bar.show(*progress)
        else:
            self.bar.clear()

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
        try:
            thread.start()
            while thread.is_alive():
                thread.join(_POLL_S if self.bar.enabled or self.in_process else _POLL_QUIET_S)
                self._drain()
            self._drain()
        finally:
            self.bar.clear()
            for s, h in old.items():
                signal.signal(s, h)
        if "error" in box:
            raise box["error"]
        return box["result"]
