"""Faults a night-time cluster has, on a real local Ray cluster: a Ray Train worker SIGKILLed mid-run, a
checkpoint that cannot be written, the driver killed and the same command run again (behind a flaky S3,
with no credentials written anywhere).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from trainutil import cluster_env, in_background, wait_for

from medxfer import storage
from medxfer.config.loading import validate_dict
from medxfer.errors import MedxferError

REPO = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below ``pid`` (from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = cmd.get(c, "")
            todo.append(c)
    return out


def _train_workers() -> list[int]:
    """Ray Train worker processes of *this* session's cluster (never another engineer's)."""
    return sorted(p for p, c in _descendants(os.getpid()).items() if c.startswith("ray::RayTrainWorker"))


def _latest_epoch(run) -> int:
    """The newest epoch whose checkpoint Ray Train has registered in run folder ``run`` (0: none yet)."""
    try:
        snap = storage.read_json(storage.join(str(run), "checkpoint_manager_snapshot.json"))
        return int((snap.get("latest_checkpoint_result") or {}).get("metrics", {}).get("epoch", 0))
    except (MedxferError, ValueError, AttributeError):
        return 0


_wait = wait_for


def _job(root: str, manifest: str, name: str, **train) -> dict:
    return {
        "name": name,
        "data": {"manifest": manifest},
        "preprocess": {"size": 28},
        "model": {"backbone": "smallcnn", "name": "breast"},
        # A checkpoint every epoch: these tests kill processes between epochs and count what is redone.
        "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0, "augment": False,
                  "checkpoint": {"every_epochs": 1}, **train},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "use_gpu": False},
        "failure": {"max_failures": 2},
        "storage": {"root": root},
    }


# ============================================================================ Ray: worker loss, full disk


@pytest.mark.ray
@pytest.mark.slow
def test_worker_killed_mid_run_then_unwritable_checkpoint(ray_cluster, small_breast, tmp_path):
    """(1) SIGKILL one Ray Train worker after epoch 1's checkpoint is registered: FailureConfig restarts
    the group from that checkpoint; at most the epoch in progress is redone; the bundle verifies.
    (2) The same run continued while its next checkpoint cannot be written: a clear failure, and the
    last good checkpoint and bundle stay loadable."""
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.supervised.stage import run_training
    from medxfer.train.checkpoint import read_state, read_weights

    root = tmp_path / "store"
    cfg = validate_dict(_job(str(root), small_breast, "wk", epochs=4))
    run_dir = root / "runs" / "wk"
    th, box = in_background(lambda: run_training(cfg, "source"))
    done_at_kill = _wait(lambda: _latest_epoch(run_dir) or ("err" in box and -1), 600, "epoch 1's checkpoint")
    assert done_at_kill > 0, box.get("err")
    victims = _train_workers()
    assert len(victims) == 2, victims
    os.kill(victims[-1], signal.SIGKILL)
    th.join(600)
    assert "err" not in box, box.get("err")
    out = box["out"]
    assert done_at_kill < 4, "training finished before the kill; the test proved nothing"
    assert out["status"] == "complete" and out["epoch"] == 4
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]  # no epoch lost or duplicated
    state = read_state(str(run_dir / "epoch-0004"))
    assert len(state.run_start_epochs) == 2, state.run_start_epochs  # the worker group really restarted
    # ... and the command recorded it: when, why, from which epoch (result.json's "restarts").
    assert out["resumed"] and len(out["restarts"]) == 1 and out["restarts"][0]["reason"], out["restarts"]
    assert out["restarts"][0]["resumed_from_epoch"] == state.run_start_epochs[-1]
    restart_epoch = state.run_start_epochs[-1]
    # Epochs redone = (epoch in progress at the kill) - (epoch restarted from) <= 1.
    assert done_at_kill <= restart_epoch <= 4 and (done_at_kill + 1) - restart_epoch <= 1
    assert np.isfinite(out["final"]["val_loss"]) and out["final"]["train_loss"] < out["history"][0]["train_loss"]
    bundle = load_bundle(out["bundle"])
    assert bundle.card.metrics["epoch"] == out["best"]["epoch"]
    good_sha = bundle.card.weights_sha256

    # (2) Continue the run to epoch 5 with the epoch-5 checkpoint folder blocked by a regular file.
    (run_dir / "epoch-0005").write_text("not a folder\n")
    more = validate_dict(_job(str(root), small_breast, "wk", epochs=5) | {"failure": {"max_failures": 0}})
    with pytest.raises(MedxferError) as ei:
        run_training(more, "source")
    msg = str(ei.value)
    # One message naming the run, the blocked path, and how to resume — not Ray's "workers failed".
    assert "epoch-0005" in msg and "training failed" in msg and "re-run the same command" in msg, msg[-2000:]
    box["disk_error"] = (type(ei.value).__name__, isinstance(ei.value, MedxferError), msg.strip().splitlines()[-1])
    print("checkpoint write failure surfaces as:", box["disk_error"])
    assert _latest_epoch(run_dir) == 4
    assert read_state(str(run_dir / "epoch-0004")).epoch == 4 and read_weights(str(run_dir / "epoch-0004"))
    assert load_bundle(out["bundle"]).card.weights_sha256 == good_sha


# ============================================================================ Ray: driver killed


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_driver_killed_rerun_resumes_and_no_credentials_are_written(ray_cluster, flaky_s3, s3_root, small_breast,
                                                                   tmp_path):
    """``medxfer source-train`` as its own process (a job driver on the session cluster, storage on S3
    behind the fault proxy at 5%), SIGKILLed after epoch 1's checkpoint; the same command again resumes.
    The job's Ray workers get the proxy's endpoint through the job's runtime_env (medxfer.runtime), so
    preprocessing, checkpoints, the bundle and result.json all go through the faults. The driver's
    environment holds a marker secret: it must appear in no object the job wrote, in none of its output,
    and never cross the wire."""
    from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle

    secret = "MARKER-SECRET-8c1f9e0a"
    flaky_s3.record = secret.encode()
    flaky_s3.configure(rate=0.05)
    job = tmp_path / "job.yaml"
    spec = _job(s3_root, small_breast, "dk", epochs=3)
    spec["scaling"]["num_workers"] = 1  # the driver is what dies here; one worker keeps the test cheap
    job.write_text(yaml.safe_dump(spec))
    run = storage.Layout(s3_root).run("dk")
    env = cluster_env(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID="MARKER-KEYID")
    cmd = [sys.executable, "-m", "medxfer", "source-train", "--config", str(job)]
    log1 = tmp_path / "first.log"
    with open(log1, "wb") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        killed_after = _wait(lambda: _latest_epoch(run) or (p.poll() is not None and -1), 600, "epoch 1", step=0.5)
        assert killed_after > 0, log1.read_text()[-3000:]
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(60)
    assert killed_after < 3, "the run finished before the kill; the test proved nothing"
    assert not storage.exists(storage.join(run, "result.json"))
    # The killed driver's job is cleaned up by Ray: its workers go away (no two writers on one run).
    _wait(lambda: not _train_workers(), 120, "the killed job's workers to exit", step=1)

    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = storage.read_json(storage.join(run, "result.json"))
    assert res["resumed"] and res["status"] == "complete" and res["epoch"] == 3
    assert res["resumed_from_epoch"] >= killed_after and [h["epoch"] for h in res["history"]] == [1, 2, 3]
    b = load_bundle(res["bundle"])
    assert sorted(storage.list_dir(res["bundle"])) == sorted([CARD, WEIGHTS])
    assert b.card.run == "dk" and b.card.metrics["epoch"] == res["best"]["epoch"]
    assert flaky_s3.counts["faults"] >= 5, flaky_s3.counts  # the job really went through the faults

    # Credentials: in no object under the storage root, in neither invocation's output, never sent.
    flaky_s3.configure(rate=0.0)
    objects = storage.list_files(s3_root)
    assert len(objects) > 10
    assert not [o for o in objects if secret.encode() in storage.read_bytes(o)]
    assert secret not in log1.read_text(errors="replace") + r.stdout + r.stderr
    assert "MARKER-KEYID" not in storage.read_text(storage.join(run, "config.yaml")) + b.card.model_dump_json()
    assert flaky_s3.marker_seen == 0
