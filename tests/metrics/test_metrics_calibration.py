"""Calibration: the reliability bins are scikit-learn's calibration_curve, the ECE is hand-checked, and its
bootstrap statistic bins every example the same way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from medxfer.metrics.calibration import calibration_error, calibration_error_statistic, reliability


def test_reliability_bins_are_calibration_curves_with_counts_and_empty_bins():
    rng = np.random.default_rng(0)
    conf = np.round(rng.random(500) ** 2, 2)  # values on the bin edges, and empty-ish top bins
    hit = (rng.random(500) < conf).astype(float)
    r = reliability(hit, conf)
    observed, mean_conf = calibration_curve(hit, conf, n_bins=10)
    filled = np.array(r["count"]) > 0
    assert sum(r["count"]) == 500 and len(r["edges"]) == 11
    assert np.array(r["observed"])[filled] == pytest.approx(observed)
    assert np.array(r["mean_confidence"])[filled] == pytest.approx(mean_conf)
    assert np.isnan(np.array(r["observed"])[~filled]).all()
    assert reliability(np.zeros(3), np.array([0.1, 0.5, 0.9]))["observed"][0] == 0.0  # no hit at all still bins


def test_ece_hand_checked_and_statistic_agrees():
    conf = np.array([0.95, 0.95, 0.05, 0.05])
    hit = np.array([1, 0, 0, 0])
    # bin 0.9-1.0: observed 0.5 vs 0.95 -> 0.45 * 1/2; bin 0.0-0.1: 0 vs 0.05 -> 0.05 * 1/2
    assert calibration_error(hit, conf) == pytest.approx(0.25)
    assert calibration_error_statistic(hit, conf) == pytest.approx(0.25)
    idx = np.array([[0, 0, 1, 2], [3, 3, 3, 1]])
    assert calibration_error_statistic(hit[idx], conf[idx]) == pytest.approx(
        [calibration_error(hit[i], conf[i]) for i in idx])
