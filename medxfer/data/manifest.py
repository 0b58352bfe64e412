"""Manifests: the table of ``path,label[,split,patient_id]`` every stage starts from.

Why strict, early checks: a wrong label, a missing file or a patient in both train and test
otherwise surfaces hours later as a crash in a Ray worker or, worse, as an optimistic test score.
Every check here runs before any image is decoded and fails with a :class:`DataError` that names
the manifest, the problem and the fix. Messages give manifest line numbers, never patient IDs.

Formats: CSV (UTF-8, BOM tolerated; ``.tsv`` tab-separated), JSON lines (or a JSON array) and
Parquet, local or ``s3://``. Relative paths resolve against the manifest's folder and may not
leave it (no ``..`` escapes, no symlinks pointing outside); absolute paths and ``s3://`` URIs are
taken as they are.

Labels by task:

* ``multiclass``: one class name per row.
* ``multilabel``: findings separated by ``|`` (``Effusion|Cardiomegaly``). A finding prefixed
  with ``?`` (``?Edema``) is *unknown* for that image: its target is NaN and losses/metrics mask
  it. Findings not listed are negative. The token ``none`` alone means "no positive finding"
  (unless ``none`` is itself a class).
* ``ordinal``: an integer grade (``0``..``4``); ``data.classes`` may name the grades in order.

Splits: a ``split`` column (train/val/test; ``valid``/``validation``/``dev`` mean val) is used
as given and checked for patient leakage. Without one, a seeded split stratified by label and
grouped by ``patient_id`` is made; it depends only on the rows' content, not their order.
``label_fraction`` subsampling (:func:`label_subsample`) is stratified, seeded and nested: the
10% subset is contained in the 20% subset for the same seed.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import posixpath
import stat
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import DataConfig
from medxfer.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}
MULTILABEL_SEP = "|"
UNKNOWN_PREFIX = "?"
NONE_TOKEN = "none"
_COLUMN_HINTS = {
    "path": ("file", "filename", "file_name", "image", "image_path", "filepath", "img", "uri", "dicom"),
    "label": ("class", "target", "diagnosis", "finding", "findings", "labels", "y", "grade"),
}
_MAX_LISTED = 5


def _lines(rows: Sequence[int], n: int = _MAX_LISTED) -> str:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:n])
    return shown + (f" ... ({len(rows)} in all)" if len(rows) > n else "")


# ----------------------------------------------------------------------------- reading


def _fmt_of(uri: str, raw: bytes) -> str:
    name = str(uri).split("?", 1)[0].lower()
    if name.endswith((".parquet", ".pq")) or raw[:4] == b"PAR1":
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "json"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".csv", ".txt")):
        return "csv"
    head = raw[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" if head[:1] in (b"{", b"[") else "csv"


def read_table(uri: str) -> pd.DataFrame:
    """Read a manifest file into a raw DataFrame (column names lower-cased and stripped)."""
    raw = storage.read_bytes(uri)
    fmt = _fmt_of(uri, raw)
    try:
        if fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(raw))
        else:
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise DataError(f"{uri}: not UTF-8 text; save the manifest as UTF-8") from None
            if not text.strip():
                raise DataError(f"{uri}: the manifest is empty")
            if fmt == "json":
                if text.lstrip().startswith("["):
                    df = pd.DataFrame(json.loads(text))
                else:
                    df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
            else:
                df = pd.read_csv(
                    io.StringIO(text),
                    sep="\t" if fmt == "tsv" else ",",
                    dtype=str,
                    keep_default_na=False,
                    na_values=[""],
                    skipinitialspace=True,
                )
    except DataError:
        raise
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{uri}: could not parse the manifest as {fmt.upper()}: {first}") from None
    df.columns = [str(c).replace("\ufeff", "").strip().lower() for c in df.columns]
    return df


def _as_str(s: pd.Series) -> pd.Series:
    """Stripped strings with None for missing/empty; integral floats (1.0 from Parquet/JSON) become '1'."""

    def one(v):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        t = str(v).strip()
        return t or None

    if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        t = s.str.strip()  # vectorised fast path (CSV columns)
        t = t.astype(object)
        return t.where(t.notna() & (t != ""), None)
    return pd.Series([one(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)


def _check_columns(df: pd.DataFrame, uri: str) -> None:
    cols = list(df.columns)
    missing = [c for c in ("path", "label") if c not in cols]
    if not missing:
        return
    if len(cols) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
            if sep in cols[0]:
                raise DataError(
                    f"{uri}: the header {cols[0]!r} looks separated by {name}, not commas; save the "
                    "manifest as comma-separated CSV (or name it .tsv for tabs) with columns path,label"
                )
    hints = []
    for m in missing:
        alias = next((c for c in cols if c in _COLUMN_HINTS[m]), None)
        close = alias or next(iter(difflib.get_close_matches(m, cols, n=1, cutoff=0.6)), None)
        if close:
            hints.append(f"rename column {close!r} to {m!r}")
    raise DataError(
        f"{uri}: missing required column(s) {', '.join(missing)}; found {', '.join(map(repr, cols)) or 'none'}. "
        "A manifest needs path,label and optionally split,patient_id"
        + (f" ({'; '.join(hints)})" if hints else "")
    )


# ----------------------------------------------------------------------------- paths


def _resolve_paths(paths: pd.Series, uri: str, lines: np.ndarray) -> list[str]:
    """Relative -> absolute against the manifest's folder, refusing escapes via '..'."""
    base = storage.parent(storage.normalize(uri))
    remote = storage.is_remote(base)
    sep = "/" if remote else os.sep
    # Fast path (vectorised): plain relative paths need only a prefix.
    plain = ~(
        paths.str.contains("://", regex=False) | paths.str.startswith("/") | paths.str.startswith(".")
        | paths.str.contains("\\", regex=False) | paths.str.contains("/.", regex=False)
        | paths.str.contains("//", regex=False)
    )
    if bool(plain.all()):
        return (base.rstrip(sep) + sep + paths.astype(str)).tolist() if sep == "/" else [
            os.path.join(base, p) for p in paths
        ]
    out: list[str] = []
    escapes: list[int] = []
    bad_scheme: list[int] = []
    base_prefix = base.rstrip("/") + "/"
    local_prefix = base.rstrip(os.sep) + os.sep
    for p, line in zip(paths.tolist(), lines.tolist(), strict=True):
        if p.startswith("s3://"):
            out.append(p.rstrip("/"))
            continue
        if p.startswith("file://"):
            out.append(os.path.normpath(p[len("file://"):]))
            continue
        if "://" in p:
            bad_scheme.append(line)
            out.append(p)
            continue
        if p.startswith("/"):
            out.append(os.path.normpath(p))
            continue
        rel = p.replace("\\", "/")
        if remote:
            scheme, rest = base.split("://", 1)
            joined = f"{scheme}://" + posixpath.normpath(f"{rest}/{rel}")
            ok = joined.startswith(base_prefix)
        else:
            joined = os.path.normpath(os.path.join(base, rel))
            ok = joined.startswith(local_prefix)
        if not ok:
            escapes.append(line)
        out.append(joined)
    if bad_scheme:
        raise DataError(f"{uri}: unsupported URI scheme at line(s) {_lines(bad_scheme)}; use s3:// or local paths")
    if escapes:
        raise DataError(
            f"{uri}: relative path(s) leave the manifest's folder via '..' at line(s) {_lines(escapes)}; "
            "use paths inside the folder, or absolute paths/URIs"
        )
    return out


def _check_symlinks(df: pd.DataFrame, uri: str) -> None:
    """Relative local paths must not reach outside the manifest folder through symlinks."""
    base = storage.parent(storage.normalize(uri))
    if storage.is_remote(base):
        return
    rel = df[df["_relative"] & ~df["path"].str.startswith("s3://")]
    if rel.empty:
        return
    real_base = os.path.realpath(base)
    bad: list[int] = []
    # Directories first (few), then files that are links themselves (one lstat each).
    parents = pd.Series([os.path.dirname(p) for p in rel["path"]], index=rel.index)
    for d in parents.unique():
        if not storage.inside(d, real_base):
            bad.extend(rel.loc[parents == d, "_line"].tolist())
    for p, line in zip(rel["path"].tolist(), rel["_line"].tolist(), strict=True):
        try:
            if stat.S_ISLNK(os.lstat(p).st_mode) and not storage.inside(p, real_base):
                bad.append(line)
        except OSError:
            pass  # missing files are reported by the existence check
    if bad:
        raise DataError(
            f"{uri}: path(s) at line(s) {_lines(sorted(set(bad)))} are symlinks leading outside the manifest's "
            "folder; copy the files in, or list their absolute paths"
        )


def _missing_files(paths: list[str]) -> list[str]:
    """Paths that do not exist. S3: one listing per bucket prefix, not one request per file."""
    missing: list[str] = []
    s3 = [p for p in paths if p.startswith("s3://")]
    local = [p for p in paths if not p.startswith("s3://")]
    for p in local:
        if not os.path.isfile(p):
            missing.append(p)
    if s3:
        by_bucket: dict[str, list[str]] = {}
        for p in s3:
            b, k = storage.split_s3(p)
            by_bucket.setdefault(b, []).append(k)
        for b, keys in by_bucket.items():
            prefix = os.path.commonprefix(keys)
            prefix = prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""
            listed = storage.list_files(f"s3://{b}/{prefix}".rstrip("/")) if prefix else storage.list_files(f"s3://{b}")
            have = {storage.split_s3(u)[1] for u in listed}
            missing.extend(f"s3://{b}/{k}" for k in keys if k not in have)
    return missing


# ----------------------------------------------------------------------------- labels


def split_findings(label: str) -> tuple[list[str], list[str]]:
    """Multilabel string -> (positive findings, unknown findings)."""
    pos: list[str] = []
    unk: list[str] = []
    for tok in str(label).split(MULTILABEL_SEP):
        tok = tok.strip()
        if not tok:
            continue
        if tok.startswith(UNKNOWN_PREFIX):
            unk.append(tok[len(UNKNOWN_PREFIX):].strip())
        else:
            pos.append(tok)
    return pos, unk


def _natural_sorted(values) -> list[str]:
    vals = sorted(set(values))
    try:
        return sorted(vals, key=lambda v: float(v))
    except ValueError:
        return vals


def _findings_of(labels: pd.Series, classes: Sequence[str] | None = None) -> pd.Series:
    """All finding names mentioned (positive or unknown), one per entry."""
    toks = labels.str.split(MULTILABEL_SEP, regex=False).explode().str.strip()
    toks = toks[toks.notna() & (toks != "")]
    toks = toks.str.lstrip(UNKNOWN_PREFIX).str.strip()
    if not (classes and NONE_TOKEN in classes):
        toks = toks[toks.str.lower() != NONE_TOKEN]
    return toks


def infer_classes(df: pd.DataFrame, data_cfg: DataConfig) -> list[str]:
    """``data.classes`` if given, else the sorted labels (numerically sorted when all are numbers)."""
    if data_cfg.classes:
        return [str(c) for c in data_cfg.classes]
    if data_cfg.task == "multilabel":
        return _natural_sorted(_findings_of(df["label"]).unique())
    return _natural_sorted(df["label"].unique())


def encode_labels(labels: Sequence[str], classes: Sequence[str], task: str) -> np.ndarray:
    """Label strings -> training targets: int64 index; float32 (N,K) 0/1/NaN; float32 grade."""
    index = {c: i for i, c in enumerate(classes)}
    labels = list(labels)
    if task == "multiclass":
        return np.fromiter((index[x] for x in labels), dtype=np.int64, count=len(labels))
    if task == "ordinal":
        return np.fromiter((index[x] for x in labels), dtype=np.float32, count=len(labels))
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, lab in enumerate(labels):
        pos, unk = split_findings(lab)
        for f in pos:
            if f in index:
                out[i, index[f]] = 1.0
        for f in unk:
            if f in index:
                out[i, index[f]] = np.nan
    return out


def _check_labels(df: pd.DataFrame, classes: list[str], data_cfg: DataConfig, what: str) -> None:
    task = data_cfg.task
    if task == "multilabel":
        toks = _findings_of(df["label"], classes)
        unknown = toks[~toks.isin(classes)]
        counts = unknown.value_counts()
    else:
        counts = df.loc[~df["label"].isin(classes), "label"].value_counts()
    if not counts.empty:
        parts = []
        for lab, n in list(counts.items())[:_MAX_LISTED]:
            close = difflib.get_close_matches(str(lab), classes, n=1, cutoff=0.5)
            ci = [c for c in classes if c.lower() == str(lab).lower()]
            hint = f" (did you mean {(ci or close)[0]!r}?)" if (ci or close) else ""
            parts.append(f"{lab!r} x{n}{hint}")
        more = f" and {len(counts) - _MAX_LISTED} more" if len(counts) > _MAX_LISTED else ""
        raise DataError(
            f"{what}: label(s) not in data.classes {classes}: {', '.join(parts)}{more}; fix the manifest "
            "or add them to data.classes"
        )
    if task == "ordinal" and not data_cfg.classes:
        bad = [c for c in classes if not _is_int(c)]
        if bad:
            raise DataError(
                f"{what}: ordinal labels must be integer grades; found {bad[:_MAX_LISTED]}. "
                "Use grades 0..N, or name the grades in order in data.classes"
            )


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- splits


def _hash_keys(values: pd.Series, seed: int) -> np.ndarray:
    """A seeded pseudo-random number per value, independent of row order."""
    key = f"medxfer{int(seed) % 10**9:09d}"[:16]
    return pd.util.hash_pandas_object(values.astype(str).reset_index(drop=True), index=False, hash_key=key).to_numpy()


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
    grp["key"] = _hash_keys(pd.Series(np.asarray(uniques, dtype=object)[grp["gid"].to_numpy()]), seed)
    grp = grp.sort_values(["y", "key"], kind="mergesort")
    cum = grp.groupby("y", sort=False)["size"].cumsum().to_numpy()
    total = grp.groupby("y", sort=False)["size"].transform("sum").to_numpy()
    mid = (cum - grp["size"].to_numpy() / 2.0) / total
    f0, f1 = float(fractions[0]), float(fractions[1])
    gsplit = np.where(mid < f0, "train", np.where(mid < f0 + f1, "val", "test"))
    by_gid = np.empty(len(uniques), dtype=object)
    by_gid[grp["gid"].to_numpy()] = gsplit
    return by_gid[gid]


def label_subsample(labels: pd.Series, keys: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask keeping a stratified, seeded ``fraction`` of rows (at least one per label).

    Nested across fractions: rows are ranked by a seeded hash of ``keys`` (paths) within each
    label, and the first ``round(fraction * n)`` are kept.
    """
    n = len(labels)
    if fraction >= 1.0 or n == 0:
        return np.ones(n, dtype=bool)
    df = pd.DataFrame({"y": labels.astype(str).to_numpy(), "k": _hash_keys(keys, seed), "i": np.arange(n)})
    df = df.sort_values(["y", "k"], kind="mergesort")
    rank = df.groupby("y", sort=False).cumcount().to_numpy()
    size = df.groupby("y", sort=False)["i"].transform("size").to_numpy()
    keep_n = np.maximum(1, np.round(size * fraction)).astype(int)
    mask = np.zeros(n, dtype=bool)
    mask[df["i"].to_numpy()[rank < keep_n]] = True
    return mask


# ----------------------------------------------------------------------------- loading


def _path_rows(raw: pd.DataFrame, uri: str, columns: Sequence[str]) -> pd.DataFrame:
    """Manifest rows with line numbers and resolved paths ('..' escapes refused); ``columns`` copied."""
    if raw.empty:
        raise DataError(f"{uri}: the manifest has a header but no rows")
    header_lines = 2 if _fmt_of(uri, b"") in ("csv", "tsv") else 1
    df = pd.DataFrame({"_line": np.arange(len(raw)) + header_lines, "_manifest": uri})
    for col in columns:
        if col in raw.columns:
            df[col] = _as_str(raw[col]).to_numpy()
    empty_path = df["path"].isna().to_numpy()
    if empty_path.any():
        raise DataError(f"{uri}: empty path at line(s) {_lines(df.loc[empty_path, '_line'])}")
    rel = ~(df["path"].str.startswith("/") | df["path"].str.contains("://", regex=False))
    df["_relative"] = rel.to_numpy()
    df["path"] = _resolve_paths(df["path"], uri, df["_line"].to_numpy())
    return df


def image_paths(uri: str) -> list[str]:
    """The checked image paths of a manifest whose labels are not needed (prediction inputs).

    The same rules as a training manifest's: relative paths resolve against the manifest's
    folder, and neither '..' nor a symlink may lead out of it.
    """
    raw = read_table(uri)
    if "path" not in raw.columns:
        raise DataError(f"{uri}: the manifest needs a 'path' column; found {', '.join(map(repr, raw.columns))}")
    df = _path_rows(raw, uri, ("path",))
    _check_symlinks(df, uri)
    return df["path"].tolist()


def _load_one(uri: str, data_cfg: DataConfig, source: str) -> pd.DataFrame:
    raw = read_table(uri)
    _check_columns(raw, uri)
    df = _path_rows(raw, uri, ("path", "label", "split", "patient_id", "source"))
    empty_label = df["label"].isna().to_numpy()
    if empty_label.any():
        raise DataError(
            f"{uri}: empty or missing label at line(s) {_lines(df.loc[empty_label, '_line'])}; every image "
            "needs a label (multilabel: use 'none' for no finding)"
        )
    if "source" not in df.columns:
        df["source"] = source
    else:
        df["source"] = df["source"].fillna(source)
    if "split" in df.columns:
        norm = df["split"].str.lower().map(SPLIT_ALIASES)
        bad = norm.isna().to_numpy()
        if bad.any():
            vals = sorted(set(df.loc[bad & df["split"].notna(), "split"].astype(str)))
            empty = int(df.loc[bad, "split"].isna().sum())
            raise DataError(
                f"{uri}: unknown split value(s) {vals[:_MAX_LISTED]}"
                + (f" and {empty} empty split(s)" if empty else "")
                + f" at line(s) {_lines(df.loc[bad, '_line'])}; use train, val or test"
            )
        df["split"] = norm.to_numpy()
    return df


def _source_names(uris: list[str]) -> list[str]:
    names: list[str] = []
    for u in uris:
        base = storage.basename(storage.parent(storage.normalize(u))) or "manifest"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_manifest(
    uri_or_list: str | Sequence[str] | None,
    data_cfg: DataConfig,
    check_files: bool = True,
) -> pd.DataFrame:
    """Load, resolve, split and validate one or several manifests (their union).

    Returns columns ``path, label, split, source`` and ``patient_id`` when any manifest has it;
    ``df.attrs["classes"]`` holds the class list. Raises DataError on the first failed check.
    """
    if uri_or_list is None:
        if not data_cfg.manifest:
            raise DataError("data.manifest is not set; point it at a manifest (CSV, JSON lines or Parquet)")
        uris = [data_cfg.manifest, *data_cfg.extra_manifests]
    elif isinstance(uri_or_list, str):
        uris = [uri_or_list]
    else:
        uris = list(uri_or_list)
    if not uris:
        raise DataError("no manifest given")
    what = uris[0] if len(uris) == 1 else f"manifests {uris}"
    parts = []
    made: list[bool] = []
    for uri, src in zip(uris, _source_names(uris), strict=True):
        part = _load_one(uri, data_cfg, src)
        made.append("split" not in part.columns)
        if made[-1]:
            groups = part["patient_id"] if "patient_id" in part.columns else None
            if groups is not None and groups.isna().any():
                groups = groups.fillna(part["path"])
            strat = part["label"]
            part["split"] = make_split(strat, groups, data_cfg.split_fractions, data_cfg.split_seed, ids=part["path"])
        parts.append(part)
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)

    classes = infer_classes(df, data_cfg)
    _check_labels(df, classes, data_cfg, what)

    dup = df["path"].duplicated(keep=False).to_numpy()
    if dup.any():
        d = df.loc[dup]
        where = [f"{m}:{line}" if len(uris) > 1 else str(line) for m, line in zip(d["_manifest"], d["_line"], strict=True)]
        raise DataError(
            f"{what}: {int(df['path'].duplicated().sum())} duplicate path(s) (lines {_lines(where)}); "
            "each image may appear once"
        )

    if "patient_id" in df.columns:
        pid = df[["source", "patient_id", "split", "_line"]].dropna(subset=["patient_id"])
        nsplit = pid.groupby(["source", "patient_id"], sort=False)["split"].transform("nunique")
        leak = pid[nsplit.to_numpy() > 1]
        if not leak.empty:
            npat = leak.groupby(["source", "patient_id"]).ngroups
            raise DataError(
                f"{what}: {npat} patient(s) appear in more than one split (leakage; e.g. lines "
                f"{_lines(sorted(leak['_line'].tolist()))}); put each patient's images in one split, or drop "
                "the split column to let medxfer make a patient-grouped split"
            )

    if data_cfg.task in ("multiclass", "ordinal") and len(classes) < 2:
        raise DataError(
            f"{what}: only one class ({classes[0] if classes else 'none'!r}); a classifier needs at least two "
            "(check the label column, or data.classes)"
        )
    train = df[df["split"] == "train"]
    if train.empty:
        raise DataError(f"{what}: the train split is empty; check the split column or data.split_fractions")
    if data_cfg.task == "multilabel":
        pos = train["label"].map(lambda s: split_findings(s)[0]).explode()
        present = set(pos.dropna())
    else:
        present = set(train["label"])
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(
            f"{what}: class(es) {absent[:_MAX_LISTED]} have no training example"
            + (" (no positive training label)" if data_cfg.task == "multilabel" else "")
            + "; add examples, drop the class from data.classes, or adjust the split"
        )

    if check_files:
        _check_symlinks_all(df, uris)
        missing = _missing_files(df["path"].tolist())
        if missing:
            raise DataError(
                f"{what}: {len(missing)} of {len(df)} image file(s) do not exist, e.g. "
                f"{', '.join(missing[:_MAX_LISTED])}; fix the paths (relative paths resolve against the "
                "manifest's folder)"
            )

    cols = ["path", "label", "split", "source"] + (["patient_id"] if "patient_id" in df.columns else [])
    out = df[cols].reset_index(drop=True)
    out.attrs["classes"] = classes
    out.attrs["manifests"] = uris
    out.attrs["split_made"] = made
    return out


def _check_symlinks_all(df: pd.DataFrame, uris: list[str]) -> None:
    for uri in uris:
        _check_symlinks(df[df["_manifest"] == uri], uri)


def fingerprint(df: pd.DataFrame) -> str:
    """sha256 of the resolved manifest (paths, labels, splits, sources, patients) in row order."""
    cols = [c for c in ("path", "label", "split", "source", "patient_id") if c in df.columns]
    return hashlib.sha256(df[cols].to_csv(index=False).encode("utf-8")).hexdigest()


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
