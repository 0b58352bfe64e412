"""Reading a manifest file into a table: CSV (UTF-8, BOM tolerated; ``.tsv`` tab-separated), JSON
lines (or a JSON array) and Parquet, from any storage; and the required columns.

Why strict here: a manifest saved with semicolons or with ``class`` instead of ``label`` should
fail at once with the fix, not as a missing column deep inside a Ray task.
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Sequence

import pandas as pd

from medxfer import storage
from medxfer.errors import DataError

MAX_LISTED = 5
_COLUMN_HINTS = {
    "path": ("file", "filename", "file_name", "image", "image_path", "filepath", "img", "uri", "dicom"),
    "label": ("class", "target", "diagnosis", "finding", "findings", "labels", "y", "grade"),
}


def lines(rows: Sequence, n: int = MAX_LISTED) -> str:
    """A few manifest line numbers for a message, and how many there are in all."""
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:n])
    return shown + (f" ... ({len(rows)} in all)" if len(rows) > n else "")


def fmt_of(uri: str, raw: bytes) -> str:
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


def _parse_text(raw: bytes, uri: str, fmt: str) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{uri}: not UTF-8 text; save the manifest as UTF-8") from None
    if not text.strip():
        raise DataError(f"{uri}: the manifest is empty")
    if fmt == "json":
        if text.lstrip().startswith("["):
            return pd.DataFrame(json.loads(text))
        return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    return pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                       na_values=[""], skipinitialspace=True)


def read_table(uri: str) -> pd.DataFrame:
    """Read a manifest file into a raw DataFrame (column names lower-cased and stripped)."""
    raw = storage.read_bytes(uri)
    fmt = fmt_of(uri, raw)
    try:
        df = pd.read_parquet(io.BytesIO(raw)) if fmt == "parquet" else _parse_text(raw, uri, fmt)
    except DataError:
        raise
    except UnicodeEncodeError:  # JSON's "\\udcff" escapes: text no table (and no UTF-8 file) can hold
        raise DataError(f"{uri}: holds a lone surrogate escape (\\ud800-\\udfff), which is not text; name a file "
                        "whose name is not UTF-8 by its file:// URI with %XX bytes (file://img/M%FCller.png)") from None
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{uri}: could not parse the manifest as {fmt.upper()}: {first}") from None
    df.columns = [str(c).replace("\ufeff", "").strip().lower() for c in df.columns]
    return df


def as_str(s: pd.Series) -> pd.Series:
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


def check_columns(df: pd.DataFrame, uri: str) -> None:
    """``path`` and ``label`` present; otherwise the likely cause (wrong delimiter, a column to rename)."""
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
