"""Reading what a file's header says about its pixels, without decoding them.

A raster file's header is read by Pillow, lazily (``Image.open`` decodes nothing): format, size,
bands, bit depth, orientation; a WebP's by :func:`webp_header` (Pillow's WebP reader decodes on open). Only formats whose header Pillow reads and OpenCV decodes are
accepted — PNG, JPEG, BMP, TIFF (BigTIFF too), WebP, JPEG 2000, PNM/PFM, Sun raster, GIF, AVIF;
anything else (Radiance HDR, PAM, OpenEXR...) is refused, since its size would only be known by
decoding it. In a TIFF with repeated width or height tags both Pillow and libtiff (OpenCV's TIFF
decoder) take the first, so the size checked is the size decoded. DICOM headers are read by
:mod:`medxfer.data.decode.dicom`; both are checked here, by :func:`check_header`, against the
pixel limit (``data.max_pixels``) and the decoded-bytes limit (``data.max_image_bytes``: width x
height x samples x bytes per sample, x frames for DICOM).

A tiled TIFF's decoder allocates a whole tile, whatever the image's size (measured: a 64x64 TIFF
with one 16000x16000 deflated tile took 1 GB to decode). Tiles may overhang the image, to the next
multiple of 16 or up to the usual tile sizes (:data:`TILE_SIDE_ALWAYS_OK`); a tile beyond both is
refused, and so is one whose buffer alone exceeds ``data.max_image_bytes``.
"""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image

from medxfer.data.decode.common import NAMES, Header, input_errors
from medxfer.errors import ImageDecodeError

# Pillow's decompression-bomb limit is fixed and process-wide; medxfer applies its own,
# configurable limits to every header (below), so Pillow's would only override the settings.
Image.MAX_IMAGE_PIXELS = None

# Pillow's format name -> medxfer's, for the formats both Pillow (header) and OpenCV (pixels) read.
_FORMATS = {
    "PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff", "WEBP": "webp",
    "JPEG2000": "jpeg2000", "PPM": "pnm", "SUN": "sun", "GIF": "gif", "AVIF": "avif",
}
_OPEN = ("PNG", "JPEG", "BMP", "TIFF", "JPEG2000", "PPM", "SUN", "GIF", "AVIF")  # WebP: webp_header
# Leading bytes, only to name the format of a file whose header is unreadable.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"), (b"II*\x00", "tiff"),
          (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"), (b"GIF8", "gif"),
          (b"\x00\x00\x00\x0cjP  ", "jpeg2000"), (b"\xffO\xffQ", "jpeg2000"))
_GRAY_MODES = ("1", "L", "LA", "I", "F")
TILE_SIDE_ALWAYS_OK = 1024  # TIFF tile sides up to this are accepted whatever the image's size (256-1024 is usual)


def is_dicom(data: bytes, path: str = "") -> bool:
    """DICOM Part 10 files carry 'DICM' at offset 128; files without the preamble are named .dcm."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return str(path).lower().endswith((".dcm", ".dicom"))


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), "other")


def unreadable(path: str, fmt: str) -> ImageDecodeError:
    if fmt in NAMES:
        return ImageDecodeError(path, f"corrupt or truncated {NAMES[fmt]} file")
    return ImageDecodeError(
        path, "not a decodable image (expected PNG, JPEG, TIFF, BMP, WebP, JPEG 2000, PNM, GIF, AVIF or "
        "DICOM; formats whose size cannot be read from a header are refused)"
    )


def _sample_bytes(im: Image.Image) -> int:
    """Bytes per sample of OpenCV's buffer. Pillow's mode says 8 bits for some deeper files (16-bit
    RGB PNG and PPM, JPEG 2000, AVIF), so their depth is read where each format records it."""
    if im.mode in ("I", "F"):
        return 4
    if im.mode.startswith("I;16"):
        return 2
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)
        return max(1, math.ceil(max(bits if isinstance(bits, tuple) else (bits,)) / 8))
    args = [a for t in im.tile for a in (t.args if isinstance(t.args, tuple) else (t.args,))]
    if im.format == "PNG" and any(str(a).endswith(";16B") for a in args):
        return 2
    if im.format == "PPM" and any(isinstance(a, int) and a > 255 for a in args):  # maxval
        return 2
    return 2 if im.format in ("JPEG2000", "AVIF") else 1


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, read from the header only.

    A PNG's ``getexif()`` decodes the whole image to look for an eXIf chunk after the pixels; a
    header guard must not decode, so for PNG only an eXIf chunk before the pixels (what
    ``Image.open`` already parsed into ``info``) counts — where cameras and editors write it.
    """
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            return _exif_orientation(raw) if raw else 1
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def webp_header(data: bytes, path: str) -> Header:
    """A WebP's size from its RIFF chunks (VP8X canvas, else the VP8 / VP8L frame header).

    Not Pillow's: its WebP reader decodes the whole image when it opens the file (a 16383x16383
    WebP took 1 GB to "open"), so a header check through it would come after the decode."""
    width = height = 0
    alpha = False
    exif = None
    i = 12
    while i + 8 <= len(data):
        tag, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
        body = data[i + 8 : i + 8 + size]
        if tag == b"VP8X" and len(body) >= 10:
            alpha = bool(body[0] & 0x10)
            width, height = 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
        elif tag == b"VP8L" and len(body) >= 5 and body[0] == 0x2F and not width:
            bits = int.from_bytes(body[1:5], "little")
            width, height, alpha = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool(bits >> 28 & 1)
        elif tag == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a" and not width:
            width = int.from_bytes(body[6:8], "little") & 0x3FFF
            height = int.from_bytes(body[8:10], "little") & 0x3FFF
        elif tag == b"EXIF":
            exif = body
        i += 8 + size + (size & 1)
    if not width or not height:
        raise unreadable(path, "webp")
    return Header(fmt="webp", width=width, height=height, samples=4 if alpha else 3, sample_bytes=1, color=True,
                  orientation=_exif_orientation(exif) if exif else 1)


def _exif_orientation(raw: bytes) -> int:
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def raster_header(data: bytes, path: str) -> Header:
    if _sniff(data) == "webp":
        return webp_header(data, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=_OPEN)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - unidentified or malformed: named by its leading bytes
        raise unreadable(path, _sniff(data)) from None
    with im, input_errors(path, "unreadable image header"):
        fmt = _FORMATS.get(im.format or "")
        if fmt is None:
            raise unreadable(path, "other")
        palette = im.mode in ("P", "PA")
        tile = None
        if im.format == "TIFF" and 322 in im.tag_v2:
            tile = (int(im.tag_v2.get(322) or 0), int(im.tag_v2.get(323) or 0))
        return Header(
            fmt=fmt,
            width=int(im.size[0]),
            height=int(im.size[1]),
            samples=4 if palette else len(im.getbands()),  # a palette is expanded to colour
            sample_bytes=_sample_bytes(im),
            color=not (im.mode in _GRAY_MODES or im.mode.startswith("I;16")),
            orientation=_orientation(im),
            tile=tile,
        )


def check_header(path: str, h: Header, max_pixels: int, max_image_bytes: int) -> None:
    w, ht = h.width, h.height
    if w <= 0 or ht <= 0:
        raise ImageDecodeError(path, f"image header declares an empty size {w}x{ht}")
    if w * ht > max_pixels:
        raise ImageDecodeError(
            path,
            f"image is {w}x{ht} = {w * ht:,} pixels, above the limit of {max_pixels:,}; refused from its "
            "header before decoding (possible decompression bomb; raise data.max_pixels if the file is genuine)",
        )
    if h.tile is not None:
        _check_tile(path, h, max_image_bytes)
    if h.nbytes > max_image_bytes:
        frames = " in all its frames" if h.frames > 1 else ""
        raise ImageDecodeError(
            path,
            f"image is {w}x{ht} with {h.samples} sample(s) of {h.sample_bytes} byte(s) per pixel: {h.nbytes:,} "
            f"bytes decoded{frames}, above the limit of {max_image_bytes:,}; refused from its header before "
            "decoding (raise data.max_image_bytes if the file is genuine)",
        )


# ----------------------------------------------------------------------------- scaling


def _check_tile(path: str, h: Header, max_image_bytes: int) -> None:
    tw, th = h.tile or (0, 0)
    if tw <= 0 or th <= 0:
        raise ImageDecodeError(path, "TIFF header declares tiles of an empty size")
    allowed_w = max(-(-h.width // 16) * 16, TILE_SIDE_ALWAYS_OK)
    allowed_h = max(-(-h.height // 16) * 16, TILE_SIDE_ALWAYS_OK)
    tile_bytes = tw * th * h.samples * h.sample_bytes
    if tw > allowed_w or th > allowed_h or tile_bytes > max_image_bytes:
        raise ImageDecodeError(
            path,
            f"TIFF tiles of {tw}x{th} ({tile_bytes:,} bytes each, which its decoder allocates whole) do not fit the "
            f"{h.width}x{h.height} image (at most {allowed_w}x{allowed_h}) or data.max_image_bytes "
            f"({max_image_bytes:,}); refused from its header before decoding",
        )
