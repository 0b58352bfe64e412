"""Small learnable batches for the training plane's unit tests."""

from __future__ import annotations

import os

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


def wait_for(cond, timeout: float, what: str, step: float = 0.2):
    """``cond()``'s first truthy value, polled every ``step`` seconds; fails the test after ``timeout``."""
    import time

    t = time.time() + timeout
    while time.time() < t:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def in_background(fn):
    """Start ``fn()`` on a daemon thread; returns ``(thread, box)``, ``box`` getting ``out`` or ``err``."""
    import threading

    box: dict = {}

    def target():
        try:
            box["out"] = fn()
        except BaseException as e:  # noqa: BLE001 - the test reports it
            box["err"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def cluster_env(**extra) -> dict:
    """This process's environment for a medxfer command that joins the session's Ray cluster."""
    import ray

    env = dict(os.environ)
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONUNBUFFERED="1", **extra)
    return env
