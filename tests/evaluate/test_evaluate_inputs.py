"""What an evaluation reads: the positive class named at import (or in the config) reaches the card and the
report, which says why it is positive."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medxfer.cli import main
from medxfer.errors import ConfigError
from medxfer.lifecycle.bundle import load_bundle


def test_positive_class_named_at_import_reaches_the_card_and_the_report(test_data, tmp_path, capsys):
    """ISIC-like class folders: 'nevus' sorts last, so by default "sensitivity" would be about benign moles.
    Named at import (or in the config), melanoma is the positive class of the card, and so of evaluation."""
    import json

    import cv2

    from medxfer.config import EvaluateSection
    from medxfer.config.loading import validate_dict
    from medxfer.evaluate import build_report
    from medxfer.lifecycle.bundle import save_bundle
    from medxfer.lifecycle.card_builder import build_card
    from medxfer.models import create_model
    from medxfer.supervised.classifier_card import resolve_positive_class

    z = np.load(test_data / "medmnist" / "breastmnist.npz")
    labels = z["train_labels"].reshape(-1)
    for label, cls in ((0, "melanoma"), (1, "nevus")):
        d = tmp_path / "isic" / cls
        d.mkdir(parents=True)
        for i, img in enumerate(z["train_images"][labels == label][:6]):
            cv2.imwrite(str(d / f"{i}.png"), img)
    out = tmp_path / "ds"
    capsys.readouterr()
    assert main(["import", "folder", "--root", str(tmp_path / "isic"), "--out", str(out),
                 "--positive-class", "Melanoma"]) == 2  # not a class folder: refused, nothing written
    assert "melanoma, nevus" in capsys.readouterr().err and not out.exists()
    assert main(["import", "folder", "--root", str(tmp_path / "isic"), "--out", str(out),
                 "--positive-class", "melanoma"]) == 0
    assert "positive class: melanoma" in capsys.readouterr().out
    assert json.loads((out / "import.json").read_text())["positive_class"] == "melanoma"

    classes = ["melanoma", "nevus"]
    cfg = validate_dict({"data": {"manifest": str(out / "manifest.csv")}, "preprocess": {"size": 28},
                         "model": {"backbone": "smallcnn"}})
    assert resolve_positive_class(cfg, "multiclass", classes) == ("melanoma", "import.json")
    named = validate_dict({"data": {"manifest": str(out / "manifest.csv"), "positive_class": "nevus"}})
    assert resolve_positive_class(named, "multiclass", classes) == ("nevus", "data.positive_class")
    with pytest.raises(ConfigError, match="data.positive_class: 'cancer' is not one of the classes"):
        resolve_positive_class(validate_dict({"data": {"positive_class": "cancer"}}), "multiclass", classes)

    # The card training builds carries it; evaluation uses it and says why.
    positive = resolve_positive_class(cfg, "multiclass", classes)
    card = build_card(cfg, "finetune", task="multiclass", classes=classes,
                      plan=SimpleNamespace(stem="standard", in_chans=1, num_outputs=2),
                      spec=cfg.preprocess.model_copy(update={"channels": 1}),
                      data_fingerprint="k", positive=positive)
    uri = str(tmp_path / "bundle")
    save_bundle(uri, create_model("smallcnn", 2, 1).state_dict(), card)
    b = load_bundle(uri)
    assert b.positive_class == "melanoma" and b.card.positive_class_source == "import.json"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p0 = np.clip(0.6 - 0.3 * y + rng.normal(scale=0.2, size=60), 0, 1)
    part = {"path": np.array([f"i{i}.png" for i in range(60)]), "label": y, "scores": np.stack([p0, 1 - p0], 1)}
    rep = build_report(b, {"val": part, "test": part}, "test", EvaluateSection(bootstrap=50))
    assert rep["positive_class"] == "melanoma" and rep["operating_point"]["positive_class"] == "melanoma"
    assert "import folder --positive-class" in rep["positive_class_reason"]
