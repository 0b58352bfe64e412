"""Odd inputs the decoder and manifest tests leave out: random bytes under image names, 16-bit TIFF, an
unknown transfer syntax, a manifest without a header, spaces and Unicode in paths.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_random_bytes_under_image_names_16bit_tiff_and_unknown_transfer_syntax(test_data):
    import cv2
    import pydicom

    from medxfer.data.decode import decode
    from medxfer.errors import ImageDecodeError

    junk = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("x.png", "x.jpg", "x.tif", "x.dcm", "x"):
        with pytest.raises(ImageDecodeError) as ei:
            decode(junk, name)
        assert ei.value.path == name and ei.value.reason
    g16 = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50 % 65536).astype(np.uint16)
    ok, tif = cv2.imencode(".tiff", g16)
    assert ok
    d = decode(tif.tobytes(), "g16.tif")
    assert d.bits == 16 and d.pixels.shape == (30, 40) and d.pixels.min() == 0.0 and d.pixels.max() == 1.0
    ds = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    # Patch the file meta to a transfer syntax UID no decoder knows (same length, so offsets hold).
    odd = buf.getvalue().replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.9.9.9\0", 1)
    assert odd != buf.getvalue()
    with pytest.raises(ImageDecodeError, match=r"transfer syntax is not one pydicom knows \(its value is not shown") as e:
        decode(odd, "odd.dcm")
    assert "99999" not in str(e.value)  # an unregistered UID is text from the file: never quoted


def test_manifest_without_header_and_with_spaces_and_unicode_in_paths(tmp_path):
    from medxfer.config import DataConfig
    from medxfer.data.manifest import load_manifest
    from medxfer.errors import DataError

    rows = []
    for i in range(8):
        rel = f"Bilder ü/{'a' if i % 2 else 'b'} {i} – 画像.png"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"png")
        rows.append({"path": rel, "label": "a" if i % 2 else "b", "split": "train" if i < 6 else "val"})
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "m.csv", index=False)
    out = load_manifest(str(tmp_path / "m.csv"), DataConfig())
    assert out["path"].tolist() == [str(tmp_path / r["path"]) for r in rows]
    df.to_csv(tmp_path / "noheader.csv", index=False, header=False)
    with pytest.raises(DataError, match="missing required column"):
        load_manifest(str(tmp_path / "noheader.csv"), DataConfig())
