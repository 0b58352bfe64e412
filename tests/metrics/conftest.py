"""Fixtures of the metrics tests."""

from __future__ import annotations

import numpy as np
import pytest


def _scores(n: int = 300, seed: int = 0, sep: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded binary labels (40 % positive) and scores that separate them by ``sep``, rounded to two
    decimals: the rounding makes ties, which AUROC must count half."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + sep * (2 * y - 1))))
    return y, np.round(score, 2)


@pytest.fixture
def binary():
    """``binary(n=300, seed=0, sep=1.0) -> (labels, scores)``: a binary problem of known difficulty."""
    return _scores
