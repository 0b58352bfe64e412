"""Bootstrap intervals (scipy.stats.bootstrap, paired, BCa where it applies): they bracket the estimate, are
seeded, leave out resamples where a metric is undefined, and pair two models on the same resamples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from medxfer.metrics import METRICS
from medxfer.metrics.bootstrap import Resampling, intervals, paired_difference
from medxfer.metrics.views import binary_columns


def _auroc(y, s):
    return {"auroc": (METRICS["auroc"].statistic, binary_columns(y, s))}


def test_percentile_interval_is_that_of_the_seeded_index_resamples(binary):
    """The intervals are quantiles of the metric over resamples of the examples drawn by the seeded generator
    (as scipy draws them): reproducible from the seed alone."""
    y, s = binary(n=200, seed=4)
    ci = intervals(_auroc(y, s), Resampling(400, seed=3, bca_max_n=0))["auroc"]
    idx = np.random.default_rng(3).integers(0, 200, (400, 200))
    values = [skm.roc_auc_score(y[i], s[i]) for i in idx]
    assert ci["method"] == "percentile" and ci["n_valid"] == 400
    assert ci["ci"] == pytest.approx(list(np.quantile(values, [0.025, 0.975])))


def test_bca_is_scipys_paired_bca(binary):
    y, s = binary(n=150, seed=1)
    ci = intervals(_auroc(y, s), Resampling(300, seed=5))["auroc"]
    res = stats.bootstrap((y, s), lambda a, b: skm.roc_auc_score(a, b), paired=True, vectorized=False,
                          n_resamples=300, method="BCa", rng=np.random.default_rng(5))
    assert ci["method"] == "BCa"
    assert ci["ci"] == pytest.approx([res.confidence_interval.low, res.confidence_interval.high])


def test_intervals_bracket_the_estimate_are_seeded_and_skip_resamples_without_a_class(binary):
    y, s = binary(n=200, seed=4)
    stats_ = {**_auroc(y, s), "sensitivity": (METRICS["sensitivity"].statistic, (y, s >= 0.5))}
    a = intervals(stats_, Resampling(500, seed=3))
    assert a == intervals(stats_, Resampling(500, seed=3))
    assert a != intervals(stats_, Resampling(500, seed=4))
    for name, ci in a.items():
        value = METRICS[name].point(*stats_[name][1])
        assert ci["ci"][0] <= value <= ci["ci"][1] and ci["ci"][1] - ci["ci"][0] > 0, name
    # A rare positive (1 of 12): many resamples have none; those are left out, not zero, and the interval
    # says it is a percentile one of the others.
    y2 = np.zeros(12, bool)
    y2[0] = True
    s2 = np.linspace(0.1, 0.9, 12)[::-1]
    au = intervals(_auroc(y2, s2), Resampling(400, seed=0))["auroc"]
    assert 100 < au["n_valid"] < 400 and au["ci"] == [1.0, 1.0] and au["method"] == "percentile"


def test_no_resamples_or_too_few_defined_give_no_interval(binary):
    y, s = binary(n=50)
    assert math.isnan(intervals(_auroc(y, s), Resampling(0))["auroc"]["ci"][0])
    few = intervals(_auroc(y, s), Resampling(5))["auroc"]
    assert few["n_valid"] == 5 and all(math.isnan(c) for c in few["ci"])


def test_bca_only_up_to_its_size_limit(binary):
    y, s = binary(n=300)
    assert intervals(_auroc(y, s), Resampling(100, bca_max_n=300))["auroc"]["method"] == "BCa"
    assert intervals(_auroc(y, s), Resampling(100, bca_max_n=299))["auroc"]["method"] == "percentile"


def test_paired_difference(binary):
    y, s = binary(n=300, seed=5, sep=1.5)
    rng = np.random.default_rng(0)
    worse = np.clip(s + rng.normal(scale=0.3, size=len(s)), 0, 1)
    auroc = METRICS["auroc"]
    same = paired_difference(auroc, binary_columns(y, s), binary_columns(y, s), Resampling(300))
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0
    d = paired_difference(auroc, binary_columns(y, s), binary_columns(y, worse), Resampling(300))
    assert d["difference"] == pytest.approx(skm.roc_auc_score(y, s) - skm.roc_auc_score(y, worse))
    assert 0 < d["ci"][0] <= d["difference"] <= d["ci"][1]
    assert d["p_value"] < 0.05
    # Paired is tighter than the two models' own intervals side by side.
    own = [intervals(_auroc(y, v), Resampling(300))["auroc"]["ci"] for v in (s, worse)]
    assert d["ci"][1] - d["ci"][0] < (own[0][1] - own[0][0]) + (own[1][1] - own[1][0])
