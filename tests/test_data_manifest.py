"""Manifest loading and checks, splits and label subsampling. Real files in tmp folders; no Ray."""

from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from medxfer import storage
from medxfer.config import DataConfig
from medxfer.data.manifest import (
    encode_labels,
    label_subsample,
    load_manifest,
    make_split,
)
from medxfer.errors import DataError

_PNG = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()


def _dataset(root, n_per_class=6, classes=("a", "b"), split=True, patients=False):
    """Tiny real PNGs under root/img/<class>/<i>.png and the matching manifest rows."""
    rows = []
    for c in classes:
        os.makedirs(root / "img" / c, exist_ok=True)
        for i in range(n_per_class):
            (root / "img" / c / f"{i}.png").write_bytes(_PNG)
            row = {"path": f"img/{c}/{i}.png", "label": c}
            if split:
                row["split"] = "train" if i < n_per_class - 2 else ("val" if i == n_per_class - 2 else "test")
            if patients:
                row["patient_id"] = f"p{c}{i}" if split else f"p{c}{i // 2}"
            rows.append(row)
    return pd.DataFrame(rows)


def _write_csv(root, df, name="manifest.csv", **kw) -> str:
    p = root / name
    df.to_csv(p, index=False, **kw)
    return str(p)


def test_csv_with_bom_relative_paths_resolved(tmp_path):
    df = _dataset(tmp_path)
    uri = str(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    out = load_manifest(uri, DataConfig())
    assert list(out.columns[:4]) == ["path", "label", "split", "source"]
    assert out["path"].iloc[0] == str(tmp_path / "img/a/0.png")
    assert out.attrs["classes"] == ["a", "b"]
    assert out["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}


def test_jsonl_and_parquet_and_absolute_paths(tmp_path):
    df = _dataset(tmp_path)
    df.loc[0, "path"] = str(tmp_path / df.loc[0, "path"])  # absolute passes through
    jl = tmp_path / "m.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    a = load_manifest(str(jl), DataConfig())
    df.to_parquet(tmp_path / "m.parquet")
    b = load_manifest(str(tmp_path / "m.parquet"), DataConfig())
    assert a["path"].tolist() == b["path"].tolist()
    assert a["path"].iloc[0] == str(tmp_path / "img/a/0.png")


def test_missing_columns_and_wrong_delimiter(tmp_path):
    df = _dataset(tmp_path)
    with pytest.raises(DataError, match="missing required column.*label.*rename column 'class' to 'label'"):
        load_manifest(_write_csv(tmp_path, df.rename(columns={"label": "class"})), DataConfig())
    with pytest.raises(DataError, match="separated by semicolons"):
        load_manifest(_write_csv(tmp_path, df, sep=";"), DataConfig())


def test_empty_and_unknown_labels(tmp_path):
    df = _dataset(tmp_path)
    bad = df.copy()
    bad.loc[3, "label"] = ""
    with pytest.raises(DataError, match=r"empty or missing label at line\(s\) 5"):
        load_manifest(_write_csv(tmp_path, bad), DataConfig())
    typo = df.copy()
    typo.loc[[1, 2], "label"] = "pneumonai"
    with pytest.raises(DataError, match=r"'pneumonai' x2 \(did you mean 'pneumonia'\?\)"):
        load_manifest(_write_csv(tmp_path, typo), DataConfig(classes=["normal", "pneumonia", "a", "b"]))


def test_duplicates_missing_files_and_escapes(tmp_path):
    df = _dataset(tmp_path)
    dup = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(DataError, match="1 duplicate path"):
        load_manifest(_write_csv(tmp_path, dup), DataConfig())
    for i in range(7):
        os.remove(tmp_path / df.loc[i, "path"])
    with pytest.raises(DataError, match=r"7 of 12 image file\(s\) do not exist, e\.g\. .*img/a/0\.png"):
        load_manifest(_write_csv(tmp_path, df), DataConfig())
    # check_files=False skips only the existence check
    assert len(load_manifest(_write_csv(tmp_path, df), DataConfig(), check_files=False)) == 12
    sub = tmp_path / "sub"
    sub.mkdir()
    esc = _dataset(sub)
    esc.loc[0, "path"] = "../../etc/passwd"
    with pytest.raises(DataError, match=r"leave the manifest's folder via '\.\.' at line\(s\) 2"):
        load_manifest(_write_csv(sub, esc), DataConfig())


def test_symlink_leaving_the_manifest_folder_is_refused(tmp_path):
    inside = tmp_path / "ds"
    inside.mkdir()
    df = _dataset(inside)
    outside = tmp_path / "secret.png"
    outside.write_bytes(_PNG)
    os.remove(inside / "img/a/1.png")
    os.symlink(outside, inside / "img/a/1.png")
    with pytest.raises(DataError, match=r"line\(s\) 3 are symlinks leading outside"):
        load_manifest(_write_csv(inside, df), DataConfig())


def test_patient_leakage_and_missing_training_class_and_one_class(tmp_path):
    df = _dataset(tmp_path, patients=True)
    leak = df.copy()
    leak.loc[4, "patient_id"] = leak.loc[0, "patient_id"]  # a train patient also in val
    with pytest.raises(DataError, match=r"1 patient\(s\) appear in more than one split \(leakage"):
        load_manifest(_write_csv(tmp_path, leak), DataConfig())
    notrain = df.copy()
    notrain.loc[notrain["label"] == "b", "split"] = "test"
    with pytest.raises(DataError, match=r"class\(es\) \['b'\] have no training example"):
        load_manifest(_write_csv(tmp_path, notrain), DataConfig())
    one = df[df["label"] == "a"]
    with pytest.raises(DataError, match="only one class"):
        load_manifest(_write_csv(tmp_path, one), DataConfig())
    weird = df.copy()
    weird.loc[0, "split"] = "training-set"
    with pytest.raises(DataError, match="unknown split value"):
        load_manifest(_write_csv(tmp_path, weird), DataConfig())


def test_made_split_is_grouped_stratified_seeded_and_order_free():
    rng = np.random.default_rng(0)
    n = 3000
    patients = rng.integers(0, 600, n).astype(str)
    # Label mostly determined by patient, as in real data.
    labels = np.where(pd.Series(patients).astype(int) % 4 == 0, "sick", "healthy")
    df = pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": labels, "patient_id": patients})
    s = make_split(df["label"], df["patient_id"], (0.7, 0.1, 0.2), seed=1, ids=df["path"])
    df["split"] = s
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    frac = df["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.05 and abs(frac["val"] - 0.1) < 0.04 and abs(frac["test"] - 0.2) < 0.05
    for sp in ("train", "val", "test"):
        sick = (df.loc[df["split"] == sp, "label"] == "sick").mean()
        assert abs(sick - (labels == "sick").mean()) < 0.06
    shuffled = df.sample(frac=1.0, random_state=3)
    s2 = make_split(shuffled["label"], shuffled["patient_id"], (0.7, 0.1, 0.2), seed=1, ids=shuffled["path"])
    assert (pd.Series(s2, index=shuffled.index).sort_index() == df["split"]).all()
    s3 = make_split(df["label"], df["patient_id"], (0.7, 0.1, 0.2), seed=2, ids=df["path"])
    assert (s3 != df["split"].to_numpy()).any()


def test_manifest_without_split_column_gets_a_patient_grouped_split(tmp_path):
    df = _dataset(tmp_path, n_per_class=20, split=False, patients=True)
    out = load_manifest(_write_csv(tmp_path, df), DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=5))
    assert set(out["split"]) == {"train", "val", "test"}
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    assert out.attrs["split_made"] == [True]


def test_label_subsample_stratified_seeded_nested():
    labels = pd.Series(["a"] * 900 + ["b"] * 100)
    keys = pd.Series([f"img{i}.png" for i in range(1000)])
    m10 = label_subsample(labels, keys, 0.1, seed=0)
    m20 = label_subsample(labels, keys, 0.2, seed=0)
    assert m10.sum() == 100 and labels[m10].value_counts().to_dict() == {"a": 90, "b": 10}
    assert np.all(m20[m10])  # nested
    assert not np.array_equal(m10, label_subsample(labels, keys, 0.1, seed=1))
    tiny = label_subsample(pd.Series(["a"] * 50 + ["b"] * 2), pd.Series([str(i) for i in range(52)]), 0.01, 0)
    assert tiny.sum() == 2  # every class keeps at least one example


def test_multilabel_and_ordinal_labels(tmp_path):
    df = _dataset(tmp_path, classes=("x", "y"))
    df["label"] = ["Effusion|Edema", "none", "?Edema|Effusion", "Edema"] * 3
    out = load_manifest(_write_csv(tmp_path, df), DataConfig(task="multilabel"))
    assert out.attrs["classes"] == ["Edema", "Effusion"]
    y = encode_labels(out["label"][:4], ["Edema", "Effusion"], "multilabel")
    assert y[0].tolist() == [1, 1] and y[1].tolist() == [0, 0]
    assert np.isnan(y[2, 0]) and y[2, 1] == 1 and y[3].tolist() == [1, 0]
    bad = df.copy()
    bad.loc[0, "label"] = "Efusion"
    with pytest.raises(DataError, match="did you mean 'Effusion'"):
        load_manifest(_write_csv(tmp_path, bad), DataConfig(task="multilabel", classes=["Edema", "Effusion"]))
    df["label"] = ["0", "2", "10", "1"] * 3
    out = load_manifest(_write_csv(tmp_path, df), DataConfig(task="ordinal"))
    assert out.attrs["classes"] == ["0", "1", "2", "10"]
    assert encode_labels(["10", "1"], out.attrs["classes"], "ordinal").tolist() == [3.0, 1.0]


def test_union_of_manifests_has_sources(tmp_path):
    a, b = tmp_path / "siteA", tmp_path / "siteB"
    a.mkdir(), b.mkdir()
    ua, ub = _write_csv(a, _dataset(a)), _write_csv(b, _dataset(b, split=False))
    out = load_manifest(None, DataConfig(manifest=ua, extra_manifests=[ub]))
    assert len(out) == 24
    assert out["source"].value_counts().to_dict() == {"siteA": 12, "siteB": 12}
    assert out.attrs["split_made"] == [False, True]


def test_100k_rows_stay_fast(tmp_path):
    n = 100_000
    df = pd.DataFrame(
        {
            "path": [f"img/{i % 100}/{i}.png" for i in range(n)],
            "label": np.where(np.arange(n) % 3 == 0, "pneumonia", "normal"),
            "patient_id": [f"p{i // 3}" for i in range(n)],
        }
    )
    uri = _write_csv(tmp_path, df)
    t = time.perf_counter()
    out = load_manifest(uri, DataConfig(), check_files=False)
    elapsed = time.perf_counter() - t
    assert len(out) == n and out.groupby("patient_id")["split"].nunique().max() == 1
    assert elapsed < 15, f"load_manifest on 100k rows took {elapsed:.1f}s"


@pytest.mark.s3
def test_s3_manifest_relative_paths_and_missing_files(s3_root):
    root = storage.join(s3_root, "ds")
    rows = []
    for c in ("a", "b"):
        for i in range(4):
            storage.write_bytes(storage.join(root, f"img/{c}/{i}.png"), _PNG)
            rows.append({"path": f"img/{c}/{i}.png", "label": c, "split": "train" if i < 3 else "test"})
    storage.write_text(storage.join(root, "manifest.csv"), pd.DataFrame(rows).to_csv(index=False))
    out = load_manifest(storage.join(root, "manifest.csv"), DataConfig())
    assert out["path"].iloc[0] == storage.join(root, "img/a/0.png")
    storage.delete(storage.join(root, "img/b/2.png"))
    with pytest.raises(DataError, match=r"1 of 8 image file\(s\) do not exist, e\.g\. s3://.*img/b/2\.png"):
        load_manifest(storage.join(root, "manifest.csv"), DataConfig())
