"""Train/val/test splits: given ones normalised and checked for patient leakage, made ones seeded,
stratified by label and grouped by patient; label-fraction subsamples.

A ``split`` column (train/val/test; ``valid``/``validation``/``dev`` mean val) is used as given.
Without one, a seeded split stratified by label and grouped by ``patient_id`` is made; it depends
only on the rows' content, not their order. ``label_fraction`` subsampling (:func:`label_subsample`)
is stratified, seeded and nested: the 10% subset is contained in the 20% subset for the same seed.

Both hash each image's name *within its manifest's folder* (:func:`portable_keys`), not the path it
resolves to, so a dataset copied to another disk, bucket or machine together with its manifest
gets the same split and the same labelled subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.data.manifest.labels import encode_labels
from medxfer.data.manifest.paths import manifest_folder
from medxfer.data.manifest.table import MAX_LISTED, lines
from medxfer.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}


def hash_keys(values: pd.Series, seed: int) -> np.ndarray:
    """A seeded pseudo-random number per value, independent of row order."""
    key = f"medxfer{int(seed) % 10**9:09d}"[:16]
    return pd.util.hash_pandas_object(values.astype(str).reset_index(drop=True), index=False, hash_key=key).to_numpy()


def portable_keys(paths: pd.Series, manifests: Sequence[str]) -> pd.Series:
    """Each resolved path's name under the deepest folder of ``manifests`` that holds it (its
    manifest's), else the path itself (an image listed by a URI outside the manifest's folder).

    Seeded choices hash these names: hashing the resolved path would make the split and the
    labelled subset depend on where the dataset happens to lie (``/home/a/data`` against
    ``s3://bucket/data``), so the same experiment in another place would train on other images.
    """
    bases = sorted({manifest_folder(m) for m in manifests}, key=len, reverse=True)
    out = []
    for p in paths.astype(str):
        out.append(next((r for r in (storage.relative_name(p, b) for b in bases) if r is not None), p))
    return pd.Series(out, index=paths.index, dtype=object)


def make_split(
    labels: pd.Series,
    groups: pd.Series | None,
    fractions: Sequence[float],
    seed: int,
    ids: pd.Series | None = None,
) -> np.ndarray:
    """Seeded split stratified by label and grouped by ``groups`` (patients); vectorised.

    Groups of one stratum (a group's stratum is its most common label) are ordered by a seeded
    hash and cut at the cumulative fractions, so strata keep their proportions, a group never
    straddles splits, and the split does not depend on the manifest's row order.
    """
    n = len(labels)
    if n == 0:
        return np.array([], dtype=object)
    y = labels.astype(str).reset_index(drop=True)
    if groups is None:
        g = (ids if ids is not None else y.index.to_series()).astype(str).reset_index(drop=True)
    else:
        g = groups.astype(str).reset_index(drop=True)
    gid, uniques = pd.factorize(g)
    counts = pd.DataFrame({"gid": gid, "y": y}).groupby(["gid", "y"], sort=False).size().reset_index(name="n")
    counts = counts.sort_values(["gid", "n", "y"], ascending=[True, False, True]).drop_duplicates("gid")
    sizes = np.bincount(gid, minlength=len(uniques))
    grp = pd.DataFrame({"gid": counts["gid"].to_numpy(), "y": counts["y"].to_numpy()})
    grp["size"] = sizes[grp["gid"].to_numpy()]
    grp["key"] = hash_keys(pd.Series(np.asarray(uniques, dtype=object)[grp["gid"].to_numpy()]), seed)
    grp = grp.sort_values(["y", "key"], kind="mergesort")
    cum = grp.groupby("y", sort=False)["size"].cumsum().to_numpy()
    total = grp.groupby("y", sort=False)["size"].transform("sum").to_numpy()
    mid = (cum - grp["size"].to_numpy() / 2.0) / total
    f0, f1 = float(fractions[0]), float(fractions[1])
    gsplit = np.where(mid < f0, "train", np.where(mid < f0 + f1, "val", "test"))
    by_gid = np.empty(len(uniques), dtype=object)
    by_gid[grp["gid"].to_numpy()] = gsplit
    return by_gid[gid]


def split_of(part: pd.DataFrame, fractions: Sequence[float], seed: int, manifest: str) -> np.ndarray:
    """The split medxfer makes for one manifest without a split column (rows without a patient
    are their own group)."""
    keys = portable_keys(part["path"], [manifest])
    groups = part["patient_id"] if "patient_id" in part.columns else None
    if groups is not None and groups.isna().any():
        groups = groups.fillna(keys)
    return make_split(part["label"], groups, fractions, seed, ids=keys)


def label_subsample(labels: pd.Series, keys: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask keeping a stratified, seeded ``fraction`` of rows (at least one per label).

    Nested across fractions: rows are ranked by a seeded hash of ``keys`` (names from
    :func:`portable_keys`) within each label, and the first ``round(fraction * n)`` are kept.
    """
    n = len(labels)
    if fraction >= 1.0 or n == 0:
        return np.ones(n, dtype=bool)
    df = pd.DataFrame({"y": labels.astype(str).to_numpy(), "k": hash_keys(keys, seed), "i": np.arange(n)})
    df = df.sort_values(["y", "k"], kind="mergesort")
    rank = df.groupby("y", sort=False).cumcount().to_numpy()
    size = df.groupby("y", sort=False)["i"].transform("size").to_numpy()
    keep_n = np.maximum(1, np.round(size * fraction)).astype(int)
    mask = np.zeros(n, dtype=bool)
    mask[df["i"].to_numpy()[rank < keep_n]] = True
    return mask


def normalize_splits(df: pd.DataFrame, uri: str) -> pd.Series:
    """The split column with aliases mapped to train/val/test; unknown or empty values refused."""
    norm = df["split"].str.lower().map(SPLIT_ALIASES)
    bad = norm.isna().to_numpy()
    if bad.any():
        vals = sorted(set(df.loc[bad & df["split"].notna(), "split"].astype(str)))
        empty = int(df.loc[bad, "split"].isna().sum())
        raise DataError(
            f"{uri}: unknown split value(s) {vals[:MAX_LISTED]}"
            + (f" and {empty} empty split(s)" if empty else "")
            + f" at line(s) {lines(df.loc[bad, '_line'])}; use train, val or test"
        )
    return norm


def check_no_leakage(df: pd.DataFrame, what: str) -> None:
    """No patient (within one source) in more than one split."""
    if "patient_id" not in df.columns:
        return
    pid = df[["source", "patient_id", "split", "_line"]].dropna(subset=["patient_id"])
    nsplit = pid.groupby(["source", "patient_id"], sort=False)["split"].transform("nunique")
    leak = pid[nsplit.to_numpy() > 1]
    if not leak.empty:
        npat = leak.groupby(["source", "patient_id"]).ngroups
        raise DataError(
            f"{what}: {npat} patient(s) appear in more than one split (leakage; e.g. lines "
            f"{lines(sorted(leak['_line'].tolist()))}); put each patient's images in one split, or drop "
            "the split column to let medxfer make a patient-grouped split"
        )


def check_train_not_empty(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """The train rows, refused when there are none."""
    train = df[df["split"] == "train"]
    if train.empty:
        raise DataError(f"{what}: the train split is empty; check the split column or data.split_fractions")
    return train


def split_counts(df: pd.DataFrame, classes: list[str], task: str) -> dict:
    """{split: {"total": n, "per_class": {class: n}}} (multilabel: positives per finding)."""
    out: dict = {}
    for sp in SPLITS:
        part = df[df["split"] == sp]
        if task == "multilabel":
            y = encode_labels(part["label"], classes, task)
            per = {c: int(np.nansum(y[:, i] == 1)) for i, c in enumerate(classes)}
        else:
            vc = part["label"].value_counts()
            per = {c: int(vc.get(c, 0)) for c in classes}
        out[sp] = {"total": int(len(part)), "per_class": per}
    return out
