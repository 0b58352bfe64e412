"""The operating point: the threshold on the positive-class score at which a model decides.

It is chosen on validation and applied unchanged to the evaluated split (a threshold tuned on
the test set would overstate what a clinician will see). The rule is text in the job config
(``evaluate.operating_point``); :func:`parse_rule` is the config's validator, so a bad rule
fails at ``config validate`` rather than after the data work.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from medxfer.errors import ConfigError
from medxfer.metrics.registry import METRICS

RULE_FORMS = "'youden', 'sensitivity>=X', 'specificity>=X' or 'threshold=X'"
_RULE = re.compile(
    r"^\s*(youden|sensitivity\s*>=\s*([0-9.]+)|specificity\s*>=\s*([0-9.]+)|threshold\s*=\s*([0-9.eE+-]+))\s*$")


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``'youden'`` / ``'sensitivity>=0.95'`` / ``'specificity>=0.9'`` / ``'threshold=0.5'`` -> (kind, value).

    Raises ``ValueError`` (pydantic turns it into the config's error line).
    """
    m = _RULE.match(rule or "")
    if not m:
        raise ValueError(RULE_FORMS)
    kind, value = "youden", None
    for group, name in ((2, "sensitivity"), (3, "specificity"), (4, "threshold")):
        if m.group(group) is not None:
            kind, value = name, _number(m.group(group))
    if kind in ("sensitivity", "specificity") and not 0.0 <= value <= 1.0:
        raise ValueError(f"a {kind} target in [0, 1]")
    return kind, value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{RULE_FORMS} with X a number") from None


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the positive-class score, how it was chosen, and what it achieved there."""

    rule: str
    threshold: float
    sensitivity: float
    specificity: float
    target_met: bool

    def to_dict(self) -> dict:
        return asdict(self)


def rates_at(truth: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when a case is called positive at ``score >= threshold``."""
    decision = np.asarray(score) >= threshold
    return METRICS["sensitivity"].point(truth, decision), METRICS["specificity"].point(truth, decision)


def choose_operating_point(truth: np.ndarray, score: np.ndarray, rule: str) -> OperatingPoint:
    """Choose the threshold on validation data; a case is called positive when score >= threshold.

    - ``youden``: maximise sensitivity + specificity - 1.
    - ``sensitivity>=X``: of the thresholds reaching the sensitivity target, the one with the
      best specificity (a screening setting: miss few cases).
    - ``specificity>=X``: of the thresholds reaching the specificity target, the best sensitivity.
    - ``threshold=X``: fixed; reported with what it achieves.
    Thresholds are validation scores themselves, so the target holds exactly on validation.
    """
    from sklearn.metrics import roc_curve

    kind, value = parse_rule(rule)
    truth = np.asarray(truth).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if kind == "threshold":
        return OperatingPoint(rule, float(value), *rates_at(truth, score, value), True)
    if truth.all() or (~truth).all():
        raise ConfigError([
            f"evaluate.operating_point: the validation split has only "
            f"{'positive' if truth.all() else 'negative'} cases; cannot choose a threshold by {rule!r} "
            "(use 'threshold=X' or a validation split with both classes)"
        ])
    fpr, tpr, thr = roc_curve(truth, score, drop_intermediate=False)
    spec = 1.0 - fpr
    # roc_curve's first threshold is +inf (call nothing positive); keep it finite for JSON.
    thr = thr.copy()
    thr[0] = np.nextafter(score.max(), np.inf)
    met = True
    if kind == "youden":
        i = int(np.argmax(tpr - fpr))
    elif kind == "sensitivity":
        ok = np.flatnonzero(tpr >= value - 1e-12)
        i = int(ok[np.argmax(spec[ok])])
    else:
        ok = np.flatnonzero(spec >= value - 1e-12)
        met = ok.size > 0
        i = int(ok[np.argmax(tpr[ok])]) if met else 0
    return OperatingPoint(rule, float(thr[i]), float(tpr[i]), float(spec[i]), bool(met))
