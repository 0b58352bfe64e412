"""Report plots: PNG bytes for ROC curves (with the operating point), reliability diagrams with empty bins,
and confusion matrices; a curve that cannot be drawn (one class) is left out, not an error."""

from __future__ import annotations

import numpy as np

from medxfer.evaluate import plots
from medxfer.metrics.calibration import reliability

PNG = b"\x89PNG"


def test_every_plot_is_a_png_and_degenerate_inputs_still_draw():
    rng = np.random.default_rng(0)
    y = rng.random(80) < 0.4
    s = np.clip(0.4 * y + rng.random(80) * 0.6, 0, 1)
    curves = {"pos vs rest": (y, s), "one class only": (np.ones(80, bool), s)}
    assert plots.roc_png(curves, "ROC", (0.8, 0.7, "operating point")).startswith(PNG)
    calibration = {"kind": "positive-class probability", **reliability(y.astype(float), s * 0.5)}
    assert np.isnan(calibration["observed"]).any()  # empty bins are NaN, drawn as gaps
    assert plots.reliability_png(calibration, "reliability").startswith(PNG)
    assert plots.confusion_png([[5, 1], [0, 0]], ["a", "b"], "confusion").startswith(PNG)
