"""One bundle's evaluation report: metrics with intervals, the operating point, and where it is written.

The **operating point** is chosen on *validation* (``evaluate.operating_point``) and applied,
unchanged, to the evaluated split: a threshold tuned on the test set would overstate what a
clinician will see. ``report.json`` records how its intervals were drawn (``bootstrap``: method,
resamples, seed), and the holdout's fingerprint, so two reports are compared only on the same images.

The bundle is never written: the operating point lives in the report (and in the registry
version registered with it), so no later evaluation can silently change what an earlier one
decided. ``medxfer predict --report`` (or ``--registry-version``) applies it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging

import numpy as np

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.evaluate.inputs import positive_class, prepare_for, scored_splits
from medxfer.evaluate.markdown import fmt, report_markdown, write_plots
from medxfer.evaluate.scoring import score
from medxfer.lifecycle.model_registry import json_safe
from medxfer.metrics import reports
from medxfer.metrics.bootstrap import Resampling
from medxfer.metrics.operating_point import choose_operating_point, rates_at

log = logging.getLogger("medxfer.evaluate")

REPORT_KIND = "medxfer-evaluation/1"


def resampling(ecfg) -> Resampling:
    """The bootstrap the ``evaluate`` section asks for."""
    return Resampling(ecfg.bootstrap, ecfg.seed, bca_max_n=ecfg.bca_max_images)


def holdout_fingerprint(paths: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the (path, label) pairs: two reports are comparable only when this matches."""
    h = hashlib.sha256()
    lab = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=-1.0)
    for p, lab_row in zip(paths, lab, strict=True):
        h.update(str(p).encode())
        h.update(np.atleast_1d(lab_row).tobytes())
    return h.hexdigest()


def _operating_point(bundle, scored: dict, split: str, ecfg) -> tuple[int, str, dict]:
    """The positive class, why it is positive, and the threshold chosen on val with what it gives on ``split``."""
    pos, why = positive_class(bundle, ecfg)
    v, s = scored["val"], scored[split]
    op = choose_operating_point(v["label"].astype(int) == pos, v["scores"][:, pos], ecfg.operating_point)
    sens, spec = rates_at(s["label"].astype(int) == pos, s["scores"][:, pos], op.threshold)
    return pos, why, {
        "rule": op.rule, "threshold": op.threshold, "target_met": op.target_met,
        "positive_class": bundle.classes[pos],
        "chosen_on": "val",
        "val": {"sensitivity": op.sensitivity, "specificity": op.specificity, "n": int(len(v["path"]))},
        split: {"sensitivity": sens, "specificity": spec},
    }


def build_report(bundle, scored: dict[str, dict], split: str, ecfg, prepared=None) -> dict:
    """Metrics, operating point and calibration for one bundle's scores (pure; no I/O)."""
    task, classes = bundle.task, list(bundle.classes)
    s = scored[split]
    boot = resampling(ecfg)
    rep: dict = {
        "kind": REPORT_KIND,
        "bundle": bundle.uri,
        "bundle_id": bundle.id,
        "weights_sha256": bundle.card.weights_sha256,
        "card_sha256": bundle.card_sha256,
        "model": bundle.card.name,
        "task": task,
        "classes": classes,
        "split": split,
        "data": {"fingerprint": getattr(prepared, "key", None), "uri": getattr(prepared, "uri", None)},
        "holdout": {"split": split, "n": int(len(s["path"])), "fingerprint": holdout_fingerprint(s["path"], s["label"])},
        "bootstrap": boot.describe(int(len(s["path"]))),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if task == "multiclass":
        pos, why, op = _operating_point(bundle, scored, split, ecfg)
        body = reports.classification_report(s["label"].astype(int), s["scores"], classes, pos, op["threshold"], boot)
        rep.update(positive_class=classes[pos], positive_class_reason=why, operating_point=op)
    elif task == "multilabel":
        body = reports.multilabel_report(s["label"], s["scores"], classes, boot)
    elif task == "ordinal":
        body = reports.ordinal_report(s["label"], s["scores"][:, 0], classes, boot)
    else:
        raise ConfigError([f"bundle task {task!r}: expected multiclass, multilabel or ordinal"])
    rep.update(body)
    return rep


def default_out(bundle_uri: str) -> str:
    return storage.join(storage.parent(storage.normalize(bundle_uri)), "report")


def _in_registry(uri: str) -> bool:
    u = storage.normalize(uri).replace("\\", "/")
    return "/registry/" in u and "/versions/" in u


def write_report(rep: dict, scored: dict, out: str) -> str:
    """``report.json``, ``report.md`` and the plots into ``out``; returns the JSON's URI."""
    rep["plots"] = write_plots(rep, scored, out)
    report_uri = storage.join(out, "report.json")
    storage.write_json(report_uri, json_safe(rep))
    storage.write_text(storage.join(out, "report.md"), report_markdown(rep))
    return report_uri


def evaluate_bundle(bundle_uri: str, cfg: JobConfig, split: str = "test", out: str | None = None) -> dict:
    """Evaluate ``bundle_uri`` on ``split`` of ``cfg``'s data; write the report (never the bundle); return it."""
    from medxfer.lifecycle.bundle import load_bundle

    if out is None and _in_registry(bundle_uri):
        raise ConfigError([f"{bundle_uri}: registry versions are immutable; give --out for the report"])
    bundle = load_bundle(bundle_uri)
    prepared = prepare_for(bundle, cfg)
    scored = score(bundle, prepared, scored_splits(bundle, split), cfg.evaluate)
    rep = build_report(bundle, scored, split, cfg.evaluate, prepared)
    report_uri = write_report(rep, scored, out or default_out(bundle_uri))
    rep["report_uri"] = report_uri
    log.info("%s on %s: %s; report %s", bundle.id, split,
             ", ".join(f"{k} {fmt(m['value'])}" for k, m in list(rep["metrics"].items())[:4]), report_uri)
    return rep
