"""Labels by task (``medxfer.data.manifest.labels``): typos, empty labels, multilabel and ordinal."""

from __future__ import annotations

import numpy as np
import pytest
from datautil import dataset, write_csv

from medxfer.config import DataConfig
from medxfer.data.manifest import encode_labels, load_manifest
from medxfer.errors import DataError


def test_empty_and_unknown_labels(tmp_path):
    df = dataset(tmp_path)
    bad = df.copy()
    bad.loc[3, "label"] = ""
    with pytest.raises(DataError, match=r"empty or missing label at line\(s\) 5"):
        load_manifest(write_csv(tmp_path, bad), DataConfig())
    typo = df.copy()
    typo.loc[[1, 2], "label"] = "pneumonai"
    with pytest.raises(DataError, match=r"'pneumonai' x2 \(did you mean 'pneumonia'\?\)"):
        load_manifest(write_csv(tmp_path, typo), DataConfig(classes=["normal", "pneumonia", "a", "b"]))


def test_multilabel_and_ordinal_labels(tmp_path):
    df = dataset(tmp_path, classes=("x", "y"))
    df["label"] = ["Effusion|Edema", "none", "?Edema|Effusion", "Edema"] * 3
    out = load_manifest(write_csv(tmp_path, df), DataConfig(task="multilabel"))
    assert out.attrs["classes"] == ["Edema", "Effusion"]
    y = encode_labels(out["label"][:4], ["Edema", "Effusion"], "multilabel")
    assert y[0].tolist() == [1, 1] and y[1].tolist() == [0, 0]
    assert np.isnan(y[2, 0]) and y[2, 1] == 1 and y[3].tolist() == [1, 0]
    bad = df.copy()
    bad.loc[0, "label"] = "Efusion"
    with pytest.raises(DataError, match="did you mean 'Effusion'"):
        load_manifest(write_csv(tmp_path, bad), DataConfig(task="multilabel", classes=["Edema", "Effusion"]))
    df["label"] = ["0", "2", "10", "1"] * 3
    out = load_manifest(write_csv(tmp_path, df), DataConfig(task="ordinal"))
    assert out.attrs["classes"] == ["0", "1", "2", "10"]
    assert encode_labels(["10", "1"], out.attrs["classes"], "ordinal").tolist() == [3.0, 1.0]
