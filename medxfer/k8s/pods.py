"""The pod templates: the Ray head, Ray workers and the RayJob's submitter, hardened alike.

Every pod runs as a non-root user on a read-only root filesystem with every capability
dropped, so each cache points into a size-limited ``/tmp`` emptyDir; no pod mounts a
Kubernetes API token, because every submitted driver runs in the head.

KubeRay v1.7.0 (``common/pod.go``) gives an autoscaling head a ``ray-logs`` emptyDir at
``/tmp/ray`` without a size limit unless that path is already mounted, so the head declares
its own; ``common/rbac.go`` binds the autoscaler's Role to the head's ServiceAccount.
"""

from __future__ import annotations

from medxfer.k8s.names import (
    AUTOSCALER_SERVICE_ACCOUNT,
    CONFIG_DIR,
    CONFIGMAP,
    DASHBOARD_PORT,
    RAY_SERVICE_ACCOUNT,
    S3_SECRET,
    SUBMITTER_SERVICE_ACCOUNT,
    labels,
)
from medxfer.k8s.schedule import job_name_env
from medxfer.k8s.sizing import (
    HEAD,
    RAY_LOGS_GIB,
    SUBMITTER_TMP_GIB,
    TMP_GIB,
    gib,
    resources,
    submitter_resources,
)

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
        {"name": "tmp", "emptyDir": {"sizeLimit": gib(TMP_GIB)}},
        # PyTorch DataLoader workers and Ray's object store need a large /dev/shm; the
        # container runtime's default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": gib(shm_gib)}},
    ]
    if autoscaler:
        # Declared here so KubeRay does not inject its own ray-logs volume, which has no limit.
        vols.append({"name": "ray-logs", "emptyDir": {"sizeLimit": gib(RAY_LOGS_GIB)}})
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
                "resources": resources(HEAD["cpu"], HEAD["memory"], disk_gib=disk),
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
            "resources": resources(cpu, f"{memory_gib}Gi", gpus, disk_gib=TMP_GIB),
            "securityContext": CONTAINER_SECURITY,
            "volumeMounts": _mounts(with_configs=False),
        }],
        "volumes": _volumes(shm_gib=memory_gib // 2, with_configs=False),
    }
    if gpus:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"labels": labels(component)}, "spec": spec}


def submitter_pod(component: str, container: dict) -> dict:
    """A pod that only talks to Ray's job API: ``container`` (name, image, command, env) with
    the submitter's account, size, hardening and a small ``/tmp``; it never restarts in place,
    its Job retries it."""
    return {
        "metadata": {"labels": labels(component)},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": SUBMITTER_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [{
                **container,
                "resources": submitter_resources(),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": gib(SUBMITTER_TMP_GIB)}}],
        },
    }


def submitter_template(image: str, stage: str) -> dict:
    env = [{"name": "HOME", "value": "/tmp"}]
    if stage == "retrain":
        env.append(job_name_env())  # the entrypoint's --tick-from-job
    return submitter_pod("ray-job-submitter", {
        "name": "ray-job-submitter", "image": image, "imagePullPolicy": "IfNotPresent", "env": env})
