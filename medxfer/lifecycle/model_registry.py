"""The model registry: immutable versions and a champion chosen by conditional writes.

Layout under ``<root>/registry/<model>/``::

    versions/v0003/claim.json     the version id, taken with a conditional create
    versions/v0003/bundle/        a verified copy of the model bundle
    versions/v0003/report.json    its evaluation report on the holdout
    versions/v0003/version.json   written last, never overwritten: the version is complete
    champion/g00000004.json       promotion number 4: {version, previous, decision, at}
    champion.json                 the latest promotion record, for simple readers

What a version vouches for: ``version.json`` records the sha256 of the bundle's weights *and*
of its card (:mod:`medxfer.lifecycle.card`), and the operating point of the evaluation report registered
with it. Every read of a version's bundle (promotion, ``predict --registry-version``, retrain's
re-evaluation of the champion) checks both hashes against that record, so an edited card
(swapped class names) is refused even when its own hash was recomputed. Version and model
names are matched against their patterns on every read, never joined into a path unchecked.

Why this shape. Object stores have no rename and no transactions, but they (and local
filesystems, via ``os.link``) have *create-if-absent* (``storage.put_if_absent``). Every
state change here is one such create, so it either happened completely or not at all:

- A version id is claimed first, so two registrations never share one; the version
  counts only once ``version.json`` exists, so a crash while copying leaves an
  *incomplete* folder that is listed as such and can never be promoted.
- Promotion number ``g+1`` can be created by exactly one promoter; a promoter that
  decided against champion ``g`` and loses the race re-reads the new champion and
  decides again. Two racing promotions therefore cannot both win.
- **The champion is the version named by the highest promotion record** in
  ``champion/``. ``champion.json`` is a convenience copy written after the claim; if a
  crash comes between the two, it lags by one promotion until the next promotion (or
  ``medxfer registry show``) rewrites it, and ``Registry.champion()`` is right meanwhile.
  Writers re-check the highest record after writing it, so the copy converges even when
  two promoters write it out of order.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import socket
import uuid
from typing import TYPE_CHECKING

from medxfer import storage
from medxfer.config import NAME_PATTERN
from medxfer.errors import RegistryError, StorageError
from medxfer.metrics import METRICS

if TYPE_CHECKING:
    from medxfer.lifecycle.bundle import Bundle

log = logging.getLogger("medxfer.lifecycle.model_registry")

_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"^v(\d{4,})$")
_GEN = re.compile(r"^g(\d{8,})\.json$")


class RegistryInputError(RegistryError):
    """A model or version name, or a registry reference, that the user can correct."""

    exit_code = 2


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dumps(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str, allow_nan=False) + "\n").encode()


def json_safe(obj):
    """Replace NaN/inf by None recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------- decision


def _metric(report: dict | None, name: str) -> float | None:
    try:
        v = report["metrics"][name]["value"]
    except (KeyError, TypeError):
        return None
    return float(v) if v is not None and math.isfinite(float(v)) else None


def decide(challenger: dict, champion: dict | None, promotion_cfg) -> tuple[bool, str]:
    """Should ``challenger`` replace ``champion``? Both are evaluation reports on the same holdout.

    Rule (``promotion`` section): the challenger's headline metric beats the champion's by at
    least ``margin``, in the direction the metric registry gives it, and, with ``no_sensitivity_drop``,
    its sensitivity at its operating point is not lower. Reports on different holdouts are
    never compared: that would reward whichever model drew the easier test set.
    """
    name = promotion_cfg.metric
    c = _metric(challenger, name)
    if c is None:
        return False, f"challenger report has no finite '{name}' (promotion.metric); cannot promote"
    if champion is None:
        return True, f"no champion yet; challenger {name} {c:.4f} becomes the first champion"
    fc, fh = challenger.get("holdout", {}).get("fingerprint"), champion.get("holdout", {}).get("fingerprint")
    if fc and fh and fc != fh:
        return False, (
            f"reports are on different holdouts ({fc[:12]} vs {fh[:12]}); evaluate both models on the "
            "same data (medxfer evaluate --compare) before promoting"
        )
    pc, ph = challenger.get("positive_class"), champion.get("positive_class")
    if pc and ph and pc != ph:
        return False, (f"reports use different positive classes ({pc} vs {ph}); evaluate both with the same "
                       "evaluate.positive_class before promoting")
    h = _metric(champion, name)
    if h is None:
        return True, f"champion report has no finite '{name}'; challenger {name} {c:.4f} replaces it"
    m = promotion_cfg.margin
    if not METRICS[name].higher_is_better:
        ok, need = c <= h - m, f"<= champion {h:.4f} - margin {m}"
    else:
        ok, need = c >= h + m, f">= champion {h:.4f} + margin {m}"
    if not ok:
        return False, f"{name} {c:.4f} is not {need}"
    reason = f"{name} {c:.4f} {need}"
    if promotion_cfg.no_sensitivity_drop:
        cs, hs = _metric(challenger, "sensitivity"), _metric(champion, "sensitivity")
        if cs is not None and hs is not None:
            if cs < hs - 1e-9:
                return False, f"{reason}, but sensitivity at the operating point drops {hs:.4f} -> {cs:.4f}"
            reason += f"; sensitivity {cs:.4f} >= {hs:.4f}"
        elif hs is not None:
            return False, f"{reason}, but the challenger report has no sensitivity to compare with {hs:.4f}"
    return True, reason


# ----------------------------------------------------------------------------- registry


class Registry:
    """One model's registry folder. All methods are safe against concurrent writers."""

    def __init__(self, root: str, model_name: str):
        if not _NAME.match(model_name or ""):
            raise RegistryInputError(f"model name {model_name!r}: use letters, digits, '.', '_' or '-' "
                                     "(at most 128, starting with a letter or digit)")
        self.root = storage.normalize(root)
        self.model = model_name
        self.uri = storage.Layout(root).registry(model_name)

    # -- paths
    def version_uri(self, version: str) -> str:
        """The version's folder; the name is checked first, wherever it came from (CLI, a record on disk)."""
        if not isinstance(version, str) or not _VERSION.match(version):
            raise RegistryInputError(f"{self.model}: version {version!r} is not a version name (v0001, v0002, ...); "
                                     f"see `medxfer registry list {self.model}`")
        return storage.join(self.uri, "versions", version)

    def bundle_uri(self, version: str) -> str:
        return storage.join(self.version_uri(version), "bundle")

    def _gen_uri(self, gen: int) -> str:
        return storage.join(self.uri, "champion", f"g{gen:08d}.json")

    # -- versions
    def _version_names(self) -> list[str]:
        names = [n for n in storage.list_dir(storage.join(self.uri, "versions")) if _VERSION.match(n)]
        return sorted(names, key=lambda n: int(_VERSION.match(n).group(1)))

    def list_versions(self, include_incomplete: bool = False) -> list[dict]:
        """Version records in order; incomplete ones (crashed registrations) only when asked."""
        out = []
        for name in self._version_names():
            vj = storage.join(self.version_uri(name), "version.json")
            if storage.exists(vj):
                out.append(storage.read_json(vj))
            elif include_incomplete:
                out.append({"version": name, "incomplete": True})
        return out

    def get(self, version: str) -> dict:
        """The version record; RegistryError when it does not exist or never completed."""
        vj = storage.join(self.version_uri(version), "version.json")
        if not storage.exists(vj):
            if storage.exists(storage.join(self.version_uri(version), "claim.json")):
                raise RegistryError(
                    f"{self.model} {version}: registration never completed (no version.json); "
                    "register the bundle again"
                )
            raise RegistryError(f"{self.model} {version}: no such version; see `medxfer registry list {self.model}`")
        return storage.read_json(vj)

    def load_bundle(self, version: str) -> Bundle:
        """The version's bundle, verified — and its weights and card equal to what the version recorded."""
        from medxfer.lifecycle.bundle import load_bundle

        record = self.get(version)
        bundle = load_bundle(self.bundle_uri(version))
        recorded = (record.get("weights_sha256"), record.get("card_sha256"))
        if (bundle.card.weights_sha256, bundle.card.card_sha256) != recorded:
            raise RegistryError(
                f"{self.model} {version}: the bundle at {bundle.uri} is not the one registered (card or weights "
                "differ from version.json); the registry copy was changed — register the bundle again from its run"
            )
        return bundle

    def report(self, version: str) -> dict | None:
        uri = storage.join(self.version_uri(version), "report.json")
        return storage.read_json(uri) if storage.exists(uri) else None

    def _claim_version(self) -> str:
        names = self._version_names()
        n = int(_VERSION.match(names[-1]).group(1)) + 1 if names else 1
        for _ in range(1000):
            name = f"v{n:04d}"
            claim = {"version": name, "owner": _owner(), "at": _now()}
            if storage.put_if_absent(storage.join(self.version_uri(name), "claim.json"), _dumps(claim)):
                return name
            n += 1
        raise RegistryError(f"{self.uri}: could not claim a version id")

    def register(self, bundle_uri: str, report: dict | None = None, note: str = "") -> str:
        """Copy a bundle (verified) and its report under a fresh version id; returns the id."""
        from medxfer.lifecycle.bundle import load_bundle

        src = load_bundle(bundle_uri)  # verifies the source before anything is written
        operating_point = report_operating_point(report, src, bundle_uri)
        version = self._claim_version()
        dst = self.bundle_uri(version)
        storage.copy_tree(bundle_uri, dst)
        copy = load_bundle(dst)
        if (copy.card.weights_sha256, copy.card.card_sha256) != (src.card.weights_sha256, src.card.card_sha256):
            raise RegistryError(f"{dst}: copy does not verify against {bundle_uri}")
        if report is not None:
            storage.put_if_absent(storage.join(self.version_uri(version), "report.json"),
                                  _dumps(json_safe(report)))
        record = {
            "version": version,
            "model": self.model,
            "registered_at": _now(),
            "source_bundle": bundle_uri,
            "bundle": dst,
            "bundle_id": src.id,
            "weights_sha256": src.card.weights_sha256,
            "card_sha256": src.card_sha256,
            "task": src.task,
            "classes": src.classes,
            "positive_class": src.positive_class,
            "operating_point": operating_point,
            "note": note,
            "metrics": {k: v.get("value") for k, v in (report or {}).get("metrics", {}).items()},
            "holdout": (report or {}).get("holdout"),
        }
        if not storage.put_if_absent(storage.join(self.version_uri(version), "version.json"),
                                     _dumps(json_safe(record))):
            raise RegistryError(f"{self.model} {version}: version.json already exists (never overwritten)")
        log.info("registered %s %s from %s", self.model, version, bundle_uri)
        return version

    # -- champion
    def generations(self) -> list[int]:
        names = storage.list_dir(storage.join(self.uri, "champion"))
        return sorted(int(m.group(1)) for m in (_GEN.match(n) for n in names) if m)

    def champion(self) -> dict | None:
        """The latest promotion record ({version, generation, previous, decision, at}) or None."""
        gens = self.generations()
        if not gens:
            return None
        return storage.read_json(self._gen_uri(gens[-1]))

    def _claim(self, version: str, decision: dict, expected_generation: int) -> dict | None:
        """Create promotion record ``expected_generation + 1``; None when another promoter got it."""
        prev = storage.read_json(self._gen_uri(expected_generation)) if expected_generation else None
        record = {
            "version": version,
            "generation": expected_generation + 1,
            "previous": prev["version"] if prev else None,
            "decision": json_safe(decision),
            "at": _now(),
            "by": _owner(),
        }
        ok = storage.put_if_absent(self._gen_uri(expected_generation + 1), _dumps(record))
        return record if ok else None

    def sync_pointer(self) -> dict | None:
        """Make ``champion.json`` equal the highest promotion record (after a crash or a race)."""
        for _ in range(10):
            top = self.champion()
            if top is None:
                return None
            cur = None
            ptr = storage.join(self.uri, "champion.json")
            try:
                cur = storage.read_json(ptr)
            except StorageError:
                pass
            if cur and cur.get("generation", 0) >= top["generation"]:
                return cur
            storage.write_json(ptr, top)
            # Another promoter may have claimed a higher generation while we wrote: check again.
            if self.generations()[-1] == top["generation"]:
                return top
        return self.champion()

    def try_promote(
        self,
        version: str,
        promotion_cfg,
        force: bool = False,
        attempts: int = 5,
        champion_reports: dict[str, dict] | None = None,
    ) -> dict:
        """Decide against the current champion and promote if better; re-decide after a lost race.

        ``champion_reports`` maps a version to a fresh report on the challenger's holdout
        (retrain re-evaluates the champion on today's data); other champions are compared
        through their registered reports. Returns ``{"promoted": bool, "reason": str, "champion": version, "generation": n,
        "compared_with": version or None}``.
        """
        self.load_bundle(version)  # never promote a copy that no longer matches its record
        report = self.report(version)
        for _ in range(attempts):
            gens = self.generations()
            gen = gens[-1] if gens else 0
            current = storage.read_json(self._gen_uri(gen)) if gen else None
            if current and current["version"] == version:
                return {"promoted": False, "reason": f"{version} is already the champion",
                        "champion": version, "generation": gen, "compared_with": version}
            champ_report = None
            if current:
                champ_report = (champion_reports or {}).get(current["version"]) or self.report(current["version"])
            if force:
                ok, reason = True, "forced promotion (no comparison)"
            else:
                ok, reason = decide(report or {}, champ_report, promotion_cfg)
            base = {"compared_with": current["version"] if current else None}
            if not ok:
                return {"promoted": False, "reason": reason, "champion": base["compared_with"],
                        "generation": gen, **base}
            decision = {"promoted": True, "reason": reason, **base}
            record = self._claim(version, decision, gen)
            if record is not None:
                self.sync_pointer()
                log.info("promoted %s %s (promotion %d): %s", self.model, version, gen + 1, reason)
                return {"promoted": True, "reason": reason, "champion": version, "generation": gen + 1, **base}
            log.info("lost promotion race for %s %s; deciding again", self.model, version)
        raise RegistryError(f"{self.model}: promotion of {version} kept losing races ({attempts} tries)")


def report_operating_point(report: dict | None, bundle: Bundle, bundle_uri: str) -> dict | None:
    """The operating point a version records: the report's, once the report is shown to be this bundle's."""
    if not report:
        return None
    sha = report.get("weights_sha256")
    if (sha is not None and sha != bundle.card.weights_sha256) or report.get("card_sha256") not in (
            None, bundle.card_sha256):
        raise RegistryInputError(f"the report (of bundle {report.get('bundle_id')}) is not an evaluation of "
                                 f"{bundle_uri} ({bundle.id}); give that bundle's report.json")
    op = report.get("operating_point")
    return json_safe(op) if op and sha is not None else None


def models(root: str) -> list[str]:
    """Registered model names under ``root``: folders named like a model that hold versions; strays ignored."""
    base = storage.Layout(root).registry()
    return [m for m in storage.list_dir(base)
            if _NAME.match(m) and storage.exists(storage.join(base, m, "versions"))]


def resolve_version(root: str | None, ref: str) -> tuple[Registry, str]:
    """``MODEL:VERSION`` (``VERSION`` may be ``champion``) -> the registry and the version name."""
    model, sep, version = (ref or "").partition(":")
    if not sep or not version:
        raise RegistryInputError(f"--registry-version {ref!r}: expected MODEL:VERSION, e.g. breast:v0003 or "
                                 "breast:champion")
    reg = Registry(default_root(root), model)
    if version == "champion":
        ch = reg.champion()
        if ch is None:
            raise RegistryInputError(f"{model}: no champion yet; name a version (medxfer registry list {model})")
        version = ch["version"]
    return reg, version


# ----------------------------------------------------------------------------- CLI


def default_root(root: str | None) -> str:
    """The storage root a registry command uses: given, else $MEDXFER_ROOT, else ./medxfer-runs."""
    return root or os.environ.get("MEDXFER_ROOT") or "./medxfer-runs"


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
