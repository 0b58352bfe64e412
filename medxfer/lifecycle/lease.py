"""A lease in storage: one holder at a time, taken with a conditional create, renewed while it works.

Why in storage and not in a lock service: the one thing every medxfer job already shares is its
storage root (S3 or a shared folder), and both stores create an object only if it is absent
(``If-None-Match: *`` on S3, ``link()`` locally), so exactly one contender wins. A holder that
crashes stops renewing and its lease expires; a damaged lock object cannot block every later
holder. The nightly retrain takes one per model (:mod:`medxfer.lifecycle.retrain`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import threading
import time

from medxfer import storage
from medxfer.errors import MedxferError
from medxfer.lifecycle.model_registry import _dumps, _owner

log = logging.getLogger("medxfer.retrain")

_LOCK = re.compile(r"^l(\d{8,})\.json$")


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
