"""Labels by task, the class list, and the checks that every label is a known class that trains.

* ``multiclass``: one class name per row.
* ``multilabel``: findings separated by ``|`` (``Effusion|Cardiomegaly``). A finding prefixed
  with ``?`` (``?Edema``) is *unknown* for that image: its target is NaN and losses/metrics mask
  it. Findings not listed are negative. The token ``none`` alone means "no positive finding"
  (unless ``none`` is itself a class).
* ``ordinal``: an integer grade (``0``..``4``); ``data.classes`` may name the grades in order.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medxfer.config import DataConfig
from medxfer.data.manifest.imported import in_recorded_order
from medxfer.data.manifest.table import MAX_LISTED
from medxfer.errors import DataError

MULTILABEL_SEP = "|"
UNKNOWN_PREFIX = "?"
NONE_TOKEN = "none"


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


def infer_classes(df: pd.DataFrame, data_cfg: DataConfig, order: Sequence[str] | None = None) -> list[str]:
    """``data.classes`` if given, else the labels found: in ``order`` (the class order an import
    recorded, :mod:`medxfer.data.manifest.imported`), the rest sorted (numerically when all are numbers)."""
    if data_cfg.classes:
        return [str(c) for c in data_cfg.classes]
    if data_cfg.task == "multilabel":
        return in_recorded_order(_natural_sorted(_findings_of(df["label"]).unique()), order)
    return in_recorded_order(_natural_sorted(df["label"].unique()), order)


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


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def check_labels(df: pd.DataFrame, classes: list[str], data_cfg: DataConfig, what: str) -> None:
    """Every label a class (with a 'did you mean'); ordinal labels whole grades unless named."""
    if data_cfg.task == "multilabel":
        toks = _findings_of(df["label"], classes)
        counts = toks[~toks.isin(classes)].value_counts()
    else:
        counts = df.loc[~df["label"].isin(classes), "label"].value_counts()
    if not counts.empty:
        parts = []
        for lab, n in list(counts.items())[:MAX_LISTED]:
            close = difflib.get_close_matches(str(lab), classes, n=1, cutoff=0.5)
            ci = [c for c in classes if c.lower() == str(lab).lower()]
            hint = f" (did you mean {(ci or close)[0]!r}?)" if (ci or close) else ""
            parts.append(f"{lab!r} x{n}{hint}")
        more = f" and {len(counts) - MAX_LISTED} more" if len(counts) > MAX_LISTED else ""
        # A model (or config) with MedMNIST's class indices meeting a manifest imported with class names.
        indices = all(_is_int(c) for c in classes) and not any(_is_int(str(lab)) for lab in counts.index)
        hint = (" (classes given as indices: for MedMNIST data, import it again with `medxfer import medmnist "
                "--label-names index`)") if indices else ""
        raise DataError(
            f"{what}: label(s) not in data.classes {classes}: {', '.join(parts)}{more}; fix the manifest "
            f"or add them to data.classes{hint}"
        )
    if data_cfg.task == "ordinal" and not data_cfg.classes:
        bad = [c for c in classes if not _is_int(c)]
        if bad:
            raise DataError(
                f"{what}: ordinal labels must be integer grades; found {bad[:MAX_LISTED]}. "
                "Use grades 0..N, or name the grades in order in data.classes"
            )


def check_class_count(classes: list[str], task: str, what: str) -> None:
    if task in ("multiclass", "ordinal") and len(classes) < 2:
        raise DataError(
            f"{what}: only one class ({classes[0] if classes else 'none'!r}); a classifier needs at least two "
            "(check the label column, or data.classes)"
        )


def check_every_class_trains(train: pd.DataFrame, classes: list[str], task: str, what: str) -> None:
    """Each class has a training example (multilabel: a positive one)."""
    if task == "multilabel":
        present = set(train["label"].map(lambda s: split_findings(s)[0]).explode().dropna())
    else:
        present = set(train["label"])
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(
            f"{what}: class(es) {absent[:MAX_LISTED]} have no training example"
            + (" (no positive training label)" if task == "multilabel" else "")
            + "; add examples, drop the class from data.classes, or adjust the split"
        )
