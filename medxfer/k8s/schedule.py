"""When scheduled runs fire, and how a run learns its tick.

Why from the Job's name: both schedulers name the Job (or RayJob) of a tick after its
scheduled minute, the same on every retry, so a retrain that derives its run name from it
resumes the same run however late a retried pod starts; the wall clock would give a new run.
"""

from __future__ import annotations

import time

SCHEDULE = "0 2 * * *"  # nightly at 02:00
TIME_ZONE = "Etc/UTC"
#: A scheduled pod learns its tick from its Job's name: the Job API sets this label on every
#: pod of a Job (the unprefixed one, which every Kubernetes version sets and validates).
JOB_NAME_LABEL = "job-name"
JOB_NAME_ENV = "MEDXFER_JOB_NAME"


def job_name_env() -> dict:
    """The pod's Job name through the downward API: a tick's name, the same on every retry."""
    return {"name": JOB_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}}


def tick_job_name(stage: str, now: float | None = None) -> str:
    """A Job name for a tick run by hand, in the form both schedulers use: ``medxfer-<stage>-<minute>``."""
    minute = int(time.time() if now is None else now) // 60
    return f"medxfer-{stage}-{minute}"
