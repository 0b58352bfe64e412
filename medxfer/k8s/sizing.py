"""How big each pod is: the worker group derived from the config's ``scaling``, and the
requests and limits of every container.

Why derived: a worker group sized by hand drifts from the number of Ray Train workers the
config asks for; here one function maps one onto the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medxfer.config import ScalingSection

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


def gib(n: int) -> str:
    return f"{n}Gi"


def resources(cpu: str | int, memory: str, gpus: int = 0, disk_gib: int = 0) -> dict:
    res = {"cpu": str(cpu), "memory": memory}
    if gpus:
        res["nvidia.com/gpu"] = str(gpus)
    # Requests equal limits: Ray sizes its object store and CPU count from the limits.
    # Disk is requested only: the emptyDirs' size limits already bound it.
    requests = {**res, "ephemeral-storage": gib(disk_gib)} if disk_gib else dict(res)
    return {"requests": requests, "limits": dict(res)}


def submitter_resources() -> dict:
    return {"requests": {**SUBMITTER["requests"], "ephemeral-storage": gib(SUBMITTER_TMP_GIB)},
            "limits": dict(SUBMITTER["limits"])}
