"""Decoding and preprocessing on the real shared images, plus the bad-file guards. No Ray."""

from __future__ import annotations

import copy
import io
import logging
import os
import struct
import time
import zlib

import cv2
import hostile
import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder

from medxfer.config import PreprocessConfig
from medxfer.data.decode import decode, decode_image
from medxfer.data.preprocess import preprocess_bytes, preprocess_pixels
from medxfer.errors import ImageDecodeError

J2K = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"


def _images(test_data):
    return sorted(p for p in (test_data / "images").rglob("*") if p.is_file() and "LICENSE" not in p.name)


def _read(test_data, rel: str) -> bytes:
    return (test_data / "images" / rel).read_bytes()


def _dicom_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_every_shared_image_decodes_or_names_its_plugin(test_data):
    files = _images(test_data)
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


def test_monochrome1_is_inverted_relative_to_monochrome2(test_data):
    m1 = decode_image(_read(test_data, "cxr/siim_monochrome1.dcm"))
    m2 = decode_image(_read(test_data, "cxr/siim_monochrome2.dcm"))
    assert m1.shape == m2.shape == (1024, 1024)
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] < -0.99


def test_ct_rescale_slope_intercept_and_explicit_window(test_data):
    data = _read(test_data, "dicom/CT_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0.0  # the file really exercises the rescale
    c, w = 40.0, 400.0
    expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    got = decode_image(data, window=(c, w))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without a window: CT_small has none, so the full range of the frame.
    full = decode_image(data)
    assert full.min() == 0.0 and full.max() == 1.0


def test_multiframe_chosen_frame_and_bad_frame(test_data):
    data = _read(test_data, "dicom/examples_ybr_color.dcm")
    f0 = decode_image(data)
    f0_again = decode_image(data, spec=PreprocessConfig(frame=0, channels=3, mean=[0.5], std=[0.5]))
    f20 = decode_image(data, frame=20)
    assert f0.shape == f20.shape == (240, 320, 3)
    assert np.array_equal(f0, f0_again)
    assert not np.array_equal(f0, f20)
    with pytest.raises(ImageDecodeError, match="frame 30 requested but the file has 30 frames"):
        decode(data, "x.dcm", frame=30)


def test_palette_and_rgb_dicom_come_out_rgb(test_data):
    pal = decode_image(_read(test_data, "dicom/examples_palette.dcm"))
    assert pal.shape == (350, 800, 3)
    # A palette maps to colours: the channels are not all equal.
    assert np.abs(pal[..., 0] - pal[..., 2]).max() > 0.1
    rgb = decode_image(_read(test_data, "dicom/examples_rgb_color.dcm"))
    assert rgb.shape == (240, 320, 3)


def test_jpeg2000_decodes_when_a_plugin_is_installed(test_data):
    data = _read(test_data, "dicom/J2K_pixelrep_mismatch.dcm")
    if get_decoder(J2K).is_available:
        img = decode_image(data)
        assert img.shape == (512, 512) and img.std() > 0.05
    else:
        with pytest.raises(ImageDecodeError, match="pylibjpeg-openjpeg"):
            decode(data, "j2k.dcm")


def test_missing_decoder_plugin_gives_a_named_install_hint(test_data):
    if get_decoder(HTJ2K).is_available:
        pytest.skip("an HTJ2K decoder is installed here")
    ds = pydicom.dcmread(io.BytesIO(_read(test_data, "dicom/J2K_pixelrep_mismatch.dcm")))
    ds.file_meta.TransferSyntaxUID = HTJ2K
    with pytest.raises(ImageDecodeError) as e:
        decode(_dicom_bytes(ds), "htj2k.dcm")
    assert "pip install pylibjpeg-openjpeg" in str(e.value)
    assert "High-Throughput JPEG 2000" in str(e.value)


def test_dicom_errors_never_leak_header_values(test_data):
    ds = pydicom.dcmread(io.BytesIO(_read(test_data, "dicom/CT_small.dcm")))
    ds.PatientName = "SECRET^PATIENT"
    ds.PatientID = "ID-998877"
    no_pixels = copy.deepcopy(ds)
    del no_pixels.PixelData
    with pytest.raises(ImageDecodeError, match="no pixel data") as e:
        decode(_dicom_bytes(no_pixels), "sr.dcm")
    assert "SECRET" not in str(e.value) and "998877" not in str(e.value)
    big = copy.deepcopy(ds)
    big.Rows, big.Columns = 60000, 60000
    with pytest.raises(ImageDecodeError, match="decompression bomb") as e:
        decode(_dicom_bytes(big), "big.dcm")
    assert "SECRET" not in str(e.value)
    truncated = _dicom_bytes(ds)[:-5000]
    with pytest.raises(ImageDecodeError) as e:
        decode(truncated, "trunc.dcm")
    assert "SECRET" not in str(e.value) and "998877" not in str(e.value)


def test_empty_random_and_truncated_files(test_data):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode(b"", "e.png")
    rng = np.random.default_rng(0)
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "r.bin")
    png = _read(test_data, "cxr/nih_00000001_000_cardiomegaly.png")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated PNG"):
        decode(png[: len(png) // 2], "t.png")
    jpg = _read(test_data, "cxr/cxr_rgb_1036x885.jpg")
    with pytest.raises(ImageDecodeError, match="JPEG"):
        decode(jpg[: len(jpg) // 3], "t.jpg")
    dcm = _read(test_data, "cxr/siim_monochrome2.dcm")
    with pytest.raises(ImageDecodeError):
        decode(dcm[: len(dcm) // 2], "t.dcm")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h, with the start of a zlib stream of zeros: what a bomb looks like."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header():
    from medxfer.data.decode import read_header

    bomb = _png_header_only(50000, 50000) + b"\x00" * 100
    h = read_header(bomb)
    assert (h.fmt, h.width, h.height) == ("png", 50000, 50000)
    t = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="50000x50000 = 2,500,000,000 pixels"):
        decode(bomb, "bomb.png")
    assert time.perf_counter() - t < 0.5  # refused before any allocation
    # JPEG: a real file whose frame header claims 60000x60000.
    ok, buf = cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))
    jpg = bytearray(buf.tobytes())
    sof = jpg.find(b"\xff\xc0")
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode(bytes(jpg), "bomb.jpg")
    # A configurable limit.
    small = _png(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageDecodeError, match="above the limit of 5,000"):
        decode(small, "s.png", max_pixels=5000)


def test_bit_depths_and_formats():
    g16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit in 16
    d = decode(_png(g16), "g16.png")
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


def test_preprocess_resize_modes_channels_and_normalisation():
    img = np.zeros((100, 200), np.float32)
    img[:, 100:] = 1.0  # left half black, right half white
    base = {"size": 50, "channels": 1, "mean": [0.5], "std": [0.5]}
    lb = preprocess_pixels(img, PreprocessConfig(resize="letterbox", **base))
    assert lb.shape == (1, 50, 50)
    assert np.all(lb[0, :12] == -1.0) and np.all(lb[0, -12:] == -1.0)  # padding rows (value 0 -> -1)
    assert lb[0, 25, 45] == 1.0
    st = preprocess_pixels(img, PreprocessConfig(resize="stretch", **base))
    assert st[0, 0, 0] == -1.0 and st[0, 0, -1] == 1.0 and st[0, :, :20].max() == -1.0
    cc = preprocess_pixels(img, PreprocessConfig(resize="center_crop", **base))
    assert cc[0, :, :20].max() == -1.0 and cc[0, :, 30:].min() == 1.0  # the middle square
    rgb = np.zeros((20, 20, 3), np.float32)
    rgb[..., 1] = 1.0
    g = preprocess_pixels(rgb, PreprocessConfig(size=20, channels=1, mean=[0.0], std=[1.0]))
    np.testing.assert_allclose(g, 0.587, atol=1e-3)  # BT.601 luma of pure green
    three = preprocess_pixels(img, PreprocessConfig(size=20, channels=3, mean=[0.1, 0.2, 0.3], std=[1, 1, 2]))
    assert three.shape == (3, 20, 20)
    np.testing.assert_allclose(three[:, 0, 0], [-0.1, -0.2, -0.15], atol=1e-6)
    h = preprocess_pixels(img, PreprocessConfig(size=20, channels=1, dtype="float16"))
    assert h.dtype == np.float16
    const = preprocess_bytes(_png(np.full((8, 8), 51, np.uint8)), PreprocessConfig(size=8, channels=1))
    np.testing.assert_allclose(const, -0.6, atol=1e-6)


def test_clahe_raises_local_contrast_on_8_and_16_bit():
    rng = np.random.default_rng(0)
    low = (120 + rng.integers(0, 8, (128, 128))).astype(np.uint8)
    spec_off = PreprocessConfig(size=128, channels=1, mean=[0.0], std=[1.0])
    spec_on = PreprocessConfig(size=128, channels=1, mean=[0.0], std=[1.0], clahe=True, clahe_clip_limit=4.0)
    off = preprocess_bytes(_png(low), spec_off)
    on = preprocess_bytes(_png(low), spec_on)
    assert on.std() > 2 * off.std()
    low16 = (30000 + rng.integers(0, 2000, (128, 128))).astype(np.uint16)
    on16 = preprocess_bytes(_png(low16), spec_on)
    assert on16.shape == (1, 128, 128) and np.isfinite(on16).all()
    colour = np.dstack([low, low // 2, low // 3])
    on_rgb = preprocess_bytes(_png(colour), PreprocessConfig(size=64, channels=3, clahe=True))
    assert on_rgb.shape == (3, 64, 64)


def test_preprocess_is_deterministic_on_real_files(test_data):
    spec = PreprocessConfig(size=64, channels=1, clahe=True)
    for rel in ("cxr/tbx11k_tb_tb0005.png", "cxr/siim_monochrome2.dcm", "cxr/cxr_rgb_1036x885.jpg"):
        data = _read(test_data, rel)
        assert np.array_equal(preprocess_bytes(data, spec, rel), preprocess_bytes(data, spec, rel))


def test_dicom_without_preamble_is_read_by_extension(test_data, tmp_path):
    ds = pydicom.dcmread(io.BytesIO(_read(test_data, "dicom/MR_small.dcm")))
    raw = io.BytesIO()
    pydicom.dcmwrite(raw, ds, enforce_file_format=False)
    data = raw.getvalue()
    if data[128:132] == b"DICM":
        data = data[132:]  # strip preamble + magic, leaving a bare dataset with its meta group
    assert data[128:132] != b"DICM"
    img = decode_image(data, os.fspath(tmp_path / "bare.dcm"))
    assert img.shape == (64, 64)


# ----------------------------------------------------------------------------- every format, size-checked


def _encoded(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def _samples_of_every_format() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """A small real file of every format OpenCV reads and Pillow's header reader covers."""
    from PIL import Image

    g = (np.arange(48 * 80).reshape(48, 80) % 251).astype(np.uint8)
    rgb = np.dstack([g, 255 - g, g // 2])
    files = {
        "webp": _encoded(".webp", rgb), "bigtiff": hostile.tiff([80], [48], big=True),
        "jpeg2000": _encoded(".jp2", g), "pgm": _encoded(".pgm", g), "ppm": _encoded(".ppm", rgb),
        "pbm": _encoded(".pbm", (g > 100).astype(np.uint8) * 255), "pfm": _encoded(".pfm", g.astype(np.float32) / 255),
        "sun": _encoded(".sr", rgb), "avif": _encoded(".avif", rgb),
        "png": _encoded(".png", g), "png16": _encoded(".png", g.astype(np.uint16) * 257),
        "jpeg": _encoded(".jpg", rgb), "bmp": _encoded(".bmp", rgb), "tiff": _encoded(".tiff", rgb),
    }
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "GIF")
    files["gif"] = buf.getvalue()
    return {k: (v, (80, 48)) for k, v in files.items()}


def test_every_format_is_size_checked_from_its_header_before_decoding():
    for name, (data, (w, h)) in _samples_of_every_format().items():
        with pytest.raises(ImageDecodeError, match=f"image is {w}x{h} = .* refused from its header before decoding"):
            decode(data, f"x.{name}", max_pixels=w * h - 1)
        assert decode(data, f"x.{name}").pixels.shape[:2] == (h, w), name
        from medxfer.data.decode import read_header

        head = read_header(data, f"x.{name}")
        assert (head.width, head.height) == (w, h), name
    # Formats OpenCV reads whose size no header reader here can check: refused, never decoded.
    hdr = _encoded(".hdr", np.ones((8, 8, 3), np.float32))
    pam = _encoded(".pam", np.zeros((8, 8, 3), np.uint8))
    for name, data in (("x.hdr", hdr), ("x.pam", pam)):
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV would
        with pytest.raises(ImageDecodeError, match="formats whose size cannot be read from a header are refused"):
            decode(data, name)


def test_bigtiff_webp_and_pnm_bombs_are_refused_from_the_header():
    bombs = {
        "bomb.tif": hostile.tiff([40000], [40000], big=True)[:2000],  # BigTIFF: 1.6 Gpx in a 2 KB file
        "bomb.png": hostile.webp_lossless(16384, 16384),  # a WebP named .png
        "bomb.pgm": b"P5\n40000 40000\n255\n" + b"\x00" * 1000,
    }
    for name, data in bombs.items():
        with pytest.raises(ImageDecodeError, match="pixels, above the limit of .* refused from its header"):
            decode(data, name)


def test_duplicate_tiff_size_tags_follow_libtiffs_first_tag_rule():
    """libtiff (OpenCV's TIFF decoder) ignores a repeated tag; the guard must read the same size."""
    small_first = hostile.tiff([16, 60000], [16, 60000])
    assert decode(small_first, "dup.tif").pixels.shape == (16, 16)  # not refused for the ignored 60000
    from medxfer.data.decode import read_header

    h = read_header(small_first)
    assert (h.width, h.height) == (16, 16)
    huge_first = hostile.tiff([40000, 16], [40000, 16])[:4000]
    with pytest.raises(ImageDecodeError, match="40000x40000 = 1,600,000,000 pixels.*refused from its header"):
        decode(huge_first, "dup.tif")


def test_decoded_bytes_are_counted_not_only_pixels(test_data):
    from medxfer.data.decode import read_header

    g8 = np.zeros((100, 100), np.uint8)
    decode(_png(g8), "g8.png", max_image_bytes=15_000)  # 10,000 bytes
    for name, img, need in (("g16.png", g8.astype(np.uint16), 20_000),
                            ("rgb16.png", np.zeros((100, 100, 3), np.uint16), 60_000),
                            ("rgb16.tif", np.zeros((100, 100, 3), np.uint16), 60_000)):
        data = _png(img) if name.endswith(".png") else _encoded(".tiff", img)
        assert read_header(data).nbytes == need, name
        with pytest.raises(ImageDecodeError, match=f"{name}: image is 100x100 .* {need:,} bytes decoded, above "
                                                   r"the limit of 15,000; .*raise data.max_image_bytes"):
            decode(data, name, max_image_bytes=15_000)
    ct = _read(test_data, "dicom/CT_small.dcm")  # 128x128, 16 bits allocated: 32,768 bytes
    decode(ct, "ct.dcm", max_image_bytes=32_768)
    with pytest.raises(ImageDecodeError, match="ct.dcm: image is 128x128 .* 32,768 bytes decoded, above"):
        decode(ct, "ct.dcm", max_image_bytes=32_767)
    cine = _read(test_data, "dicom/examples_ybr_color.dcm")  # 30 frames of 240x320x3 bytes
    with pytest.raises(ImageDecodeError, match="6,912,000 bytes decoded in all its frames"):
        decode(cine, "cine.dcm", max_image_bytes=6_000_000)


def test_malformed_dicom_values_reach_no_message_and_no_log(test_data, caplog):
    files = hostile.malformed_dicoms(test_data)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ImageDecodeError) as e:
            decode(files["frames.dcm"], "frames.dcm")
        assert e.value.reason == "DICOM NumberOfFrames is not a whole number"
        with pytest.raises(ImageDecodeError) as e:
            decode(files["slope.dcm"], "slope.dcm")
        assert "value and display transforms" in e.value.reason
        img = decode_image(files["window.dcm"], "window.dcm")  # a window that is no number: full range
        assert img.min() == 0.0 and img.max() == 1.0
    for text in [str(e.value), caplog.text]:
        assert hostile.PLANTED not in text and "55501234" not in text and "DOE" not in text


# ----------------------------------------------------------------------------- orientation, reduced decoding


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
    from medxfer.data.preprocess import preprocess_image

    data = _read(test_data, "cxr/cxr_rgb_2373x2373.jpg")
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
