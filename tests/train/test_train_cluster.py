"""Training beyond one worker's memory and one node: streamed splits, a two-node cluster that loses a
node, and the command explaining a run that waits.

Real parts only: images written as PNG files (BreastMNIST from the shared data, phantoms generated
here), caches built by medxfer, Ray Train worker groups on a real local Ray — the session's
single-node cluster, or two logical nodes of ``ray.cluster_utils.Cluster`` started by this module —
and the S3 protocol of the moto server for storage.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import yaml
from evalutil import breast_manifest
from sklearn.metrics import roc_auc_score
from trainutil import in_background, wait_for

from medxfer import storage
from medxfer.config.loading import validate_dict

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _job(root: str, manifest: str, name: str, size: int, **sections) -> dict:
    job = {
        "name": name,
        "data": {"manifest": manifest, "in_memory_max_bytes": 0},  # 0: always stream
        "preprocess": {"size": size, "channels": 1},
        "model": {"backbone": "smallcnn"},
        "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0, "augment": False,
                  "checkpoint": {"every_epochs": 1}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 2, "use_gpu": False},
        "storage": {"root": root},
    }
    for k, v in sections.items():
        job[k] = {**job.get(k, {}), **v}
    return job


def test_streamed_run_on_every_cpu_trains_validates_the_whole_split_and_writes_its_bundle(ray_cluster, test_data,
                                                                                         tmp_path):
    """Two workers holding every CPU of the cluster (2 x 2 of 4), the split streamed (``in_memory_max_bytes: 0``):
    the shape that left Ray Data no CPU and hung. It completes; validation scores each image exactly once."""
    from medxfer.data.cache import prepare
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.lifecycle.inference import predict_arrays
    from medxfer.supervised.stage import run_training

    manifest = breast_manifest(test_data, tmp_path / "breast")
    cfg = validate_dict(_job(str(tmp_path / "root"), manifest, "streamed", 28))
    out = run_training(cfg, "source")
    assert out["data_mode"] == "stream" and out["status"] == "complete" and out["epoch"] == 3
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3] and not out["restarts"] and not out["resumed"]
    assert out["final"]["train_loss"] < out["history"][0]["train_loss"]
    X, y = prepare(cfg).numpy("val")
    bundle = load_bundle(out["bundle"])
    assert bundle.card.metrics["epoch"] == out["best"]["epoch"]
    p = predict_arrays(bundle.build_model(), X, "multiclass")
    assert out["best"]["val_n"] == len(y) == 78
    assert roc_auc_score(y, p[:, 1]) == pytest.approx(out["best"]["val_auroc"], abs=1e-4)
    assert out["best"]["val_auroc"] > 0.6, out["best"]


def test_a_placement_group_that_cannot_be_placed_is_explained_within_the_watchdog_time(ray_cluster, test_data,
                                                                                      tmp_path):
    """Two workers of 3 CPUs on a 4-CPU cluster: Ray Train waits for a placement group it cannot place. The
    command says so in its own words within ``failure.watchdog_s``, naming what it asked and what there is."""
    import ray

    manifest = breast_manifest(test_data, tmp_path / "breast")
    job = _job(str(tmp_path / "root"), manifest, "too-big", 28, scaling={"cpus_per_worker": 3},
               failure={"watchdog_s": 3})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "out.log"
    with open(log, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "medxfer", "source-train", "--config", str(tmp_path / "job.yaml")],
                             stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        started = wait_for(lambda: "starting source" in log.read_text() and time.time(), 300, "the run to start")
        said = wait_for(lambda: "placement group" in log.read_text() and time.time(), 120, "the watchdog")
    finally:
        os.killpg(p.pid, 9)
        p.wait(60)
    text = log.read_text()
    assert said - started < 60, text[-2000:]
    line = next(ln for ln in text.splitlines() if "placement group" in ln)
    assert "too-big: no step or epoch for" in line and "for 2 worker(s) of 3 CPU" in line, line
    assert "1 node(s) can hold a worker, not all 2 at once" in line and "4 CPU on 1 live node(s)" in line, line
    assert "lower scaling.num_workers or scaling.cpus_per_worker" in line and "Traceback" not in text


# ============================================================================ two nodes


@pytest.mark.s3
def test_two_nodes_lose_one_after_a_checkpoint_and_the_run_completes_when_a_node_returns(two_nodes, s3_server,
                                                                                       caplog):
    """Two workers on two nodes, streaming from S3. After epoch 1's checkpoint one node is removed: the command
    names the lost node and the checkpoint it will resume from; a node is added back; the run completes from its
    checkpoint, prints the restart and records it in result.json."""
    from medxfer.data.phantom import write_pngs
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.supervised.stage import run_training
    from medxfer.train.resume import latest

    cluster, (_, second) = two_nodes
    bucket = f"medxfer-nodes-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/root"
    manifest = write_pngs(storage.join(root, "datasets", "phantoms"), 360, size=32)
    cfg = validate_dict(_job(root, manifest, "lost-node", 32, train={"epochs": 4}, failure={"watchdog_s": 5,
                                                                                       "max_failures": 3}))
    run = storage.Layout(root).run("lost-node")
    with caplog.at_level(logging.INFO, logger="medxfer"):
        th, box = in_background(lambda: run_training(cfg, "source"))
        first = wait_for(lambda: ("err" in box and -1) or ((f := latest(run)) and f.epoch), 600, "epoch 1's checkpoint")
        assert first > 0, box.get("err")
        cluster.remove_node(second)
        said = wait_for(lambda: next((r.getMessage() for r in caplog.records if " lost" in r.getMessage()), None)
                     or ("err" in box and "failed"), 180, "the watchdog to name the lost node")
        cluster.add_node(num_cpus=2)
        th.join(600)
    assert not th.is_alive() and "err" not in box, box.get("err")
    out = box["out"]
    assert first < 4, "training finished before the node was removed; the test proved nothing"
    assert "lost-node: no step or epoch for" in said and "(id " in said and "2 CPU) lost" in said, said
    assert "waiting for 2 worker(s) of 2 CPU" in said and "resume from its checkpoint of epoch" in said, said
    assert out["status"] == "complete" and out["epoch"] == 4 and [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]
    assert out["resumed"] and len(out["restarts"]) == 1, out["restarts"]
    restart = out["restarts"][0]
    assert first <= restart["resumed_from_epoch"] < 4 and restart["reason"] and restart["waited_s"] > 0, restart
    assert out["resumed_from_epoch"] == restart["resumed_from_epoch"]
    printed = [r.getMessage() for r in caplog.records if "restart 1:" in r.getMessage()]
    assert len(printed) == 1 and f"from epoch {restart['resumed_from_epoch']}" in printed[0], printed
    assert storage.read_json(storage.join(run, "result.json"))["restarts"] == out["restarts"]
    assert np.isfinite(out["best"]["val_loss"]) and out["best"]["val_n"] == 36
    assert load_bundle(out["bundle"]).card.metrics["epoch"] == out["best"]["epoch"]
