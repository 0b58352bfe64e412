"""medxfer.runtime on the session's Ray: what Ray prints into medxfer's output."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ray]


def test_ray_datas_memory_advice_does_not_reach_the_output(ray_cluster, caplog):
    """Ray Data warns "Operator ... uses N MiB of memory per worker ... consider setting memory=" about tasks
    larger than its default; medxfer bounds its tasks' memory itself, so quiet_ray_logs turns the advice off.
    Without it (the detector checking at every step) the same pipeline prints the advice."""
    import numpy as np
    import ray.data

    from medxfer.runtime import quiet_ray_logs

    def hog(batch):  # defined here: Ray pickles it by value
        import time

        block = np.ones(700 * 2**20 // 8)  # 700 MiB, above Ray Data's per-task default
        time.sleep(0.5)
        return {"id": batch["id"] + int(block[0])}

    def run() -> str:
        caplog.clear()
        ray.data.range(4, override_num_blocks=4).map_batches(hog, batch_size=None, num_cpus=0.25).materialize()
        return caplog.text

    config = ray.data.DataContext.get_current().issue_detectors_config.high_memory_detector_config
    kept = config.detection_time_interval_s
    try:
        config.detection_time_interval_s = 0
        assert "of memory per worker" in run()  # the advice, as Ray gives it
        quiet_ray_logs()
        assert "of memory per worker" not in run()
    finally:
        config.detection_time_interval_s = kept


def test_a_workers_memory_is_its_nodes_memory_shared_by_the_workers_it_holds(ray_cluster):
    import ray

    from medxfer.config import ScalingSection
    from medxfer.runtime import machine_memory, worker_memory

    (node,) = [n for n in ray.nodes() if n["Alive"]]
    memory, cpus = node["Resources"]["memory"], node["Resources"]["CPU"]
    assert worker_memory(ScalingSection(num_workers=1, cpus_per_worker=1), False) == memory
    assert worker_memory(ScalingSection(num_workers=2, cpus_per_worker=1), False) == memory / 2
    assert worker_memory(ScalingSection(num_workers=8, cpus_per_worker=1), False) == memory / cpus  # as many as fit
    assert worker_memory(ScalingSection(num_workers=1, cpus_per_worker=cpus + 1), False) is None  # none fits
    assert worker_memory(ScalingSection(num_workers=1, use_gpu=True), True) is None  # no GPU here
    assert worker_memory(ScalingSection(num_workers=0), False) == machine_memory()
