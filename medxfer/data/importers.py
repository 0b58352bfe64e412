"""Importers: turn public arrays or class folders into images + a manifest medxfer can load.

Why import MedMNIST arrays into PNG files instead of training on the arrays: the rest of the
pipeline (manifest checks, Ray Data decoding from S3, the cache, prediction) is then exercised on
exactly the kind of input a hospital provides — image files and a table — and the same code
path serves both. The manifest is written last, so an interrupted import never looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.data import medmnist
from medxfer.data.decode import SUFFIXES
from medxfer.data.manifest import SPLIT_ALIASES, make_split
from medxfer.errors import DataError
from medxfer.storage import write_many  # bulk, concurrent where that pays; the manifest marks completion

log = logging.getLogger("medxfer.data")



def _encode_png(img: np.ndarray) -> bytes:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise DataError("could not encode a PNG")
    return buf.tobytes()


def _safe_dir(label: str) -> str:
    return label.replace("|", "+").replace("/", "_") or "none"


LABEL_FORMS = ("names", "index")


def import_medmnist(npz: str | Path, out: str, name: str | None = None, label_names: str = "names") -> dict:
    """Write every image of a MedMNIST .npz as PNG under ``out`` plus ``manifest.csv``; return a summary.

    ``label_names``: ``names`` labels each image with its set's published class name (``malignant``;
    a set without published names is refused, naming the fix), ``index`` with MedMNIST's class index
    (``0``), as medxfer did before names. ``import.json`` records the classes in MedMNIST's index
    order, which training keeps (so output *i* is MedMNIST's class *i* in either form), and a binary
    set's finding as its positive class.

    Image paths hold the class index in either form (``images/train/0/12.png``): splits, label
    subsets and ``channels: auto`` follow the images' names, so a set imported with names trains
    and tests on the same images, at every label fraction, as one imported with indices.
    """
    t0 = time.time()
    out = storage.normalize(out)
    name = name or Path(str(npz)).stem
    if label_names not in LABEL_FORMS:
        raise DataError(f"--label-names {label_names!r}: expected one of {', '.join(LABEL_FORMS)}")
    arrays = medmnist.load_npz(npz)
    published = medmnist.class_names(name)
    if label_names == "names" and published is None:
        raise DataError(f"{npz}: {name!r} is not a MedMNIST set with published label names (known: "
                        f"{', '.join(sorted(medmnist.PUBLISHED_LABELS))}); name the set with --name, or keep the "
                        "class indices with --label-names index")
    names = published if label_names == "names" else None
    rows: list[tuple[str, str, str]] = []
    items: list[tuple[str, bytes]] = []
    for split, (images, labels) in arrays.items():
        indices = medmnist.label_strings(labels)
        labs = medmnist.label_strings(labels, names, f"{npz}: {split}_labels") if names else indices
        for i, (img, index, lab) in enumerate(zip(images, indices, labs, strict=True)):
            rel = f"images/{split}/{_safe_dir(index)}/{i}.png"
            items.append((storage.join(out, rel), _encode_png(img)))
            rows.append((rel, lab, split))
    storage.makedirs(out)
    write_many(items)
    manifest = pd.DataFrame(rows, columns=["path", "label", "split"])
    counts = {s: int((manifest["split"] == s).sum()) for s in arrays}
    expected = medmnist.SPLIT_SIZES.get(medmnist.dataset_of(name))
    if expected and tuple(counts.get(s, 0) for s in ("train", "val", "test")) != expected:
        log.warning("%s: split sizes %s differ from the official %s", name, counts, expected)
    summary = {
        "name": name,
        "source": str(npz),
        "images": len(rows),
        "splits": counts,
        "label_names": "names" if names else "index",
        "classes": names or _index_classes(arrays, published),
        "positive_class": medmnist.finding(name, names),
        "license": "MedMNIST v2, CC BY 4.0 (Yang et al., Scientific Data 2023) unless the set says otherwise",
        "seconds": round(time.time() - t0, 2),
    }
    storage.write_text(storage.join(out, "import.json"), json.dumps(summary, indent=2) + "\n")
    storage.write_text(storage.join(out, "manifest.csv"), manifest.to_csv(index=False))
    return summary


def _index_classes(arrays: dict, published: list[str] | None) -> list[str]:
    """``'0'``..``'K-1'``: K the set's published classes, else the columns or largest index in the file."""
    if published:
        return [str(i) for i in range(len(published))]
    labels = [lab for _, lab in arrays.values()]
    k = labels[0].shape[1] if labels[0].ndim == 2 else int(max(int(lab.max(initial=0)) for lab in labels)) + 1
    return [str(i) for i in range(k)]


# ----------------------------------------------------------------------------- folders


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base.startswith("."):
        return False
    ext = os.path.splitext(base)[1].lower()
    return ext in SUFFIXES or ext == ""  # DICOM files often have no extension


def _listed_images(root: str) -> list[str]:
    """Image files under ``root``, without symlinks leading outside it (warned about, not listed).

    A manifest elsewhere holds absolute paths, which no manifest check can tie to the root, so a
    link to a file outside would become a training image without anyone having chosen it.
    """
    if not storage.is_dir(root):
        raise DataError(f"{root}: folder not found; give the folder holding one subfolder per class")
    files = [f for f in storage.list_files(root) if _is_image(f)]
    outside = set(storage.links_leaving(root, files))
    if outside:
        log.warning("%s: %d symlink(s) leading outside the folder not listed (e.g. %s)", root, len(outside),
                    sorted(outside)[0])
    return [f for f in files if f not in outside]


def folder_manifest(root: str, manifest_uri: str, fractions=None, seed: int = 0) -> pd.DataFrame:
    """Build a manifest from ``root/<class>/...`` (or ``root/<split>/<class>/...``).

    A file name that is not valid UTF-8 is listed as its ``file://`` URI (``%XX`` for the bytes
    that are not UTF-8, relative to the manifest like the other names), which preprocessing
    resolves back to the file. A class or split folder whose name is not UTF-8 cannot name a
    class: its files are left out, counted and named in a warning.
    """
    root = storage.normalize(root)
    files = _listed_images(root)
    # Folder structure from the names on disk (a name that is not UTF-8 is decoded from its URI).
    rels = [storage.local_path(storage.relative_name(f, root)) for f in files]
    nested = [r for r in rels if "/" in r]
    if not nested:
        raise DataError(f"{root}: no images in class subfolders; expected {root}/<class>/<image>")
    skipped = len(rels) - len(nested)
    if skipped:
        log.warning("%s: %d file(s) directly in the root (not in a class folder) skipped", root, skipped)
    top = {r.split("/", 1)[0].lower() for r in nested}
    by_split = top <= set(SPLIT_ALIASES) and all(r.count("/") >= 2 for r in nested)
    man_dir = storage.parent(storage.normalize(manifest_uri))
    rows, unnamed = [], []
    for f, r in zip(files, rels, strict=True):
        if "/" not in r:
            continue
        parts = r.split("/")
        folders = parts[:2] if by_split else parts[:1]
        if not all(storage.is_text(d) for d in folders):
            unnamed.append(f)
            continue
        split = SPLIT_ALIASES[parts[0].lower()] if by_split else None
        label = parts[1] if by_split else parts[0]
        rows.append((storage.relative_name(f, man_dir) or f, label, split))
    if unnamed:
        log.warning("%s: %d file(s) in class folders whose names are not valid UTF-8 left out (a class name is "
                    "text; rename the folders), e.g. %s", root, len(unnamed), unnamed[0])
    if not rows:
        raise DataError(f"{root}: no images in class folders with UTF-8 names; rename the class folders")
    df = pd.DataFrame(rows, columns=["path", "label", "split"])
    if by_split:
        pass
    elif fractions:
        df["split"] = make_split(df["label"], None, fractions, seed, ids=df["path"])
    else:
        df = df.drop(columns=["split"])
    if df["label"].nunique() < 2:
        log.warning("%s: only one class folder found (%s)", root, df["label"].iloc[0])
    return df


def import_record(df: pd.DataFrame, root: str, positive_class: str | None) -> dict:
    """What ``import.json`` says about a folder import: its classes and, when named, the positive class.

    Training reads ``positive_class`` from here when the job config names none, so the
    class chosen at import (e.g. melanoma, not the alphabetically last nevus) reaches the
    model card, and through it evaluation and prediction.
    """
    from medxfer.config import DataConfig
    from medxfer.data.manifest import infer_classes

    classes = infer_classes(df, DataConfig())  # in the order training will use
    if positive_class is not None and positive_class not in classes:
        raise DataError(f"--positive-class {positive_class!r}: not one of the class folders under {root}: "
                        f"{', '.join(classes)}")
    return {"source": storage.normalize(root), "images": int(len(df)), "classes": classes,
            "positive_class": positive_class}
