"""Manifests: the table of ``path,label[,split,patient_id]`` every stage starts from.

Why strict, early checks: a wrong label, a missing file or a patient in both train and test
otherwise surfaces hours later as a crash in a Ray worker or, worse, as an optimistic test score.
Every check runs before any image is decoded and fails with a :class:`DataError` that names the
manifest, the problem and the fix. Messages give manifest line numbers, never patient IDs.

:func:`load_manifest` runs the named checks of the package's modules in order: ``table``
(formats, columns), ``paths`` (resolved inside the manifest's folder, unique, present),
``labels`` (known classes, each one trained on) and ``splits`` (given or made, no leakage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

from medxfer import storage
from medxfer.config import DataConfig
from medxfer.data.manifest.imported import recorded_order
from medxfer.data.manifest.labels import (
    check_class_count,
    check_every_class_trains,
    check_labels,
    encode_labels,
    infer_classes,
    split_findings,
)
from medxfer.data.manifest.paths import check_image_files, check_no_duplicates, image_paths, path_rows
from medxfer.data.manifest.splits import (
    SPLIT_ALIASES,
    SPLITS,
    check_no_leakage,
    check_train_not_empty,
    hash_keys,
    label_subsample,
    make_split,
    normalize_splits,
    portable_keys,
    split_counts,
    split_of,
)
from medxfer.data.manifest.table import check_columns, lines, read_table
from medxfer.errors import DataError

__all__ = ["SPLITS", "SPLIT_ALIASES", "encode_labels", "fingerprint", "hash_keys", "image_paths", "infer_classes",
           "label_subsample", "load_manifest", "make_split", "portable_keys", "read_table", "split_counts",
           "split_findings"]


def _load_one(uri: str, data_cfg: DataConfig, source: str) -> tuple[pd.DataFrame, bool]:
    """One manifest's rows (paths resolved, labels present, splits normalised) and whether medxfer
    made its split."""
    raw = read_table(uri)
    check_columns(raw, uri)
    df = path_rows(raw, uri, ("path", "label", "split", "patient_id", "source"))
    empty_label = df["label"].isna().to_numpy()
    if empty_label.any():
        raise DataError(
            f"{uri}: empty or missing label at line(s) {lines(df.loc[empty_label, '_line'])}; every image "
            "needs a label (multilabel: use 'none' for no finding)"
        )
    df["source"] = df["source"].fillna(source) if "source" in df.columns else source
    if "split" in df.columns:
        df["split"] = normalize_splits(df, uri).to_numpy()
        return df, False
    df["split"] = split_of(df, data_cfg.split_fractions, data_cfg.split_seed, uri)
    return df, True


def _source_names(uris: list[str]) -> list[str]:
    names: list[str] = []
    for u in uris:
        base = storage.basename(storage.parent(storage.normalize(u))) or "manifest"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _manifest_uris(uri_or_list: str | Sequence[str] | None, data_cfg: DataConfig) -> list[str]:
    if uri_or_list is None:
        if not data_cfg.manifest:
            raise DataError("data.manifest is not set; point it at a manifest (CSV, JSON lines or Parquet)")
        return [data_cfg.manifest, *data_cfg.extra_manifests]
    uris = [uri_or_list] if isinstance(uri_or_list, str) else list(uri_or_list)
    if not uris:
        raise DataError("no manifest given")
    return uris


def load_manifest(
    uri_or_list: str | Sequence[str] | None,
    data_cfg: DataConfig,
    check_files: bool = True,
) -> pd.DataFrame:
    """Load, resolve, split and validate one or several manifests (their union).

    Returns columns ``path, label, split, source`` and ``patient_id`` when any manifest has it;
    ``df.attrs["classes"]`` holds the class list. Raises DataError on the first failed check.
    ``check_files``: also check that every file exists (one listing per S3 prefix).
    """
    uris = _manifest_uris(uri_or_list, data_cfg)
    what = uris[0] if len(uris) == 1 else f"manifests {uris}"
    loaded = [_load_one(uri, data_cfg, src) for uri, src in zip(uris, _source_names(uris), strict=True)]
    parts, made = [p for p, _ in loaded], [m for _, m in loaded]
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)

    classes = infer_classes(df, data_cfg, recorded_order(uris[0]))
    check_labels(df, classes, data_cfg, what)
    check_no_duplicates(df, what, several=len(uris) > 1)
    check_no_leakage(df, what)
    check_class_count(classes, data_cfg.task, what)
    check_every_class_trains(check_train_not_empty(df, what), classes, data_cfg.task, what)
    if check_files:
        check_image_files(df, uris, what)

    cols = ["path", "label", "split", "source"] + (["patient_id"] if "patient_id" in df.columns else [])
    out = df[cols].reset_index(drop=True)
    out.attrs["classes"] = classes
    out.attrs["manifests"] = uris
    out.attrs["split_made"] = made
    return out


def fingerprint(df: pd.DataFrame) -> str:
    """sha256 of the resolved manifest (paths, labels, splits, sources, patients) in row order."""
    cols = [c for c in ("path", "label", "split", "source", "patient_id") if c in df.columns]
    return hashlib.sha256(df[cols].to_csv(index=False).encode("utf-8")).hexdigest()
