"""Pod sizes: the worker group from `scaling`, requests and limits on every container, GPUs
with their toleration and shared memory, and disk requested for every volume on disk."""

from __future__ import annotations

from k8sutil import all_objects, containers, pod_specs, ray_cluster_specs, rayjob_specs

from medxfer.config import ScalingSection
from medxfer.k8s.sizing import worker_group


def test_worker_group_sizes_from_scaling():
    one = worker_group(ScalingSection(num_workers=1))
    assert (one.replicas, one.gpus_per_pod) == (1, 1)
    half = worker_group(ScalingSection(num_workers=4, gpus_per_worker=0.5))
    assert (half.replicas, half.gpus_per_pod) == (2, 1)
    two = worker_group(ScalingSection(num_workers=3, gpus_per_worker=2))
    assert (two.replicas, two.gpus_per_pod, two.cpu) == (3, 2, 16)
    cpu = worker_group(ScalingSection(num_workers=3, use_gpu=False, cpus_per_worker=2))
    assert (cpu.replicas, cpu.gpus_per_pod, cpu.use_gpu) == (3, 0, False)


def test_every_container_has_requests_and_limits():
    for name, obj in all_objects():
        for c in containers(obj):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert r in res.get(part, {}), f"{name}: container {c['name']} lacks {part}.{r}"
        for spec in ray_cluster_specs(obj):
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
        for pod in pod_specs(obj):
            disk = [v for v in pod.get("volumes", []) if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
            assert all("sizeLimit" in v["emptyDir"] for v in disk), f"{name}: an emptyDir without a size limit"
            main_container = pod["containers"][0]
            requested = _gib(main_container["resources"]["requests"].get("ephemeral-storage", "0Gi"))
            assert requested >= sum(_gib(v["emptyDir"]["sizeLimit"]) for v in disk) > 0, f"{name}: {requested}"
        for spec in ray_cluster_specs(obj):
            if not spec.get("enableInTreeAutoscaling"):
                continue
            autoscaling += 1
            head = spec["headGroupSpec"]["template"]["spec"]
            (logs,) = [v for v in head["volumes"] if v["name"] == "ray-logs"]
            assert logs["emptyDir"]["sizeLimit"], name
            for mounts in (head["containers"][0]["volumeMounts"], spec["autoscalerOptions"]["volumeMounts"]):
                # KubeRay injects its own, unlimited ray-logs volume unless /tmp/ray is mounted.
                assert {"name": "ray-logs", "mountPath": "/tmp/ray"} in mounts, name
        for spec in rayjob_specs(obj):
            assert 0 < spec["preRunningDeadlineSeconds"] <= 2 * 3600, name
    assert autoscaling


def test_gpu_workers_have_limits_tolerations_and_shm():
    gpu_groups = 0
    for name, obj in all_objects():
        for pod in pod_specs(obj):
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
