"""The RayJob: one run of a stage on a cluster of its own, which goes away when the run ends.

What KubeRay v1.7.0 does with it (ray-operator/controllers/ray/): ``rayjob_controller.go``
moves a Running RayJob that receives ``spec.suspend: true`` to Suspending, which deletes its
cluster and submitter, so nothing applied twice may carry it. The submitter is a batch Job
named after the RayJob, and the entrypoint is pasted into its ``bash -c`` command
(``common/job.go``), so ``$VAR`` in an entrypoint is expanded in the submitter pod.
``utils/validation.go``: ``deletionRules`` exclude ``shutdownAfterJobFinishes`` and
``ttlSecondsAfterFinished``, and per status their TTLs must grow Workers <= Cluster <= Self.
"""

from __future__ import annotations

from medxfer.config import JobConfig
from medxfer.k8s.kinds import kind
from medxfer.k8s.names import RAY_VERSION, meta
from medxfer.k8s.pods import submitter_template
from medxfer.k8s.raycluster import auth_options, head_group, worker_group_spec
from medxfer.k8s.schedule import tick_job_name
from medxfer.k8s.sizing import worker_group
from medxfer.k8s.stages import STAGE_DEADLINE_S, entrypoint

# After a RayJob ends its cluster (and its GPUs) goes within minutes; the RayJob stays as the
# record of the run, and the submitter's pod log keeps the driver's output.
CLUSTER_TTL_S = 300
# RayJobs a RayCronJob creates delete themselves after this long (the CronJob keeps 3 runs).
SCHEDULED_HISTORY_S = 3 * 24 * 3600
# A RayJob whose cluster is not running within this time fails (a GPU shortage, an image
# that cannot be pulled) instead of holding the job for days.
PRE_RUNNING_DEADLINE_S = 3600


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
            "authOptions": auth_options(),
            "headGroupSpec": head_group(image),
            "workerGroupSpecs": [worker_group_spec(image, group, group.replicas, group.replicas, group.replicas)],
        },
        "submitterConfig": {"backoffLimit": 2},
        "submitterPodTemplate": submitter_template(image, stage),
    }


@kind("rayjob")
def rayjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """A one-off run. A retrain is named like a scheduler's tick (this minute), so it gets a tick."""
    name = tick_job_name(stage) if stage == "retrain" else f"medxfer-{stage}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": meta(name, stage),
        "spec": rayjob_spec(cfg, stage, image, config_file, overrides),
    }
