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
  :meth:`RunLock.acquire_waiting_for_own_run`). A lease
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
  report from an older holdout; then :func:`medxfer.registry.decide` applies the
  ``promotion`` rule and the registry's conditional promotion moves the pointer.
- **A record either way.** ``runs/<run>/decision.json`` (and a copy under the registry's
  ``decisions/``) says what was compared, the numbers and why it was or was not promoted.
  Not promoting is a normal outcome: exit 0. Only a failure exits non-zero.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import threading
import time

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError, MedxferError
from medxfer.registry import Registry, _dumps, _owner, json_safe

log = logging.getLogger("medxfer.retrain")

_LOCK = re.compile(r"^l(\d{8,})\.json$")


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


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(timespec="seconds")


class LockLost(MedxferError):
    """This tick's retrain lock was taken over while it ran; it stops without promoting."""


class RunLock:
    """A lease in storage: numbered lock objects ``lNNNNNNNN.json``, released by ``.released`` markers.

    The holder is the highest-numbered lock that is neither released nor expired. Taking
    the lock = creating the next number with put-if-absent, so exactly one contender wins.
    The holder renews its own object (:meth:`start_heartbeat`); a higher number appearing
    means it was taken over (:attr:`lost`).
    """

    def __init__(self, uri: str, ttl_s: float, run: str):
        self.uri, self.ttl_s, self.run = uri, ttl_s, run
        self.number: int | None = None
        self.record: dict | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _numbers(self) -> list[int]:
        return sorted(int(m.group(1)) for m in (_LOCK.match(n) for n in storage.list_dir(self.uri)) if m)

    def _path(self, n: int, suffix: str = "json") -> str:
        return storage.join(self.uri, f"l{n:08d}.{suffix}")

    def _read(self, n: int) -> tuple[dict | None, str]:
        """``(record, "")``, or ``(None, what is wrong)`` for a damaged lock object (storage errors propagate)."""
        raw = storage.read_bytes(self._path(n))
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None, "not valid JSON"
        try:
            float(rec["expires_epoch"])
        except (KeyError, TypeError, ValueError):
            return None, "no numeric 'expires_epoch'"
        return rec, ""

    def _damaged(self, n: int, problem: str) -> dict | None:
        """A damaged top lock counts as held for one TTL from when a tick first saw it, then as free."""
        now = time.time()
        storage.put_if_absent(self._path(n, "damaged"), _dumps({"first_seen_epoch": now, "problem": problem}))
        try:
            seen = float(json.loads(storage.read_bytes(self._path(n, "damaged")))["first_seen_epoch"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            seen = now
        expires = seen + self.ttl_s
        log.warning("retrain lock %s is damaged (%s); it counts as held until %s, then it is taken over",
                    self._path(n), problem, _iso(expires))
        if now > expires:
            return None
        return {"run": "unknown (damaged lock)", "owner": "unknown", "expires": _iso(expires), "number": n,
                "damaged": f"{self._path(n)}: {problem}"}

    def holder(self) -> dict | None:
        """The active lock record, or None when the lock is free."""
        nums = self._numbers()
        if not nums or storage.exists(self._path(nums[-1], "released")):
            return None
        top, problem = self._read(nums[-1])
        if top is None:
            return self._damaged(nums[-1], problem)
        return None if time.time() > float(top["expires_epoch"]) else top

    def _lease(self, n: int, acquired: str | None = None) -> dict:
        now = time.time()
        return {"run": self.run, "owner": self.record["owner"] if self.record else _owner(),
                "acquired": acquired or _iso(now), "renewed": _iso(now), "expires": _iso(now + self.ttl_s),
                "expires_epoch": now + self.ttl_s, "number": n}

    def acquire(self) -> tuple[bool, dict | None]:
        """``(True, record)`` when taken; ``(False, current holder)`` otherwise."""
        for _ in range(3):
            nums = self._numbers()
            current = self.holder()
            if current is not None:
                return False, current
            n = (nums[-1] + 1) if nums else 1
            record = self._lease(n)
            if nums and not storage.exists(self._path(nums[-1], "released")):
                log.warning("taking over an expired or damaged retrain lock (%s)", self._path(nums[-1]))
            if storage.put_if_absent(self._path(n), _dumps(record)):
                self.number, self.record, self.lost = n, record, None
                return True, record
        return False, self.holder()

    def _taken_over(self) -> str | None:
        """Why this holder's lock is no longer the top one (a higher number exists, or none at all), else None."""
        nums = self._numbers()
        if nums and nums[-1] == self.number:
            return None
        other = self._path(nums[-1]) if nums else "nothing (the lock folder was emptied)"
        return f"the lock is now {other}, not this tick's {self._path(self.number)}"

    def renew(self) -> bool:
        """Extend the lease; False, with :attr:`lost` set, once another holder has taken the lock."""
        if self.number is None or self.lost:
            return False
        self.lost = self._taken_over()
        if self.lost:
            return False
        self.record = self._lease(self.number, self.record["acquired"])
        storage.write_bytes(self._path(self.number), _dumps(self.record))
        return True

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its TTL in a daemon thread until :meth:`release`."""
        every = self.ttl_s / 3

        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    if not self.renew():
                        log.error("retrain lock lost: %s", self.lost)
                        return
                except MedxferError as e:  # storage trouble: retry at the next beat; check() decides
                    log.warning("could not renew the retrain lock (%s); retrying", e)

        self._stop.clear()
        self._beat = threading.Thread(target=beat, name=f"medxfer-lock-{self.run}", daemon=True)
        self._beat.start()

    def check(self, step: str) -> None:
        """Raise LockLost unless this tick still holds an unexpired lease (before each step that writes)."""
        if self.lost is None and self.number is not None:
            self.lost = self._taken_over()
            if self.lost is None and time.time() > float(self.record["expires_epoch"]):
                self.lost = f"the lease expired at {self.record['expires']} without being renewed"
        if self.lost is not None or self.number is None:
            raise LockLost(f"{self.run}: lost the retrain lock before {step} ({self.lost}); stopped without "
                           "promoting anything — run the tick again once the other run is done")

    def acquire_waiting_for_own_run(self, poll_s: float | None = None) -> tuple[bool, dict | None]:
        """Like :meth:`acquire`, but when the holder is this same run (a retried tick), wait for it.

        A retry of a tick whose first attempt crashed finds that attempt's lease, which stops being
        renewed and expires within one TTL; skipping (as for another run's lock) would lose the
        tick while the scheduler reports success. So the retry waits until the lease is released or
        expires, then takes the lock. If the other attempt is alive, it finishes first and the
        retry then finds its decision.
        """
        poll = poll_s if poll_s is not None else max(1.0, min(30.0, self.ttl_s / 10))
        deadline = time.time() + 2 * self.ttl_s
        while True:
            ok, holder = self.acquire()
            if ok or holder is None or holder.get("run") != self.run or time.time() > deadline:
                return ok, holder
            log.info("%s: an earlier attempt of this tick holds the retrain lock (expires %s); waiting for it",
                     self.run, holder.get("expires"))
            time.sleep(poll)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.number is not None and self.lost is None:
            storage.put_if_absent(self._path(self.number, "released"), b"{}\n")
        self.number = None


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
    from medxfer.bundle import load_bundle
    from medxfer.data.cache import prepare
    from medxfer.evaluate import evaluate_bundle
    from medxfer.train.jobs import run_training

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
        sha = load_bundle(bundle_uri).card["weights_sha256"]
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
