"""Model bundles: roundtrip locally and on S3, refuse tampering, show the card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medxfer import storage
from medxfer.cli import main
from medxfer.cli.models_commands import cmd_bundle_show
from medxfer.config import PreprocessConfig
from medxfer.errors import BundleError
from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle, save_bundle
from medxfer.lifecycle.inference import predict_arrays
from medxfer.models import create_model


def _card(model):
    return {"task": "multiclass", "classes": ["normal", "pneumonia"], "backbone": "smallcnn", "in_chans": 1,
            "num_outputs": 2, "stem": "standard", "preprocess": PreprocessConfig(size=28, channels=1).model_dump(mode="json"),
            "lineage": {"init": "scratch"}, "name": "m"}


def _digest(card: dict) -> str:
    from medxfer.lifecycle.card import card_digest

    return card_digest(card)


def _roundtrip(uri):
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 1).eval()
    card = save_bundle(uri, model.state_dict(), _card(model))
    b = load_bundle(uri)
    assert b.card == card and b.card.weights_sha256 == b.weights_sha256 and b.classes == ["normal", "pneumonia"]
    assert b.spec.size == 28 and b.task == "multiclass" and "torch" in b.card.versions
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
    card["card_sha256"] = _digest(card)  # a consistent hash: the field check is what refuses it
    storage.write_bytes(storage.join(uri, CARD), json.dumps(card).encode())
    with pytest.raises(BundleError, match=r"bundle.json: classes: expected .*[Ff]ield required"):
        load_bundle(uri)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(storage.join(s3_root, "nothing-here"))


def _edit_card(bundle: Path, rehash: bool = True, **changes) -> None:
    card = json.loads((bundle / CARD).read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = card
        for p in parents:
            node = node[p]
        node[key] = value
    if rehash:
        card["card_sha256"] = _digest(card)
    (bundle / CARD).write_text(json.dumps(card, indent=2))


def test_card_edited_after_training_is_refused(tmp_path, capsys):
    """Swapped class names flip every prediction; the card's hash no longer matches, so nothing uses it."""
    uri = tmp_path / "bundle"
    _roundtrip(str(uri))
    _edit_card(uri, rehash=False, classes=["pneumonia", "normal"])
    with pytest.raises(BundleError, match="does not match its card_sha256"):
        load_bundle(str(uri))
    capsys.readouterr()
    assert main(["bundle", "show", str(uri)]) == 2
    err = capsys.readouterr().err
    assert "card_sha256" in err and "sha256 verified" not in err and "Traceback" not in err


@pytest.mark.parametrize("field, value, message", [
    ("preprocess__size", 100000, r"preprocess\.size: expected less than or equal to 2048"),
    ("num_outputs", "abc", r"num_outputs: expected a valid integer"),
    ("num_outputs", 200000000, r"num_outputs: expected less than or equal to 10000"),
    ("num_outputs", 7, r"num_outputs: 7 does not fit a multiclass card with 2 classes \(expected 2\)"),
    ("in_chans", 3, r"in_chans: 3 differs from preprocess\.channels 1"),
    ("backbone", "resnet9000", r"backbone: expected .densenet121., .*or .smallcnn."),
    ("positive_class", "cancer", r"positive_class: 'cancer' is not one of the classes"),
    ("classes", ["a", "a"], r"classes: names repeat"),
])
def test_card_fields_are_checked_before_anything_is_built(tmp_path, capsys, field, value, message):
    """Even with a consistent hash, a card whose fields are out of range or inconsistent is refused by field
    name (exit 2), before any network, head or pixel buffer is allocated."""
    uri = tmp_path / "bundle"
    _roundtrip(str(uri))
    _edit_card(uri, **{field: value})
    with pytest.raises(BundleError, match=message):  # how fast: benchmarks/bench_data_plane.py
        load_bundle(str(uri))
    capsys.readouterr()
    assert main(["bundle", "show", str(uri)]) == 2
    assert f"{CARD}: {field.replace('__', '.')}" in capsys.readouterr().err


def test_bundle_show_of_something_that_is_not_a_bundle_exits_2(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert main(["bundle", "show", str(tmp_path / "notes")]) == 2
    assert "not a model bundle" in capsys.readouterr().err
    (tmp_path / "notes" / CARD).write_text("{not json")
    assert main(["bundle", "show", str(tmp_path / "notes")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_format_1_bundle_is_refused_and_upgrade_re_exports_it(tmp_path, capsys):
    """A card written before cards were hashed (and possibly edited by evaluate) is refused with the command
    that re-exports it; the upgrade checks the weights, drops the stored operating point and leaves the
    old bundle's bytes alone."""
    old = tmp_path / "old"
    _roundtrip(str(old))
    card = json.loads((old / CARD).read_text())
    for k in ("card_sha256", "positive_class", "positive_class_source"):
        card.pop(k)
    card["format"] = "medxfer-bundle/1"
    card["operating_point"] = {"threshold": 0.3, "positive_class": "pneumonia"}
    (old / CARD).write_text(json.dumps(card))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in old.iterdir()}
    with pytest.raises(BundleError, match=r"medxfer-bundle/1.*medxfer bundle upgrade"):
        load_bundle(str(old))
    new = tmp_path / "new"
    assert main(["bundle", "upgrade", str(old), str(new), "--positive-class", "pneumonia"]) == 0
    b = load_bundle(str(new))
    assert b.card.format == "medxfer-bundle/2" and b.positive_class == "pneumonia"
    assert "operating_point" not in json.loads((new / CARD).read_text())
    assert b.card.positive_class_source == "bundle upgrade"
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in old.iterdir()} == before
    capsys.readouterr()
    assert main(["bundle", "upgrade", str(old), str(new)]) == 2  # never over an existing bundle
    assert "already holds a bundle" in capsys.readouterr().err


def test_bundle_show_verifies_everything_without_importing_torch(tmp_path):
    """`medxfer bundle show` makes every check load_bundle makes (card hash, fields, weights hash, a
    parseable safetensors file) with numpy, so inspecting a bundle needs no torch import."""
    import subprocess
    import sys

    from medxfer.lifecycle.bundle import verify_bundle

    uri = str(tmp_path / "bundle")
    _roundtrip(uri)
    card, tensors, values = verify_bundle(uri)
    loaded = load_bundle(uri)
    assert card == loaded.card and tensors == len(loaded.state_dict)
    assert values == sum(t.numel() for t in loaded.state_dict.values())
    code = f"import sys; from medxfer.lifecycle.bundle import verify_bundle; verify_bundle({uri!r}); print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr[-2000:]


def test_package_versions_name_torchvision_without_importing_it():
    """The card's versions must not cost a torchvision import (~3 s) in every training command,
    and must still be the version string torchvision itself reports (build tag included)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from medxfer.lifecycle.bundle import package_versions\n"
            "v = package_versions()\n"
            "assert 'torchvision' not in sys.modules, 'package_versions imported torchvision'\n"
            "import torchvision, torch, ray\n"
            "assert v['torchvision'] == torchvision.__version__, (v, torchvision.__version__)\n"
            "assert v['torch'] == torch.__version__ and v['ray'] == ray.__version__, v\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
