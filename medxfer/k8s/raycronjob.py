"""The RayCronJob: KubeRay's scheduler, a new RayJob (and cluster) per tick. Alpha: it needs
the operator's RayCronJob feature gate, so it ships only in ``k8s-overlays/raycronjob/``.

KubeRay v1.7.0 (``raycronjob_controller.go``) names each tick's RayJob
``<name>-<scheduled Unix time / 60>``, as the batch CronJob controller names its Jobs
(kubernetes ``pkg/controller/cronjob``); a RayCronJob that never ran schedules from its
creation time and creates every missed tick, which is why none ships suspended.
"""

from __future__ import annotations

from medxfer.config import JobConfig
from medxfer.k8s.kinds import kind
from medxfer.k8s.names import meta
from medxfer.k8s.rayjob import rayjob_spec
from medxfer.k8s.schedule import SCHEDULE, TIME_ZONE


@kind("raycronjob")
def raycronjob(cfg: JobConfig, stage: str, image: str, config_file: str, overrides: list[str] | None = None) -> dict:
    """``stage`` of ``cfg`` on :data:`~medxfer.k8s.schedule.SCHEDULE`, each tick a scheduled RayJob."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCronJob",
        "metadata": meta(f"medxfer-{stage}", stage),
        "spec": {
            "schedule": SCHEDULE,
            "timeZone": TIME_ZONE,
            "jobTemplate": rayjob_spec(cfg, stage, image, config_file, overrides, scheduled=True),
        },
    }
