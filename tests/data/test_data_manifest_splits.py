"""Splits (``medxfer.data.manifest.splits``): made splits grouped, stratified, seeded and order-free;
nested label-fraction subsamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from datautil import dataset, write_csv

from medxfer.config import DataConfig
from medxfer.data.manifest import label_subsample, load_manifest, make_split


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
    df = dataset(tmp_path, n_per_class=20, split=False, patients=True)
    out = load_manifest(write_csv(tmp_path, df), DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=5))
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


def test_split_and_label_subset_do_not_depend_on_where_the_dataset_lies(tmp_path, s3_root):
    """The same dataset and manifest on two disks and in a bucket get the same made split and the
    same labelled subset: both hash each image's name within the manifest's folder, not its
    resolved path (which once made a 25 % subset, and so a result, depend on the folder)."""
    from medxfer import storage
    from medxfer.data.manifest import portable_keys

    a = tmp_path / "site-a" / "data"
    a.mkdir(parents=True)
    write_csv(a, dataset(a, n_per_class=40, split=False))
    b = tmp_path / "elsewhere" / "copy"
    storage.copy_tree(str(a), str(b))
    s3 = storage.join(s3_root, "datasets", "breast")
    storage.copy_tree(str(a), s3)
    cfg = DataConfig(split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    loaded = [load_manifest(storage.join(str(where), "manifest.csv"), cfg) for where in (a, b, s3)]
    assert loaded[0]["path"].iloc[0] != loaded[1]["path"].iloc[0] != loaded[2]["path"].iloc[0]
    splits = [df["split"].tolist() for df in loaded]
    assert splits[0] == splits[1] == splits[2] and set(splits[0]) == {"train", "val", "test"}
    keys = [portable_keys(df["path"], [storage.join(str(where), "manifest.csv")]) for df, where in zip(loaded, (a, b, s3), strict=True)]
    assert keys[0].tolist() == keys[1].tolist() == keys[2].tolist() == loaded[0]["path"].map(
        lambda p: p.split("/data/", 1)[1]).tolist()
    masks = [label_subsample(df["label"], k, 0.25, seed=0) for df, k in zip(loaded, keys, strict=True)]
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2]) and masks[0].sum() == 20
    # The resolved paths alone would have drawn other subsets in other places.
    assert not np.array_equal(label_subsample(loaded[0]["label"], loaded[0]["path"], 0.25, 0),
                              label_subsample(loaded[1]["label"], loaded[1]["path"], 0.25, 0))


def test_portable_keys_use_the_deepest_manifest_folder_and_keep_outside_uris():
    from medxfer.data.manifest import portable_keys

    paths = pd.Series(["/d/x/img/1.png", "/d/x/sub/img/2.png", "s3://other/3.png", "/d/y.png"])
    keys = portable_keys(paths, ["/d/x/manifest.csv", "/d/x/sub/labels.csv"])
    assert keys.tolist() == ["img/1.png", "img/2.png", "s3://other/3.png", "/d/y.png"]
