"""Why a Ray Data pipeline is silent: the command's explanation when no batch has come for a while.

``preprocess`` and ``predict --engine ray`` on a shared cluster whose CPUs another job holds (a
source-train on the cluster the nightly retrain submits to) used to wait without a word until a CPU
freed: Ray Data queues its tasks and prints nothing off a terminal. The driver now counts the
batches as they arrive (:class:`Progress`), and a thread says, every ``failure.watchdog_s`` of
silence, what it sees: the cluster's CPUs, how many are free, and what one task needs.
Training has its own watchdog (:mod:`medxfer.train.watchdog`), fed by its workers' heartbeats.

:func:`explain` is pure (tested without Ray); :func:`watched` reads Ray's view of the cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("medxfer")


def explain(what: str, idle_s: float, done: int, total: int, cpus: float, free: float, nodes: int,
            need: float) -> str:
    """The line for a pipeline that has delivered nothing for ``idle_s`` seconds."""
    head = f"{what}: nothing finished for {idle_s:.0f} s ({done:,} of {total:,} images done)"
    have = f"the cluster has {cpus:g} CPU on {nodes} live node(s), {free:g} free"
    if free < need:
        return (f"{head}: {have}, and a task of it needs {need:g}: other work holds the CPUs (another job on "
                "this cluster?). It goes on when a CPU frees; or add a node, or stop it and run it later.")
    return (f"{head}; its tasks are placed ({have}): large images or slow storage (data.decode_timeout_s "
            "bounds any one file).")


class Progress:
    """Batches as the driver receives them."""

    def __init__(self) -> None:
        self.done = 0
        self.last = time.monotonic()

    def tick(self, n: int) -> None:
        self.done += n
        self.last = time.monotonic()


@contextmanager
def watched(what: str, total: int, every_s: float | None, need: float) -> Iterator[Progress]:
    """Run the body (a Ray Data pipeline whose batches it ticks on the yielded :class:`Progress`); each
    ``every_s`` seconds without a tick, log :func:`explain`. ``every_s`` None: never."""
    progress = Progress()
    if not every_s:
        yield progress
        return
    stop = threading.Event()

    def watch() -> None:
        import ray

        since, said = progress.last, 0.0  # the silence being explained, and how long it was when last said
        while not stop.wait(min(every_s, 5.0)):
            if progress.last != since:
                since, said = progress.last, 0.0
            idle = time.monotonic() - since
            if idle - said < every_s:
                continue
            try:
                nodes = [n for n in ray.nodes() if n.get("Alive")]
                cpus = sum((n.get("Resources") or {}).get("CPU", 0.0) for n in nodes)
                free = ray.available_resources().get("CPU", 0.0)
            except Exception:  # noqa: BLE001 - the explanation is best effort; the pipeline is not
                continue
            log.warning("%s", explain(what, idle, progress.done, total, cpus, free, len(nodes), need))
            said = idle  # said: again after another every_s of silence

    thread = threading.Thread(target=watch, name="medxfer-pipeline-watchdog", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(10)
