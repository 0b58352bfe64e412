"""Metrics a clinician can trust: point estimates from scikit-learn, 95% bootstrap intervals.

Why two implementations of each headline metric: the point estimate comes from
scikit-learn (the reference everyone checks against), while the confidence interval needs
the same statistic on ~1000 resamples, which a Python loop over scikit-learn would make
the slowest part of an evaluation. A resample is a vector of *counts* per example, so
every statistic here is also written as a function of a count matrix ``W`` of shape
``(B, N)`` (B resamples of N examples) and computed for all resamples at once. The tests
hold the two versions equal on random data.

A resample can lose a class entirely (small test sets, rare positives); statistics that
are then undefined (AUROC, sensitivity, ...) are NaN for that resample and left out of the
percentiles, and the report says how many resamples were valid.

Everything here is a pure function of arrays: no Ray, no storage, no torch.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from medxfer.errors import ConfigError

Stat = Callable[[np.ndarray], np.ndarray]
"""A statistic of a count matrix W (B, N) -> (B,) values (NaN where undefined)."""

# Rows of W per chunk are chosen so that a (chunk, N) float64 matrix stays around 16 MB.
_CHUNK_ELEMENTS = 2_000_000


# ----------------------------------------------------------------------------- bootstrap


def resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield count matrices (b, n) of ``n_boot`` seeded bootstrap resamples, in chunks.

    Counts instead of index lists let every statistic be a matrix product; the same seed
    gives the same resamples, so two models compared with the same seed are paired.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b)[:, None] * n)).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def bootstrap(
    stats: dict[str, Stat], n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict]:
    """Percentile bootstrap intervals of several statistics over the same resamples.

    Returns ``{name: {"ci": [low, high], "n_valid": k}}``; ``ci`` is ``[nan, nan]`` when
    ``n_boot`` is 0 or fewer than 10 resamples gave a defined value.
    """
    out = {name: {"ci": [math.nan, math.nan], "n_valid": 0} for name in stats}
    if n_boot <= 0 or n == 0:
        return out
    values: dict[str, list[np.ndarray]] = {name: [] for name in stats}
    for W in resample_counts(n, n_boot, seed):
        for name, fn in stats.items():
            values[name].append(np.asarray(fn(W), dtype=np.float64))
    alpha = (1.0 - level) / 2.0
    for name, parts in values.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        out[name]["n_valid"] = int(v.size)
        if v.size >= 10:
            lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
            out[name]["ci"] = [float(lo), float(hi)]
    return out


def with_ci(values: dict[str, float], stats: dict[str, Stat], n: int, n_boot: int, seed: int) -> dict:
    """``{name: {"value", "ci", "n_valid"}}`` from point estimates and their bootstrap statistics."""
    cis = bootstrap(stats, n, n_boot, seed)
    return {k: {"value": _f(values[k]), **cis[k]} for k in stats}


def _f(x) -> float:
    """A JSON-friendly float (NaN stays NaN; the report writer turns it into null)."""
    return float(x) if x is not None else math.nan


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


# ----------------------------------------------------------------------------- weighted statistics


def weighted_auroc(W: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` for binary ``y`` under example weights ``W`` (B, N), ties counted half.

    The Mann-Whitney form: for each positive, the weight of negatives scored below it plus
    half of those tied with it. Sorting once and cumulative sums make it O(B*N).
    Examples with weight 0 (e.g. unknown labels in multi-label data) do not count.
    """
    W = np.atleast_2d(W)
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    pos = np.asarray(y)[order].astype(bool)
    Ws = W[:, order]
    # Tie groups in sorted order: start and end index of each example's group.
    new_group = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(s)] - 1
    neg_cum = np.cumsum(Ws * (~pos), axis=1)
    zero = np.zeros((W.shape[0], 1))
    neg_cum0 = np.hstack([zero, neg_cum])  # neg_cum0[:, i] = negatives strictly before index i
    below = neg_cum0[:, starts[gid]]
    tied = neg_cum0[:, ends[gid] + 1] - below
    num = (Ws * pos * (below + 0.5 * tied)).sum(axis=1)
    n_pos = (Ws * pos).sum(axis=1)
    n_neg = (Ws * (~pos)).sum(axis=1)
    return _div(num, n_pos * n_neg)


def _confusion_counts(W: np.ndarray, y: np.ndarray, pred: np.ndarray):
    y = y.astype(bool)
    pred = pred.astype(bool)
    return W @ (y & pred), W @ (~y & pred), W @ (~y & ~pred), W @ (y & ~pred)  # tp, fp, tn, fn


def binary_stats(y: np.ndarray, pred: np.ndarray) -> dict[str, Stat]:
    """Weighted sensitivity, specificity, PPV, NPV, F1, accuracy and balanced accuracy."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)

    def get(name: str) -> Stat:
        def fn(W):
            tp, fp, tn, fn_ = _confusion_counts(np.atleast_2d(W), y, pred)
            sens, spec = _div(tp, tp + fn_), _div(tn, tn + fp)
            return {
                "sensitivity": sens,
                "specificity": spec,
                "ppv": _div(tp, tp + fp),
                "npv": _div(tn, tn + fn_),
                "f1": _div(2 * tp, 2 * tp + fp + fn_),
                "accuracy": _div(tp + tn, tp + fp + tn + fn_),
                "balanced_accuracy": (sens + spec) / 2.0,
            }[name]

        return fn

    return {k: get(k) for k in BINARY_METRICS}


BINARY_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy")


def multiclass_accuracy_stats(y: np.ndarray, pred: np.ndarray, k: int) -> dict[str, Stat]:
    """Weighted accuracy and balanced accuracy (mean recall over classes present) of class indices."""
    y = np.asarray(y).astype(int)
    correct = (np.asarray(pred) == y).astype(np.float64)
    onehot = np.eye(k)[y]  # (N, K)

    def acc(W):
        W = np.atleast_2d(W)
        return _div(W @ correct, W.sum(axis=1))

    def bal(W):
        W = np.atleast_2d(W)
        support = W @ onehot
        hits = W @ (onehot * correct[:, None])
        recall = _div(hits, support)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no classes: NaN
            return np.nanmean(recall, axis=1)

    return {"accuracy": acc, "balanced_accuracy": bal}


def macro_auroc_stat(y_onehot: np.ndarray, probs: np.ndarray, mask: np.ndarray | None = None) -> Stat:
    """Mean one-vs-rest AUROC over columns; NaN when any column is undefined in a resample.

    ``mask`` (N, K) bool marks known labels (multi-label data with unknowns); masked-out
    examples get weight 0 for that column only.
    """
    k = y_onehot.shape[1]

    def fn(W):
        W = np.atleast_2d(W)
        cols = []
        for c in range(k):
            Wc = W if mask is None else W * mask[:, c]
            cols.append(weighted_auroc(Wc, y_onehot[:, c], probs[:, c]))
        return np.mean(np.stack(cols, axis=1), axis=1)

    return fn


def weighted_mean_stat(per_example: np.ndarray) -> Stat:
    """Weighted mean of a per-example quantity (Brier contributions, absolute errors, hits)."""
    v = np.asarray(per_example, dtype=np.float64)

    def fn(W):
        W = np.atleast_2d(W)
        return _div(W @ v, W.sum(axis=1))

    return fn


def ece_stat(hit: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> Stat:
    """Weighted expected calibration error over equal-width confidence bins."""
    bins = _bin_index(confidence, n_bins)
    onehot = np.eye(n_bins)[bins]  # (N, bins)
    hit = np.asarray(hit, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)

    def fn(W):
        W = np.atleast_2d(W)
        acc_sum = W @ (onehot * hit[:, None])
        conf_sum = W @ (onehot * conf[:, None])
        return _div(np.abs(acc_sum - conf_sum).sum(axis=1), W.sum(axis=1))

    return fn


def qwk_stat(y: np.ndarray, pred: np.ndarray, k: int) -> Stat:
    """Weighted quadratic kappa of integer grades in 0..k-1 (the formula cohen_kappa_score uses)."""
    pair = np.asarray(y, dtype=int) * k + np.asarray(pred, dtype=int)
    onehot = np.eye(k * k)[pair]  # (N, k*k)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    wq = ((i - j) ** 2).astype(np.float64).ravel()

    def fn(W):
        W = np.atleast_2d(W)
        conf = (W @ onehot).reshape(-1, k, k)
        total = conf.sum(axis=(1, 2))
        rows, cols = conf.sum(axis=2), conf.sum(axis=1)
        expected = rows[:, :, None] * cols[:, None, :] / np.where(total > 0, total, 1)[:, None, None]
        num = (conf.reshape(-1, k * k) * wq).sum(axis=1)
        den = (expected.reshape(-1, k * k) * wq).sum(axis=1)
        return np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1), np.nan)

    return fn


# ----------------------------------------------------------------------------- calibration


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((np.asarray(confidence) * n_bins).astype(int), 0, n_bins - 1)


def reliability(hit: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> dict:
    """Per-bin counts, mean confidence and observed frequency: the reliability diagram's data."""
    bins = _bin_index(confidence, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    hit_sum = np.bincount(bins, weights=np.asarray(hit, dtype=float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        freq = np.where(count > 0, hit_sum / np.maximum(count, 1), np.nan)
    return {
        "edges": np.linspace(0, 1, n_bins + 1).tolist(),
        "count": count.astype(int).tolist(),
        "mean_confidence": mean_conf.tolist(),
        "observed": freq.tolist(),
    }


def expected_calibration_error(hit: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum over equal-width bins of |observed - mean confidence| weighted by bin size."""
    n = len(confidence)
    if n == 0:
        return math.nan
    r = reliability(hit, confidence, n_bins)
    total = 0.0
    for c, f, m in zip(r["count"], r["observed"], r["mean_confidence"], strict=True):
        if c:
            total += c / n * abs(f - m)
    return float(total)


# ----------------------------------------------------------------------------- operating point


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the positive-class score, how it was chosen, and what it achieved there."""

    rule: str
    threshold: float
    sensitivity: float
    specificity: float
    target_met: bool

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "target_met": self.target_met,
        }


_RULE = re.compile(r"^\s*(youden|sensitivity\s*>=\s*([0-9.]+)|specificity\s*>=\s*([0-9.]+)|threshold\s*=\s*([0-9.eE+-]+))\s*$")


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``'youden'`` / ``'sensitivity>=0.95'`` / ``'specificity>=0.9'`` / ``'threshold=0.5'`` -> (kind, value)."""
    m = _RULE.match(rule or "")
    if not m:
        raise ConfigError([
            f"evaluate.operating_point: expected 'youden', 'sensitivity>=X', 'specificity>=X' or "
            f"'threshold=X'; found {rule!r}"
        ])
    if m.group(2) is not None:
        kind, value = "sensitivity", float(m.group(2))
    elif m.group(3) is not None:
        kind, value = "specificity", float(m.group(3))
    elif m.group(4) is not None:
        kind, value = "threshold", float(m.group(4))
    else:
        kind, value = "youden", None
    if kind in ("sensitivity", "specificity") and not 0.0 <= value <= 1.0:
        raise ConfigError([f"evaluate.operating_point: {kind} target must be in [0, 1]; found {value}"])
    return kind, value


def choose_operating_point(y: np.ndarray, score: np.ndarray, rule: str) -> OperatingPoint:
    """Choose the threshold on validation data; a case is called positive when score >= threshold.

    - ``youden``: maximise sensitivity + specificity - 1.
    - ``sensitivity>=X``: of the thresholds reaching the sensitivity target, the one with the
      best specificity (a screening setting: miss few cases).
    - ``specificity>=X``: of the thresholds reaching the specificity target, the best sensitivity.
    - ``threshold=X``: fixed; reported with what it achieves.
    Thresholds are validation scores themselves, so the target holds exactly on validation.
    """
    kind, value = parse_rule(rule)
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if kind == "threshold":
        sens, spec = _sens_spec(y, score, value)
        return OperatingPoint(rule, float(value), sens, spec, True)
    if y.all() or (~y).all():
        raise ConfigError([
            f"evaluate.operating_point: the validation split has only "
            f"{'positive' if y.all() else 'negative'} cases; cannot choose a threshold by {rule!r} "
            "(use 'threshold=X' or a validation split with both classes)"
        ])
    fpr, tpr, thr = skm.roc_curve(y, score, drop_intermediate=False)
    spec_arr = 1.0 - fpr
    # roc_curve's first threshold is +inf (call nothing positive); keep it finite for JSON.
    thr = thr.copy()
    thr[0] = np.nextafter(score.max(), np.inf)
    if kind == "youden":
        i = int(np.argmax(tpr - fpr))
        met = True
    elif kind == "sensitivity":
        ok = np.flatnonzero(tpr >= value - 1e-12)
        i = int(ok[np.argmax(spec_arr[ok])])
        met = True
    else:
        ok = np.flatnonzero(spec_arr >= value - 1e-12)
        met = ok.size > 0
        i = int(ok[np.argmax(tpr[ok])]) if met else 0
    return OperatingPoint(rule, float(thr[i]), float(tpr[i]), float(spec_arr[i]), bool(met))


def _sens_spec(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    pred = score >= threshold
    pos, neg = y.sum(), (~y).sum()
    sens = float((pred & y).sum() / pos) if pos else math.nan
    spec = float((~pred & ~y).sum() / neg) if neg else math.nan
    return sens, spec


# ----------------------------------------------------------------------------- task reports


def _binary_point(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    nan = np.nan
    return {
        "sensitivity": skm.recall_score(y, pred, zero_division=nan),
        "specificity": skm.recall_score(~y, ~pred, zero_division=nan),
        "ppv": skm.precision_score(y, pred, zero_division=nan),
        "npv": skm.precision_score(~y, ~pred, zero_division=nan),
        "f1": skm.f1_score(y, pred, zero_division=nan),
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": (
            skm.balanced_accuracy_score(y, pred) if y.any() and (~y).any() else nan
        ),
    }


def _safe_auroc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y).astype(bool)
    if y.all() or (~y).all():
        return math.nan
    return float(skm.roc_auc_score(y, score))


def classification_report(
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    positive: int,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
) -> dict:
    """Metrics of a single-label classifier (binary or multi-class) at an operating point.

    Binary: everything is about the positive class at ``threshold`` (accuracy included),
    since that is how the model will be used. Multi-class: AUROC is the one-vs-rest macro
    mean, accuracy and the confusion matrix use the arg-max class, and sensitivity,
    specificity, PPV, NPV and F1 are the positive class against the rest at ``threshold``.
    """
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    n = len(y)
    onehot = np.eye(k)[y]
    score = probs[:, positive]
    y_pos = y == positive
    pred_pos = score >= threshold

    values: dict[str, float] = {}
    stats: dict[str, Stat] = {}
    per_class_auroc = {c: _safe_auroc(onehot[:, i], probs[:, i]) for i, c in enumerate(classes)}
    if k == 2:
        values["auroc"] = _safe_auroc(y_pos, score)
        stats["auroc"] = lambda W: weighted_auroc(W, y_pos, score)
        pred_class = np.where(pred_pos, positive, 1 - positive)
        bvals = _binary_point(y_pos, pred_pos)
        bstats = binary_stats(y_pos, pred_pos)
        for name in BINARY_METRICS:
            values[name], stats[name] = bvals[name], bstats[name]
        hit, conf = y_pos.astype(float), score
        values["brier"] = float(skm.brier_score_loss(y_pos, score))
        per_ex_brier = (score - y_pos) ** 2
    else:
        values["auroc"] = (
            float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(k))))
            if all(np.isfinite(v) for v in per_class_auroc.values()) else math.nan
        )
        stats["auroc"] = macro_auroc_stat(onehot, probs)
        pred_class = probs.argmax(axis=1)
        values["accuracy"] = skm.accuracy_score(y, pred_class)
        values["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred_class)
        stats.update(multiclass_accuracy_stats(y, pred_class, k))
        bvals = _binary_point(y_pos, pred_pos)
        bstats = binary_stats(y_pos, pred_pos)
        for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            values[name], stats[name] = bvals[name], bstats[name]
        hit, conf = (pred_class == y).astype(float), probs.max(axis=1)
        values["brier"] = float(skm.brier_score_loss(y, probs, labels=list(range(k))))
        per_ex_brier = ((probs - onehot) ** 2).sum(axis=1)
    values["ece"] = expected_calibration_error(hit, conf, n_bins)
    stats["brier"] = weighted_mean_stat(per_ex_brier)
    stats["ece"] = ece_stat(hit, conf, n_bins)
    cm = skm.confusion_matrix(y, pred_class, labels=list(range(k)))
    return {
        "n": n,
        "class_counts": np.bincount(y, minlength=k).astype(int).tolist(),
        "metrics": with_ci(values, stats, n, n_boot, seed),
        "per_class": {
            "auroc": per_class_auroc,
            "recall": dict(zip(classes, skm.recall_score(
                y, pred_class, labels=list(range(k)), average=None, zero_division=np.nan).tolist(), strict=True)),
            "precision": dict(zip(classes, skm.precision_score(
                y, pred_class, labels=list(range(k)), average=None, zero_division=np.nan).tolist(), strict=True)),
        },
        "confusion_matrix": {"labels": list(classes), "matrix": cm.tolist(), "rows": "true", "cols": "predicted"},
        "calibration": {
            "kind": "positive-class probability" if k == 2 else "top-label confidence",
            **reliability(hit, conf, n_bins),
        },
        "accuracy_argmax": float(skm.accuracy_score(y, probs.argmax(axis=1))),
    }


def multilabel_report(Y: np.ndarray, P: np.ndarray, findings: list[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-finding AUROC (unknown labels, NaN, are left out per finding) and their mean."""
    Y = np.asarray(Y, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    known = ~np.isnan(Y)
    Yb = np.nan_to_num(Y, nan=0.0) > 0.5
    per = {}
    for j, name in enumerate(findings):
        m = known[:, j]
        per[name] = {
            "auroc": _safe_auroc(Yb[m, j], P[m, j]) if m.any() else math.nan,
            "n_known": int(m.sum()),
            "n_positive": int((Yb[:, j] & m).sum()),
        }
    defined = [v["auroc"] for v in per.values() if np.isfinite(v["auroc"])]
    values = {"auroc": float(np.mean(defined)) if defined else math.nan}
    defined_cols = [j for j, v in enumerate(per.values()) if np.isfinite(v["auroc"])]
    stats = {"auroc": macro_auroc_stat(Yb[:, defined_cols], P[:, defined_cols], known[:, defined_cols])}
    return {
        "n": len(Y),
        "metrics": with_ci(values, stats, len(Y), n_boot, seed),
        "per_finding": per,
        "auroc_mean_over": [findings[j] for j in defined_cols],
    }


def ordinal_report(y: np.ndarray, grade: np.ndarray, classes: list[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean absolute error of the raw grade, quadratic weighted kappa and accuracy of the rounded grade."""
    y = np.asarray(y, dtype=np.float64)
    grade = np.asarray(grade, dtype=np.float64)
    k = len(classes)
    yi = np.clip(np.rint(y), 0, k - 1).astype(int)
    rounded = np.clip(np.rint(grade), 0, k - 1).astype(int)
    values = {
        "mae": float(skm.mean_absolute_error(y, grade)),
        "qwk": float(skm.cohen_kappa_score(yi, rounded, weights="quadratic", labels=list(range(k)))),
        "accuracy": float(skm.accuracy_score(yi, rounded)),
    }
    stats = {
        "mae": weighted_mean_stat(np.abs(grade - y)),
        "qwk": qwk_stat(yi, rounded, k),
        "accuracy": weighted_mean_stat((rounded == yi).astype(float)),
    }
    cm = skm.confusion_matrix(yi, rounded, labels=list(range(k)))
    return {
        "n": len(y),
        "class_counts": np.bincount(yi, minlength=k).astype(int).tolist(),
        "metrics": with_ci(values, stats, len(y), n_boot, seed),
        "confusion_matrix": {"labels": list(classes), "matrix": cm.tolist(), "rows": "true", "cols": "predicted"},
    }


# ----------------------------------------------------------------------------- comparison


def paired_difference(stat_a: Stat, stat_b: Stat, n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired bootstrap of ``stat_a - stat_b`` on the same resamples of the same examples.

    Pairing removes the between-sample variance both models share, which is why it is far
    tighter than comparing two separate intervals. ``p_value`` is the two-sided bootstrap
    p-value of "no difference" (twice the smaller tail mass of the differences at 0).
    """
    ones = np.ones((1, n))
    a, b = float(stat_a(ones)[0]), float(stat_b(ones)[0])
    diffs = []
    for W in (resample_counts(n, n_boot, seed) if n_boot > 0 else []):
        diffs.append(stat_a(W) - stat_b(W))
    d = np.concatenate(diffs) if diffs else np.array([])
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    ci = [float(x) for x in np.quantile(d, [alpha, 1 - alpha])] if d.size >= 10 else [math.nan, math.nan]
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if d.size else math.nan
    return {"a": a, "b": b, "difference": a - b, "ci": ci, "p_value": p, "n_valid": int(d.size), "n_boot": n_boot}


def auroc_stat(y: np.ndarray, probs: np.ndarray, positive: int | None = None) -> Stat:
    """The report's headline AUROC as a statistic: positive-class AUROC (binary) or OvR macro."""
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if k == 2:
        pos = 1 if positive is None else positive
        yb, s = y == pos, probs[:, pos]
        return lambda W: weighted_auroc(W, yb, s)
    return macro_auroc_stat(np.eye(k)[y], probs)
