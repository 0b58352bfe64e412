"""Synthetic phantom images for running the demo offline, when no MedMNIST file is at hand.

They are NOT medical data and say so: every output of a demo run on them is labelled
SYNTHETIC. They exist so that `make demo` still exercises every stage (import, cache,
training, evaluation, promotion) on a machine that can neither find nor download MedMNIST.

Two tasks in the shape of the demo's: a "source" of chest-like fields with or without
diffuse blotches, and a "target" of ultrasound-like speckle with a round (benign-like) or
lobulated (malignant-like) dark lesion. Arrays are laid out exactly like MedMNIST files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SPLITS = {"source": (2000, 300, 400), "target": (546, 78, 156)}


def _source_image(rng: np.random.Generator, positive: bool, size: int) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    c = size / 2
    for side in (-1, 1):  # two "lung fields"
        cv2.ellipse(img, (int(c + side * size * 0.2), int(c)), (int(size * 0.15), int(size * 0.33)), 0, 0, 360,
                    0.6, -1)
    img += rng.normal(0, 0.08, img.shape).astype(np.float32)
    if positive:
        for _ in range(rng.integers(2, 5)):
            x, y = rng.integers(int(size * 0.2), int(size * 0.8), 2)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(2, max(3, size // 6))), 0.35, -1)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _target_image(rng: np.random.Generator, malignant: bool, size: int) -> np.ndarray:
    img = rng.gamma(2.0, 0.2, (size, size)).astype(np.float32)  # speckle
    img = cv2.GaussianBlur(img, (3, 3), 0)
    c = np.array([size / 2, size / 2]) + rng.normal(0, size * 0.06, 2)
    r = size * rng.uniform(0.15, 0.25)
    n = 24
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = r * (1 + (rng.uniform(-0.45, 0.45, n) if malignant else rng.uniform(-0.05, 0.05, n)))
    pts = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(img, [pts], 0.1)
    return np.clip(img / max(img.max(), 1e-6) * 255, 0, 255).astype(np.uint8)


def make_npz(path: str | Path, kind: str, size: int = 28, seed: int = 0) -> Path:
    """Write a MedMNIST-shaped .npz of synthetic phantoms (``kind``: source or target)."""
    if kind not in SPLITS:
        raise ValueError(f"kind must be one of {list(SPLITS)}")
    rng = np.random.default_rng(seed)
    make = _source_image if kind == "source" else _target_image
    arrays = {}
    for split, n in zip(("train", "val", "test"), SPLITS[kind], strict=True):
        labels = (rng.random(n) < 0.5).astype(np.uint8)
        arrays[f"{split}_images"] = np.stack([make(rng, bool(lab), size) for lab in labels])
        arrays[f"{split}_labels"] = labels[:, None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def write_pngs(out: str, n: int, size: int = 224, seed: int = 0,
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """Write ``n`` source phantoms as PNG files under ``out`` (a folder or ``s3://`` prefix) with a
    ``manifest.csv`` (path, label, split); returns the manifest's URI.

    For scale tests and benchmarks: as many distinct images as asked, at any size, without a
    MedMNIST file. Written 512 at a time, so memory stays flat whatever ``n``.
    """
    import pandas as pd

    from medxfer import storage

    out = storage.normalize(out)
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(np.uint8)
    cut = np.cumsum(np.array(fractions) * n).round().astype(int)
    splits = np.where(np.arange(n) < cut[0], "train", np.where(np.arange(n) < cut[1], "val", "test"))
    rows = [(f"images/{s}/{lab}/{i}.png", str(lab), s) for i, (lab, s) in enumerate(zip(labels, splits, strict=True))]
    storage.makedirs(out)
    for start in range(0, n, 512):
        items = []
        for rel, lab, _ in rows[start:start + 512]:
            items.append((storage.join(out, rel), cv2.imencode(".png", _source_image(rng, lab == "1", size))[1].tobytes()))
        storage.write_many(items)
    manifest = storage.join(out, "manifest.csv")
    storage.write_text(manifest, pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(index=False))
    return manifest
