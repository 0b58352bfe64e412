"""Small learnable batches for the training plane's unit tests."""

from __future__ import annotations

import numpy as np


def toy_batches(n=64, bs=16, seed=0, size=16):
    """Two classes that differ in brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 1, size, size)).astype(np.float32) * 0.5 + (y[:, None, None, None] * 1.5 - 0.75)
    paths = np.array([f"img{i}.png" for i in range(n)])
    return [
        {"image": x[i : i + bs], "label": y[i : i + bs], "path": paths[i : i + bs]} for i in range(0, n, bs)
    ]
