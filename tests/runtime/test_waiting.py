"""The explanation for a silent Ray Data pipeline (``medxfer.runtime.waiting``), pure. The real case, a
``predict`` on a cluster whose CPUs another job holds, is
tests/lifecycle/test_predict.py::test_predict_on_a_cluster_whose_cpus_are_held_says_why_and_goes_on_when_freed."""

from __future__ import annotations

import logging
import time

from medxfer.runtime.waiting import explain, watched


def test_cpus_held_by_other_work_are_named_with_the_numbers():
    line = explain("predict", 181.4, 0, 1200, cpus=4, free=0, nodes=2, need=1)
    assert line.startswith("predict: nothing finished for 181 s (0 of 1,200 images done): the cluster has 4 CPU "
                           "on 2 live node(s), 0 free, and a task of it needs 1: other work holds the CPUs"), line
    assert "add a node" in line


def test_a_slow_pipeline_with_its_tasks_placed_is_not_blamed_on_other_work():
    line = explain("preprocess", 200, 512, 4096, cpus=4, free=3.5, nodes=1, need=0.25)
    assert "its tasks are placed" in line and "data.decode_timeout_s" in line and "other work" not in line


def test_no_watchdog_when_it_is_off_and_silence_is_measured_from_the_last_batch(caplog):
    with caplog.at_level(logging.WARNING, logger="medxfer"), watched("predict", 10, None, 1.0) as progress:
        progress.tick(4)
        time.sleep(0.05)
    assert progress.done == 4 and not caplog.records
