"""Confidence intervals: ``scipy.stats.bootstrap``, paired, BCa where it applies.

Why the library: the alternative, a hand-written weighted bootstrap (every statistic rewritten
for a matrix of per-example resample counts), was worth its second implementation of every metric
only if it were needed for speed. The benchmark (``benchmarks/bench_bootstrap.py``; its numbers
are in ``benchmarks/results/bootstrap.json`` and benchmarks/README.md) says it is not: the
hand-written code is faster, but by a small factor, which on the largest set evaluated in-process
is seconds next to the scoring itself, and both draw the same resamples from the same seed and
give the same percentile intervals. BCa costs more again, so it is used only where that cost is
small (below).

Paired: all metrics of a report, and both models of a comparison, are computed on the same
resamples of the same examples (``paired=True``, one call), so a report's intervals agree with
each other and a paired difference drops the variance the two models share.

BCa (bias-corrected and accelerated) corrects the percentile interval for the bias and skew of
bounded statistics, such as an AUROC near 1 on a small test set. Its acceleration needs every
leave-one-out value, a pass that grows with the square of the number of examples; above
``bca_max_n`` examples the percentile interval is used instead (the two converge as sets grow).

Undefined resamples: a resample can lose a class (small sets, rare positives), and a metric that
is then undefined is NaN there. BCa cannot use such a distribution (nor a constant one, nor
undefined leave-one-out values); that metric gets the percentile interval of the resamples where
it is defined, and its ``method`` and ``n_valid`` say so. Fewer than 10 defined: no interval.

The same seed draws the same resamples: a report's intervals can be reproduced exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medxfer.metrics.registry import Metric

BCA_MAX_N = 5000
_MIN_VALID = 10
_BATCH_ELEMENTS = 2_000_000  # rows of resampled indices per batch are sized to about this many elements


@dataclass(frozen=True)
class Resampling:
    """How intervals are drawn; ``describe`` is what a report records, so its numbers can be reproduced."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    bca_max_n: int = BCA_MAX_N

    def method(self, n: int) -> str:
        return "BCa" if n <= self.bca_max_n else "percentile"

    def describe(self, n: int) -> dict:
        return {"resamples": self.resamples, "seed": self.seed, "level": self.level, "method": self.method(n),
                "paired": True, "n": n, "library": "scipy.stats.bootstrap"}


Statistics = dict[str, tuple[Callable[..., np.ndarray], tuple]]
"""``{name: (statistic, arrays)}``: a vectorised statistic and the arrays it reads (examples last)."""


def intervals(statistics: Statistics, resampling: Resampling) -> dict[str, dict]:
    """``{name: {"ci": [low, high], "n_valid": k, "method": "BCa" | "percentile"}}`` over shared resamples."""
    return _bootstrap(statistics, resampling)[0]


def paired_difference(metric: Metric, a: tuple, b: tuple, resampling: Resampling) -> dict:
    """``metric`` of A minus ``metric`` of B (same examples, inputs ``a`` and ``b``), with a paired interval.

    ``p_value`` is the two-sided bootstrap p-value of "no difference": twice the smaller share of
    resampled differences on either side of 0.
    """
    k = len(a)

    def difference(*arrays):
        return metric.statistic(*arrays[:k]) - metric.statistic(*arrays[k:])

    cis, dist = _bootstrap({"difference": (difference, (*a, *b))}, resampling)
    d = dist[0][np.isfinite(dist[0])]
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if d.size else math.nan
    value_a, value_b = metric.point(*a), metric.point(*b)
    return {"metric": metric.name, "a": value_a, "b": value_b, "difference": value_a - value_b,
            **cis["difference"], "p_value": p, "n_boot": resampling.resamples}


def _bootstrap(statistics: Statistics, r: Resampling) -> tuple[dict[str, dict], np.ndarray]:
    """One paired ``scipy.stats.bootstrap`` call for every statistic; the intervals and the distribution."""
    arrays, reads = _distinct(statistics)
    fns = [fn for fn, _ in statistics.values()]
    n = arrays[0].shape[-1]
    method = r.method(n)
    if r.resamples <= 0 or n < 2:
        empty = {name: {"ci": [math.nan, math.nan], "n_valid": 0, "method": method} for name in statistics}
        return empty, np.empty((len(statistics), 0))

    def stacked(index, axis=-1):
        data = [a[..., index] for a in arrays]
        return np.stack([np.asarray(fn(*(data[k] for k in ks)), dtype=np.float64)
                         for fn, ks in zip(fns, reads, strict=True)])

    from scipy import stats

    # Paired: scipy resamples one sample, the examples' indices, and every array is indexed by it (what
    # paired=True does, without broadcasting arrays of different shapes against each other).
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a degenerate BCa row is NaN here and replaced below
        res = stats.bootstrap((np.arange(n),), stacked, n_resamples=r.resamples, vectorized=True,
                              confidence_level=r.level, method=method, batch=max(1, _BATCH_ELEMENTS // n),
                              rng=np.random.default_rng(r.seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(len(fns), -1)
    low = np.atleast_1d(res.confidence_interval.low)
    high = np.atleast_1d(res.confidence_interval.high)
    out = {}
    for i, name in enumerate(statistics):
        out[name] = _interval(dist[i], (low[i], high[i]), method, r.level)
    return out, dist


def _distinct(statistics: Statistics) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each distinct array once (a resample then gathers it once, however many statistics read it), and
    which of them each statistic reads."""
    arrays: list[np.ndarray] = []
    slot: dict[int, int] = {}
    reads = []
    for _, data in statistics.values():
        for x in data:
            if id(x) not in slot:
                slot[id(x)] = len(arrays)
                arrays.append(np.asarray(x))
        reads.append([slot[id(x)] for x in data])
    return arrays, reads


def _interval(values: np.ndarray, scipy_ci: tuple[float, float], method: str, level: float) -> dict:
    """scipy's interval when every resample is defined and it is finite; else the percentile one of the defined."""
    finite = np.isfinite(values)
    n_valid = int(finite.sum())
    if n_valid < _MIN_VALID:
        return {"ci": [math.nan, math.nan], "n_valid": n_valid, "method": method}
    if finite.all() and np.isfinite(scipy_ci).all():
        return {"ci": [float(scipy_ci[0]), float(scipy_ci[1])], "n_valid": n_valid, "method": method}
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values[finite], [alpha, 1.0 - alpha])
    return {"ci": [float(low), float(high)], "n_valid": n_valid, "method": "percentile"}
