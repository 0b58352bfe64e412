"""Scoring arrays with a bundle's network: predict_arrays over batches, ordinal outputs to grades."""

from __future__ import annotations

import numpy as np

from medxfer.lifecycle.inference import ordinal_to_grade, predict_arrays
from medxfer.models import create_model


def test_predict_tasks():
    m = create_model("smallcnn", 3, 1).eval()
    x = np.zeros((4, 1, 28, 28), np.float32)
    assert predict_arrays(m, x, "multilabel").shape == (4, 3)
    m1 = create_model("smallcnn", 1, 1).eval()
    assert predict_arrays(m1, x, "ordinal").shape == (4,)
    assert ordinal_to_grade(np.array([-0.7, 0.4, 2.6, 9.0]), 5).tolist() == [0, 0, 3, 4]
