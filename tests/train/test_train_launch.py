"""The launcher as its users meet it: the ``medxfer finetune`` / ``source-train`` commands in a new
process (their own local Ray beside the test session's, or no Ray at all with ``num_workers: 0``),
what they print, and a stop by signal resumed in the same or the other mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from evalutil import breast_manifest

from medxfer import storage

pytestmark = [pytest.mark.slow]

NOISE = ("TrainingReport", "concurrency", "deprecated", "Progress bars disabled", "Token authentication",
         "Found multiple active Ray instances", "Traceback", "(RayTrainWorker", "(TrainController",
         "(SplitCoordinator", "UserWarning", "Reported metrics")


def _job(tmp_path, manifest: str, name: str, workers: int = 1, **train) -> str:
    job = {
        "name": name,
        "data": {"manifest": manifest},
        "preprocess": {"size": 28},
        "model": {"backbone": "smallcnn", "init": "scratch"},
        "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3, "warmup_epochs": 0, **train},
        "scaling": {"num_workers": workers, "cpus_per_worker": 1, "use_gpu": False},
        "storage": {"root": str(tmp_path / "root")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def breast(test_data, tmp_path_factory):
    return breast_manifest(test_data, tmp_path_factory.mktemp("breast"))


@pytest.mark.parametrize("workers", [1, 0], ids=["worker-group", "in-process"])
def test_finetune_prints_what_starts_one_line_per_epoch_and_the_result(breast, tmp_path, workers):
    job = _job(tmp_path, breast, "quiet", workers, epochs=3)
    ray_tmp = tmp_path / "ray"  # where a Ray started by the command would keep its session
    env = {**_env(), "RAY_TMPDIR": str(ray_tmp)} if workers == 0 else _env()
    p = subprocess.run([sys.executable, "-m", "medxfer", "finetune", "--config", job], capture_output=True,
                       text=True, env=env, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert not [ln for ln in lines if any(n in ln for n in NOISE)], out
    assert [ln.split(" epoch ", 1)[1].split()[0] for ln in lines if " epoch " in ln and "/3 " in ln] == \
        ["1/3", "2/3", "3/3"]
    assert any("preprocessing 780 images" in ln for ln in lines)  # what starts: data, model, workers
    where = "in this process" if workers == 0 else "1 worker(s)"
    assert any(f"starting finetune: smallcnn on 546 train / 78 val images, {where}" in ln for ln in lines)
    assert p.stdout.strip().splitlines()[-1].startswith("quiet: complete (epoch 3/3); best val_auroc ")
    assert len(lines) <= 10, out
    if workers == 0:
        assert not ray_tmp.exists() or not any(ray_tmp.iterdir())  # no Ray was started
        record = storage.read_json(str(tmp_path / "root" / "runs" / "quiet" / "checkpoints.json"))
        assert record["checkpoints"] == [{"name": "epoch-0003", "epoch": 3}]


@pytest.mark.parametrize("first,then", [(0, 1), (1, 0)], ids=["in-process-then-workers", "workers-then-in-process"])
def test_a_signal_stops_the_run_with_a_checkpoint_and_the_same_command_resumes(breast, tmp_path, first, then):
    """Stopped in one mode, resumed in the other: each finds the checkpoint the other one wrote."""
    # No time- or epoch-based checkpoints: the only one before the end is the one the stop writes.
    job = _job(tmp_path, breast, "stopme", first, epochs=40,
               checkpoint={"every_minutes": None, "every_epochs": None})
    cmd = [sys.executable, "-m", "medxfer", "source-train", "--config", job]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env())
        deadline = time.time() + 600
        while "epoch 1/40" not in log.read_text():
            assert p.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(600)
    out = log.read_text()
    assert rc == 143, out[-3000:]
    assert "SIGTERM received" in out and "run the same command to resume" in out
    run = tmp_path / "root" / "runs" / "stopme"
    first = storage.read_json(str(run / "result.json"))
    assert first["status"] == "stopped" and 1 <= first["epoch"] < 40
    stopped_at = first["epoch"]
    assert (run / f"epoch-{stopped_at:04d}").is_dir()

    again = subprocess.run(cmd + ["--set", "train.max_epochs_this_run=1", "--set", f"scaling.num_workers={then}"],
                           capture_output=True, text=True, env=_env(), timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    res = storage.read_json(str(run / "result.json"))
    assert res["status"] == "max_epochs_this_run" and res["resumed"] and res["resumed_from_epoch"] == stopped_at
    assert [h["epoch"] for h in res["history"]] == list(range(1, stopped_at + 2))
    assert "resuming source after epoch" in again.stdout + again.stderr


def test_workers_the_commands_own_ray_can_never_place_are_refused_before_any_work(breast, tmp_path):
    """The shipped jobs' shape (2 workers, all of a machine's CPUs each, GPUs) on a machine without them:
    exit 2 with the numbers and the fixes, before the data is preprocessed, not a wait for a placement
    group that a Ray of the command's own can never grant."""
    job = yaml.safe_load(open(_job(tmp_path, breast, "too-big", 2)))
    job["scaling"] = {"num_workers": 2, "cpus_per_worker": os.cpu_count(), "use_gpu": True}
    path = tmp_path / "too-big.yaml"
    path.write_text(yaml.safe_dump(job))
    p = subprocess.run([sys.executable, "-m", "medxfer", "source-train", "--config", str(path)],
                       capture_output=True, text=True, env=_env(), timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out[-3000:]
    assert f"scaling: 2 worker(s) of {os.cpu_count()} CPU and 1 GPU each" in out
    assert "training could never start" in out and "scaling.num_workers" in out and "RAY_ADDRESS" in out
    assert "Traceback" not in out
    assert not (tmp_path / "root" / "cache").exists()  # refused before preprocessing
