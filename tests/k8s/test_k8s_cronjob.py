"""The batch/v1 CronJob: one Ray job per tick, submitted with the cluster's token."""

from __future__ import annotations

from k8sutil import of_kind, parse_cron

from medxfer.k8s.names import TOKEN_SECRET
from medxfer.k8s.schedule import JOB_NAME_ENV


def test_cronjobs_submit_one_ray_job_per_tick():
    for name, obj in of_kind("CronJob"):
        s = obj["spec"]
        assert s["concurrencyPolicy"] == "Forbid", name
        assert s["successfulJobsHistoryLimit"] >= 1 and s["failedJobsHistoryLimit"] >= 1, name
        assert s["startingDeadlineSeconds"] > 0, name
        parse_cron(s["schedule"])
        c = s["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": TOKEN_SECRET, "key": "auth_token"}
        script = c["command"][-1]
        # one Ray job per tick, even when the pod retries: the submission id is the Job's name
        assert f'id="${JOB_NAME_ENV}"' in script and '--submission-id "$id"' in script, name
        if obj["metadata"]["name"].endswith("-retrain"):
            assert f'--tick-from-job "${JOB_NAME_ENV}"' in script, name
