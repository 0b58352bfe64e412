"""Headers read and checked before decoding (``medxfer.data.decode.header``): every format's size,
decompression bombs, repeated TIFF tags, and the decoded-bytes limit. No Ray."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import hostile
import numpy as np
import pytest
from datautil import encoded, png, read_image

from medxfer.data.decode import decode, read_header
from medxfer.errors import ImageDecodeError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h, with the start of a zlib stream of zeros: what a bomb looks like."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100_000)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header():
    bomb = _png_header_only(50000, 50000) + b"\x00" * 100
    h = read_header(bomb)
    assert (h.fmt, h.width, h.height) == ("png", 50000, 50000)
    with pytest.raises(ImageDecodeError, match="50000x50000 = 2,500,000,000 pixels"):
        decode(bomb, "bomb.png")  # refused before any allocation (benchmarks/bench_data_plane.py times it)
    # JPEG: a real file whose frame header claims 60000x60000.
    ok, buf = cv2.imencode(".jpg", np.full((16, 16), 128, np.uint8))
    jpg = bytearray(buf.tobytes())
    sof = jpg.find(b"\xff\xc0")
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode(bytes(jpg), "bomb.jpg")
    # A configurable limit.
    small = png(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageDecodeError, match="above the limit of 5,000"):
        decode(small, "s.png", max_pixels=5000)


def _samples_of_every_format() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """A small real file of every format OpenCV reads and Pillow's header reader covers."""
    from PIL import Image

    g = (np.arange(48 * 80).reshape(48, 80) % 251).astype(np.uint8)
    rgb = np.dstack([g, 255 - g, g // 2])
    files = {
        "webp": encoded(".webp", rgb), "bigtiff": hostile.tiff([80], [48], big=True),
        "jpeg2000": encoded(".jp2", g), "pgm": encoded(".pgm", g), "ppm": encoded(".ppm", rgb),
        "pbm": encoded(".pbm", (g > 100).astype(np.uint8) * 255), "pfm": encoded(".pfm", g.astype(np.float32) / 255),
        "sun": encoded(".sr", rgb), "avif": encoded(".avif", rgb),
        "png": encoded(".png", g), "png16": encoded(".png", g.astype(np.uint16) * 257),
        "jpeg": encoded(".jpg", rgb), "bmp": encoded(".bmp", rgb), "tiff": encoded(".tiff", rgb),
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
        head = read_header(data, f"x.{name}")
        assert (head.width, head.height) == (w, h), name
    # Formats OpenCV reads whose size no header reader here can check: refused, never decoded.
    hdr = encoded(".hdr", np.ones((8, 8, 3), np.float32))
    pam = encoded(".pam", np.zeros((8, 8, 3), np.uint8))
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
    h = read_header(small_first)
    assert (h.width, h.height) == (16, 16)
    huge_first = hostile.tiff([40000, 16], [40000, 16])[:4000]
    with pytest.raises(ImageDecodeError, match="40000x40000 = 1,600,000,000 pixels.*refused from its header"):
        decode(huge_first, "dup.tif")


def test_decoded_bytes_are_counted_not_only_pixels(test_data):
    g8 = np.zeros((100, 100), np.uint8)
    decode(png(g8), "g8.png", max_image_bytes=15_000)  # 10,000 bytes
    for name, img, need in (("g16.png", g8.astype(np.uint16), 20_000),
                            ("rgb16.png", np.zeros((100, 100, 3), np.uint16), 60_000),
                            ("rgb16.tif", np.zeros((100, 100, 3), np.uint16), 60_000)):
        data = png(img) if name.endswith(".png") else encoded(".tiff", img)
        assert read_header(data).nbytes == need, name
        with pytest.raises(ImageDecodeError, match=f"{name}: image is 100x100 .* {need:,} bytes decoded, above "
                                                   r"the limit of 15,000; .*raise data.max_image_bytes"):
            decode(data, name, max_image_bytes=15_000)
    ct = read_image(test_data, "dicom/CT_small.dcm")  # 128x128, 16 bits allocated: 32,768 bytes
    decode(ct, "ct.dcm", max_image_bytes=32_768)
    with pytest.raises(ImageDecodeError, match="ct.dcm: image is 128x128 .* 32,768 bytes decoded, above"):
        decode(ct, "ct.dcm", max_image_bytes=32_767)
    cine = read_image(test_data, "dicom/examples_ybr_color.dcm")  # 30 frames of 240x320x3 bytes
    with pytest.raises(ImageDecodeError, match="6,912,000 bytes decoded in all its frames"):
        decode(cine, "cine.dcm", max_image_bytes=6_000_000)


def test_a_tiff_tile_far_larger_than_its_image_is_refused_from_the_header():
    """The tile is what libtiff allocates whole (a 64x64 TIFF with one 16000x16000 deflated tile took
    1 GB): a tile overhanging its image as encoders make them is decoded, one far beyond it refused."""
    assert decode(hostile.tiff_one_tile(64, 64, 256), "ok.tif").pixels.shape == (64, 64)
    with pytest.raises(ImageDecodeError, match=r"TIFF tiles of 16000x16000 \(256,000,000 bytes each, which its "
                                               r"decoder allocates whole\) do not fit the 64x64 image"):
        decode(hostile.tiff_one_tile(64, 64, 16000), "tile.tif")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated TIFF file"):
        decode(hostile.tiff_bogus_strips(), "strips.tif")  # one strip claiming 4e9 rows and bytes


def test_webp_sizes_come_from_its_chunks_as_pillow_reads_them():
    """Pillow's WebP reader decodes the whole image to open it; medxfer reads the size from the RIFF
    chunks instead (lossy VP8, lossless VP8L, extended VP8X with alpha) and agrees with Pillow."""
    from PIL import Image

    g = (np.arange(37 * 53).reshape(37, 53) % 251).astype(np.uint8)
    bgra = np.dstack([g, 255 - g, g // 2, np.full_like(g, 200)])
    for name, data in (("lossy", encoded(".webp", bgra[:, :, :3])),
                       ("lossless", cv2.imencode(".webp", bgra[:, :, :3], [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()),
                       ("alpha", encoded(".webp", bgra))):
        h = read_header(data, f"{name}.webp")
        with Image.open(io.BytesIO(data)) as im:
            assert (h.width, h.height) == im.size == (53, 37), name
            assert h.samples == len(im.getbands()), name
        assert decode(data, f"{name}.webp").pixels.shape == (37, 53, 3), name
