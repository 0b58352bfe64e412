"""Real files for the data-plane tests: images from the shared data folder, tiny PNGs, manifests.

Nothing here is a mock: every helper writes or reads real bytes of a real format.
"""

from __future__ import annotations

import io
import os
import shutil

import cv2
import numpy as np
import pandas as pd

PNG = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()  # a tiny valid PNG


def encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def png(img: np.ndarray) -> bytes:
    return encoded(".png", img)


def read_image(test_data, rel: str) -> bytes:
    """The bytes of ``images/<rel>`` in the shared data folder."""
    return (test_data / "images" / rel).read_bytes()


def shared_images(test_data) -> list:
    return sorted(p for p in (test_data / "images").rglob("*") if p.is_file() and "LICENSE" not in p.name)


def dicom_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------- manifests


def dataset(root, n_per_class=6, classes=("a", "b"), split=True, patients=False) -> pd.DataFrame:
    """Tiny real PNGs under root/img/<class>/<i>.png and the matching manifest rows."""
    rows = []
    for c in classes:
        os.makedirs(root / "img" / c, exist_ok=True)
        for i in range(n_per_class):
            (root / "img" / c / f"{i}.png").write_bytes(PNG)
            row = {"path": f"img/{c}/{i}.png", "label": c}
            if split:
                row["split"] = "train" if i < n_per_class - 2 else ("val" if i == n_per_class - 2 else "test")
            if patients:
                row["patient_id"] = f"p{c}{i}" if split else f"p{c}{i // 2}"
            rows.append(row)
    return pd.DataFrame(rows)


def write_csv(root, df, name="manifest.csv", **kw) -> str:
    p = root / name
    df.to_csv(p, index=False, **kw)
    return str(p)


def mini_dataset(test_data, root) -> str:
    """12 real images (PNG, JPEG, DICOM) + a corrupt and an empty file, with a manifest."""
    srcs = sorted((test_data / "images").rglob("*"))
    srcs = [s for s in srcs if s.is_file() and "LICENSE" not in s.name and "J2K" not in s.name
            and "jpeg2k" not in s.name][:12]
    rows = []
    (root / "img").mkdir(parents=True)
    for i, s in enumerate(srcs):
        shutil.copy(s, root / "img" / f"{i}{s.suffix}")
        rows.append({"path": f"img/{i}{s.suffix}", "label": "a" if i % 2 else "b",
                     "split": "train" if i < 8 else ("val" if i < 10 else "test")})
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (root / "img" / "empty.jpg").write_bytes(b"")
    rows += [{"path": "img/corrupt.png", "label": "a", "split": "train"},
             {"path": "img/empty.jpg", "label": "b", "split": "train"}]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root / "manifest.csv")


def colour_and_gray(test_data, root) -> tuple[str, str]:
    """Two manifests of real images: colour (ultrasound RGB, YBR and palette DICOMs, an RGB PNG), and gray."""
    images = test_data / "images"
    sets = {"colour": ["dicom/examples_rgb_color.dcm", "dicom/examples_ybr_color.dcm", "dicom/examples_palette.dcm",
                       "cxr/tbx11k_tb_tb0005.png"],
            "gray": ["cxr/nih_00000001_000_cardiomegaly.png", "cxr/nih_00027426_000_no_finding.png",
                     "cxr/siim_monochrome2.dcm"]}
    out = []
    for name, files in sets.items():
        (root / name).mkdir(parents=True)
        rows = []
        for i in range(10):
            src = images / files[i % len(files)]
            shutil.copy(src, root / name / f"{i}{src.suffix}")
            rows.append({"path": f"{i}{src.suffix}", "label": "a" if i % 2 else "b",
                         "split": "train" if i < 6 else ("val" if i < 8 else "test")})
        pd.DataFrame(rows).to_csv(root / name / "manifest.csv", index=False)
        out.append(str(root / name / "manifest.csv"))
    return out[0], out[1]
