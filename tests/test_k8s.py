"""The Kubernetes manifests: valid against the real schemas, hardened, and in step with jobs/.

What an API server would check is checked here offline: core kinds against the upstream
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail), KubeRay kinds against
the CRDs' openAPIV3Schema from ../shared/k8s-schemas (plus the unknown-field check a
structural schema implies, and the deletion-rule checks the KubeRay operator makes). Then
what a reviewer checks: the layout `kubectl apply -f k8s/` reads, pinned images, requests
and limits, non-root pods, GPU tolerations, no inline secrets, cron schedules that parse,
entrypoints that name configs present in jobs/, ticks taken from the scheduler's Job name.
Manifests come from `kubectl kustomize` (when kubectl is installed), from the files in
k8s/ and k8s-overlays/, and from `medxfer k8s render` for every kind and stage.
tests/test_k8s_server.py applies them to a real API server.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from medxfer import k8s
from medxfer.cli import build_parser, main
from medxfer.config import ScalingSection
from medxfer.config_io import load_config, read_yaml_text, validate_dict
from medxfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAY = REPO / "k8s-overlays" / "raycronjob"
JOBS = REPO / "jobs"
SCHEMAS = Path(os.environ.get("MEDXFER_K8S_SCHEMAS", REPO.parent / "shared" / "k8s-schemas")).resolve()
KUBERAY = SCHEMAS / "kuberay-v1.7.0"
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
CONSTRAINTS = REPO / "constraints" / "image.txt"
AUTOSCALER_ACCOUNT = "medxfer-autoscaler"
API_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the Ray autoscaler reads its token

# Committed file <- the `medxfer k8s render` arguments its header must name.
GENERATED = {
    "k8s/04-configmap-jobs.yaml": ("jobs", "configmap"),
    "k8s/05-raycluster.yaml": ("jobs/retrain.yaml", "raycluster"),
    "k8s/06-rayjob-source-train.yaml": ("jobs/source-train.yaml", "rayjob"),
    "k8s/07-cronjob-retrain.yaml": ("jobs/retrain.yaml", "cronjob"),
    "k8s/finetune/rayjob-finetune.yaml": ("jobs/finetune.yaml", "rayjob"),
    "k8s-overlays/raycronjob/raycronjob-retrain.yaml": ("jobs/retrain.yaml", "raycronjob"),
}
# The labels each KubeRay v1.7.0 install puts on the operator's pod: the Helm chart
# (helm-chart/kuberay-operator/templates/deployment.yaml, values nameOverride/componentOverride)
# and the kustomize/plain manifests (ray-operator/config/manager/manager.yaml).
OPERATOR_POD_LABELS = {
    "helm": {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator",
             "app.kubernetes.io/component": "kuberay-operator"},
    "kustomize": {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component": "kuberay-operator"},
}
SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{30,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(auth_token|password|secret_key)\s*:\s*['\"]?[A-Za-z0-9+/=_-]{16,}"),
]
SECRETISH_ENV = re.compile(r"(?i)(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL|SESSION_KEY)")


# ----------------------------------------------------------------------------- sources


def _load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def _kustomize(path: str) -> tuple[dict, ...] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    p = subprocess.run([kubectl, "kustomize", str(REPO / path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return tuple(_load_all(p.stdout))


def kustomized(path: str = "k8s") -> tuple[dict, ...]:
    """`kubectl kustomize <path>`; tests that need it skip where kubectl is not installed."""
    objs = _kustomize(path)
    if objs is None:
        pytest.skip("kubectl not installed: kustomize output not checked (files and renderer still are)")
    return objs


def apply_f_files() -> list[Path]:
    """What `kubectl apply -f k8s/` reads: the folder's .json/.yaml/.yml files, in name order."""
    return sorted(p for p in K8S.iterdir() if p.is_file() and p.suffix in (".json", ".yaml", ".yml"))


def apply_f_objects() -> list[dict]:
    return [d for f in apply_f_files() for d in _load_all(f.read_text())]


def file_objects() -> list[tuple[str, dict]]:
    out = []
    for root in (K8S, OVERLAY.parent):
        for f in sorted(root.rglob("*.yaml")):
            if f.name != "kustomization.yaml":
                out += [(str(f.relative_to(REPO)), d) for d in _load_all(f.read_text())]
    return out


def rendered_variants() -> list[tuple[str, dict]]:
    """The renderer over every kind and stage, and over the scaling shapes that change the pods."""
    out = []
    for stage in k8s.STAGES:
        cfg = load_config(str(JOBS / f"{stage}.yaml"))
        for kind in k8s.KINDS:
            out.append((f"{kind}/{stage}", k8s.render(cfg, kind, stage, config_file=f"{stage}.yaml")))
    for sets in (["scaling.use_gpu=false", "scaling.num_workers=3"],
                 ["scaling.num_workers=4", "scaling.gpus_per_worker=0.5"],
                 ["scaling.num_workers=2", "scaling.gpus_per_worker=2"]):
        cfg = load_config(str(JOBS / "finetune.yaml"), sets)
        for kind in k8s.KINDS:
            out.append((f"{kind}/finetune{sets}", k8s.render(cfg, kind, "finetune", overrides=sets)))
    return out


@cache
def all_objects() -> tuple[tuple[str, dict], ...]:
    objs = [(f"kustomize:{d['kind']}/{d['metadata']['name']}", d) for d in _kustomize("k8s") or ()]
    if OVERLAY.is_dir():  # test_overlays_live_outside_the_base checks it is there
        objs += [(f"overlay:{d['kind']}/{d['metadata']['name']}", d)
                 for d in _kustomize("k8s-overlays/raycronjob") or ()]
    return tuple(objs + file_objects() + rendered_variants())


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


# ----------------------------------------------------------------------------- schema validation


@cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(kind))


@cache
def crd_schema(kind: str) -> dict:
    path = KUBERAY / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.fail(f"KubeRay CRD {path} missing; set MEDXFER_K8S_SCHEMAS to the k8s-schemas folder")
    # libyaml when present: the CRDs are megabytes, and pure-Python YAML takes seconds each.
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields a structural schema does not declare: an API server with strict field
    validation (kubectl's default) rejects them; a lax one silently drops them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                if not schema.get("additionalProperties"):
                    out.append(f"{path}.{key}")
                continue
            out += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def check_deletion_rules(spec: dict) -> None:
    """What KubeRay v1.7's operator refuses (utils/validation.go, validateDeletionRules) and
    the CRD's CEL rules that a jsonschema check cannot run."""
    rules = spec.get("deletionStrategy", {}).get("deletionRules")
    if not rules:
        return
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    order = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")
    by_condition: dict[tuple, dict[str, int]] = {}
    for rule in rules:
        cond = rule["condition"]
        assert ("jobStatus" in cond) != ("jobDeploymentStatus" in cond), rule
        key = (cond.get("jobStatus"), cond.get("jobDeploymentStatus"))
        assert rule["policy"] not in by_condition.setdefault(key, {}), f"duplicate rule {rule}"
        by_condition[key][rule["policy"]] = cond.get("ttlSeconds", 0)
    for key, ttls in by_condition.items():
        seq = [ttls[p] for p in order if p in ttls]
        assert seq == sorted(seq), f"{key}: TTLs must grow DeleteWorkers <= DeleteCluster <= DeleteSelf: {ttls}"


def validate_crd(obj: dict) -> None:
    schema = crd_schema(obj["kind"])
    crd_validator(obj["kind"]).validate(obj)
    assert not unknown_fields(obj, schema), f"unknown fields: {unknown_fields(obj, schema)}"
    for spec in _rayjob_specs(obj):
        check_deletion_rules(spec)


@cache
def _validate_json(text: str) -> None:
    obj = json.loads(text)
    if obj["apiVersion"].startswith("ray.io/"):
        validate_crd(obj)
    else:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def validate_object(obj: dict) -> None:
    """Validate once per distinct object: the same object comes from kustomize, the file and the renderer."""
    _validate_json(json.dumps(obj, sort_keys=True))


def test_kustomize_output_validates():
    objs = kustomized()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "ServiceAccount", "Role",
                            "RoleBinding", "ConfigMap", "NetworkPolicy", "RayCluster", "RayJob", "CronJob"])
    for obj in objs + kustomized("k8s-overlays/raycronjob"):
        validate_object(obj)


def test_files_and_rendered_variants_validate():
    for name, obj in file_objects() + rendered_variants():
        try:
            validate_object(obj)
        except Exception as e:  # noqa: BLE001 - name the object in the failure
            pytest.fail(f"{name}: {e}")


def test_schema_checks_catch_mistakes():
    """The validators are not vacuous: a typo, a wrong type, a bad enum and a bad rule order all fail."""
    job = yaml.safe_load((K8S / "06-rayjob-source-train.yaml").read_text())
    typo = yaml.safe_load(yaml.safe_dump(job))
    typo["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(AssertionError, match="shutdownAfterJobFinish"):
        validate_crd(typo)
    wrong = yaml.safe_load(yaml.safe_dump(job))
    wrong["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(wrong)
    cron = yaml.safe_load((OVERLAY / "raycronjob-retrain.yaml").read_text())
    rules = cron["spec"]["jobTemplate"]["deletionStrategy"]["deletionRules"]
    rules[0]["condition"]["ttlSeconds"] = 10 ** 7  # DeleteCluster after DeleteSelf
    with pytest.raises(AssertionError, match="TTLs must grow"):
        validate_crd(cron)
    cron = yaml.safe_load((K8S / "07-cronjob-retrain.yaml").read_text())
    cron["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSIONS[0], strict=True)


# ----------------------------------------------------------------------------- layout (`kubectl apply -f k8s/`)


def test_apply_f_reads_ordered_manifests_and_skips_the_kustomization():
    """`kubectl apply -f k8s/` sends every .yaml in the folder, in name order, as it is."""
    files = apply_f_files()
    objs = apply_f_objects()
    assert objs and objs[0]["kind"] == "Namespace", [f.name for f in files]
    assert not [o for o in objs if o["apiVersion"].startswith("kustomize.config.k8s.io")], \
        "a kustomization among the -f files: the API server refuses kind Kustomization"
    for obj in objs[1:]:
        assert obj["metadata"]["namespace"] == k8s.NAMESPACE, _key(obj)
    kinds = [o["kind"] for o in objs]
    assert kinds.index("ConfigMap") < kinds.index("RayCluster"), "the head mounts the ConfigMap"
    assert (K8S / "Kustomization").is_file() and "Kustomization" not in [f.name for f in files]


def test_apply_f_and_apply_k_give_the_same_objects():
    def canon(objs):
        return sorted(json.dumps(o, sort_keys=True) for o in objs)

    assert canon(kustomized("k8s")) == canon(apply_f_objects())


def test_overlays_live_outside_the_base():
    nested = [p for p in K8S.rglob("*") if p.name.lower() in ("kustomization", "kustomization.yaml")
              and p.parent != K8S]
    assert not nested, f"kustomize refuses an overlay inside its base: {nested}"
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "../../k8s" in overlay["resources"]


# ----------------------------------------------------------------------------- drift


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_committed_manifest_equals_its_render_command(path, monkeypatch):
    """The first line names the command; running it (as `make k8s` does) prints the file exactly."""
    text = (REPO / path).read_text()
    command = text.splitlines()[0].removeprefix("# Generated by: ")
    args = shlex.split(command)
    assert args[:3] == ["medxfer", "k8s", "render"], command
    config, kind = GENERATED[path]
    assert args[args.index("--config") + 1] == config and args[args.index("--kind") + 1] == kind, command
    monkeypatch.chdir(REPO)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(args[1:]) == 0
    assert buf.getvalue() == text, f"{path} drifted from jobs/ or medxfer/k8s.py; regenerate it with `make k8s`"


def test_every_rendered_manifest_is_checked_for_drift():
    headed = {str(p.relative_to(REPO)) for root in (K8S, OVERLAY.parent) for p in root.rglob("*.yaml")
              if p.read_text().startswith("# Generated by: ")}
    assert headed == set(GENERATED)


def test_configmap_holds_every_job_config_verbatim():
    (cm,) = _load_all((K8S / "04-configmap-jobs.yaml").read_text())
    assert cm["metadata"]["name"] == k8s.CONFIGMAP
    assert cm["data"] == {p.name: p.read_text() for p in sorted(JOBS.glob("*.yaml"))}


def test_cli_render_prints_the_checked_in_object():
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["k8s", "render", "--config", str(JOBS / "finetune.yaml")]) == 0
    assert _load_all(buf.getvalue()) == _load_all((K8S / "finetune" / "rayjob-finetune.yaml").read_text())


def test_configmap_render_refuses_an_invalid_job_config(tmp_path, capsys):
    (tmp_path / "ok.yaml").write_text((JOBS / "finetune.yaml").read_text())
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: zero\n")
    assert main(["k8s", "render", "--config", str(tmp_path), "--kind", "configmap"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["k8s", "render", "--config", str(tmp_path / "none"), "--kind", "configmap"]) == 2


# ----------------------------------------------------------------------------- jobs/


def test_every_job_config_validates_and_is_in_the_configmap():
    files = sorted(p.name for p in JOBS.glob("*.yaml"))
    assert {"source-train.yaml", "finetune.yaml", "evaluate.yaml", "retrain.yaml", "predict.yaml"} <= set(files)
    for name in files:
        text = (JOBS / name).read_text()
        validate_dict(read_yaml_text(text, name), name)
        assert "s3://medxfer-data" in text, f"{name}: examples point at the documented bucket"
    (cm,) = [o for o in kustomized() if o["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == k8s.CONFIGMAP
    assert sorted(cm["data"]) == files
    assert cm["data"]["finetune.yaml"] == (JOBS / "finetune.yaml").read_text()


def test_entrypoints_name_configs_in_jobs():
    mounted = re.compile(re.escape(k8s.CONFIG_DIR) + r"/([A-Za-z0-9._-]+)")
    seen = 0
    for name, obj in all_objects():
        for cmd in _commands(obj):
            for config in mounted.findall(cmd):
                seen += 1
                assert (JOBS / config).is_file(), f"{name}: {cmd!r} reads {config}, which is not in jobs/"
                assert load_config(str(JOBS / config))
            if "medxfer" in cmd:
                assert " --config " in cmd or " --data " in cmd or "medxfer predict" in cmd, f"{name}: {cmd}"
    assert seen > 10


# ----------------------------------------------------------------------------- re-applying, scheduling


def test_nothing_applied_twice_suspends_a_running_job():
    """KubeRay suspends a Running RayJob (deletes its cluster) when `spec.suspend: true` arrives,
    so no manifest a user re-applies carries it; the fine-tune, which needs the source bundle,
    is applied on its own once source training has succeeded."""
    for source in (lambda: kustomized("k8s"), lambda: [o for _, o in file_objects()],
                   lambda: kustomized("k8s-overlays/raycronjob")):
        suspended = [_key(o) for o in source() if o["kind"] in ("RayJob", "RayCronJob") and o["spec"].get("suspend")]
        assert not suspended, f"suspended, so re-applying them stops a running job: {suspended}"
    assert ("RayJob", "medxfer-finetune") not in {_key(o) for o in kustomized("k8s")}
    (finetune,) = _load_all((K8S / "finetune" / "rayjob-finetune.yaml").read_text())
    assert _key(finetune) == ("RayJob", "medxfer-finetune")


def _scheduler(kind: str) -> tuple[str, dict]:
    """(the shell text that holds the retrain command, the pod spec that runs that shell)."""
    if kind == "CronJob":
        (cron,) = [o for o in kustomized("k8s") if o["kind"] == "CronJob"]
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return pod["containers"][0]["command"][-1], pod
    (ray_cron,) = [o for o in kustomized("k8s-overlays/raycronjob") if o["kind"] == "RayCronJob"]
    template = ray_cron["spec"]["jobTemplate"]
    assert template["submissionMode"] == "K8sJobMode", "the job-name label exists only on a submitter Job's pods"
    return template["entrypoint"], template["submitterPodTemplate"]["spec"]


def _retrain_argv(shell_text: str, job_name: str) -> list[str]:
    """The `medxfer retrain ...` arguments once a real bash has expanded them in the pod."""
    (line,) = [ln for ln in shell_text.splitlines() if "medxfer retrain" in ln]
    cmd = line[line.index("medxfer retrain"):]
    p = subprocess.run(["bash", "-c", f'set -- {cmd}; printf "%s\\n" "$@"'], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], k8s.JOB_NAME_ENV: job_name}, check=True)
    return p.stdout.splitlines()[1:]  # without "medxfer"


def _minute_name(scheduled: dt.datetime) -> str:
    """The child Job/RayJob name both controllers give a tick (kubernetes pkg/controller/cronjob
    getJobName, KubeRay raycronjob_controller getRayJobName): <name>-<Unix time / 60>."""
    return f"medxfer-retrain-{int(scheduled.timestamp()) // 60}"


def test_scheduled_retrains_take_their_tick_from_the_job_name_not_the_clock():
    """Both schedulers hand the pod its Job's name (downward API) and the retrain derives its
    tick from it, so a retry after an hour boundary resumes the same run."""
    from medxfer import retrain

    scheduled = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    for scheduler in ("CronJob", "RayCronJob"):
        shell_text, pod = _scheduler(scheduler)
        assert "date" not in shell_text, f"{scheduler}: the tick must not come from the wall clock"
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env[k8s.JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']", scheduler
        args = build_parser().parse_args(_retrain_argv(shell_text, _minute_name(scheduled)))
        assert args.tick is None and args.tick_from_job == _minute_name(scheduled), scheduler
        for started in (scheduled + dt.timedelta(seconds=40), scheduled + dt.timedelta(hours=1, minutes=40)):
            tick = retrain.tick_from_job_name(args.tick_from_job, now=started)
            assert retrain.run_name_for("retrain-breast", tick) == "retrain-breast-20260101T02", (scheduler, started)


def test_tick_from_job_name_refuses_names_without_a_scheduled_minute():
    from medxfer.retrain import tick_from_job_name

    now = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
    late = _minute_name(dt.datetime(2025, 12, 16, 2, 17, tzinfo=dt.timezone.utc))  # a tick fired late
    assert tick_from_job_name(late, now=now) == dt.datetime(2025, 12, 16, 2, tzinfo=dt.timezone.utc)
    for bad in ("", "medxfer-retrain", "retrain-now", "medxfer-retrain-42"):
        with pytest.raises(ConfigError, match="scheduled minute"):
            tick_from_job_name(bad, now=now)
    with pytest.raises(ConfigError, match="not seconds"):
        tick_from_job_name(f"medxfer-retrain-{int(now.timestamp())}", now=now)


def test_retrain_cli_refuses_a_job_name_without_a_tick(capsys):
    rc = main(["retrain", "--config", str(JOBS / "retrain.yaml"), "--tick-from-job", "retrain-now"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tick-from-job 'retrain-now'" in err and "Traceback" not in err


def test_a_retrain_rayjob_by_hand_is_named_like_a_tick():
    from medxfer.retrain import tick_from_job_name

    now = dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    name = k8s.tick_job_name("retrain", now.timestamp())
    assert tick_from_job_name(name, now=now) == dt.datetime(2026, 3, 4, 5, tzinfo=dt.timezone.utc)
    job = k8s.render(load_config(str(JOBS / "retrain.yaml")), "rayjob", "retrain")
    assert re.fullmatch(r"medxfer-retrain-\d{8,}", job["metadata"]["name"])


def test_raycronjob_ships_only_in_its_overlay_and_deletes_its_rayjobs():
    """A RayCronJob created suspended and resumed later schedules from its creation time and
    starts every missed night at once; and `ttlSecondsAfterFinished` removes only clusters."""
    assert "RayCronJob" not in [o["kind"] for o in kustomized("k8s")]
    overlay = {_key(o): o for o in kustomized("k8s-overlays/raycronjob")}
    ray_cron = overlay[("RayCronJob", "medxfer-retrain")]
    assert not ray_cron["spec"].get("suspend")
    assert overlay[("CronJob", "medxfer-retrain")]["spec"]["suspend"] is True, "one scheduler at a time"
    template = ray_cron["spec"]["jobTemplate"]
    rules = template["deletionStrategy"]["deletionRules"]
    deleted_self = {json.dumps({k: v for k, v in r["condition"].items() if k != "ttlSeconds"}, sort_keys=True)
                    for r in rules if r["policy"] == "DeleteSelf"}
    assert deleted_self == {'{"jobStatus": "SUCCEEDED"}', '{"jobStatus": "FAILED"}',
                            '{"jobDeploymentStatus": "Failed"}'}
    check_deletion_rules(template)


def test_finished_clusters_go_within_minutes():
    for name, obj in all_objects():
        for spec in _rayjob_specs(obj):
            if spec.get("shutdownAfterJobFinishes"):
                assert 0 < spec["ttlSecondsAfterFinished"] <= 600, name
                continue
            rules = spec["deletionStrategy"]["deletionRules"]
            conditions = {json.dumps(r["condition"] | {"ttlSeconds": 0}, sort_keys=True): r["condition"]["ttlSeconds"]
                          for r in rules if r["policy"] == "DeleteCluster"}
            assert len(conditions) == 3 and max(conditions.values()) <= 600, name


# ----------------------------------------------------------------------------- policy


def test_images_are_pinned_and_match_ray_version():
    for name, obj in all_objects():
        for image in _find_key(obj, "image"):
            assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, f"{name}: {image} has no tag"
            assert not image.endswith(":latest"), f"{name}: {image}"
        for spec in _ray_cluster_specs(obj):
            assert spec["rayVersion"] == k8s.RAY_VERSION, name
            for image in _find_key(spec, "image"):
                assert f"ray{spec['rayVersion']}" in image, f"{name}: {image} does not carry rayVersion"


def test_every_container_has_requests_and_limits():
    for name, obj in all_objects():
        for c in _containers(obj):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert r in res.get(part, {}), f"{name}: container {c['name']} lacks {part}.{r}"
        for spec in _ray_cluster_specs(obj):
            if spec.get("enableInTreeAutoscaling"):
                res = spec["autoscalerOptions"]["resources"]
                assert res["requests"] and res["limits"], name


def _gib(quantity: str) -> int:
    assert quantity.endswith("Gi"), quantity
    return int(quantity[:-2])


def test_pods_request_their_disk_bound_ray_logs_and_give_up_on_an_unschedulable_cluster():
    """Ephemeral storage is requested for every emptyDir on disk, each of which has a size
    limit, including the log volume KubeRay shares between an autoscaling head and its
    autoscaler; a RayJob whose cluster does not come up within an hour fails."""
    autoscaling = 0
    for name, obj in all_objects():
        for pod in _pod_specs(obj):
            disk = [v for v in pod.get("volumes", []) if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
            assert all("sizeLimit" in v["emptyDir"] for v in disk), f"{name}: an emptyDir without a size limit"
            main_container = pod["containers"][0]
            requested = _gib(main_container["resources"]["requests"].get("ephemeral-storage", "0Gi"))
            assert requested >= sum(_gib(v["emptyDir"]["sizeLimit"]) for v in disk) > 0, f"{name}: {requested}"
        for spec in _ray_cluster_specs(obj):
            if not spec.get("enableInTreeAutoscaling"):
                continue
            autoscaling += 1
            head = spec["headGroupSpec"]["template"]["spec"]
            (logs,) = [v for v in head["volumes"] if v["name"] == "ray-logs"]
            assert logs["emptyDir"]["sizeLimit"], name
            for mounts in (head["containers"][0]["volumeMounts"], spec["autoscalerOptions"]["volumeMounts"]):
                # KubeRay injects its own, unlimited ray-logs volume unless /tmp/ray is mounted.
                assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in mounts, name
        for spec in _rayjob_specs(obj):
            assert 0 < spec["preRunningDeadlineSeconds"] <= 2 * 3600, name
    assert autoscaling


def test_pods_are_non_root_and_hardened():
    for name, obj in all_objects():
        for pod in _pod_specs(obj):
            sc = pod.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, name
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            assert "hostNetwork" not in pod and "hostPID" not in pod, name
            tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            for c in pod["containers"]:
                csc = c.get("securityContext", {})
                assert csc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
                assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
                assert not csc.get("privileged"), f"{name}/{c['name']}"
                if csc.get("readOnlyRootFilesystem"):  # then Ray and Python need a writable /tmp
                    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                    assert mounts.get("/tmp") in tmp_volumes, f"{name}/{c['name']}: read-only root without /tmp"
        for spec in _ray_cluster_specs(obj):
            if spec.get("enableInTreeAutoscaling"):
                assert spec["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False


def test_only_the_autoscaler_container_gets_an_api_token():
    """No pod mounts a token; the long-running head has its own account (KubeRay binds the
    autoscaler's Role to it) and a projected token mounted in the autoscaler container only,
    not in the Ray container, where every submitted driver runs."""
    accounts = {o["metadata"]["name"]: o for o in kustomized("k8s") if o["kind"] == "ServiceAccount"}
    autoscaling = 0
    for name, obj in all_objects():
        clusters = _ray_cluster_specs(obj)
        autoscaling_heads = [id(s["headGroupSpec"]["template"]["spec"]) for s in clusters
                             if s.get("enableInTreeAutoscaling")]
        for pod in _pod_specs(obj):
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["serviceAccountName"] in accounts, name
            if pod["serviceAccountName"] == AUTOSCALER_ACCOUNT:
                assert id(pod) in autoscaling_heads, f"{name}: only the autoscaling head uses its account"
            for c in pod["containers"]:
                assert not [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith(API_TOKEN_PATH)], \
                    f"{name}/{c['name']}: an API token in a Ray container"
        for spec in clusters:
            if not spec.get("enableInTreeAutoscaling"):
                continue
            autoscaling += 1
            head = spec["headGroupSpec"]["template"]["spec"]
            assert head["serviceAccountName"] == AUTOSCALER_ACCOUNT, name
            (token_mount,) = [m for m in spec["autoscalerOptions"]["volumeMounts"]
                              if m["mountPath"] == API_TOKEN_PATH]
            (volume,) = [v for v in head["volumes"] if v["name"] == token_mount["name"]]
            assert any("serviceAccountToken" in s for s in volume["projected"]["sources"]), name
    assert autoscaling
    assert accounts[AUTOSCALER_ACCOUNT]["automountServiceAccountToken"] is False


def test_gpu_workers_have_limits_tolerations_and_shm():
    gpu_groups = 0
    for name, obj in all_objects():
        for pod in _pod_specs(obj):
            gpus = [c for c in pod["containers"] if "nvidia.com/gpu" in c["resources"].get("limits", {})]
            if not gpus:
                assert not pod.get("tolerations"), f"{name}: a CPU pod tolerates the GPU taint"
                continue
            gpu_groups += 1
            tol = pod.get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tol), f"{name}: GPU pod without toleration"
            shm = {v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"}
            for c in gpus:
                assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
                assert any(m["mountPath"] == "/dev/shm" and m["name"] in shm for m in c["volumeMounts"]), name
    assert gpu_groups > 5


def test_ray_clusters_use_token_auth_and_stay_internal():
    for name, obj in all_objects():
        assert obj["kind"] != "Secret", f"{name}: secrets are created out of band, not shipped"
        assert obj["kind"] not in ("Ingress", "ClusterRole", "ClusterRoleBinding"), name
        if obj["kind"] == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", name
        for spec in _ray_cluster_specs(obj):
            assert spec["authOptions"] == {"mode": "token", "secretName": k8s.TOKEN_SECRET}, name
            head = spec["headGroupSpec"]
            assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress"), name
            assert head["rayStartParams"]["num-cpus"] == "0", f"{name}: the head must not run tasks"
        for spec in _rayjob_specs(obj):
            assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1, name


def test_no_inline_secrets():
    for name, obj in all_objects():
        for env in _find_key(obj, "env"):
            for var in env:
                if SECRETISH_ENV.search(var["name"]):
                    assert "value" not in var, f"{name}: {var['name']} has an inline value"
        for env_from in _find_key(obj, "envFrom"):
            for src in env_from:
                assert set(src) <= {"secretRef", "configMapRef", "prefix"}, name
    texts = [p for p in list(K8S.rglob("*")) + list(OVERLAY.rglob("*")) + list(JOBS.iterdir()) if p.is_file()]
    texts += [REPO / "Dockerfile", REPO / ".dockerignore", CONSTRAINTS]
    for path in texts:
        text = path.read_text()
        for pat in SECRET_PATTERNS:
            assert not pat.search(text), f"{path}: looks like a credential ({pat.pattern})"


def test_secret_scan_is_not_vacuous():
    leaks = ["AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "key: AKIAIOSFODNN7EXAMPLE",
             "auth_token: 3f9c0a7e5b1d4c2a9e8f7a6b5c4d3e2f"]
    for leak in leaks:
        assert any(p.search(leak) for p in SECRET_PATTERNS), leak


def test_schedulers():
    for name, obj in all_objects():
        if obj["kind"] == "CronJob":
            s = obj["spec"]
            assert s["concurrencyPolicy"] == "Forbid", name
            assert s["successfulJobsHistoryLimit"] >= 1 and s["failedJobsHistoryLimit"] >= 1, name
            assert s["startingDeadlineSeconds"] > 0, name
            k8s.parse_cron(s["schedule"])
            c = s["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": k8s.TOKEN_SECRET, "key": "auth_token"}
            script = c["command"][-1]
            # one Ray job per tick, even when the pod retries: the submission id is the Job's name
            assert f'id="${k8s.JOB_NAME_ENV}"' in script and '--submission-id "$id"' in script, name
            if obj["metadata"]["name"].endswith("-retrain"):
                assert f'--tick-from-job "${k8s.JOB_NAME_ENV}"' in script, name
        if obj["kind"] == "RayCronJob":
            k8s.parse_cron(obj["spec"]["schedule"])
            if obj["metadata"]["name"].endswith("-retrain"):
                assert "--tick-from-job" in obj["spec"]["jobTemplate"]["entrypoint"], name


def test_network_policy_admits_medxfer_pods_and_the_operator_of_either_install():
    (pol,) = [o for o in kustomized() if o["kind"] == "NetworkPolicy"]
    selector = pol["spec"]["podSelector"]["matchLabels"]
    (cluster,) = [o for o in kustomized() if o["kind"] == "RayCluster"]
    head_labels = dict(cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"])
    head_labels["ray.io/is-ray-node"] = "yes"  # added by KubeRay to every Ray pod
    assert selector.items() <= head_labels.items(), "the policy must select the Ray head"
    (peers, operator) = pol["spec"]["ingress"]
    allowed = peers["from"][0]["podSelector"]["matchLabels"]
    (cron,) = [o for o in kustomized() if o["kind"] == "CronJob"]
    submitter = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= submitter.items(), "the CronJob's submitter must be admitted"
    assert operator["ports"] == [{"protocol": "TCP", "port": k8s.DASHBOARD_PORT}]
    operator_selector = operator["from"][0]["podSelector"]["matchLabels"]
    for install, pod_labels in OPERATOR_POD_LABELS.items():
        assert operator_selector.items() <= pod_labels.items(), f"the operator installed with {install} is shut out"
    assert "egress" in (K8S / "README.md").read_text().lower()


def test_rbac_is_namespaced_and_narrow():
    for obj in kustomized():
        assert obj.get("metadata", {}).get("namespace", k8s.NAMESPACE) == k8s.NAMESPACE or obj["kind"] == "Namespace"
        if obj["kind"] == "Role":
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"]
                assert "secrets" not in rule["resources"]
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if obj["kind"] == "ServiceAccount":
            assert obj["automountServiceAccountToken"] is False


# ----------------------------------------------------------------------------- renderer units


def test_worker_group_sizes_from_scaling():
    one = k8s.worker_group(ScalingSection(num_workers=1))
    assert (one.replicas, one.gpus_per_pod) == (1, 1)
    half = k8s.worker_group(ScalingSection(num_workers=4, gpus_per_worker=0.5))
    assert (half.replicas, half.gpus_per_pod) == (2, 1)
    two = k8s.worker_group(ScalingSection(num_workers=3, gpus_per_worker=2))
    assert (two.replicas, two.gpus_per_pod, two.cpu) == (3, 2, 16)
    cpu = k8s.worker_group(ScalingSection(num_workers=3, use_gpu=False, cpus_per_worker=2))
    assert (cpu.replicas, cpu.gpus_per_pod, cpu.use_gpu) == (3, 0, False)


def test_overrides_size_the_pods_and_travel_into_the_entrypoint():
    sets = ["scaling.num_workers=4", "train.lr=3e-4"]
    cfg = load_config(str(JOBS / "finetune.yaml"), sets)
    job = k8s.render(cfg, "rayjob", "finetune", overrides=sets)
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    assert job["spec"]["entrypoint"] == ("medxfer finetune --config /etc/medxfer/jobs/finetune.yaml "
                                         "--set scaling.num_workers=4 --set train.lr=3e-4")
    cluster = k8s.render(cfg, "raycluster", "finetune")
    gpu, cpu = cluster["spec"]["workerGroupSpecs"]
    assert (gpu["minReplicas"], gpu["maxReplicas"], cpu["minReplicas"]) == (0, 4, 0)


def test_cpu_only_config_renders_no_gpu():
    cfg = load_config(str(JOBS / "finetune.yaml"), ["scaling.use_gpu=false"])
    job = k8s.render(cfg, "rayjob", "finetune")
    text = yaml.safe_dump(job)
    assert "nvidia.com/gpu" not in text and "tolerations" not in text


def test_stage_entrypoints():
    ev = load_config(str(JOBS / "evaluate.yaml"))
    assert k8s.entrypoint(ev, "evaluate", "evaluate.yaml") == (
        "medxfer evaluate --bundle s3://medxfer-data/runs/finetune-breast-resnet18/bundle "
        "--data /etc/medxfer/jobs/evaluate.yaml")
    pr = load_config(str(JOBS / "predict.yaml"))
    cmd = k8s.entrypoint(pr, "predict", "predict.yaml", ["predict.batch_size=256"])
    assert cmd.startswith("medxfer predict --bundle s3://medxfer-data/runs/finetune-breast-resnet18/bundle ")
    assert "--input s3://medxfer-data/incoming/manifest.csv" in cmd and "--set" not in cmd
    rt = k8s.entrypoint(load_config(str(JOBS / "retrain.yaml")), "retrain", "retrain.yaml")
    assert rt.endswith('--tick-from-job "$MEDXFER_JOB_NAME"')


def test_stage_from_path_and_image_pinning():
    assert k8s.stage_from_path("jobs/source-train.yaml") == "source-train"
    assert k8s.stage_from_path("s3://b/finetune-chest.yaml") == "finetune"
    with pytest.raises(ConfigError, match="--stage"):
        k8s.stage_from_path("jobs/nightly.yaml")
    k8s.check_image("r.example/medxfer:1.0")
    k8s.check_image("r.example:5000/medxfer@sha256:" + "a" * 64)
    for bad in ("r.example/medxfer", "r.example/medxfer:latest", "r.example:5000/medxfer"):
        with pytest.raises(ConfigError, match="pin"):
            k8s.check_image(bad)


def test_render_cli_refuses_bad_input(capsys):
    assert main(["k8s", "render", "--config", str(JOBS / "finetune.yaml"), "--image", "medxfer:latest"]) == 2
    assert main(["k8s", "render", "--config", str(JOBS / "finetune.yaml"), "--set", "scaling.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert "pin the image" in err and "scaling.num_workers" in err


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/15 * * * *", "0 0 1,15 * 1-5", "30 4 * jan-mar MON", "@daily"])
def test_cron_accepts(expr):
    k8s.parse_cron(expr)


@pytest.mark.parametrize("expr", ["0 2 * *", "60 * * * *", "0 24 * * *", "* * 0 * *", "*/0 * * * *", "0 2 * * 8",
                                  "5-1 * * * *", "0 2 * * * *", "@sometimes", "a b c d e"])
def test_cron_rejects(expr):
    with pytest.raises(ValueError):
        k8s.parse_cron(expr)


# ----------------------------------------------------------------------------- image


def _dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, each on one line (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [" ".join(ln.split()) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerfile_and_dockerignore():
    docker = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", docker, re.M)
    assert base and re.search(r"^FROM \$\{BASE_IMAGE\}", docker, re.M), "the base image is an ARG a digest can pin"
    assert f"rayproject/ray:{k8s.RAY_VERSION}-py311-cu" in base.group(1), base.group(1)
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users and users[-1] == "ray", "the image must end as the non-root ray user"
    for line in re.findall(r"pip install[^\n]*", docker):
        assert "--no-cache-dir" in line, line
    assert not re.search(r"^(ENV|ARG)\s+\S*(SECRET|TOKEN|PASSWORD|ACCESS_KEY)", docker, re.M | re.I)
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for needed in (".venv", ".git", "medxfer-runs", "medxfer-demo", "data", "runs", "benchmarks/work"):
        assert any(i.strip("*/") == needed for i in ignored), f".dockerignore must exclude {needed}"


def test_image_pins_every_dependency_and_installs_them_before_the_code():
    """A rebuild gets the versions the tests ran with, and a code change rebuilds only the last layer."""
    lines = _dockerfile_instructions()
    for line in lines:
        if "pip install" in line:
            pinned = re.search(r" -c \S+", line) or "--no-deps" in line or re.search(r"grep \S+ '\^\(torch", line)
            assert pinned, f"unpinned install: {line}"
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9_.!+-]+", version), f"not an exact pin: {line}"
            pins[name.lower().replace("_", "-")] = version
    assert "torch" in pins and "torchvision" in pins and "ray" in pins
    assert not [n for n in pins if n.startswith("nvidia-")], "CUDA wheels come with the torch build for the base image"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, project["dependencies"]):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"{dep.name} is not pinned in {CONSTRAINTS.name}"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {dep}"

    def first(pattern: str) -> int:
        return next(i for i, ln in enumerate(lines) if re.search(pattern, ln))

    code = first(r"^COPY .*\bmedxfer /tmp/")
    assert first(r"^COPY .*constraints/image\.txt") < first(r"^RUN pip install .*(torch|torchvision)") < code
    assert first(r"^COPY .*pyproject\.toml") < first(r"pip install .*-c \S+ -r ") < code
    assert re.search(r"pip install .*--no-deps", "\n".join(lines[code:])), "the code installs without dependencies"
    readme = (REPO / "README.md").read_text()
    assert re.search(r"rayproject/ray:\S+@sha256:", readme), "the release steps pin the base image by digest"
    assert "git rev-parse" in readme, "each build gets its own tag"


# ----------------------------------------------------------------------------- walkers


def _find_key(obj, key: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_key(v, key)


def _pod_specs(obj) -> list[dict]:
    return [v for v in _find_key(obj, "spec") if isinstance(v, dict) and "containers" in v]


def _containers(obj) -> list[dict]:
    out = []
    for pod in _pod_specs(obj):
        out += pod["containers"] + pod.get("initContainers", [])
    return out


def _rayjob_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayJob":
        return [obj["spec"]]
    if obj["kind"] == "RayCronJob":
        return [obj["spec"]["jobTemplate"]]
    return []


def _ray_cluster_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayCluster":
        return [obj["spec"]]
    return [s["rayClusterSpec"] for s in _rayjob_specs(obj)]


def _commands(obj: dict) -> list[str]:
    cmds = [s["entrypoint"] for s in _rayjob_specs(obj)]
    for c in _containers(obj):
        cmds += [" ".join(c.get("command", []) + c.get("args", []))]
    return cmds
