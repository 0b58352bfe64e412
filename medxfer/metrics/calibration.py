"""Calibration: does a probability of 0.8 come true 80% of the time?

The reliability bins (what the report's diagram draws) come from scikit-learn's
``calibration_curve`` on equal-width bins; the expected calibration error (ECE) is the
bin-size-weighted gap between observed frequency and mean confidence over those bins, and its
bootstrap statistic bins each example the same way (``np.searchsorted`` on the inner edges,
as ``calibration_curve`` does), so the point and the statistic agree.
"""

from __future__ import annotations

import math

import numpy as np

N_BINS = 10


def _edges(n_bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability(hit, confidence, n_bins: int = N_BINS) -> dict:
    """Per-bin count, mean confidence and observed frequency (NaN for empty bins): the diagram's data."""
    from sklearn.calibration import calibration_curve

    hit = np.asarray(hit, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    edges = _edges(n_bins)
    count = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=n_bins)
    observed = np.full(n_bins, np.nan)
    mean_confidence = np.full(n_bins, np.nan)
    if len(hit):
        # pos_label=1 names the positive label even when every hit is 0.
        observed[count > 0], mean_confidence[count > 0] = calibration_curve(
            hit, confidence, n_bins=n_bins, strategy="uniform", pos_label=1)
    return {"edges": edges.tolist(), "count": count.astype(int).tolist(),
            "mean_confidence": mean_confidence.tolist(), "observed": observed.tolist()}


def calibration_error(hit, confidence) -> float:
    """ECE over the reliability bins: sum of |observed - mean confidence| weighted by bin size."""
    n = len(confidence)
    if n == 0:
        return math.nan
    r = reliability(hit, confidence)
    gaps = [c / n * abs(o - m) for c, o, m in zip(r["count"], r["observed"], r["mean_confidence"], strict=True) if c]
    return float(sum(gaps))


def calibration_error_statistic(hit, confidence) -> np.ndarray:
    """ECE of every resample at once: per-bin sums from one offset ``bincount`` per array."""
    hit = np.asarray(hit, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    batch, n = confidence.shape[:-1], confidence.shape[-1]
    rows = int(np.prod(batch))
    bins = np.searchsorted(_edges(N_BINS)[1:-1], confidence).reshape(rows, n) + (np.arange(rows) * N_BINS)[:, None]

    def per_bin(weights):
        return np.bincount(bins.ravel(), weights=weights.reshape(-1), minlength=rows * N_BINS).reshape(rows, N_BINS)

    gap = np.abs(per_bin(hit) - per_bin(confidence)).sum(axis=1)
    return (gap / n).reshape(batch) if n else np.full(batch, np.nan)
