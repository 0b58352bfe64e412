"""Raster decoding with OpenCV (``medxfer.data.decode.opencv``): bit depths, CMYK, EXIF orientation
and reduced-scale JPEG decoding. No Ray."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from datautil import png, read_image

from medxfer.config import PreprocessConfig
from medxfer.data.decode import decode, decode_image
from medxfer.data.preprocess import preprocess_bytes, preprocess_image, preprocess_pixels


def test_bit_depths_and_formats():
    g16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit in 16
    d = decode(png(g16), "g16.png")
    assert d.bits == 16 and d.pixels.min() == 0.0 and d.pixels.max() == 1.0
    f32 = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    ok, tif = cv2.imencode(".tiff", f32)
    assert ok
    np.testing.assert_allclose(decode_image(tif.tobytes(), "f.tif"), f32, atol=1e-6)
    ok, bmp = cv2.imencode(".bmp", np.full((10, 20, 3), (0, 0, 255), np.uint8))  # BGR red
    rgb = decode_image(bmp.tobytes(), "x.bmp")
    assert rgb.shape == (10, 20, 3) and rgb[0, 0].tolist() == [1.0, 0.0, 0.0]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(buf, "JPEG")  # CMYK red
    cmyk = decode_image(buf.getvalue(), "c.jpg")
    assert cmyk.shape == (30, 40, 3)
    r, g, b = cmyk[15, 20]
    assert r > 0.8 and g < 0.3 and b < 0.3


def _with_orientation(img: np.ndarray, orientation: int, fmt: str) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_exif_orientation_turns_a_phone_photo_upright():
    """A phone held upright stores the picture sideways with orientation 6 (rotate 90 degrees clockwise)."""
    stored = np.zeros((60, 100, 3), np.uint8)  # landscape as stored: 100 wide, 60 high
    stored[:20, :20] = (255, 0, 0)  # a red mark in the stored top-left corner
    d = decode(_with_orientation(stored, 6, "JPEG"), "phone.jpg")
    assert d.pixels.shape == (100, 60, 3)  # upright: portrait
    assert d.pixels[:15, -15:, 0].mean() > 0.9 and d.pixels[:15, :15, 0].mean() < 0.1  # mark now top-right
    spec = PreprocessConfig(size=32, channels=3, resize="stretch", mean=[0.0], std=[1.0])
    out = preprocess_bytes(_with_orientation(stored, 6, "JPEG"), spec, "phone.jpg")
    assert out[0, :5, -8:].mean() > 0.9 and out[0, -8:, :8].mean() < 0.1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation):
    from PIL import Image, ImageOps

    stored = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    data = _with_orientation(stored, orientation, "PNG")  # lossless: exact comparison
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(np.round(decode_image(data, "o.png") * 255).astype(np.uint8), expected)


def test_large_jpeg_is_decoded_reduced_and_stays_close_to_the_full_decode(test_data):
    """Far above the target size a JPEG is decoded at 1/8, 1/4 or 1/2 scale (libjpeg's DCT scaling),
    keeping twice the target; the tensor stays close to the one made from the full decode."""
    data = read_image(test_data, "cxr/cxr_rgb_2373x2373.jpg")
    full = decode(data, "cxr.jpg")
    for size, factor in ((28, 8), (64, 8), (224, 4), (512, 2), (600, 1)):
        for channels in (1, 3):
            spec = PreprocessConfig(size=size, channels=channels, mean=[0.0], std=[1.0])
            out, d = preprocess_image(data, spec, "cxr.jpg")
            assert (d.header.width, d.header.height) == (2373, 2373)  # the stored size, for the card
            assert d.pixels.shape[:2] == (-(-2373 // factor),) * 2, (size, d.pixels.shape)
            diff = np.abs(out - preprocess_pixels(full.pixels, spec, full.bits))
            assert diff.mean() < 0.01 and np.quantile(diff, 0.99) < 0.1, (size, diff.mean(), np.quantile(diff, 0.99))
    # CLAHE works on the full decode (its tiles were tuned on full-resolution detail): identical pixels.
    spec = PreprocessConfig(size=64, channels=1, clahe=True)
    out, d = preprocess_image(data, spec, "cxr.jpg")
    assert d.pixels.shape[:2] == (2373, 2373)
    np.testing.assert_array_equal(out, preprocess_pixels(full.pixels, spec, full.bits))
