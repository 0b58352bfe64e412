"""CSV files written for people to open in a spreadsheet: text cells that cannot run as formulas.

Why: a file name, a class label or an error reason comes from whoever filled the folder or wrote
the manifest, and a spreadsheet runs a cell beginning with ``=``, ``+``, ``-`` or ``@`` as a
formula (``=HYPERLINK(...)``, ``=cmd|...``); a tab or a carriage return at the start hides what
follows. As OWASP recommends for CSV injection, such a text cell gets a leading single quote
(shown as text, not run), and every text cell is double-quoted (so a CR or LF inside one cannot
start a row). Numbers are never touched: a negative score stays a number. Parquet outputs keep
the raw values, and manifests medxfer reads back are written unchanged (they are input, and a
quote would change the name read).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

#: First characters a spreadsheet treats as the start of a formula (or that hide a cell's start).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """A cell as written: text neutralised, numbers as numbers, missing values empty."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def rows_to_csv(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """CSV text (a header row, then ``rows``) with every text cell neutralised and quoted."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    w.writerow([safe_cell(h) for h in header])
    for row in rows:
        w.writerow([safe_cell(v) for v in row])
    return buf.getvalue()


def frame_to_csv(df: pd.DataFrame) -> str:
    """``df`` (without its index) as :func:`rows_to_csv` writes it."""
    return rows_to_csv([str(c) for c in df.columns], df.itertuples(index=False, name=None))
