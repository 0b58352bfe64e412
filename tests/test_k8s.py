"""The Kubernetes manifests: valid against the real schemas, hardened, and in step with jobs/.

What an API server would check is checked here offline: core kinds against the upstream
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail), KubeRay kinds against
the CRDs' openAPIV3Schema from ../shared/k8s-schemas (plus the unknown-field check a
structural schema implies). Then what a reviewer checks: pinned images, requests and limits,
non-root pods, GPU tolerations, no inline secrets, cron schedules that parse, entrypoints
that name configs present in jobs/. Manifests come from `kubectl kustomize` (when kubectl is
installed), from the files in k8s/, and from `medxfer k8s render` for every kind and stage.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from medxfer import k8s
from medxfer.cli import main
from medxfer.config import ScalingSection
from medxfer.config_io import load_config, read_yaml_text, validate_dict
from medxfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
JOBS = REPO / "jobs"
SCHEMAS = Path(os.environ.get("MEDXFER_K8S_SCHEMAS", REPO.parent / "shared" / "k8s-schemas")).resolve()
KUBERAY = SCHEMAS / "kuberay-v1.7.0"
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())

# Checked-in file <- (job config, kind) rendered with the defaults.
GENERATED = {
    "base/rayjob-source-train.yaml": ("source-train.yaml", "rayjob"),
    "base/rayjob-finetune.yaml": ("finetune.yaml", "rayjob"),
    "base/raycluster.yaml": ("retrain.yaml", "raycluster"),
    "base/raycronjob-retrain.yaml": ("retrain.yaml", "raycronjob"),
    "base/cronjob-retrain.yaml": ("retrain.yaml", "cronjob"),
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
    p = subprocess.run([kubectl, "kustomize", str(K8S / path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return tuple(_load_all(p.stdout))


def kustomized(path: str = "") -> tuple[dict, ...]:
    """`kubectl kustomize k8s/<path>`; tests that need it skip where kubectl is not installed."""
    objs = _kustomize(path)
    if objs is None:
        pytest.skip("kubectl not installed: kustomize output not checked (files and renderer still are)")
    return objs


def file_objects() -> list[tuple[str, dict]]:
    out = []
    for f in sorted((K8S / "base").glob("*.yaml")):
        if f.name != "kustomization.yaml":
            out += [(f"base/{f.name}", d) for d in _load_all(f.read_text())]
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
    objs = [(f"kustomize:{d['kind']}/{d['metadata']['name']}", d) for d in _kustomize("") or ()]
    objs += [(f"overlay:{d['kind']}/{d['metadata']['name']}", d) for d in _kustomize("overlays/raycronjob") or ()]
    return tuple(objs + file_objects() + rendered_variants())


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


def validate_crd(obj: dict) -> None:
    schema = crd_schema(obj["kind"])
    crd_validator(obj["kind"]).validate(obj)
    assert not unknown_fields(obj, schema), f"unknown fields: {unknown_fields(obj, schema)}"
    # The CEL rule jsonschema cannot run (KubeRay v1.7 RayJob): deletionRules exclude the TTL fields.
    for spec in _rayjob_specs(obj):
        if spec.get("deletionStrategy", {}).get("deletionRules"):
            assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec


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
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                            "NetworkPolicy", "RayCluster", "RayJob", "RayJob", "RayCronJob", "CronJob"])
    for obj in objs + kustomized("overlays/raycronjob"):
        validate_object(obj)


def test_files_and_rendered_variants_validate():
    for name, obj in file_objects() + rendered_variants():
        try:
            validate_object(obj)
        except Exception as e:  # noqa: BLE001 - name the object in the failure
            pytest.fail(f"{name}: {e}")


def test_schema_checks_catch_mistakes():
    """The validators are not vacuous: a typo, a wrong type and a bad enum all fail."""
    job = yaml.safe_load((K8S / "base" / "rayjob-finetune.yaml").read_text())
    typo = yaml.safe_load(yaml.safe_dump(job))
    typo["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(AssertionError, match="shutdownAfterJobFinish"):
        validate_crd(typo)
    wrong = yaml.safe_load(yaml.safe_dump(job))
    wrong["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(wrong)
    cron = yaml.safe_load((K8S / "base" / "cronjob-retrain.yaml").read_text())
    cron["spec"]["concurrencyPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cron, K8S_VERSIONS[0], strict=True)


# ----------------------------------------------------------------------------- drift


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_checked_in_manifest_equals_renderer(path):
    config, kind = GENERATED[path]
    cfg = load_config(str(JOBS / config))
    want = k8s.render(cfg, kind, k8s.stage_from_path(config), config_file=config)
    (have,) = _load_all((K8S / path).read_text())
    assert have == want, (f"k8s/{path} drifted from jobs/{config}; regenerate it with\n"
                          f"  medxfer k8s render --config jobs/{config} --kind {kind} > k8s/{path}")


def test_cli_render_prints_the_checked_in_object():
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["k8s", "render", "--config", str(JOBS / "finetune.yaml")]) == 0
    assert _load_all(buf.getvalue()) == _load_all((K8S / "base" / "rayjob-finetune.yaml").read_text())


def test_base_applies_the_generated_files_unchanged_except_documented_patches():
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in kustomized()}
    for path in GENERATED:
        (obj,) = _load_all((K8S / path).read_text())
        got = dict(by_name[(obj["kind"], obj["metadata"]["name"])])
        got["spec"] = {k: v for k, v in got["spec"].items() if k != "suspend"}
        assert got == obj, path
    # Exactly one scheduler is active, in the base and in the overlay.
    overlay = {(o["kind"], o["metadata"]["name"]): o for o in kustomized("overlays/raycronjob")}
    assert by_name[("RayCronJob", "medxfer-retrain")]["spec"]["suspend"] is True
    assert not by_name[("CronJob", "medxfer-retrain")]["spec"].get("suspend", False)
    assert overlay[("RayCronJob", "medxfer-retrain")]["spec"]["suspend"] is False
    assert overlay[("CronJob", "medxfer-retrain")]["spec"]["suspend"] is True
    assert by_name[("RayJob", "medxfer-finetune")]["spec"]["suspend"] is True
    assert "suspend" not in by_name[("RayJob", "medxfer-source-train")]["spec"]


# ----------------------------------------------------------------------------- jobs/


def test_every_job_config_validates_and_is_in_the_configmap():
    files = sorted(p.name for p in JOBS.glob("*.yaml"))
    assert {"source-train.yaml", "finetune.yaml", "evaluate.yaml", "retrain.yaml", "predict.yaml"} <= set(files)
    for name in files:
        text = (JOBS / name).read_text()
        validate_dict(read_yaml_text(text, name), name)
        assert "s3://medxfer-data" in text, f"{name}: examples point at the documented bucket"
    gen = yaml.safe_load((JOBS / "Kustomization").read_text())["configMapGenerator"]
    assert sorted(gen[0]["files"]) == files, "jobs/Kustomization must list every jobs/*.yaml"
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


def test_ray_pods_get_api_tokens_only_where_needed():
    for name, obj in all_objects():
        for pod in _pod_specs(obj):
            assert pod.get("serviceAccountName") in (k8s.RAY_SERVICE_ACCOUNT, k8s.SUBMITTER_SERVICE_ACCOUNT), name
        for spec in _ray_cluster_specs(obj):
            head = spec["headGroupSpec"]["template"]["spec"]
            # only the autoscaler sidecar needs the API; workers never do
            assert head["automountServiceAccountToken"] is bool(spec.get("enableInTreeAutoscaling")), name
            for g in spec.get("workerGroupSpecs", []):
                assert g["template"]["spec"]["automountServiceAccountToken"] is False, name


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
            assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0, name
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
    texts = [p for p in list(K8S.rglob("*")) + list(JOBS.iterdir()) if p.is_file()]
    texts += [REPO / "Dockerfile", REPO / ".dockerignore"]
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
            assert '--submission-id "$id"' in script, name  # one Ray job per tick, even when the pod retries
            if obj["metadata"]["name"].endswith("-retrain"):
                assert '--tick "$tick"' in script, name
        if obj["kind"] == "RayCronJob":
            k8s.parse_cron(obj["spec"]["schedule"])
            if obj["metadata"]["name"].endswith("-retrain"):
                assert "--tick" in obj["spec"]["jobTemplate"]["entrypoint"], name


def test_network_policy_admits_medxfer_pods_and_the_operator_only():
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
    assert rt.endswith('--tick "$(date -u +%Y-%m-%dT%H:00:00Z)"')


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


def test_dockerfile_and_dockerignore():
    docker = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    assert froms and all(f"rayproject/ray:{k8s.RAY_VERSION}-py311-cu" in f for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users and users[-1] == "ray", "the image must end as the non-root ray user"
    for line in re.findall(r"pip install[^\n]*", docker):
        assert "--no-cache-dir" in line, line
    assert not re.search(r"^(ENV|ARG)\s+\S*(SECRET|TOKEN|PASSWORD|ACCESS_KEY)", docker, re.M | re.I)
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    for needed in (".venv", ".git", "medxfer-runs", "medxfer-demo", "data", "runs", "benchmarks/work"):
        assert any(i.strip("*/") == needed for i in ignored), f".dockerignore must exclude {needed}"


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
