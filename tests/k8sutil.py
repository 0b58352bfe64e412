"""What the Kubernetes tests read and check with: every manifest medxfer ships or renders,
the schema checks an API server would make, walkers over objects, and a cron parser.

Manifests come from `kubectl kustomize` (when kubectl is installed), from the files in
k8s/ and k8s-overlays/, and from `medxfer k8s render` for every kind and stage. Core kinds
are checked against the upstream Kubernetes schemas (kubernetes-validate, strict: unknown
fields fail), KubeRay kinds against the CRDs' openAPIV3Schema from ../shared/k8s-schemas
(plus the unknown-field check a structural schema implies, and the deletion-rule checks the
KubeRay operator makes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from medxfer.config.loading import load_config
from medxfer.k8s.render import KINDS, render
from medxfer.k8s.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAY = REPO / "k8s-overlays" / "raycronjob"
JOBS = REPO / "jobs"
SCHEMAS = Path(os.environ.get("MEDXFER_K8S_SCHEMAS", REPO.parent / "shared" / "k8s-schemas")).resolve()
KUBERAY = SCHEMAS / "kuberay-v1.7.0"
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
AUTOSCALER_ACCOUNT = "medxfer-autoscaler"
API_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the Ray autoscaler reads its token


# ----------------------------------------------------------------------------- sources


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@cache
def _kustomize(path: str) -> tuple[dict, ...] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    p = subprocess.run([kubectl, "kustomize", str(REPO / path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return tuple(load_all(p.stdout))


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
    return [d for f in apply_f_files() for d in load_all(f.read_text())]


def file_objects() -> list[tuple[str, dict]]:
    out = []
    for root in (K8S, OVERLAY.parent):
        for f in sorted(root.rglob("*.yaml")):
            if f.name != "kustomization.yaml":
                out += [(str(f.relative_to(REPO)), d) for d in load_all(f.read_text())]
    return out


def rendered_variants() -> list[tuple[str, dict]]:
    """The renderer over every kind and stage, and over the scaling shapes that change the pods."""
    out = []
    for stage in STAGES:
        cfg = load_config(str(JOBS / f"{stage}.yaml"))
        for kind in KINDS:
            out.append((f"{kind}/{stage}", render(cfg, kind, stage, config_file=f"{stage}.yaml")))
    for sets in (["scaling.use_gpu=false", "scaling.num_workers=3"],
                 ["scaling.num_workers=4", "scaling.gpus_per_worker=0.5"],
                 ["scaling.num_workers=2", "scaling.gpus_per_worker=2"]):
        cfg = load_config(str(JOBS / "finetune.yaml"), sets)
        for kind in KINDS:
            out.append((f"{kind}/finetune{sets}", render(cfg, kind, "finetune", overrides=sets)))
    return out


@cache
def all_objects() -> tuple[tuple[str, dict], ...]:
    objs = [(f"kustomize:{d['kind']}/{d['metadata']['name']}", d) for d in _kustomize("k8s") or ()]
    if OVERLAY.is_dir():  # test_overlays_live_outside_the_base checks it is there
        objs += [(f"overlay:{d['kind']}/{d['metadata']['name']}", d)
                 for d in _kustomize("k8s-overlays/raycronjob") or ()]
    return tuple(objs + file_objects() + rendered_variants())


def of_kind(kind: str) -> list[tuple[str, dict]]:
    """Every object of ``kind`` among :func:`all_objects`; a test over none of them would pass vacuously."""
    objs = [(name, obj) for name, obj in all_objects() if obj["kind"] == kind]
    assert objs, f"no {kind} among the manifests"
    return objs


def key(obj: dict) -> tuple[str, str]:
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
        for k, value in obj.items():
            if k not in schema["properties"]:
                if not schema.get("additionalProperties"):
                    out.append(f"{path}.{k}")
                continue
            out += unknown_fields(value, schema["properties"][k], f"{path}.{k}")
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
        k = (cond.get("jobStatus"), cond.get("jobDeploymentStatus"))
        assert rule["policy"] not in by_condition.setdefault(k, {}), f"duplicate rule {rule}"
        by_condition[k][rule["policy"]] = cond.get("ttlSeconds", 0)
    for k, ttls in by_condition.items():
        seq = [ttls[p] for p in order if p in ttls]
        assert seq == sorted(seq), f"{k}: TTLs must grow DeleteWorkers <= DeleteCluster <= DeleteSelf: {ttls}"


def validate_crd(obj: dict) -> None:
    schema = crd_schema(obj["kind"])
    crd_validator(obj["kind"]).validate(obj)
    assert not unknown_fields(obj, schema), f"unknown fields: {unknown_fields(obj, schema)}"
    for spec in rayjob_specs(obj):
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


# ----------------------------------------------------------------------------- walkers


def find_key(obj, name: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == name:
                yield v
            yield from find_key(v, name)
    elif isinstance(obj, list):
        for v in obj:
            yield from find_key(v, name)


def pod_specs(obj) -> list[dict]:
    return [v for v in find_key(obj, "spec") if isinstance(v, dict) and "containers" in v]


def containers(obj) -> list[dict]:
    out = []
    for pod in pod_specs(obj):
        out += pod["containers"] + pod.get("initContainers", [])
    return out


def rayjob_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayJob":
        return [obj["spec"]]
    if obj["kind"] == "RayCronJob":
        return [obj["spec"]["jobTemplate"]]
    return []


def ray_cluster_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayCluster":
        return [obj["spec"]]
    return [s["rayClusterSpec"] for s in rayjob_specs(obj)]


def commands(obj: dict) -> list[str]:
    cmds = [s["entrypoint"] for s in rayjob_specs(obj)]
    for c in containers(obj):
        cmds += [" ".join(c.get("command", []) + c.get("args", []))]
    return cmds


# ----------------------------------------------------------------------------- cron

_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


def parse_cron(expr: str) -> list[set[int]]:
    """The values each of the five fields of a Kubernetes cron schedule allows.

    Raises ValueError naming the field, so a schedule typo fails in CI instead of as a
    CronJob that silently never fires. Time zones belong in ``timeZone``, not ``CRON_TZ=``.
    """
    expr = _CRON_MACROS.get(expr.strip().lower(), expr)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron schedule {expr!r}: expected 5 fields (minute hour day month weekday), "
                         f"got {len(fields)}")
    return [_cron_field(expr, text, *spec) for text, spec in zip(fields, _CRON_FIELDS, strict=True)]


def _cron_field(expr: str, text: str, name: str, lo: int, hi: int, names: tuple[str, ...]) -> set[int]:
    def value(tok: str) -> int:
        if tok.lower() in names:
            return names.index(tok.lower()) + lo
        if not tok.isdigit() or not lo <= int(tok) <= hi:
            raise ValueError(f"cron schedule {expr!r}: {name} {tok!r} is not in {lo}-{hi}")
        return int(tok)

    allowed: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s.isdigit() else 0 if step_s else 1
        if step < 1:
            raise ValueError(f"cron schedule {expr!r}: {name} step {step_s!r} must be a positive number")
        if rng in ("*", "?"):
            first, last = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            first, last = value(a), value(b)
            if first > last:
                raise ValueError(f"cron schedule {expr!r}: {name} range {rng!r} runs backwards")
        else:
            first = value(rng)
            last = hi if step_s else first
        allowed |= set(range(first, last + 1, step))
    return allowed
