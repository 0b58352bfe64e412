"""A manifest's image paths: resolved against its folder, kept inside it, unique, and present.

Relative paths resolve against the manifest's folder and may not leave it — neither by ``..``
nor through a symlink pointing outside — since a manifest copied from elsewhere could otherwise
make any readable file a training image. Absolute paths and URIs are taken as they are, if a
storage backend serves their scheme; a ``file://`` URI is the path it holds, relative or absolute,
under the same rules. Messages give manifest line numbers, never patient IDs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.data.manifest.table import MAX_LISTED, as_str, fmt_of, lines, read_table
from medxfer.errors import DataError


def manifest_folder(uri: str) -> str:
    """The folder a manifest's relative paths resolve against."""
    return storage.parent(storage.normalize(uri))


def resolve_paths(paths: pd.Series, uri: str, line_numbers: np.ndarray) -> tuple[list[str], list[bool]]:
    """``(resolved paths, relative?)`` for a manifest's path column; '..' escapes and unknown schemes refused.

    A ``file://`` URI follows the rules of the path it holds (:func:`medxfer.storage.resolve_names`):
    ``file://../x.png`` is refused like ``../x.png``, ``file://img/x.png`` is checked for symlinks like
    ``img/x.png``.
    """
    r = storage.resolve_names(manifest_folder(uri), paths.astype(str).tolist())
    bad_scheme = [int(line_numbers[i]) for i in r.schemes if not storage.supported(r.uris[i])]
    if bad_scheme:
        raise DataError(f"{uri}: unsupported URI scheme at line(s) {lines(bad_scheme)}; use local paths or "
                        f"{', '.join(s + '://' for s in storage.schemes() if s != 'file')}")
    if r.leaving:
        raise DataError(
            f"{uri}: relative path(s) leave the manifest's folder via '..' at line(s) "
            f"{lines([int(line_numbers[i]) for i in r.leaving])}; use paths inside the folder, or absolute paths/URIs"
        )
    return r.uris, r.relative


def path_rows(raw: pd.DataFrame, uri: str, columns: Sequence[str]) -> pd.DataFrame:
    """Manifest rows with line numbers and resolved paths; ``columns`` copied as stripped strings."""
    if raw.empty:
        raise DataError(f"{uri}: the manifest has a header but no rows")
    header_lines = 2 if fmt_of(uri, b"") in ("csv", "tsv") else 1
    df = pd.DataFrame({"_line": np.arange(len(raw)) + header_lines, "_manifest": uri})
    for col in columns:
        if col in raw.columns:
            df[col] = as_str(raw[col]).to_numpy()
    empty_path = df["path"].isna().to_numpy()
    if empty_path.any():
        raise DataError(f"{uri}: empty path at line(s) {lines(df.loc[empty_path, '_line'])}")
    df["path"], df["_relative"] = resolve_paths(df["path"], uri, df["_line"].to_numpy())
    return df


def check_symlinks(df: pd.DataFrame, uri: str) -> None:
    """Relative paths must not reach outside the manifest's folder through symlinks."""
    rel = df[df["_relative"]]
    if rel.empty:
        return
    leaving = set(storage.links_leaving(manifest_folder(uri), rel["path"].tolist()))
    bad = rel.loc[rel["path"].isin(leaving), "_line"].tolist()
    if bad:
        raise DataError(
            f"{uri}: path(s) at line(s) {lines(sorted(set(bad)))} are symlinks leading outside the manifest's "
            "folder; copy the files in, or list their absolute paths"
        )


def check_no_duplicates(df: pd.DataFrame, what: str, several: bool) -> None:
    dup = df["path"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    d = df.loc[dup]
    where = [f"{m}:{line}" if several else str(line) for m, line in zip(d["_manifest"], d["_line"], strict=True)]
    raise DataError(
        f"{what}: {int(df['path'].duplicated().sum())} duplicate path(s) (lines {lines(where)}); "
        "each image may appear once"
    )


def check_image_files(df: pd.DataFrame, uris: list[str], what: str) -> None:
    """No symlink out of any manifest's folder, and every file present (one listing per S3 prefix)."""
    for uri in uris:
        check_symlinks(df[df["_manifest"] == uri], uri)
    missing = storage.missing(df["path"].tolist())
    if missing:
        raise DataError(
            f"{what}: {len(missing)} of {len(df)} image file(s) do not exist or are not regular files "
            "(a folder, a FIFO, a device), e.g. "
            f"{', '.join(missing[:MAX_LISTED])}; fix the paths (relative paths resolve against the manifest's folder)"
        )


def image_paths(uri: str) -> list[str]:
    """The checked image paths of a manifest whose labels are not needed (prediction inputs).

    The same rules as a training manifest's: relative paths resolve against the manifest's
    folder, and neither '..' nor a symlink may lead out of it.
    """
    raw = read_table(uri)
    if "path" not in raw.columns:
        raise DataError(f"{uri}: the manifest needs a 'path' column; found {', '.join(map(repr, raw.columns))}")
    df = path_rows(raw, uri, ("path",))
    check_symlinks(df, uri)
    return df["path"].tolist()
