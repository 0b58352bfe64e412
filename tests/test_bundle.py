"""Model bundles: roundtrip locally and on S3, refuse tampering, show the card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medxfer import storage
from medxfer.bundle import CARD, WEIGHTS, cmd_bundle_show, load_bundle, save_bundle
from medxfer.config import PreprocessConfig
from medxfer.errors import BundleError
from medxfer.inference import ordinal_to_grade, predict_arrays
from medxfer.models import create_model


def _card(model):
    return {"task": "multiclass", "classes": ["normal", "pneumonia"], "backbone": "smallcnn", "in_chans": 1,
            "num_outputs": 2, "stem": "standard", "preprocess": PreprocessConfig(size=28, channels=1).model_dump(mode="json"),
            "lineage": {"init": "scratch"}, "name": "m"}


def _roundtrip(uri):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1).eval()
    card = save_bundle(uri, model.state_dict(), _card(model))
    b = load_bundle(uri)
    assert b.card["weights_sha256"] == card["weights_sha256"] and b.classes == ["normal", "pneumonia"]
    assert b.spec.size == 28 and b.task == "multiclass" and "torch" in b.card["versions"]
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype(np.float32)
    p0 = predict_arrays(model, x, "multiclass", batch_size=2)
    p1 = predict_arrays(b.build_model(), x, "multiclass")
    assert p0.shape == (5, 2) and np.allclose(p0.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p0, p1, atol=1e-6)
    return b


def test_roundtrip_local_and_tamper(tmp_path, capsys):
    uri = str(tmp_path / "bundle")
    _roundtrip(uri)
    assert cmd_bundle_show(type("A", (), {"uri": uri})) == 0
    assert "sha256 verified" in capsys.readouterr().out
    raw = bytearray((tmp_path / "bundle" / WEIGHTS).read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the tensor data
    (tmp_path / "bundle" / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(uri)


def test_roundtrip_s3_and_incomplete(s3_root):
    uri = storage.join(s3_root, "runs", "r", "bundle")
    _roundtrip(uri)
    card = json.loads(storage.read_bytes(storage.join(uri, CARD)))
    del card["classes"]
    storage.write_bytes(storage.join(uri, CARD), json.dumps(card).encode())
    with pytest.raises(BundleError, match="lacks classes"):
        load_bundle(uri)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(storage.join(s3_root, "nothing-here"))


def test_predict_tasks():
    m = create_model("smallcnn", 3, 1).eval()
    x = np.zeros((4, 1, 28, 28), np.float32)
    assert predict_arrays(m, x, "multilabel").shape == (4, 3)
    m1 = create_model("smallcnn", 1, 1).eval()
    assert predict_arrays(m1, x, "ordinal").shape == (4,)
    assert ordinal_to_grade(np.array([-0.7, 0.4, 2.6, 9.0]), 5).tolist() == [0, 0, 3, 4]
