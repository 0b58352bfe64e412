"""The portable scheduler: a batch/v1 CronJob whose pod submits each tick to the
long-running RayCluster, follows the job and exits with its status.
"""

from __future__ import annotations

from medxfer.config import JobConfig
from medxfer.k8s.kinds import kind
from medxfer.k8s.names import CLUSTER_NAME, DASHBOARD_PORT, NAMESPACE, TOKEN_SECRET, labels, meta
from medxfer.k8s.pods import submitter_pod
from medxfer.k8s.schedule import JOB_NAME_ENV, JOB_NAME_LABEL, SCHEDULE, TIME_ZONE, job_name_env
from medxfer.k8s.stages import STAGE_DEADLINE_S, entrypoint


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


@kind("cronjob")
def cronjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """The portable scheduler: a batch/v1 CronJob whose pod submits to the long-running RayCluster."""
    address = f"http://{CLUSTER_NAME}-head-svc.{NAMESPACE}.svc:{DASHBOARD_PORT}"
    pod = submitter_pod(f"{stage}-submitter", {
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
            job_name_env(),
        ],
    })
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": meta(f"medxfer-{stage}", stage),
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
