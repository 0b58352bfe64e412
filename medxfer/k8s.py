"""Render the Kubernetes objects that run a medxfer job config on KubeRay.

Why a renderer: the number of Ray Train workers and GPUs lives in the job config
(``scaling``), and the pods that host them live in a RayJob. Hand-editing both invites a
cluster with four GPU pods running a config that asks for one worker. ``medxfer k8s render``
derives the worker group from the config, and the manifests checked in under ``k8s/`` are
this module's output for the configs in ``jobs/`` (each file's first line names the command;
a test re-runs it), so the two cannot drift apart.

Everything a pod needs that is not in the image arrives by reference, never inline: the job
configs from the ``medxfer-jobs`` ConfigMap (rendered from ``jobs/`` by ``--kind configmap``),
the Ray token from the ``medxfer-ray-token`` Secret, S3 credentials from the optional
``medxfer-s3`` Secret or a workload identity on the ServiceAccounts.

What the KubeRay v1.7.0 operator does with these objects, as read in its source
(ray-project/kuberay, tag v1.7.0, ray-operator/controllers/ray/), where a choice below
depends on it:

- ``rayjob_controller.go``: ``spec.suspend: true`` on a Running RayJob moves it to
  Suspending, which deletes its cluster and submitter; so nothing applied twice may carry it.
  The submitter is a batch Job named after the RayJob, and the entrypoint is pasted into
  its ``bash -c`` command (``common/job.go``), so ``$VAR`` in an entrypoint is expanded in
  the submitter pod.
- ``raycronjob_controller.go``: each tick creates RayJob ``<name>-<scheduled Unix time / 60>``,
  as the batch CronJob controller names its Jobs (kubernetes ``pkg/controller/cronjob``);
  a RayCronJob that never ran schedules from its creation time and creates every missed tick.
- ``utils/validation.go``: ``deletionRules`` exclude ``shutdownAfterJobFinishes`` and
  ``ttlSecondsAfterFinished``, and per status their TTLs must grow Workers <= Cluster <= Self.
- ``common/pod.go``: an autoscaling head gets a ``ray-logs`` emptyDir at ``/tmp/ray``
  without a size limit unless that path is already mounted; ``common/rbac.go`` binds the
  autoscaler's Role to the head's ServiceAccount.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
#: The long-running cluster's head: KubeRay binds the autoscaler's Role to this account.
AUTOSCALER_SERVICE_ACCOUNT = "medxfer-autoscaler"
SUBMITTER_SERVICE_ACCOUNT = "medxfer-submitter"
TOKEN_SECRET = "medxfer-ray-token"
S3_SECRET = "medxfer-s3"
CLUSTER_NAME = "medxfer"  # the long-running RayCluster; KubeRay names its service <name>-head-svc
DASHBOARD_PORT = 8265
SCHEDULE = "0 2 * * *"  # nightly at 02:00
TIME_ZONE = "Etc/UTC"
#: A scheduled pod learns its tick from its Job's name: the Job API sets this label on every
#: pod of a Job (the unprefixed one, which every Kubernetes version sets and validates).
JOB_NAME_LABEL = "job-name"
JOB_NAME_ENV = "MEDXFER_JOB_NAME"

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

# After a RayJob ends its cluster (and its GPUs) goes within minutes; the RayJob stays as the
# record of the run, and the submitter's pod log keeps the driver's output.
CLUSTER_TTL_S = 300
# RayJobs a RayCronJob creates delete themselves after this long (the CronJob keeps 3 runs).
SCHEDULED_HISTORY_S = 3 * 24 * 3600
# A RayJob whose cluster is not running within this time fails (a GPU shortage, an image
# that cannot be pulled) instead of holding the job for days.
PRE_RUNNING_DEADLINE_S = 3600

# Pod sizes. GPU pods get CPU and memory per GPU so Ray Data has room next to the trainer.
HEAD = {"cpu": "2", "memory": "8Gi"}
CPU_PER_GPU = 8
GIB_PER_GPU = 32
DATA_CPUS = 2  # CPUs per worker pod beyond the trainers', for Ray Data preprocessing
GIB_PER_CPU = 4
CPU_GROUP = {"cpu": "8", "memory": "32Gi", "max": 4}  # the RayCluster's CPU group for preprocessing
SUBMITTER = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
AUTOSCALER = {"cpu": "500m", "memory": "512Mi"}
# Disk-backed emptyDirs, in GiB; each pod requests their sum as ephemeral storage so the
# scheduler places it on a node with that much disk.
TMP_GIB = 20  # /tmp: Ray's session files and spilled objects, the caches
RAY_LOGS_GIB = 10  # /tmp/ray of the autoscaling head, shared with the autoscaler
SUBMITTER_TMP_GIB = 1
API_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the Ray autoscaler reads it

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


def entrypoint(cfg: JobConfig, stage: str, config_file: str, overrides: list[str] | None = None) -> str:
    """The command the Ray job runs, reading the config from the mounted ConfigMap.

    ``--set`` overrides given to the renderer travel into the command, so the job runs with
    exactly the values the worker group was sized for. A retrain names its run after the
    tick its scheduler gave it: the pod's Job name, which the submitter's shell expands.
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
        cmd += f' --tick-from-job "${JOB_NAME_ENV}"'
    return cmd


def tick_job_name(stage: str, now: float | None = None) -> str:
    """A Job name for a tick run by hand, in the form both schedulers use: ``medxfer-<stage>-<minute>``."""
    minute = int(time.time() if now is None else now) // 60
    return f"medxfer-{stage}-{minute}"


# ----------------------------------------------------------------------------- pods


def _gib(n: int) -> str:
    return f"{n}Gi"


def _job_name_env() -> dict:
    """The pod's Job name through the downward API: a tick's name, the same on every retry."""
    return {"name": JOB_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}}


def _api_token_volume() -> dict:
    """What the kubelet would auto-mount (a short-lived token, the CA, the namespace), as a
    volume only the autoscaler container mounts: the drivers on the head never see a token."""
    return {"name": "api-token", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}


def _volumes(shm_gib: int, with_configs: bool, autoscaler: bool = False) -> list[dict]:
    vols = [
        {"name": "tmp", "emptyDir": {"sizeLimit": _gib(TMP_GIB)}},
        # PyTorch DataLoader workers and Ray's object store need a large /dev/shm; the
        # container runtime's default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _gib(shm_gib)}},
    ]
    if autoscaler:
        # Declared here so KubeRay does not inject its own ray-logs volume, which has no limit.
        vols.append({"name": "ray-logs", "emptyDir": {"sizeLimit": _gib(RAY_LOGS_GIB)}})
        vols.append(_api_token_volume())
    if with_configs:
        vols.append({"name": "jobs", "configMap": {"name": CONFIGMAP}})
    return vols


def _mounts(with_configs: bool, autoscaler: bool = False) -> list[dict]:
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    if autoscaler:
        mounts.append({"name": "ray-logs", "mountPath": "/tmp/ray"})
    if with_configs:
        mounts.append({"name": "jobs", "mountPath": CONFIG_DIR, "readOnly": True})
    return mounts


def _resources(cpu: str | int, memory: str, gpus: int = 0, disk_gib: int = 0) -> dict:
    res = {"cpu": str(cpu), "memory": memory}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
    # Requests equal limits: Ray sizes its object store and CPU count from the limits.
    # Disk is requested only: the emptyDirs' size limits already bound it.
    requests = {**res, "ephemeral-storage": _gib(disk_gib)} if disk_gib else dict(res)
    return {"requests": requests, "limits": dict(res)}


def head_template(image: str, autoscaler: bool = False) -> dict:
    ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": DASHBOARD_PORT},
        {"name": "client", "containerPort": 10001},
        {"name": "metrics", "containerPort": 8080},
    ]
    disk = TMP_GIB + (RAY_LOGS_GIB if autoscaler else 0)
    return {
        "metadata": {"labels": labels("ray-head")},
        "spec": {
            # Its own account where the operator binds the autoscaler's Role to it.
            "serviceAccountName": AUTOSCALER_SERVICE_ACCOUNT if autoscaler else RAY_SERVICE_ACCOUNT,
            # No pod-wide token: every submitted driver runs in this pod.
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [{
                "name": "ray-head",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "ports": ports,
                "env": RAY_ENV,
                "envFrom": [{"secretRef": {"name": S3_SECRET, "optional": True}}],
                "resources": _resources(HEAD["cpu"], HEAD["memory"], disk_gib=disk),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": _mounts(with_configs=True, autoscaler=autoscaler),
            }],
            "volumes": _volumes(shm_gib=2, with_configs=True, autoscaler=autoscaler),
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
            "resources": _resources(cpu, f"{memory_gib}Gi", gpus, disk_gib=TMP_GIB),
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": _mounts(with_configs=False),
        }],
        "volumes": _volumes(shm_gib=memory_gib // 2, with_configs=False),
    }
    if gpus:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"labels": labels(component)}, "spec": spec}


def _head_group(image: str, autoscaler: bool = False) -> dict:
    return {
        "serviceType": "ClusterIP",  # dashboard and client port stay inside the cluster
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": head_template(image, autoscaler),
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


def _submitter_resources() -> dict:
    return {"requests": {**SUBMITTER["requests"], "ephemeral-storage": _gib(SUBMITTER_TMP_GIB)},
            "limits": dict(SUBMITTER["limits"])}


def submitter_template(image: str, stage: str) -> dict:
    env = [{"name": "HOME", "value": "/tmp"}]
    if stage == "retrain":
        env.append(_job_name_env())  # the entrypoint's --tick-from-job
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
                "env": env,
                "resources": _submitter_resources(),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": _gib(SUBMITTER_TMP_GIB)}}],
        },
    }


# ----------------------------------------------------------------------------- objects


def _cleanup(scheduled: bool) -> dict:
    """When a finished RayJob's cluster, and the RayJob, go away.

    A RayJob someone applied stays as the record of its run, so re-applying ``k8s/`` does not
    start it again; only its cluster goes, minutes after the end. A RayCronJob's RayJobs (one
    per night) delete themselves after a few days; ``ttlSecondsAfterFinished`` alone would
    remove only their clusters and they would pile up.
    """
    if not scheduled:
        return {"shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": CLUSTER_TTL_S}
    rules = []
    for condition in ({"jobStatus": "SUCCEEDED"}, {"jobStatus": "FAILED"}, {"jobDeploymentStatus": "Failed"}):
        rules.append({"policy": "DeleteCluster", "condition": {**condition, "ttlSeconds": CLUSTER_TTL_S}})
        rules.append({"policy": "DeleteSelf", "condition": {**condition, "ttlSeconds": SCHEDULED_HISTORY_S}})
    return {"deletionStrategy": {"deletionRules": rules}}


def rayjob_spec(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None,
                scheduled: bool = False) -> dict:
    group = worker_group(cfg.scaling)
    return {
        "entrypoint": entrypoint(cfg, stage, config_file, overrides),
        "submissionMode": "K8sJobMode",  # a submitter Job, whose pods carry the job-name label
        # A failed attempt gets a fresh cluster; the config's stable run name makes it resume
        # from the last checkpoint in storage.
        "backoffLimit": 2,
        "activeDeadlineSeconds": STAGE_DEADLINE_S[stage],
        "preRunningDeadlineSeconds": PRE_RUNNING_DEADLINE_S,
        **_cleanup(scheduled),
        "rayClusterSpec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": False,
            "authOptions": _auth(),
            "headGroupSpec": _head_group(image),
            "workerGroupSpecs": [_worker_group(image, group, group.replicas, group.replicas, group.replicas)],
        },
        "submitterConfig": {"backoffLimit": 2},
        "submitterPodTemplate": submitter_template(image, stage),
    }


def rayjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """A one-off run. A retrain is named like a scheduler's tick (this minute), so it gets a tick."""
    name = tick_job_name(stage) if stage == "retrain" else f"medxfer-{stage}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _meta(name, stage),
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
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "ray-logs", "mountPath": "/tmp/ray"},
                    {"name": "api-token", "mountPath": API_TOKEN_PATH, "readOnly": True},
                ],
            },
            "authOptions": _auth(),
            "headGroupSpec": _head_group(image, autoscaler=True),
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
            "jobTemplate": rayjob_spec(cfg, stage, image, config_file, overrides, scheduled=True),
        },
    }


def submit_script(cfg: JobConfig, stage: str, config_file: str, overrides: list[str] | None) -> str:
    """The CronJob pod's shell: submit once per tick, follow the logs, exit with the job's status.

    The submission id is the pod's Job name (the CronJob's name and the scheduled minute), so a
    retried pod finds the job it already submitted instead of starting a second one. When that
    job ended badly (FAILED, STOPPED), the retry submits it again as ``<name>-2``, ``-3``, ...:
    the same tick names the same run, which resumes from its checkpoint.
    """
    cmd = entrypoint(cfg, stage, config_file, overrides)
    return "\n".join([
        "set -euo pipefail",
        f': "${{{JOB_NAME_ENV}:?the pod needs its Job name (downward API, label {JOB_NAME_LABEL})}}"',
        "for attempt in 1 2 3 4 5 6; do",
        f'  id="${JOB_NAME_ENV}"; [ "$attempt" -gt 1 ] && id="${JOB_NAME_ENV}-$attempt"',
        '  if status="$(ray job status --address "$RAY_ADDRESS" "$id" 2>&1)"; then',
        # `ray job status` says "Job '<id>' failed" / "... was stopped" / "... succeeded", or "Status ...: RUNNING".
        """    case "$status" in *"' failed"*|*"was stopped"*) continue ;; esac""",
        "  else",
        f'    ray job submit --address "$RAY_ADDRESS" --submission-id "$id" --no-wait -- {cmd}',
        "  fi",
        "  break",
        "done",
        'ray job logs --address "$RAY_ADDRESS" --follow "$id" || true',
        'status="$(ray job status --address "$RAY_ADDRESS" "$id" 2>&1)"',
        'echo "$status"',
        """case "$status" in *"' succeeded"*) exit 0 ;; *) exit 1 ;; esac""",
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
                    _job_name_env(),
                ],
                "resources": _submitter_resources(),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": _gib(SUBMITTER_TMP_GIB)}}],
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


def configmap(jobs_dir: str) -> dict:
    """The ``medxfer-jobs`` ConfigMap: every ``*.yaml`` in ``jobs_dir``, each one validated first.

    Committed rendered (``k8s/04-configmap-jobs.yaml``) so ``kubectl apply -f k8s/`` creates
    it; a Ray head whose config volume names a missing ConfigMap never starts.
    """
    from medxfer.config_io import load_config

    files = sorted(Path(jobs_dir).glob("*.yaml"))
    if not files:
        raise ConfigError([f"--config {jobs_dir}: no *.yaml job configs in this folder"])
    for f in files:
        load_config(str(f))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(CONFIGMAP, "job-configs"),
        "data": {f.name: f.read_text() for f in files},
    }


#: What ``render`` makes from one job config; ``--kind configmap`` renders a folder of them.
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
    head = (f"# Generated by: {command}\n# Edit the job config or medxfer/k8s.py and run `make k8s`; "
            "tests/test_k8s.py checks this file equals the output.\n") if command else ""
    return head + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=1000)
