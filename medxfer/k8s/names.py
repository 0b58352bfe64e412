"""The names medxfer's Kubernetes objects find each other by, and the labels they all carry.

Why in one place: a pod mounts the ConfigMap, reads the Secret and runs as the ServiceAccount
that another manifest (``k8s/``) creates; one spelling of each name keeps them connected.
"""

from __future__ import annotations

from medxfer import __version__

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


def labels(component: str) -> dict:
    return {
        "app.kubernetes.io/name": "medxfer",
        "app.kubernetes.io/part-of": "medxfer",
        "app.kubernetes.io/component": component,
    }


def meta(name: str, component: str) -> dict:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(component)}
