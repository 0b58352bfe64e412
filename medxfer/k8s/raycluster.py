"""The RayCluster: a long-running cluster for ``ray job submit``, whose GPU pods scale from
zero to what the config needs; and the cluster parts a RayJob's own cluster shares with it.
"""

from __future__ import annotations

from medxfer.config import JobConfig
from medxfer.k8s.kinds import kind
from medxfer.k8s.names import CLUSTER_NAME, RAY_VERSION, TOKEN_SECRET, meta
from medxfer.k8s.pods import API_TOKEN_PATH, CONTAINER_SECURITY, head_template, worker_template
from medxfer.k8s.sizing import AUTOSCALER, CPU_GROUP, WorkerGroup, resources, worker_group


def head_group(image: str, autoscaler: bool = False) -> dict:
    return {
        "serviceType": "ClusterIP",  # dashboard and client port stay inside the cluster
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": head_template(image, autoscaler),
    }


def worker_group_spec(image: str, group: WorkerGroup, replicas: int, min_replicas: int, max_replicas: int) -> dict:
    return {
        "groupName": "gpu" if group.use_gpu else "cpu",
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
        "template": worker_template(image, group.cpu, group.memory_gib, group.gpus_per_pod, "ray-worker"),
    }


def auth_options() -> dict:
    # KubeRay injects RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from this Secret, key auth_token)
    # into every Ray container and the RayJob submitter.
    return {"mode": "token", "secretName": TOKEN_SECRET}


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
    groups = [worker_group_spec(image, group, 0, 0, group.replicas)]
    if group.use_gpu:
        groups.append(cpu_group)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": meta(CLUSTER_NAME, "ray-cluster"),
        "spec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "upscalingMode": "Default",
                "idleTimeoutSeconds": 600,  # an idle GPU pod goes away after 10 minutes
                "resources": resources(AUTOSCALER["cpu"], AUTOSCALER["memory"]),
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "ray-logs", "mountPath": "/tmp/ray"},
                    {"name": "api-token", "mountPath": API_TOKEN_PATH, "readOnly": True},
                ],
            },
            "authOptions": auth_options(),
            "headGroupSpec": head_group(image, autoscaler=True),
            "workerGroupSpecs": groups,
        },
    }


@kind("raycluster")
def raycluster_object(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None) -> dict:
    """The RayCluster for ``--kind raycluster``: one per deployment, whatever the stage."""
    return raycluster(cfg, image)
