"""`ray job submit` against a real Ray head, the way a user reaches a cluster.

A head is started with `ray start --head --block` in its own temp dir, on its own ports and
with token authentication, so it never meets the session's `ray_cluster` (or another
process's Ray on this machine). It is stopped by terminating the `ray start` process group:
`ray stop` would stop every Ray on the machine.

The working dir is this repository: Ray ships it (minus .gitignore'd and .rayignore'd files),
runs the entrypoint in it and puts it on the job's PYTHONPATH, so both `medxfer ...` (the
installed console script) and `python -m medxfer` import the shipped copy of the package;
the cluster's environment only has to provide the dependencies (on Kubernetes, the image).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def _free_ports(n: int, avoid: range) -> list[int]:
    """``n`` free loopback ports, none in ``avoid`` (the head's worker ports: the kernel's
    ephemeral range overlaps them, and Ray refuses to start when a component's port is in it)."""
    socks = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in avoid:
                s.close()  # try again; the socket held so far keeps the others distinct
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(token_file: Path | None, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    if token_file is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    return env


# The head is on loopback: never through a proxy (nor through urllib's cached global opener).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Head:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.token = tmp / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.home = tmp / "home"
        self.home.mkdir()
        worker_lo = 20000 + (os.getpid() % 400) * 100
        (gcs, dash, client, agent_http, agent_grpc, rt_env, metrics, nm, om) = _free_ports(
            9, avoid=range(worker_lo, worker_lo + 100))
        self.address = f"http://127.0.0.1:{dash}"
        self.cmd = [
            RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
            "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(rt_env),
            "--metrics-export-port", str(metrics), "--node-manager-port", str(nm),
            "--object-manager-port", str(om), "--min-worker-port", str(worker_lo),
            "--max-worker-port", str(worker_lo + 99), "--num-cpus", "4",
            "--temp-dir", str(tmp / "ray"), "--disable-usage-stats",
        ]
        self.log = open(tmp / "head.log", "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=tmp)

    @property
    def env(self) -> dict:
        return _env(self.token, self.home)

    def wait_ready(self, timeout: float = 240) -> None:
        """The job API answers only once the head's agent is up; poll it with the token."""
        deadline = time.time() + timeout
        req = urllib.request.Request(f"{self.address}/api/jobs/",
                                     headers={"Authorization": f"Bearer {self.token.read_text()}"})
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with _DIRECT.open(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Ray head not ready after {timeout}s: {self.log_tail()}")

    def submit(self, *entrypoint: str, env: dict | None = None, timeout: float = 180,
               runtime_env_json: str | None = None) -> subprocess.CompletedProcess:
        """`ray job submit` with the repository as working dir; retried while the agent warms up."""
        cmd = [RAY, "job", "submit", "--address", self.address, "--working-dir", str(REPO)]
        cmd += ["--runtime-env-json", runtime_env_json] if runtime_env_json else []
        cmd += ["--", *entrypoint]
        for _ in range(10):
            p = subprocess.run(cmd, env=env or self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            if "No available agent" not in p.stdout + p.stderr:
                return p
            time.sleep(2)
        return p

    def log_tail(self) -> str:
        self.log.flush()
        tail = (self.tmp / "head.log").read_text(errors="replace")[-1500:]
        for log in sorted((self.tmp / "ray").glob("session_*/logs/dashboard*.log")):  # why the job API is down
            tail += f"\n--- {log.name}\n" + log.read_text(errors="replace")[-1500:]
        return tail

    def stop(self) -> None:
        """Terminate this head's processes only: its process group, then any process still
        naming this head's private temp dir (nothing else on the machine does)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # --block: ray start stops its own processes
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        marker = str(self.tmp).encode()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if int(proc.name) != os.getpid() and marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.log.close()


@pytest.fixture(scope="module")
def ray_head():
    # A short path: Ray's unix sockets live under the temp dir and have a ~107 character limit.
    tmp = Path(tempfile.mkdtemp(prefix="mxr-", dir="/tmp"))
    head = Head(tmp)
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _out(p: subprocess.CompletedProcess) -> str:
    return p.stdout + p.stderr


def test_submit_ships_package_and_reports_success(ray_head):
    p = ray_head.submit("bash", "-c", "medxfer config validate jobs/finetune.yaml && "
                        "python -c 'import medxfer; print(\"imported\", medxfer.__file__)'")
    assert p.returncode == 0, _out(p)
    assert "jobs/finetune.yaml: valid (run name 'finetune-breast-resnet18')" in p.stdout
    (imported,) = [line for line in p.stdout.splitlines() if line.startswith("imported ")]
    assert "working_dir_files" in imported and str(REPO) not in imported, imported  # the shipped copy
    assert "succeeded" in _out(p)


def test_failing_job_gives_nonzero_status(ray_head):
    p = ray_head.submit("medxfer", "config", "validate", "jobs/finetune.yaml", "--set", "train.epochs=0")
    assert p.returncode != 0, _out(p)
    assert "train.epochs" in _out(p)  # the job's own error reaches the submitter's log
    assert "failed" in _out(p).lower()


def test_submit_without_token_is_refused(ray_head, tmp_path):
    p = ray_head.submit("python", "-c", "print('should not run')", env=_env(None, tmp_path))
    assert p.returncode != 0
    assert "should not run" not in p.stdout
    assert "auth" in _out(p).lower()


def test_job_runtime_env_vars_are_merged_not_sent_twice(ray_head):
    """`--runtime-env-json` naming variables medxfer also shares with workers (S3 region,
    MEDXFER_*): Ray refuses a ray.init runtime env that repeats a job's key ("Failed to merge
    the Job's runtime env"), so init_ray leaves those to the job, and the workers see them."""
    env_json = json.dumps({"env_vars": {"AWS_REGION": "eu-west-1", "MEDXFER_MARK": "from-the-job"}})
    code = ("import os, ray; from medxfer.runtime import init_ray; init_ray(); "
            "f = ray.remote(num_cpus=0)(lambda: (os.environ.get('AWS_REGION'), os.environ.get('MEDXFER_MARK'))); "
            "print('worker sees', *ray.get(f.remote()))")
    p = ray_head.submit("python", "-c", code, runtime_env_json=env_json)
    assert p.returncode == 0, _out(p)[-3000:]
    assert "worker sees eu-west-1 from-the-job" in p.stdout, _out(p)[-3000:]


def test_cronjob_retry_resubmits_a_failed_tick_and_follows_a_finished_one(ray_head):
    """The CronJob pod's script, run by bash against the head: the tick's job (id = the Job's name)
    failed, so the retried pod submits it again as <name>-2; a later retry finds that one
    SUCCEEDED and exits 0 without a third submission."""
    from medxfer.config.loading import load_config
    from medxfer.k8s.cronjob import submit_script
    from medxfer.k8s.stages import entrypoint

    cfg = load_config(str(REPO / "jobs" / "retrain.yaml"))
    name = "medxfer-retrain-29000000"
    first = subprocess.run([RAY, "job", "submit", "--address", ray_head.address, "--submission-id", name, "--",
                            "python", "-c", "raise SystemExit(3)"], env=ray_head.env, capture_output=True, text=True,
                           timeout=180)
    assert first.returncode != 0, _out(first)
    script = submit_script(cfg, "retrain", "retrain.yaml", None)
    script = script.replace(entrypoint(cfg, "retrain", "retrain.yaml", None), "python -c 'print(\"tick ran\")'")
    env = {**ray_head.env, "RAY_ADDRESS": ray_head.address, "MEDXFER_JOB_NAME": name}

    def status(sid: str) -> str:
        p = subprocess.run([RAY, "job", "status", "--address", ray_head.address, sid], env=ray_head.env,
                           capture_output=True, text=True, timeout=60)
        return _out(p) if p.returncode == 0 else "no such job"

    retry = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert retry.returncode == 0, _out(retry)[-3000:]
    assert "tick ran" in _out(retry)
    assert f"'{name}-2' succeeded" in status(f"{name}-2") and f"'{name}' failed" in status(name)
    again = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, _out(again)[-3000:]
    assert status(f"{name}-3") == "no such job"  # nothing submitted a third time


@pytest.mark.slow
def test_a_relative_root_in_the_jobs_working_dir_is_refused(ray_head):
    """``storage.root: ./medxfer-runs`` under ``ray job submit --working-dir .`` would put the cache,
    checkpoints and bundle in the folder Ray unpacked for this job: refused before any work."""
    p = ray_head.submit("medxfer", "finetune", "--config", "jobs/finetune.yaml", "--set", "storage.root=./medxfer-runs")
    assert p.returncode != 0, _out(p)
    assert "storage.root: './medxfer-runs' is a relative folder" in _out(p), _out(p)
    assert "working_dir_files" in _out(p) and "s3://" in _out(p) and "Traceback" not in _out(p)


def test_submit_small_finetune(ray_head, test_data, tmp_path):
    """The issue's acceptance test: a (tiny) fine-tune submitted as a Ray job succeeds."""
    root = tmp_path / "store"
    dataset = root / "datasets" / "breastmnist"
    imp = subprocess.run([str(BIN / "medxfer"), "import", "medmnist", "--npz",
                          str(test_data / "medmnist" / "breastmnist.npz"), "--out", str(dataset)],
                         env=ray_head.env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, _out(imp)
    manifest = next(iter(sorted(dataset.glob("manifest.*"))))
    p = ray_head.submit(
        "python", "-m", "medxfer", "finetune", "--config", "jobs/finetune.yaml",
        "--set", f"storage.root={root}", "--set", f"data.manifest={manifest}",
        "--set", "name=submit-finetune", "--set", "model.init=scratch", "--set", "model.backbone=smallcnn",
        "--set", "preprocess.size=28", "--set", "train.epochs=1", "--set", "train.batch_size=64",
        "--set", "train.head_warmup_epochs=0", "--set", "scaling.use_gpu=false", "--set", "scaling.num_workers=1",
        "--set", "scaling.cpus_per_worker=1", "--set", "data.label_fraction=0.3",
        timeout=600,  # ~1 min on an idle 2-core machine; generous for a loaded CI box
    )
    assert p.returncode == 0, _out(p)[-4000:]
    assert "epoch 1/1" in p.stdout, "the driver's and workers' progress reaches the submitter's log"
    assert (root / "runs" / "submit-finetune" / "bundle").is_dir()


def test_a_command_without_the_clusters_token_is_told_how_to_send_it(ray_head, test_data, tmp_path):
    """``RAY_ADDRESS=<head> medxfer ...`` from a shell without the token (or with a wrong one): one
    message naming the address and the fix, exit 2, in seconds, no Ray traceback or C++ warnings."""
    from evalutil import breast_job, breast_manifest

    from medxfer.config.loading import dump_yaml

    job = tmp_path / "job.yaml"
    job.write_text(dump_yaml(breast_job(str(tmp_path / "store"), breast_manifest(test_data, tmp_path / "breast"),
                                        data={"engine": "ray"})))
    gcs = f"127.0.0.1:{ray_head.cmd[ray_head.cmd.index('--port') + 1]}"
    home = tmp_path / "home"
    home.mkdir()
    for extra, says in (({}, "export RAY_AUTH_MODE=token"),
                        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, "refused the token")):
        env = {**_env(None, home), "RAY_ADDRESS": gcs, **extra}
        p = subprocess.run([str(BIN / "medxfer"), "preprocess", "--config", str(job)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, _out(p)
        assert f"Ray cluster at {gcs} (RAY_ADDRESS)" in p.stderr and says in p.stderr, _out(p)
        # No C++ warnings: refused by medxfer's one question, not after ray.init's 25 s of retries.
        for internal in ("Traceback", "unexpected error", "gcs_client", "ConnectionError"):
            assert internal not in _out(p), _out(p)
        assert not (tmp_path / "store" / "cache").exists()
