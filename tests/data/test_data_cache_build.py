"""Building a cache (``medxfer.data.cache.build``): checks before decoding, read failures that stop
the job, and the local engine against Ray Data."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from datautil import mini_dataset

from medxfer.config.loading import load_config
from medxfer.data.cache import prepare
from medxfer.errors import DataError, StorageError

pytestmark = [pytest.mark.ray]


def test_missing_files_fail_before_any_decoding(test_data, ray_cluster, tmp_path):
    manifest = mini_dataset(test_data, tmp_path / "ds")
    df = pd.read_csv(manifest)
    df.loc[0, "path"] = "img/nope.png"
    df.to_csv(manifest, index=False)
    store = tmp_path / "store"
    with pytest.raises(DataError, match=r"1 of 14 image file\(s\) do not exist"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}"]))
    assert not (store / "cache").exists() or not any((store / "cache").rglob("*.parquet"))


def test_a_read_failing_inside_the_pipeline_fails_the_job_and_caches_nothing(test_data, ray_cluster, tmp_path):
    """Only an image the decoder refuses is a bad file. A read error (here the kernel's EIO on
    /proc/self/mem, a real file that cannot be read) stops the job with the file named."""
    manifest = mini_dataset(test_data, tmp_path / "ds")
    df = pd.read_csv(manifest)
    df = pd.concat([df, pd.DataFrame([{"path": "/proc/self/mem", "label": "a", "split": "train"}])])
    df.to_csv(manifest, index=False)
    store = tmp_path / "store"
    with pytest.raises(StorageError, match=r"/proc/self/mem: could not read.*; nothing was cached"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}", "data.engine=ray",
                                   "data.max_bad_fraction=0.5", "preprocess.channels=3"]))
    assert not list(store.rglob("dataset.json")) and not list(store.rglob("*.parquet"))
    with pytest.raises(StorageError, match=r"/proc/self/mem: could not read.*; nothing was cached"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}", "data.engine=local",
                                   "data.max_bad_fraction=0.5", "preprocess.channels=3"]))
    assert not list(store.rglob("dataset.json")) and not list(store.rglob("*.parquet"))


def test_local_engine_writes_the_same_cache_as_ray_data_and_small_sets_need_no_ray(test_data, ray_cluster, tmp_path):
    """A small manifest is preprocessed in the command's own process (engine auto -> local), with the
    pipeline's own block function: the cached tensors equal those of the Ray Data engine."""
    from medxfer.data.importers import import_medmnist

    import_medmnist(test_data / "medmnist/breastmnist.npz", str(tmp_path / "breast"))
    base = [f"data.manifest={tmp_path / 'breast' / 'manifest.csv'}", "preprocess.size=32", "preprocess.clahe=true"]
    local = prepare(load_config(None, [*base, f"storage.root={tmp_path / 'a'}"]))
    ray_made = prepare(load_config(None, [*base, f"storage.root={tmp_path / 'b'}", "data.engine=ray"]))
    assert local.card["engine"] == "local" and ray_made.card["engine"] == "ray"
    assert local.key == ray_made.key  # where it ran is not part of what was made
    for split in ("train", "val", "test"):
        (Xa, ya), (Xb, yb) = local.numpy(split), ray_made.numpy(split)
        assert np.array_equal(Xa, Xb) and np.array_equal(ya, yb) and local.paths(split) == ray_made.paths(split)
    assert local.card["counts"] == ray_made.card["counts"]
    too_many = load_config(None, [*base, f"storage.root={tmp_path / 'c'}", "data.local_max_images=100"])
    from medxfer.data.cache import choose_engine

    assert choose_engine(too_many.data, 780) == "ray" and choose_engine(too_many.data, 100) == "local"


def test_a_ray_data_execution_runs_its_tasks_side_by_side_from_its_start(ray_cluster):
    """Ray Data re-reads the CPUs it may use once a second by default and its first read finds no
    answer yet, so every execution ran one task alone for its first second; medxfer's runtime
    makes it re-read every 0.1 s (runtime.start_data_tasks_promptly). Two 0.8 s blocks, two task
    slots: the second must start while the first still runs."""
    import ray.data

    def block_times(batch: pd.DataFrame) -> pd.DataFrame:  # defined here: Ray pickles it by value
        import time

        started = time.time()
        time.sleep(0.8)
        return pd.DataFrame({"started": [started], "ended": [time.time()]})

    def run() -> pd.DataFrame:
        ds = ray.data.from_pandas([pd.DataFrame({"x": [0]}), pd.DataFrame({"x": [1]})])
        return ds.map_batches(block_times, batch_size=None, batch_format="pandas", num_cpus=0.25,
                              compute=ray.data.TaskPoolStrategy(size=2)).to_pandas().sort_values("started")

    run()  # starts two of Ray's worker processes, so the run below measures scheduling, not process start
    times = run()
    first, second = times.iloc[0], times.iloc[1]
    assert second["started"] < first["ended"], (
        f"the second task started {second['started'] - first['started']:.2f} s after the first, which ran "
        f"{first['ended'] - first['started']:.2f} s: Ray Data ran them one after the other")


def test_ray_data_starts_promptly_when_the_caller_connected_ray_itself(ray_cluster):
    """A program that calls ``ray.init`` before medxfer (a notebook, a service embedding it) must
    get the same prompt start: ``init_ray`` returns early on a connected Ray, and the setting is
    one of this process, so it is applied before that early return."""
    from ray.data._internal.execution.resource_manager import ResourceManager

    from medxfer.runtime import DATA_LIMITS_REFRESH_S, init_ray

    before = ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S
    ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = 1.0  # Ray's default, as a fresh process has it
    try:
        assert ray_cluster.is_initialized()
        init_ray()
        assert ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == DATA_LIMITS_REFRESH_S
    finally:
        ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = before


@pytest.mark.ray
def test_a_task_or_replica_whose_process_dies_is_retried_a_bounded_number_of_times(ray_cluster, tmp_path):
    """Ray Data's defaults run a task whose process died again without limit and restart an actor
    without limit; medxfer's preprocessing and prediction tasks run at most TASK_RETRIES more times, its
    model replicas not again, and then the job fails instead of running for ever."""
    import ray

    from medxfer.data.cache.blocks import TASK_RETRIES, map_batches_bounded
    from medxfer.lifecycle.predict import ACTOR_RESTARTS

    class DiesWhenCalled:  # defined here: Ray's workers get it by value, not from this test module
        def __init__(self, marker: str):
            self.marker = marker

        def __call__(self, batch):
            with open(self.marker, "a") as f:
                f.write("x")
            os._exit(1)  # the process dies, as a machine fault (or, before, a decoder) would end it

    def dies(batch, marker: str):
        DiesWhenCalled(marker)(batch)

    tasks, actors = tmp_path / "task-attempts", tmp_path / "actor-attempts"
    ds = map_batches_bounded(ray.data.from_items([{"a": 1}]), dies, fn_kwargs={"marker": str(tasks)},
                             batch_size=None, max_retries=TASK_RETRIES)
    with pytest.raises(ray.exceptions.RayError):
        ds.materialize()
    assert len(tasks.read_text()) == TASK_RETRIES + 1 == 3
    ds = map_batches_bounded(ray.data.from_items([{"a": 1}]), DiesWhenCalled, fn_constructor_kwargs={
        "marker": str(actors)}, compute=ray.data.ActorPoolStrategy(size=1), max_restarts=ACTOR_RESTARTS,
        max_task_retries=0)
    with pytest.raises(ray.exceptions.RayError):
        ds.materialize()
    assert len(actors.read_text()) == ACTOR_RESTARTS + 1 == 1
