"""Loading manifests (``medxfer.data.manifest``): formats, resolved paths, unions of manifests and
the named checks in order; real files in tmp folders, no Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from datautil import dataset, write_csv

from medxfer.config import DataConfig
from medxfer.data.manifest import load_manifest
from medxfer.errors import DataError


def test_csv_with_bom_relative_paths_resolved(tmp_path):
    df = dataset(tmp_path)
    uri = str(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    out = load_manifest(uri, DataConfig())
    assert list(out.columns[:4]) == ["path", "label", "split", "source"]
    assert out["path"].iloc[0] == str(tmp_path / "img/a/0.png")
    assert out.attrs["classes"] == ["a", "b"]
    assert out["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}


def test_jsonl_and_parquet_and_absolute_paths(tmp_path):
    df = dataset(tmp_path)
    df.loc[0, "path"] = str(tmp_path / df.loc[0, "path"])  # absolute passes through
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    a = load_manifest(str(jl), DataConfig())
    df.to_parquet(tmp_path / "m.parquet")
    b = load_manifest(str(tmp_path / "m.parquet"), DataConfig())
    assert a["path"].tolist() == b["path"].tolist()
    assert a["path"].iloc[0] == str(tmp_path / "img/a/0.png")


def test_union_of_manifests_has_sources(tmp_path):
    a, b = tmp_path / "siteA", tmp_path / "siteB"
    a.mkdir(), b.mkdir()
    ua, ub = write_csv(a, dataset(a)), write_csv(b, dataset(b, split=False))
    out = load_manifest(None, DataConfig(manifest=ua, extra_manifests=[ub]))
    assert len(out) == 24
    assert out["source"].value_counts().to_dict() == {"siteA": 12, "siteB": 12}
    assert out.attrs["split_made"] == [False, True]


def test_patient_leakage_and_missing_training_class_and_one_class(tmp_path):
    df = dataset(tmp_path, patients=True)
    leak = df.copy()
    leak.loc[4, "patient_id"] = leak.loc[0, "patient_id"]  # a train patient also in val
    with pytest.raises(DataError, match=r"1 patient\(s\) appear in more than one split \(leakage"):
        load_manifest(write_csv(tmp_path, leak), DataConfig())
    notrain = df.copy()
    notrain.loc[notrain["label"] == "b", "split"] = "test"
    with pytest.raises(DataError, match=r"class\(es\) \['b'\] have no training example"):
        load_manifest(write_csv(tmp_path, notrain), DataConfig())
    one = df[df["label"] == "a"]
    with pytest.raises(DataError, match="only one class"):
        load_manifest(write_csv(tmp_path, one), DataConfig())
    weird = df.copy()
    weird.loc[0, "split"] = "training-set"
    with pytest.raises(DataError, match="unknown split value"):
        load_manifest(write_csv(tmp_path, weird), DataConfig())


def test_100k_rows_load_with_a_patient_grouped_split(tmp_path):
    n = 100_000
    df = pd.DataFrame(
        {
            "path": [f"img/{i % 100}/{i}.png" for i in range(n)],
            "label": np.where(np.arange(n) % 3 == 0, "pneumonia", "normal"),
            "patient_id": [f"p{i // 3}" for i in range(n)],
        }
    )
    uri = write_csv(tmp_path, df)
    out = load_manifest(uri, DataConfig(), check_files=False)  # timed in benchmarks/bench_data_plane.py
    assert len(out) == n and out.groupby("patient_id")["split"].nunique().max() == 1
    assert set(out["split"]) == {"train", "val", "test"}
