"""What a person reads: every interval in report.md and compare.md says how it was drawn (method, resamples,
seed), a metric whose interval fell back to percentile says so, and undefined numbers read n/a."""

from __future__ import annotations

import math

from medxfer.evaluate.markdown import compare_markdown, fmt, report_markdown


def _report() -> dict:
    return {
        "model": "m", "split": "test", "bundle": "b/bundle", "bundle_id": "abc", "task": "multiclass",
        "classes": ["0", "1"], "class_counts": [3, 9], "holdout": {"n": 12, "fingerprint": "f" * 64},
        "data": {"uri": "d/manifest.csv"},
        "bootstrap": {"resamples": 400, "seed": 7, "level": 0.95, "method": "BCa", "paired": True, "n": 12},
        "metrics": {"auroc": {"value": 1.0, "ci": [1.0, 1.0], "n_valid": 268, "method": "percentile"},
                    "accuracy": {"value": 0.75, "ci": [0.5, 0.92], "n_valid": 400, "method": "BCa"},
                    "ppv": {"value": math.nan, "ci": [math.nan, math.nan], "n_valid": 3, "method": "BCa"}},
    }


def test_report_markdown_says_how_each_interval_was_drawn():
    md = report_markdown(_report())
    assert ("95% BCa bootstrap intervals, paired (every metric on the same resamples), 400 resamples, seed 7; "
            "a metric undefined on some resamples gets the percentile interval of the others") in md
    assert "| auroc | 1.000 | 1.000 - 1.000 | percentile, 268 resamples |" in md
    assert "| accuracy | 0.750 | 0.500 - 0.920 | BCa, 400 resamples |" in md
    assert "| ppv | n/a | n/a - n/a |" in md and fmt(None) == "n/a"


def test_compare_markdown_names_the_method_and_bounds_a_zero_p_value():
    m = {"auroc": {"value": 0.9, "ci": [0.85, 0.95]}}
    r = {"split": "test", "n_common": 156, "metric": "auroc", "seed": 0,
         "a": {"bundle": "a", "bundle_id": "A", "metrics": m}, "b": {"bundle": "b", "bundle_id": "B", "metrics": {}},
         "difference": {"difference": 0.1, "ci": [0.05, 0.15], "p_value": 0.0, "n_boot": 1000, "method": "BCa"}}
    md = compare_markdown(r)
    assert "**auroc A - B = 0.1000** (95% CI 0.0500 to 0.1500, BCa paired bootstrap of 1000 resamples, seed 0; " \
           "p < 0.001)" in md
    assert "| auroc | 0.900 [0.850, 0.950] | n/a [n/a, n/a] |" in md
