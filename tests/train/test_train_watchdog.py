"""What the command says about a run's life, without Ray: restarts from the control channel's events,
and the watchdog's explanation of a silence (medxfer.train.control, .events, .watchdog)."""

from __future__ import annotations

import logging
import time

from medxfer.train.control import Monitor
from medxfer.train.events import failure_summary
from medxfer.train.watchdog import Cluster, Node, Silence, explain, lost_since

A = Node("a" * 56, "10.0.0.1", True, 2.0, 0.0)
B = Node("b" * 56, "10.0.0.2", True, 2.0, 0.0)


def _silence(**kw) -> Silence:
    base = {"name": "src", "idle_s": 240.0, "workers": 2, "per_worker": {"CPU": 2.0}, "state": "SCHEDULING",
            "state_s": 200.0}
    return Silence(**{**base, **kw})


def test_a_lost_node_is_named_with_the_epoch_and_the_checkpoint_the_run_resumes_from():
    gone = Node(B.node_id, B.address, False, 2.0, 0.0)
    now = Cluster((A, gone), {"CPU": 0.0}, pending=1)
    lost = lost_since((A, B), now)
    assert lost == (B,)
    msg = explain(_silence(lost=lost, epoch=2, checkpoint_epoch=2), now)
    assert "node 10.0.0.2 (id bbbbbbbb, 2 CPU) lost during epoch 3" in msg
    assert "waiting for 2 worker(s) of 2 CPU" in msg and "2 CPU on 1 live node(s), 0 CPU free" in msg
    assert "resume from its checkpoint of epoch 2 when resources return" in msg
    assert "from the start (no checkpoint yet)" in explain(_silence(lost=lost), now)
    # A node back (nothing pending): the same loss, and a new group starting from the checkpoint.
    back = explain(_silence(lost=lost, epoch=2, checkpoint_epoch=2), Cluster((A, gone, B), {"CPU": 0.0}))
    assert "lost during epoch 3" in back and "a new worker group is starting; it resumes from its checkpoint of " \
        "epoch 2" in back and "waiting" not in back


def test_a_placement_group_that_cannot_be_placed_names_what_was_asked_and_what_there_is():
    msg = explain(_silence(per_worker={"CPU": 3.0}), Cluster((A, B), {"CPU": 4.0}, pending=1))
    assert "waiting 3 min for 2 worker(s) of 3 CPU" in msg and "no node can hold even one worker" in msg
    assert "4 CPU on 2 live node(s), 4 CPU free" in msg and "lower scaling.num_workers or scaling.cpus_per_worker" in msg
    big = Node("c" * 56, "10.0.0.3", True, 4.0, 0.0)
    msg = explain(_silence(per_worker={"CPU": 3.0}, idle_s=600), Cluster((big, A), {"CPU": 2.0}, pending=1))
    assert "no step or epoch for 10 min" in msg and "1 node(s) can hold a worker, not all 2 at once" in msg
    gpu = explain(_silence(workers=1, per_worker={"CPU": 2.0, "GPU": 1.0}), Cluster((A,), {"CPU": 2.0}, pending=1))
    assert "1 worker(s) of 2 CPU, 1 GPU" in gpu and "no node can hold" in gpu and "/gpus_per_worker" in gpu


def test_busy_silent_workers_are_described_as_such():
    msg = explain(_silence(state="RUNNING"), Cluster((A, B), {"CPU": 0.0}))
    assert "while the worker group is running" in msg and "py-spy dump" in msg
    starting = explain(_silence(), Cluster((A, B), {"CPU": 0.0}))  # scheduling, but its placement group is placed
    assert "resources are placed and its 2 worker(s) are starting" in starting and "waiting" not in starting


def test_a_failure_is_summarised_by_the_line_that_names_the_node():
    class HealthCheckFailed(Exception):
        def __init__(self, failure):
            super().__init__("A worker health check failed.")
            self.health_check_failure = failure

    class Group(Exception):
        worker_failures = {1: HealthCheckFailed(RuntimeError(
            "The actor died unexpectedly before finishing this task.\n\tclass_name: RayTrainWorker\n"
            "The actor is dead because its node has died. Node Id: 1e2b4aa0"))}

    assert failure_summary(Group()) == ("rank 1: HealthCheckFailed, RuntimeError: The actor is dead because its node "
                                        "has died. Node Id: 1e2b4aa0")
    assert failure_summary(ValueError("first\nsecond")) == "ValueError: first" and failure_summary(None) is None


def test_restarts_are_recorded_and_printed_once_each(caplog):
    """Rank 0 of each worker group posts the epoch it starts from; the controller posts its states. The second
    start is a restart: one line, and a record with its reason and epoch."""
    mon = Monitor("src", in_process=True)
    ch = mon.channel()

    class Failure(Exception):
        worker_failures = {1: RuntimeError("The actor died because its node has died.\nmore detail")}

    def fit():
        ch.event("start", epoch=0)
        ch.event("epoch", epoch=1)
        mon.actor.event({"kind": "state", "state": "RESTARTING", "time": time.time() - 5,
                         "error": failure_summary(Failure())})
        mon.actor.event({"kind": "state", "state": "RESCHEDULING", "time": time.time(), "error": "a later timeout"})
        ch.event("start", epoch=1)
        return "done"

    with caplog.at_level(logging.INFO, logger="medxfer.train"):
        assert mon.run(fit) == "done"
    assert len(mon.restarts) == 1 and mon.epoch == 1
    rec = mon.restarts[0].record()
    assert rec["reason"] == "rank 1: RuntimeError: The actor died because its node has died."  # the first failure
    assert rec["resumed_from_epoch"] == 1 and 4 <= rec["waited_s"] <= 60 and rec["failed_at"] < rec["resumed_at"]
    lines = [r.getMessage() for r in caplog.records if "restart" in r.getMessage()]
    assert lines == ["src: restart 1: the worker group failed (rank 1: RuntimeError: The actor died because its node "
                     f"has died.); a new one resumed after {rec['waited_s']:.0f} s from epoch 1"]
