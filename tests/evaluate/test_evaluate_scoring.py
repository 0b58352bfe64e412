"""Scoring: the Ray Data actor pool and the in-process path give the same scores, row for row, on a real
BreastMNIST cache in S3 (moto) with a real local Ray."""

from __future__ import annotations

import numpy as np
import pytest
from evalutil import breast_job, breast_manifest, tiny_bundle

from medxfer.config import EvaluateSection
from medxfer.evaluate.inputs import prepare_for
from medxfer.evaluate.scoring import choose_engine, score_splits, score_splits_local
from medxfer.lifecycle.bundle import load_bundle


@pytest.mark.slow
def test_ray_actor_pool_scores_equal_in_process_scores(ray_cluster, s3_root, test_data, tmp_path):
    cfg = breast_job(s3_root, breast_manifest(test_data, tmp_path / "breast", label_names="index"),
                     data={"positive_class": "0"})
    uri = str(tmp_path / "bundle")
    tiny_bundle(uri, classes=("0", "1"), size=28, seed=1)
    b = load_bundle(uri)
    prepared = prepare_for(b, cfg)
    via_ray = score_splits(uri, prepared, ["val", "test"], batch_size=32)
    local = score_splits_local(b, prepared, ["val", "test"])
    for s in ("val", "test"):
        assert list(via_ray[s]["path"]) == list(local[s]["path"]) == sorted(local[s]["path"])
        np.testing.assert_array_equal(via_ray[s]["label"], local[s]["label"])
        np.testing.assert_allclose(via_ray[s]["scores"], local[s]["scores"], atol=1e-5)
    # 'auto' scores val + test (78 + 156 images) in-process; above local_max_images, on the pool.
    assert choose_engine(EvaluateSection(), prepared, ["val", "test"]) == "local"
    assert choose_engine(EvaluateSection(local_max_images=200), prepared, ["val", "test"]) == "ray"
