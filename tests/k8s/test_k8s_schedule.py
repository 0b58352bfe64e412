"""When scheduled runs fire, and the tick a scheduled retrain takes from its Job's name."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

import pytest
from k8sutil import JOBS, kustomized, parse_cron

from medxfer.cli import build_parser, main
from medxfer.config.loading import load_config
from medxfer.errors import ConfigError
from medxfer.k8s.render import render
from medxfer.k8s.schedule import JOB_NAME_ENV, SCHEDULE, tick_job_name


def _scheduler(kind: str) -> tuple[str, dict]:
    """(the shell text that holds the retrain command, the pod spec that runs that shell)."""
    if kind == "CronJob":
        (cron,) = [o for o in kustomized("k8s") if o["kind"] == "CronJob"]
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return pod["containers"][0]["command"][-1], pod
    (ray_cron,) = [o for o in kustomized("k8s-overlays/raycronjob") if o["kind"] == "RayCronJob"]
    template = ray_cron["spec"]["jobTemplate"]
    assert template["submissionMode"] == "K8sJobMode", "the job-name label exists only on a submitter Job's pods"
    return template["entrypoint"], template["submitterPodTemplate"]["spec"]


def _retrain_argv(shell_text: str, job_name: str) -> list[str]:
    """The `medxfer retrain ...` arguments once a real bash has expanded them in the pod."""
    (line,) = [ln for ln in shell_text.splitlines() if "medxfer retrain" in ln]
    cmd = line[line.index("medxfer retrain"):]
    p = subprocess.run(["bash", "-c", f'set -- {cmd}; printf "%s\\n" "$@"'], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], JOB_NAME_ENV: job_name}, check=True)
    return p.stdout.splitlines()[1:]  # without "medxfer"


def _minute_name(scheduled: dt.datetime) -> str:
    """The child Job/RayJob name both controllers give a tick (kubernetes pkg/controller/cronjob
    getJobName, KubeRay raycronjob_controller getRayJobName): <name>-<Unix time / 60>."""
    return f"medxfer-retrain-{int(scheduled.timestamp()) // 60}"


def test_scheduled_retrains_take_their_tick_from_the_job_name_not_the_clock():
    """Both schedulers hand the pod its Job's name (downward API) and the retrain derives its
    tick from it, so a retry after an hour boundary resumes the same run."""
    from medxfer.lifecycle import retrain

    scheduled = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    for scheduler in ("CronJob", "RayCronJob"):
        shell_text, pod = _scheduler(scheduler)
        assert "date" not in shell_text, f"{scheduler}: the tick must not come from the wall clock"
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env[JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']", scheduler
        args = build_parser().parse_args(_retrain_argv(shell_text, _minute_name(scheduled)))
        assert args.tick is None and args.tick_from_job == _minute_name(scheduled), scheduler
        for started in (scheduled + dt.timedelta(seconds=40), scheduled + dt.timedelta(hours=1, minutes=40)):
            tick = retrain.tick_from_job_name(args.tick_from_job, now=started)
            assert retrain.run_name_for("retrain-breast", tick) == "retrain-breast-20260101T0200", (scheduler, started)


def test_ticks_follow_the_schedule_not_the_hour():
    """Every tick a schedule fires is its own run (four an hour for ``*/15``), and a tick started by
    hand in the hour of the nightly one — the README's ``kubectl create job --from=cronjob/...``, named
    like the scheduler's — is a new run, not the night's decision printed again. A retry keeps its tick."""
    from medxfer.k8s.schedule import tick_job_name
    from medxfer.lifecycle import retrain

    night = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    later = night + dt.timedelta(hours=3)
    quarter = [night + dt.timedelta(minutes=m) for m in (0, 15, 30, 45)]
    runs = {retrain.run_name_for("r", retrain.parse_tick(retrain.tick_from_job_name(_minute_name(t), now=later)))
            for t in quarter}
    assert len(runs) == 4, runs
    by_hand = tick_job_name("retrain", now=(night + dt.timedelta(minutes=23)).timestamp())
    tick = retrain.parse_tick(retrain.tick_from_job_name(by_hand, now=later))
    assert retrain.run_name_for("r", tick) == "r-20260101T0223"
    assert retrain.run_name_for("r", tick) not in runs
    # The same Job name (a retried pod, hours later) gives the same run; a coarser tick_minutes groups them.
    again = retrain.parse_tick(retrain.tick_from_job_name(by_hand, now=later + dt.timedelta(hours=5)))
    assert retrain.run_name_for("r", again) == "r-20260101T0223"
    hourly = {retrain.run_name_for("r", retrain.parse_tick(t, 60)) for t in quarter}
    assert hourly == {"r-20260101T0200"}


def test_tick_from_job_name_refuses_names_without_a_scheduled_minute():
    from medxfer.lifecycle.retrain import tick_from_job_name

    now = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
    late = _minute_name(dt.datetime(2025, 12, 16, 2, 17, tzinfo=dt.timezone.utc))  # a tick retried weeks later
    assert tick_from_job_name(late, now=now) == dt.datetime(2025, 12, 16, 2, 17, tzinfo=dt.timezone.utc)
    for bad in ("", "medxfer-retrain", "retrain-now", "medxfer-retrain-42"):
        with pytest.raises(ConfigError, match="scheduled minute"):
            tick_from_job_name(bad, now=now)
    with pytest.raises(ConfigError, match="not seconds"):
        tick_from_job_name(f"medxfer-retrain-{int(now.timestamp())}", now=now)


def test_retrain_cli_refuses_a_job_name_without_a_tick(capsys):
    rc = main(["retrain", "--config", str(JOBS / "retrain.yaml"), "--tick-from-job", "retrain-now"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tick-from-job 'retrain-now'" in err and "Traceback" not in err


def test_a_retrain_rayjob_by_hand_is_named_like_a_tick():
    from medxfer.lifecycle.retrain import tick_from_job_name

    now = dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    name = tick_job_name("retrain", now.timestamp())
    assert tick_from_job_name(name, now=now) == dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    job = render(load_config(str(JOBS / "retrain.yaml")), "rayjob", "retrain")
    assert re.fullmatch(r"medxfer-retrain-\d{8,}", job["metadata"]["name"])


def test_the_schedule_is_a_valid_cron_schedule():
    assert parse_cron(SCHEDULE)[:2] == [{0}, {2}]


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/15 * * * *", "0 0 1,15 * 1-5", "30 4 * jan-mar MON", "@daily"])
def test_cron_accepts(expr):
    parse_cron(expr)


@pytest.mark.parametrize("expr", ["0 2 * *", "60 * * * *", "0 24 * * *", "* * 0 * *", "*/0 * * * *", "0 2 * * 8",
                                  "5-1 * * * *", "0 2 * * * *", "@sometimes", "a b c d e"])
def test_cron_rejects(expr):
    with pytest.raises(ValueError):
        parse_cron(expr)
