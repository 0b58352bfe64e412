"""The decoder's public entry (``medxfer.data.decode``): every shared real image decodes or names the
plugin it needs, and broken files fail with a reason. No Ray."""

from __future__ import annotations

import numpy as np
import pytest
from datautil import read_image, shared_images
from pydicom.pixels import get_decoder

from medxfer.config import PreprocessConfig
from medxfer.data.decode import decode
from medxfer.data.preprocess import preprocess_bytes
from medxfer.errors import ImageDecodeError

J2K = "1.2.840.10008.1.2.4.90"


def test_every_shared_image_decodes_or_names_its_plugin(test_data):
    files = shared_images(test_data)
    assert len(files) >= 17
    spec = PreprocessConfig(size=32, channels=3)
    for f in files:
        data = f.read_bytes()
        if f.name.startswith("J2K") or f.name == "examples_jpeg2k.dcm":
            if not get_decoder(J2K).is_available:
                with pytest.raises(ImageDecodeError, match="pylibjpeg-openjpeg"):
                    decode(data, str(f))
                continue
        d = decode(data, str(f))
        assert d.pixels.dtype == np.float32
        assert d.pixels.ndim in (2, 3)
        assert 0.0 <= d.pixels.min() and d.pixels.max() <= 1.0 and d.pixels.max() > d.pixels.min(), f.name
        out = preprocess_bytes(data, spec, str(f))
        assert out.shape == (3, 32, 32) and out.dtype == np.float32 and np.isfinite(out).all()


def test_empty_random_and_truncated_files(test_data):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode(b"", "e.png")
    rng = np.random.default_rng(0)
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "r.bin")
    png = read_image(test_data, "cxr/nih_00000001_000_cardiomegaly.png")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated PNG"):
        decode(png[: len(png) // 2], "t.png")
    jpg = read_image(test_data, "cxr/cxr_rgb_1036x885.jpg")
    with pytest.raises(ImageDecodeError, match="JPEG"):
        decode(jpg[: len(jpg) // 3], "t.jpg")
    dcm = read_image(test_data, "cxr/siim_monochrome2.dcm")
    with pytest.raises(ImageDecodeError):
        decode(dcm[: len(dcm) // 2], "t.dcm")
