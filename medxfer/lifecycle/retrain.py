"""``medxfer retrain``: the scheduled job — preprocess, fine-tune, evaluate, promote only if better.

What makes it safe to run from a cron schedule:

- **One run per tick.** The run name is ``<name>-<tick as YYYYmmddTHHMM>`` (the tick from the
  scheduler's Job name, ``--tick`` or now, floored to ``promotion.tick_minutes``), so a retried or
  repeated tick (the CronJob fired twice, a pod was rescheduled) lands on the same run:
  training resumes from its checkpoint, a finished training is not repeated, and a tick
  that already reached a decision just returns that decision.
- **No overlapping runs.** A lock in storage (``locks/retrain-<model>/``) taken with a
  conditional create; a second tick while one is running exits 0 with a message, while a
  retry of the *same* tick waits for its earlier attempt's lease (see
  :meth:`medxfer.lifecycle.lease.RunLock.acquire_waiting_for_own_run`). A lease
  not renewed for ``promotion.lock_ttl_s`` belongs to a crashed run and is taken over. Each
  lock holder gets its own numbered lock object, so taking over an expired lock is itself a
  conditional create, and two ticks can never both take it. The holder renews its lease
  from a heartbeat thread while it works (a run may outlast the TTL), and checks that it
  still holds the lock before training, registering and promoting: a holder whose lease
  was taken over (a stalled heartbeat, a partition) stops and promotes nothing. A damaged
  lock object (not JSON, keys missing) is reported, counts as held for one TTL from when it
  was first seen, and is then taken over — it never blocks every later tick.
- **A fair comparison.** The champion is re-evaluated on *this* run's holdout (same
  manifest rows, each model through its own preprocessing spec) instead of trusting a
  report from an older holdout; then :func:`medxfer.lifecycle.model_registry.decide` applies the
  ``promotion`` rule and the registry's conditional promotion moves the pointer.
- **A record either way.** ``runs/<run>/decision.json`` (and a copy under the registry's
  ``decisions/``) says what was compared, the numbers and why it was or was not promoted.
  Not promoting is a normal outcome: exit 0. Only a failure exits non-zero.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import time

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.lifecycle.lease import RunLock
from medxfer.lifecycle.model_registry import Registry, json_safe

log = logging.getLogger("medxfer.lifecycle.retrain")

def parse_tick(tick: str | _dt.datetime | None, minutes: int = 1) -> _dt.datetime:
    """The tick's time in UTC (None: now), floored to a multiple of ``minutes`` since 1970.

    Why minutes and not hours: a tick is whatever the schedule says it is (``*/15 * * * *`` is
    four ticks an hour) and "run a tick now" must run one, even in the hour of an earlier tick.
    ``promotion.tick_minutes`` coarsens it for those who want one run per hour or per day.
    """
    if tick is None or tick == "":
        t = _dt.datetime.now(_dt.timezone.utc)
    elif isinstance(tick, _dt.datetime):
        t = tick
    else:
        try:
            t = _dt.datetime.fromisoformat(str(tick).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError([f"--tick {tick!r}: expected an ISO time such as 2026-11-25T02:00:00Z"]) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    minute = int(t.timestamp() // 60)
    return _dt.datetime.fromtimestamp((minute - minute % minutes) * 60, _dt.timezone.utc)


_JOB_MINUTE = re.compile(r"-(\d{8,})$")


def tick_from_job_name(job_name: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """The tick a scheduler gave a run, from its Kubernetes Job's name (UTC, to the minute).

    A batch/v1 CronJob and KubeRay's RayCronJob both name a tick's Job ``<name>-<scheduled
    Unix time / 60>``, and the pod reads the name through the downward API. A retry (a new
    pod or cluster, maybe after an hour boundary) keeps the name, so it gets the same run
    name and resumes that run instead of starting a new one that finds the crashed run's lock.
    """
    m = _JOB_MINUTE.search(job_name or "")
    if not m:
        raise ConfigError([f"--tick-from-job {job_name!r}: expected the Job name a CronJob or RayCronJob gives "
                           "a tick, <name>-<scheduled minute since 1970>; name a run by hand "
                           "<name>-$(( $(date +%s) / 60 ))"])
    tick = _dt.datetime.fromtimestamp(int(m.group(1)) * 60, _dt.timezone.utc)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if tick > now + _dt.timedelta(hours=1):
        raise ConfigError([f"--tick-from-job {job_name!r}: the tick {tick:%Y-%m-%dT%H:%MZ} is in the future; "
                           "the suffix counts minutes since 1970, not seconds"])
    return tick


_RUN_TICK = re.compile(r"-(\d{8}T\d{4})$")


def run_name_for(name: str, tick: _dt.datetime) -> str:
    return f"{name}-{tick:%Y%m%dT%H%M}"


def tick_of_run(run: str) -> str | None:
    """The ``--tick`` that names ``run`` again (None for a run not named by a tick)."""
    m = _RUN_TICK.search(run or "")
    if not m:
        return None
    return _dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M").strftime("%Y-%m-%dT%H:%MZ")


def _headline(rep: dict | None) -> dict:
    if not rep:
        return {}
    return {k: {"value": m.get("value"), "ci": m.get("ci")} for k, m in rep.get("metrics", {}).items()}


def _find_registered(reg: Registry, bundle_uri: str, sha: str) -> str | None:
    """A version already registered from this run's bundle (a tick resumed after registering)."""
    for v in reg.list_versions():
        if v.get("source_bundle") == bundle_uri and v.get("weights_sha256") == sha:
            return v["version"]
    return None


def run_retrain(cfg: JobConfig, tick: str | _dt.datetime | None = None) -> dict:
    """One scheduled retraining tick; returns the decision record (also written to storage)."""
    from medxfer.data.cache import prepare
    from medxfer.evaluate import evaluate_bundle
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.supervised.stage import run_training

    t0 = time.time()
    when = parse_tick(tick, cfg.promotion.tick_minutes)
    run = run_name_for(cfg.name, when)
    run_cfg = cfg.model_copy(update={"name": run})
    layout = storage.Layout(cfg.storage.root)
    run_uri = layout.run(run)
    decision_uri = storage.join(run_uri, "decision.json")
    reg = Registry(cfg.storage.root, cfg.model.name)
    lock = RunLock(storage.join(layout.root, "locks", f"retrain-{cfg.model.name}"), cfg.promotion.lock_ttl_s, run)

    ok, holder = lock.acquire_waiting_for_own_run()
    if not ok:
        if holder.get("damaged"):
            msg = (f"the retrain lock of {cfg.model.name} is damaged ({holder['damaged']}); it counts as held until "
                   f"{holder['expires']}, then the next tick takes it over; this tick ({run}) does nothing")
        else:
            msg = (f"another retrain of {cfg.model.name} is running (run {holder.get('run')}, owner "
                   f"{holder.get('owner')}, lock expires {holder.get('expires')}); this tick ({run}) does nothing")
            earlier = tick_of_run(str(holder.get("run")))
            if earlier and str(holder.get("run")).startswith(f"{cfg.name}-"):
                msg += (f". If that run was stopped or crashed, run its tick again to resume it (--tick {earlier}): "
                        "it waits for the lease and goes on from its checkpoint")
        log.warning(msg)
        return {"kind": "medxfer-retrain-decision/1", "run": run, "model": cfg.model.name,
                "status": "skipped", "promoted": False, "reason": msg}
    lock.start_heartbeat()
    try:
        if storage.exists(decision_uri):
            rec = storage.read_json(decision_uri)
            log.info("%s already decided (%s); nothing to do", run, rec.get("status"))
            return {**rec, "repeated_tick": True}
        prepared = prepare(run_cfg)
        lock.check("training")
        result = run_training(run_cfg, "finetune", prepared=prepared)  # a finished run is returned as it is
        bundle_uri = result["bundle"]
        split = cfg.evaluate.split
        challenger = evaluate_bundle(bundle_uri, run_cfg, split, out=storage.join(run_uri, "report"))
        before = reg.champion()
        champion_reports = {}
        champion_rep = None
        if before is not None:
            champion_uri = reg.load_bundle(before["version"]).uri  # still the registered bundle
            champion_rep = evaluate_bundle(champion_uri, run_cfg, split, out=storage.join(run_uri, "champion-report"))
            champion_reports[before["version"]] = champion_rep
        sha = load_bundle(bundle_uri).card.weights_sha256
        version = _find_registered(reg, bundle_uri, sha)
        if version is None:
            lock.check("registering")
            version = reg.register(bundle_uri, challenger, note=f"retrain {run}")
        lock.check("promoting")
        outcome = reg.try_promote(version, cfg.promotion, champion_reports=champion_reports)
        record = {
            "kind": "medxfer-retrain-decision/1",
            "run": run,
            "tick": when.isoformat(),
            "model": cfg.model.name,
            "status": "promoted" if outcome["promoted"] else "not-promoted",
            "promoted": outcome["promoted"],
            "reason": outcome["reason"],
            "rule": cfg.promotion.model_dump(mode="json"),
            "holdout": challenger["holdout"],
            "challenger": {"version": version, "bundle": bundle_uri, "bundle_id": challenger["bundle_id"],
                           "metrics": _headline(challenger), "report": challenger.get("report_uri")},
            "champion_before": None if before is None else {
                "version": before["version"], "metrics": _headline(champion_rep),
                "report": champion_rep.get("report_uri") if champion_rep else None},
            "champion_after": outcome["champion"],
            "training": {k: result.get(k) for k in ("status", "epoch", "epochs_total", "resumed", "wall_time_s",
                                                    "data_fingerprint")},
            "data": {"cache_key": prepared.key, "cache_hit": prepared.hit},
            "decided_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - t0, 1),
        }
        record = json_safe(record)
        storage.write_json(decision_uri, record)
        storage.write_json(storage.join(reg.uri, "decisions", f"{run}.json"), record)
        log.info("%s: %s — %s", run, record["status"], record["reason"])
        return record
    finally:
        lock.release()
