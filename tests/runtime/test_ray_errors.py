"""Ray's published cluster errors in medxfer's words (``medxfer.runtime.ray_errors``), on the messages
Ray 2.60 printed when a node of a preprocessing job was SIGKILLed. The end-to-end case, a real node
dying under ``preprocess``, is tests/data/test_data_cache_lost_node.py."""

from __future__ import annotations

import logging

from medxfer.runtime import ray_errors

DEAD = ("The node with node id: dcb6517d8896b1bf127b3ce7e538a380eb69c174a37674fb84f949e4 and address: 192.0.2.2 "
        "and node name: 192.0.2.2 has been marked dead because the detector has missed too many heartbeats from "
        "it. This can happen when a \t(1) raylet crashes unexpectedly (OOM, etc.) \n\t(2) raylet has lagging "
        "heartbeats due to slow network or busy workload.")
DUMP = ("Raylet is terminated. Termination is unexpected. Possible reasons include: (1) SIGKILL by the user or system "
        "OOM killer, (2) Invalid memory access from Raylet causing SIGSEGV or SIGBUS, (3) Other termination signals. "
        "Last 20 lines of the Raylet logs:\n    [state-dump] \tRaySyncerRegister - 2 total (0 active)\n")
RETRY = ("Task _map_task failed. There are 2 retries remaining, so the task will be retried. Error: Task failed "
         "because the node it was running on is dead or unavailable.")
STARTUP = ("WARNING: 12 PYTHON worker processes have been started on node: 0cae4131 with address: 192.0.2.2, which "
           "is 6x the maximum expected startup concurrency (2).")


def test_a_dead_node_is_one_warning_and_rays_dump_only_a_debug_line(caplog, monkeypatch):
    monkeypatch.setattr(ray_errors, "_seen_dead", set())
    with caplog.at_level(logging.DEBUG, logger="medxfer.ray"):
        for message in (DEAD, DUMP, RETRY, DEAD, RETRY, STARTUP):
            ray_errors.say(message)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Ray node 192.0.2.2 (id dcb6517d) died: Ray runs the work that was placed there again on "
                        "the nodes that are left (-v shows Ray's message)"]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 6 and any("[state-dump]" in d for d in debug)  # all of Ray's text, with -v
    assert sum("Ray retries task _map_task (2 retries left)" in d for d in debug) == 2


def test_a_message_medxfer_does_not_know_is_shown_with_rays_text(caplog):
    with caplog.at_level(logging.INFO, logger="medxfer.ray"):
        ray_errors.say("A worker died or was killed while executing a task by an unexpected system error.\n")
    assert [r.getMessage() for r in caplog.records] == [
        "Ray: A worker died or was killed while executing a task by an unexpected system error."]


def test_the_route_replaces_rays_printer_once_and_passes_worker_output_through(monkeypatch, capsys, caplog):
    """The name medxfer replaces is private to Ray: this fails when a Ray upgrade renames it."""
    import ray._private.worker as worker

    printed = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, ignore_prefix: printed.append(data))
    monkeypatch.setattr(ray_errors, "_seen_dead", set())
    ray_errors.route_ray_errors()
    routed = worker.print_to_stdstream
    ray_errors.route_ray_errors()
    assert worker.print_to_stdstream is routed and routed.medxfer_routed
    with caplog.at_level(logging.INFO, logger="medxfer.ray"):
        routed({"lines": [DEAD, DUMP], "pid": "raylet", "is_err": False}, False)
        routed({"lines": ["epoch 1 done"], "pid": 4242, "is_err": False}, False)
    assert printed == [{"lines": ["epoch 1 done"], "pid": 4242, "is_err": False}]
    assert [r.getMessage()[:25] for r in caplog.records] == ["Ray node 192.0.2.2 (id dc"]
    assert capsys.readouterr().out == ""
