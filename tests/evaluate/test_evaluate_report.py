"""Evaluation reports without Ray: every task's report from scores (metrics with intervals, operating point,
plots, markdown), written beside a real bundle."""

from __future__ import annotations

import numpy as np
import pytest
from evalutil import tiny_bundle

from medxfer.config import EvaluateSection
from medxfer.evaluate.report import build_report, write_report
from medxfer.lifecycle.bundle import load_bundle


@pytest.mark.parametrize("task", ["multilabel", "ordinal", "multiclass"])
def test_reports_for_every_task_without_ray(task, tmp_path):
    classes = ("a", "b", "c")
    uri = str(tmp_path / "b")
    tiny_bundle(uri, classes=classes, task=task)
    b = load_bundle(uri)
    rng = np.random.default_rng(0)
    n = 120
    if task == "multilabel":
        y = (rng.random((n, 3)) < 0.4).astype(np.float32)
        y[rng.random((n, 3)) < 0.1] = np.nan
        scores = np.clip(np.nan_to_num(y) * 0.5 + rng.random((n, 3)) * 0.5, 0, 1)
    elif task == "ordinal":
        y = rng.integers(0, 3, n).astype(np.float32)
        scores = (y + rng.normal(scale=0.6, size=n))[:, None]
    else:
        y = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 2 * np.eye(3)[y]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    part = {"path": np.array([f"img{i:03d}.png" for i in range(n)]), "label": y, "scores": scores}
    scored = {"test": part, "val": part}
    ecfg = EvaluateSection(bootstrap=100, positive_class="c")
    rep = build_report(b, scored, "test", ecfg)
    out = str(tmp_path / "report")
    write_report(rep, scored, out)
    headline = {"multilabel": "auroc", "ordinal": "qwk", "multiclass": "auroc"}[task]
    m = rep["metrics"][headline]
    assert m["ci"][0] <= m["value"] <= m["ci"][1]
    md = (tmp_path / "report" / "report.md").read_text()
    assert headline in md
    for f in rep["plots"].values():
        assert (tmp_path / "report" / f).read_bytes()[:4] == b"\x89PNG"
    if task == "multiclass":
        assert rep["operating_point"]["positive_class"] == "c" and set(rep["plots"]) == {"roc", "calibration",
                                                                                         "confusion"}
    if task == "ordinal":
        assert set(rep["metrics"]) == {"mae", "qwk", "accuracy", "balanced_accuracy"} and "confusion" in rep["plots"]
