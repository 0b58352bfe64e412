"""`kubectl apply -f k8s/`, as users type it, against a real Kubernetes API server.

The server is kube-apiserver v1.20.2 with etcd on loopback, built and started by
../shared/tools/kube-apiserver/ (override with MEDXFER_KUBE_TOOLS; binaries in KUBE_HOME,
default ~/.cache/medxfer-kube), with the KubeRay v1.7.0 CRDs loaded: one server for the
session. Without it the tests skip with the reason, unless MEDXFER_REQUIRE_KUBE is set
(CI sets it, and builds the server first).

What 1.20 cannot judge stays with the offline checks in the other tests/k8s/test_k8s_*.py: it has no batch/v1
CronJob (the CronJob goes in as batch/v1beta1 without `timeZone`; the batch/v1 object is
validated offline), it prunes unknown fields in custom resources instead of refusing them
(so every object is read back and compared with what was sent), and it runs no controllers
(what it proves is what the API server accepts and stores, not what the operator does).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from medxfer.cli import main
from medxfer.k8s.names import NAMESPACE
from medxfer.k8s.render import KINDS
from medxfer.k8s.schedule import JOB_NAME_ENV

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
TOOLS = Path(os.environ.get("MEDXFER_KUBE_TOOLS", REPO.parent / "shared" / "tools" / "kube-apiserver")).resolve()
KUBE_BIN = Path(os.environ.get("KUBE_HOME", Path.home() / ".cache" / "medxfer-kube")) / "bin"
CRDS = Path(os.environ.get("MEDXFER_K8S_SCHEMAS", REPO.parent / "shared" / "k8s-schemas")).resolve() / "kuberay-v1.7.0"
CRD_KINDS = ("rayclusters", "rayjobs", "raycronjobs")
NS = NAMESPACE


@dataclass
class Kube:
    env: dict

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(["kubectl", *args], input=stdin, env=self.env, cwd=REPO, capture_output=True,
                           text=True, timeout=300)
        if check:
            assert p.returncode == 0, f"kubectl {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.kubectl("get", "-n", NS, kind, name, "-o", "json").stdout)


def _unavailable() -> str | None:
    if not shutil.which("kubectl"):
        return "kubectl is not installed"
    if not (TOOLS / "start.sh").is_file():
        return f"no kube-apiserver tools at {TOOLS} (set MEDXFER_KUBE_TOOLS)"
    if not ((KUBE_BIN / "kube-apiserver").is_file() and (KUBE_BIN / "etcd").is_file()):
        return f"no kube-apiserver built in {KUBE_BIN}; run {TOOLS / 'build.sh'} (about 5 minutes, once)"
    return None


@pytest.fixture(scope="session")
def kube():
    """One real API server for the session, with the KubeRay CRDs established; stopped at the end."""
    reason = _unavailable()
    if reason:
        if os.environ.get("MEDXFER_REQUIRE_KUBE"):
            pytest.fail(f"{reason}; MEDXFER_REQUIRE_KUBE is set")
        pytest.skip(f"real API server tests skipped: {reason}")
    started = subprocess.run([str(TOOLS / "start.sh")], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    (line,) = [ln for ln in started.stdout.splitlines() if ln.startswith("export ")]
    server = dict(word.split("=", 1) for word in shlex.split(line.removeprefix("export ")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")} | {"KUBECONFIG": server["KUBECONFIG"]}
    try:
        kube = Kube(env)
        with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as out:
            for kind in CRD_KINDS:
                os.symlink(CRDS / f"ray.io_{kind}.yaml", Path(src) / f"ray.io_{kind}.yaml")
            subprocess.run([sys.executable, str(TOOLS / "crds_for_1_20.py"), src, out], check=True, timeout=300)
            kube.kubectl("create", "-f", out)
        _wait_established(kube, len(CRD_KINDS))
        yield kube
    finally:
        subprocess.run([str(TOOLS / "stop.sh")], env={**os.environ, "KUBE_PIDS": server["KUBE_PIDS"],
                                                      "KUBE_RUN_DIR": server["KUBE_RUN_DIR"]}, timeout=60)


def _wait_established(kube: Kube, n: int, timeout: float = 300) -> None:
    """Poll instead of `kubectl wait`, which fails on a CRD that has no conditions yet."""
    deadline = time.monotonic() + timeout
    while True:
        crds = json.loads(kube.kubectl("get", "crd", "-o", "json").stdout)["items"]
        ready = [c for c in crds if any(cond["type"] == "Established" and cond["status"] == "True"
                                        for cond in c.get("status", {}).get("conditions") or [])]
        if len(ready) == n:
            return
        assert time.monotonic() < deadline, f"{len(ready)} of {n} CRDs established after {timeout}s"
        time.sleep(1)


# ----------------------------------------------------------------------------- helpers


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _dump(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


def as_served_by_1_20(obj: dict) -> dict:
    """A 1.20 server has CronJob only as batch/v1beta1, without `timeZone` (1.24+)."""
    if obj["kind"] != "CronJob":
        return obj
    old = copy.deepcopy(obj)
    old["apiVersion"] = "batch/v1beta1"
    old["spec"].pop("timeZone")
    return old


def apply_f_objects() -> list[dict]:
    files = sorted(p for p in (REPO / "k8s").iterdir() if p.suffix in (".json", ".yaml", ".yml"))
    return [d for f in files for d in _docs(f.read_text())]


def kustomized(path: str) -> list[dict]:
    return _docs(subprocess.run(["kubectl", "kustomize", str(REPO / path)], capture_output=True, text=True,
                                check=True, timeout=60).stdout)


def dropped(sent, stored, path: str = "") -> list[str]:
    """Where the stored object lacks or changed what was sent (server defaults may add fields)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r}"]
        return [p for k, v in sent.items() for p in
                (dropped(v, stored[k], f"{path}.{k}") if k in stored else [f"{path}.{k} (dropped)"])]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(sent) != len(stored):
            return [f"{path}: {len(sent)} items sent, {stored!r} stored"]
        return [p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in dropped(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [f"{path}: sent {sent!r}, stored {stored!r}"]


def only_cronjob_v1_missing(p: subprocess.CompletedProcess) -> bool:
    """`kubectl apply` of the manifests on 1.20: everything but the batch/v1 CronJob goes in."""
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error")]
    return p.returncode == 0 or (len(errors) == 1 and 'kind "CronJob" in version "batch/v1"' in errors[0])


def applied_lines(p: subprocess.CompletedProcess) -> dict[str, str]:
    """`kind.group/name created|unchanged|configured` -> {name-with-kind: verb}."""
    return dict(ln.rsplit(" ", 1) for ln in p.stdout.splitlines() if ln.strip())


def _resource(obj: dict) -> str:
    return {"RayCluster": "raycluster.ray.io", "RayJob": "rayjob.ray.io", "ServiceAccount": "serviceaccount",
            "Namespace": "namespace", "ConfigMap": "configmap", "NetworkPolicy": "networkpolicy.networking.k8s.io",
            "Role": "role.rbac.authorization.k8s.io", "RoleBinding": "rolebinding.rbac.authorization.k8s.io",
            "CronJob": "cronjob.batch"}[obj["kind"]] + "/" + obj["metadata"]["name"]


def stored_objects(kube: Kube, objs: list[dict]) -> dict[str, dict]:
    got = json.loads(kube.kubectl("get", "-o", "json", "-f", "-", stdin=_dump(objs)).stdout)
    return {_resource(o): o for o in got["items"]}


@pytest.fixture(scope="module")
def applied(kube):
    """`kubectl apply -f k8s/` on a fresh server, as a user types it; then the CronJob as 1.20 takes it."""
    first = kube.kubectl("apply", "-f", "k8s/", check=False)
    for cron in [o for o in apply_f_objects() if o["kind"] == "CronJob"]:
        kube.kubectl("apply", "-f", "-", stdin=_dump([as_served_by_1_20(cron)]))
    return first


# ----------------------------------------------------------------------------- tests


def test_apply_f_creates_every_object_and_apply_k_changes_nothing(kube, applied):
    objs = apply_f_objects()
    assert only_cronjob_v1_missing(applied), applied.stderr
    created = applied_lines(applied)
    for obj in objs:
        if obj["kind"] != "CronJob":
            assert created.get(_resource(obj)) == "created", (_resource(obj), applied.stdout)
    served = [as_served_by_1_20(o) for o in objs]
    before = stored_objects(kube, served)
    for obj in served:  # nothing the server was sent is missing or changed
        assert not dropped(obj, before[_resource(obj)]), (_resource(obj), dropped(obj, before[_resource(obj)]))
    again = kube.kubectl("apply", "-k", "k8s/", check=False)
    assert only_cronjob_v1_missing(again), again.stderr
    assert len(applied_lines(again)) == len(objs) - 1, again.stdout
    # "configured" for custom resources is kubectl re-sending lists that hold CRD defaults
    # (ports' protocol): the stored objects must not change at all.
    after = stored_objects(kube, served)
    for name, obj in before.items():
        assert after[name]["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], name
    diff = kube.kubectl("diff", "-f", "-", stdin=_dump([as_served_by_1_20(o) for o in kustomized("k8s")]),
                        check=False)
    assert diff.returncode == 0 and not diff.stdout, diff.stdout + diff.stderr


def test_reapplying_keeps_a_resumed_job_running(kube, applied):
    """A user starts the fine-tune after source training, later re-applies everything: no RayJob
    gets `suspend: true`, which would make KubeRay delete a running job's cluster."""
    kube.kubectl("apply", "-f", "k8s/finetune/")
    names = json.loads(kube.kubectl("get", "-n", NS, "rayjobs", "-o", "json").stdout)["items"]
    assert {j["metadata"]["name"] for j in names} == {"medxfer-source-train", "medxfer-finetune"}
    for job in names:  # what resuming a job, or a running one, looks like
        kube.kubectl("patch", "-n", NS, "rayjob", job["metadata"]["name"], "--type", "merge",
                     "-p", '{"spec":{"suspend":false}}')
    assert only_cronjob_v1_missing(kube.kubectl("apply", "-f", "k8s/", check=False))
    kube.kubectl("apply", "-f", "k8s/finetune/")
    for job in names:
        assert not kube.get("rayjob", job["metadata"]["name"])["spec"].get("suspend"), job["metadata"]["name"]


def _render_all() -> list[dict]:
    """`medxfer k8s render` for every job config in jobs/ and every kind, and the ConfigMap."""
    runs = [["--config", str(JOBS), "--kind", "configmap"]]
    runs += [["--config", str(f), "--kind", kind] for f in sorted(JOBS.glob("*.yaml")) for kind in KINDS]
    objs = []
    for args in runs:
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["k8s", "render", *args]) == 0, args
        objs += _docs(buf.getvalue())
    return objs


def test_server_side_dry_runs_of_the_overlay_and_every_render(kube, applied):
    overlay = [as_served_by_1_20(o) for o in kustomized("k8s-overlays/raycronjob")]
    assert "RayCronJob" in {o["kind"] for o in overlay}
    for objs in (overlay, [as_served_by_1_20(o) for o in _render_all()]):
        p = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=_dump(objs), check=False)
        assert p.returncode == 0, p.stderr
        assert len(p.stdout.splitlines()) == len(objs), p.stdout


def test_server_refuses_a_wrong_type_a_bad_name_and_a_bad_field_path(kube, applied):
    """Negative controls: the dry runs above could fail."""
    (job,) = _docs((REPO / "k8s" / "06-rayjob-source-train.yaml").read_text())
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["backoffLimit"] = "two"
    bad_name = copy.deepcopy(job)
    bad_name["metadata"]["name"] = "Medxfer_Source"
    (cron,) = [o for o in apply_f_objects() if o["kind"] == "CronJob"]
    bad_path = as_served_by_1_20(cron)
    (container,) = bad_path["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    [e for e in container["env"] if e["name"] == JOB_NAME_ENV][0]["valueFrom"]["fieldRef"]["fieldPath"] = \
        "metadata.labels[job-name]"
    for obj, says in ((wrong_type, "backoffLimit"), (bad_name, "Medxfer_Source"), (bad_path, "fieldPath")):
        p = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=_dump([obj]), check=False)
        assert p.returncode != 0 and says in p.stderr, (says, p.stdout, p.stderr)


def test_a_ticks_job_name_reaches_its_pod_and_gives_the_scheduled_tick(kube, applied):
    """Create the Job each scheduler creates for a 02:00 tick (the CronJob's child; a RayCronJob
    RayJob's submitter Job, which KubeRay names after the RayJob): the API server labels its
    pods with the Job's name, the pod's env reads that label, and the tick is 02:00 however
    late the pod starts."""
    from medxfer.lifecycle.retrain import run_name_for, tick_from_job_name

    cron = kube.get("cronjob", "medxfer-retrain")
    (ray_cron,) = _docs((REPO / "k8s-overlays" / "raycronjob" / "raycronjob-retrain.yaml").read_text())
    templates = {
        "CronJob": (dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone.utc), cron["spec"]["jobTemplate"]["spec"]),
        "RayCronJob": (dt.datetime(2026, 1, 2, 2, tzinfo=dt.timezone.utc),
                       {"backoffLimit": 2, "template": ray_cron["spec"]["jobTemplate"]["submitterPodTemplate"]}),
    }
    for scheduler, (scheduled, spec) in templates.items():
        name = f"medxfer-retrain-{int(scheduled.timestamp()) // 60}"
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS}, "spec": spec}
        kube.kubectl("create", "-f", "-", stdin=json.dumps(job))
        pod = kube.get("job", name)["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        (env,) = [e for e in container["env"] if e["name"] == JOB_NAME_ENV]
        label = env["valueFrom"]["fieldRef"]["fieldPath"].removeprefix("metadata.labels['").removesuffix("']")
        value = pod["metadata"]["labels"][label]
        assert value == name, scheduler
        tick = tick_from_job_name(value, now=scheduled + dt.timedelta(hours=3))
        assert run_name_for("retrain-breast", tick) == f"retrain-breast-{scheduled:%Y%m%d}T0200", scheduler
