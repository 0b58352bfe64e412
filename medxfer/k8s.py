"""Render the Kubernetes objects that run a medxfer job config on KubeRay.

Why a renderer: the number of Ray Train workers and GPUs lives in the job config
(``scaling``), and the pods that host them live in a RayJob. Hand-editing both invites a
cluster with four GPU pods running a config that asks for one worker. ``medxfer k8s render``
derives the worker group from the config, and the manifests checked in under ``k8s/`` are
this module's output for the configs in ``jobs/`` (a test compares them), so the two cannot
drift apart.

Everything a pod needs that is not in the image arrives by reference, never inline: the job
configs from the ``medxfer-jobs`` ConfigMap (built from ``jobs/`` by kustomize), the Ray
token from the ``medxfer-ray-token`` Secret, S3 credentials from the optional ``medxfer-s3``
Secret or a workload identity on the ``medxfer`` ServiceAccount.
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from medxfer import __version__
from medxfer.config import JobConfig, ScalingSection
from medxfer.errors import ConfigError

NAMESPACE = "medxfer"
RAY_VERSION = "2.60.0"
#: The image built from the Dockerfile; the tag names both versions so `rayVersion` can be checked against it.
IMAGE_REPOSITORY = "registry.example.com/medxfer"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}-ray{RAY_VERSION}"
CONFIG_DIR = "/etc/medxfer/jobs"
CONFIGMAP = "medxfer-jobs"
RAY_SERVICE_ACCOUNT = "medxfer"
SUBMITTER_SERVICE_ACCOUNT = "medxfer-submitter"
TOKEN_SECRET = "medxfer-ray-token"
S3_SECRET = "medxfer-s3"
CLUSTER_NAME = "medxfer"  # the long-running RayCluster; KubeRay names its service <name>-head-svc
DASHBOARD_PORT = 8265
SCHEDULE = "0 2 * * *"  # nightly at 02:00
TIME_ZONE = "Etc/UTC"
#: The run name of a scheduled retrain derives from the tick: one tick per hour at most.
TICK_SHELL = "$(date -u +%Y-%m-%dT%H:00:00Z)"

#: Stage -> how long one attempt may run (RayJob activeDeadlineSeconds).
STAGE_DEADLINE_S = {
    "source-train": 48 * 3600,
    "pretrain": 72 * 3600,
    "finetune": 12 * 3600,
    "retrain": 12 * 3600,
    "evaluate": 2 * 3600,
    "predict": 6 * 3600,
}
STAGES = tuple(STAGE_DEADLINE_S)

# Pod sizes. GPU pods get CPU and memory per GPU so Ray Data has room next to the trainer.
HEAD = {"cpu": "2", "memory": "8Gi"}
CPU_PER_GPU = 8
GIB_PER_GPU = 32
DATA_CPUS = 2  # CPUs per worker pod beyond the trainers', for Ray Data preprocessing
GIB_PER_CPU = 4
CPU_GROUP = {"cpu": "8", "memory": "32Gi", "max": 4}  # the RayCluster's CPU group for preprocessing
SUBMITTER = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
AUTOSCALER = {"cpu": "500m", "memory": "512Mi"}
TMP_SIZE = "20Gi"  # /tmp holds Ray's session logs and spilled objects

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,  # the `ray` user of the rayproject/ray images
    "runAsGroup": 100,
    "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# With a read-only root filesystem every cache must point into the /tmp emptyDir.
RAY_ENV = [
    {"name": "RAY_TRAIN_V2_ENABLED", "value": "1"},
    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
    {"name": "TORCH_HOME", "value": "/tmp/torch"},
    {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
    {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def labels(component: str) -> dict:
    return {
        "app.kubernetes.io/name": "medxfer",
        "app.kubernetes.io/part-of": "medxfer",
        "app.kubernetes.io/component": component,
    }


def _meta(name: str, component: str) -> dict:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(component)}


# ----------------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class WorkerGroup:
    """How the config's Ray Train workers map onto pods."""

    replicas: int
    gpus_per_pod: int
    cpu: int
    memory_gib: int

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_pod > 0


def worker_group(scaling: ScalingSection) -> WorkerGroup:
    """Pods for ``scaling``: one GPU pod hosts as many workers as its GPUs fit.

    ``use_gpu: auto`` renders GPU pods: a Kubernetes deployment is the place GPUs exist, and a
    CPU-only cluster says so with ``use_gpu: false``. Fractional ``gpus_per_worker`` packs
    several workers on one GPU; more than one GPU per worker rounds up to whole GPUs per pod.
    """
    if scaling.use_gpu is False:
        cpu = math.ceil(scaling.cpus_per_worker) + DATA_CPUS
        return WorkerGroup(scaling.num_workers, 0, cpu, cpu * GIB_PER_CPU)
    gpus = max(1, math.ceil(scaling.gpus_per_worker - 1e-9))
    per_pod = max(1, math.floor(gpus / scaling.gpus_per_worker + 1e-9))
    replicas = math.ceil(scaling.num_workers / per_pod)
    cpu = max(CPU_PER_GPU * gpus, math.ceil(scaling.cpus_per_worker * per_pod) + DATA_CPUS)
    return WorkerGroup(replicas, gpus, cpu, GIB_PER_GPU * gpus)


# ----------------------------------------------------------------------------- entrypoints


def stage_from_path(path: str) -> str:
    """The stage a config file runs, from its name: ``jobs/finetune.yaml`` -> ``finetune``."""
    stem = PurePosixPath(str(path).rstrip("/")).name.rsplit(".", 1)[0]
    for stage in sorted(STAGES, key=len, reverse=True):
        if stem == stage or stem.startswith(stage + "-") or stem.startswith(stage + "_"):
            return stage
    raise ConfigError([f"{path}: cannot tell the stage from the file name; pass --stage ({', '.join(STAGES)})"])


def entrypoint(cfg: JobConfig, stage: str, config_file: str, overrides: list[str] | None = None,
               tick: str | None = None) -> str:
    """The command the Ray job runs, reading the config from the mounted ConfigMap.

    ``--set`` overrides given to the renderer travel into the command, so the job runs with
    exactly the values the worker group was sized for.
    """
    cfg_path = f"{CONFIG_DIR}/{config_file}"
    sets = " ".join(f"--set {shlex.quote(s)}" for s in overrides or [])
    root = cfg.storage.root.rstrip("/")
    bundle = f"{root}/runs/{cfg.name}/bundle"
    if stage == "evaluate":
        cmd = f"medxfer evaluate --bundle {shlex.quote(bundle)} --data {cfg_path}"
    elif stage == "predict":
        if not cfg.data.manifest:
            raise ConfigError([f"{config_file}: data.manifest: the predict stage needs the images to score"])
        cmd = (f"medxfer predict --bundle {shlex.quote(bundle)} --input {shlex.quote(cfg.data.manifest)} "
               f"--output {shlex.quote(f'{root}/predictions/{cfg.name}')} --batch-size {cfg.predict.batch_size}")
        if cfg.predict.fail_on_bad:
            cmd += " --fail-on-bad"
        sets = ""  # predict takes no config; the overrides are already in the values above
    else:
        cmd = f"medxfer {stage} --config {cfg_path}"
    if sets:
        cmd += " " + sets
    if stage == "retrain":
        cmd += f' --tick "{tick or TICK_SHELL}"'
    return cmd


# ----------------------------------------------------------------------------- pods


def _volumes(shm_gib: int, with_configs: bool) -> list[dict]:
    vols = [
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        # PyTorch DataLoader workers and Ray's object store need a large /dev/shm; the
        # container runtime's default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
    ]
    if with_configs:
        vols.append({"name": "jobs", "configMap": {"name": CONFIGMAP}})
    return vols


def _mounts(with_configs: bool) -> list[dict]:
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    if with_configs:
        mounts.append({"name": "jobs", "mountPath": CONFIG_DIR, "readOnly": True})
    return mounts


def _resources(cpu: str | int, memory: str, gpus: int = 0) -> dict:
    res = {"cpu": str(cpu), "memory": memory}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
    # Requests equal limits: Ray sizes its object store and CPU count from the limits.
    return {"requests": dict(res), "limits": dict(res)}


def head_template(image: str, automount_token: bool = False) -> dict:
    ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": DASHBOARD_PORT},
        {"name": "client", "containerPort": 10001},
        {"name": "metrics", "containerPort": 8080},
    ]
    return {
        "metadata": {"labels": labels("ray-head")},
        "spec": {
            "serviceAccountName": RAY_SERVICE_ACCOUNT,
            # Only the autoscaler sidecar of a long-running cluster talks to the API server.
            "automountServiceAccountToken": automount_token,
            "securityContext": POD_SECURITY,
            "containers": [{
                "name": "ray-head",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "ports": ports,
                "env": RAY_ENV,
                "envFrom": [{"secretRef": {"name": S3_SECRET, "optional": True}}],
                "resources": _resources(HEAD["cpu"], HEAD["memory"]),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": _mounts(with_configs=True),
            }],
            "volumes": _volumes(shm_gib=2, with_configs=True),
        },
    }


def worker_template(image: str, cpu: int, memory_gib: int, gpus: int, component: str) -> dict:
    spec: dict = {
        "serviceAccountName": RAY_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "containers": [{
            "name": "ray-worker",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "env": RAY_ENV,
            "envFrom": [{"secretRef": {"name": S3_SECRET, "optional": True}}],
            "resources": _resources(cpu, f"{memory_gib}Gi", gpus),
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": _mounts(with_configs=False),
        }],
        "volumes": _volumes(shm_gib=memory_gib // 2, with_configs=False),
    }
    if gpus:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"labels": labels(component)}, "spec": spec}


def _head_group(image: str, automount_token: bool = False) -> dict:
    return {
        "serviceType": "ClusterIP",  # dashboard and client port stay inside the cluster
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": head_template(image, automount_token),
    }


def _worker_group(image: str, group: WorkerGroup, replicas: int, min_replicas: int, max_replicas: int) -> dict:
    return {
        "groupName": "gpu" if group.use_gpu else "cpu",
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
        "template": worker_template(image, group.cpu, group.memory_gib, group.gpus_per_pod, "ray-worker"),
    }


def _auth() -> dict:
    # KubeRay injects RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from this Secret, key auth_token)
    # into every Ray container and the RayJob submitter.
    return {"mode": "token", "secretName": TOKEN_SECRET}


def submitter_template(image: str) -> dict:
    return {
        "metadata": {"labels": labels("ray-job-submitter")},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": SUBMITTER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [{
                "name": "ray-job-submitter",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": SUBMITTER,
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }


# ----------------------------------------------------------------------------- objects


def rayjob_spec(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None) -> dict:
    group = worker_group(cfg.scaling)
    return {
        "entrypoint": entrypoint(cfg, stage, config_file, overrides),
        "submissionMode": "K8sJobMode",
        # A failed attempt gets a fresh cluster; the config's stable run name makes it resume
        # from the last checkpoint in storage.
        "backoffLimit": 2,
        "activeDeadlineSeconds": STAGE_DEADLINE_S[stage],
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 3600,  # keep the finished cluster an hour for its logs
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": False,
            "authOptions": _auth(),
            "headGroupSpec": _head_group(image),
            "workerGroupSpecs": [_worker_group(image, group, group.replicas, group.replicas, group.replicas)],
        },
        "submitterConfig": {"backoffLimit": 2},
        "submitterPodTemplate": submitter_template(image),
    }


def rayjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(f"medxfer-{stage}", stage),
        "spec": rayjob_spec(cfg, stage, image, config_file, overrides),
    }


def raycluster(cfg: JobConfig, image: str) -> dict:
    """A long-running cluster for `ray job submit`: GPU pods scale from zero to what ``cfg`` needs."""
    group = worker_group(cfg.scaling)
    cpu_group = {
        "groupName": "cpu",
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": CPU_GROUP["max"],
        "rayStartParams": {},
        "template": worker_template(image, int(CPU_GROUP["cpu"]), int(CPU_GROUP["memory"][:-2]), 0, "ray-worker"),
    }
    # GPU pods only for training; a CPU group takes preprocessing so it does not wake a GPU node.
    groups = [_worker_group(image, group, 0, 0, group.replicas)]
    if group.use_gpu:
        groups.append(cpu_group)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _meta(CLUSTER_NAME, "ray-cluster"),
        "spec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "upscalingMode": "Default",
                "idleTimeoutSeconds": 600,  # an idle GPU pod goes away after 10 minutes
                "resources": _resources(AUTOSCALER["cpu"], AUTOSCALER["memory"]),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            },
            "authOptions": _auth(),
            "headGroupSpec": _head_group(image, automount_token=True),
            "workerGroupSpecs": groups,
        },
    }


def raycronjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """KubeRay's scheduler: a new RayJob (and cluster) per tick. Alpha: needs the RayCronJob gate."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCronJob",
        "metadata": _meta(f"medxfer-{stage}", stage),
        "spec": {
            "schedule": SCHEDULE,
            "timeZone": TIME_ZONE,
            "jobTemplate": rayjob_spec(cfg, stage, image, config_file, overrides),
        },
    }


def submit_script(cfg: JobConfig, stage: str, config_file: str, overrides: list[str] | None) -> str:
    """The CronJob pod's shell: submit once per tick, follow the logs, exit with the job's status.

    The submission id is derived from the tick, so a retried pod finds the job it already
    submitted instead of starting a second one.
    """
    cmd = entrypoint(cfg, stage, config_file, overrides, tick="$tick")
    return "\n".join([
        "set -euo pipefail",
        'tick="$(date -u +%Y-%m-%dT%H:00:00Z)"',
        f'id="medxfer-{stage}-${{tick//[:-]/}}"',
        'if ! ray job status --address "$RAY_ADDRESS" "$id" >/dev/null 2>&1; then',
        f'  ray job submit --address "$RAY_ADDRESS" --submission-id "$id" --no-wait -- {cmd}',
        "fi",
        'ray job logs --address "$RAY_ADDRESS" --follow "$id" || true',
        'status="$(ray job status --address "$RAY_ADDRESS" "$id")"',
        'echo "$status"',
        'case "$status" in *SUCCEEDED*) exit 0 ;; *) exit 1 ;; esac',
        "",
    ])


def cronjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """The portable scheduler: a batch/v1 CronJob whose pod submits to the long-running RayCluster."""
    address = f"http://{CLUSTER_NAME}-head-svc.{NAMESPACE}.svc:{DASHBOARD_PORT}"
    pod = {
        "metadata": {"labels": labels(f"{stage}-submitter")},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": SUBMITTER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [{
                "name": "submit",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/bash", "-c", submit_script(cfg, stage, config_file, overrides)],
                "env": [
                    {"name": "RAY_ADDRESS", "value": address},
                    {"name": "RAY_AUTH_MODE", "value": "token"},
                    {"name": "RAY_AUTH_TOKEN", "valueFrom": {
                        "secretKeyRef": {"name": TOKEN_SECRET, "key": "auth_token"}}},
                    {"name": "HOME", "value": "/tmp"},
                ],
                "resources": SUBMITTER,
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(f"medxfer-{stage}", stage),
        "spec": {
            "schedule": SCHEDULE,
            "timeZone": TIME_ZONE,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,  # a tick missed by more than an hour is skipped
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(f"{stage}-submitter")},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": STAGE_DEADLINE_S[stage],
                    "template": pod,
                },
            },
        },
    }


KINDS = ("rayjob", "raycluster", "raycronjob", "cronjob")

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
    out = []
    for text, (name, lo, hi, names) in zip(fields, _CRON_FIELDS, strict=True):
        def value(tok: str, name=name, lo=lo, hi=hi, names=names) -> int:
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
        out.append(allowed)
    return out


def check_image(image: str) -> None:
    """Refuse unpinned images: `latest` (or no tag) changes under a running schedule."""
    ref = image.split("@", 1)
    if len(ref) == 2 and ref[1].startswith("sha256:"):
        return
    name = ref[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    if not tag or tag == "latest":
        raise ConfigError([f"--image {image}: pin the image with a version tag or an @sha256 digest, not "
                           f"{'latest' if tag else 'no tag'}; e.g. {DEFAULT_IMAGE}"])


def render(cfg: JobConfig, kind: str, stage: str, image: str = DEFAULT_IMAGE, config_file: str | None = None,
           overrides: list[str] | None = None) -> dict:
    """The object of ``kind`` that runs ``cfg`` as ``stage`` (config read from ``CONFIG_DIR/config_file``)."""
    if kind not in KINDS:
        raise ConfigError([f"--kind {kind}: expected one of {', '.join(KINDS)}"])
    if stage not in STAGES:
        raise ConfigError([f"--stage {stage}: expected one of {', '.join(STAGES)}"])
    check_image(image)
    config_file = config_file or f"{stage}.yaml"
    if kind == "rayjob":
        return rayjob(cfg, stage, image, config_file, overrides)
    if kind == "raycluster":
        return raycluster(cfg, image)
    if kind == "raycronjob":
        return raycronjob(cfg, stage, image, config_file, overrides)
    return cronjob(cfg, stage, image, config_file, overrides)


class _Dumper(yaml.SafeDumper):
    """Plain YAML a person reads: no &anchors for shared sub-objects, scripts as literal blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, s: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def to_yaml(obj: dict, command: str | None = None) -> str:
    head = (f"# Generated by: {command}\n# Edit the job config or medxfer/k8s.py and regenerate; "
            "tests/test_k8s.py checks this file equals the output.\n") if command else ""
    return head + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=1000)


def cmd_k8s_render(args) -> int:
    from medxfer.config_io import load_config

    cfg = load_config(args.config, args.set)
    stage = args.stage or stage_from_path(args.config)
    obj = render(cfg, args.kind, stage, args.image or DEFAULT_IMAGE,
                 config_file=PurePosixPath(args.config).name, overrides=args.set)
    if args.kind != "raycluster":
        print(f"medxfer: note: the pod reads {CONFIG_DIR}/{PurePosixPath(args.config).name}: it must be in the "
              f"{CONFIGMAP} ConfigMap (jobs/ and jobs/Kustomization)", file=sys.stderr)
    parts = ["medxfer k8s render", f"--config {args.config}", f"--kind {args.kind}"]
    parts += [f"--stage {args.stage}"] if args.stage else []
    parts += [f"--image {args.image}"] if args.image else []
    parts += [f"--set {shlex.quote(s)}" for s in args.set]
    sys.stdout.write(to_yaml(obj, " ".join(parts)))
    return 0
