"""What every decoder shares: the limits, the header and result types, scaling to [0, 1], and
turning a library's failure on a file into an error that names the file and not its contents.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from medxfer.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's limit; DataConfig.max_pixels overrides it
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024**2  # DataConfig.max_image_bytes overrides it
# medxfer's format name -> the name messages use.
NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "webp": "WebP", "jpeg2000": "JPEG 2000",
         "pnm": "PNM", "sun": "Sun raster", "gif": "GIF", "avif": "AVIF", "dicom": "DICOM"}
#: File name endings of the formats above: what `import folder` and `predict` on a folder take as images
#: (with files that have no ending, as DICOM files often do). One list, so a format the decoder reads is
#: never skipped by a listing.
SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".j2k", ".j2c",
    ".jpf", ".jpx", ".pbm", ".pgm", ".ppm", ".pnm", ".pfm", ".sr", ".ras", ".gif", ".avif", ".dcm", ".dicom", ".dic",
})


@dataclass(frozen=True)
class Header:
    """What a file's header says about its pixels, read without decoding them."""

    fmt: str  # png, jpeg, tiff, bmp, webp, jpeg2000, pnm, sun, gif, avif, dicom
    width: int
    height: int
    samples: int  # values per pixel in the decoder's buffer
    sample_bytes: int
    frames: int = 1  # DICOM: frames the file holds
    color: bool = False  # stores colour (RGB, YBR, palette, CMYK...), not gray
    orientation: int = 1  # EXIF orientation; 1 = as stored
    tile: tuple[int, int] | None = None  # TIFF: (width, height) of the tiles its decoder allocates whole

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.samples * self.sample_bytes * self.frames


@dataclass
class Decoded:
    """Decoded pixels, still at their stored depth, plus what preprocessing needs to know about them.

    ``stored`` keeps the decoder's integer depth (uint8, or uint16 for deeper data) or float32:
    preprocessing resizes it before any float copy of the full image exists, so a decode costs the
    decoded array plus output-sized arrays. ``stored * scale`` is the display value in [0, 1].
    """

    stored: np.ndarray  # uint8 / uint16 / float32, HxW or HxWx3 (BGR when ``bgr``)
    scale: float  # stored value -> [0, 1]: 1/255, 1/65535, 1/(2**bits - 1), or 1.0 for float32
    bits: int  # 8 or 16: the integer depth CLAHE should work at
    fmt: str  # png, jpeg, tiff, bmp, ..., dicom
    header: Header  # the stored image (its size, before any reduced decoding)
    bgr: bool = False  # colour in OpenCV's B, G, R order (swapped after resizing, on the small array)

    @property
    def pixels(self) -> np.ndarray:
        """The full-size float32 [0, 1] image, RGB: for inspection and tests; preprocessing never makes it."""
        unit = self.stored.astype(np.float32) * np.float32(self.scale)
        return np.ascontiguousarray(unit[:, :, ::-1] if self.bgr and unit.ndim == 3 else unit)

    @property
    def color(self) -> bool:
        return self.stored.ndim == 3


def out_of_memory(e: BaseException) -> bool:
    """MemoryError, or OpenCV's allocation failure (a ``cv2.error``, not a MemoryError)."""
    return isinstance(e, MemoryError) or (isinstance(e, cv2.error) and getattr(e, "code", None) == cv2.Error.StsNoMem)


@contextmanager
def input_errors(path: str, what: str) -> Iterator[None]:
    """A library failing on the file's bytes -> ImageDecodeError naming ``what`` and the error's type.

    The library's message is dropped: it can quote values from the file. Running out of memory
    is the machine's problem, not the file's, and passes through.
    """
    try:
        yield
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds on hostile input
        if out_of_memory(e):
            raise
        kind = "OpenCV error" if isinstance(e, cv2.error) else type(e).__name__
        raise ImageDecodeError(path, f"{what} ({kind})") from None


# ----------------------------------------------------------------------------- display range

BAND_PIXELS = 1 << 20  # pixels a banded conversion handles at once: its float temporaries stay ~4-8 MB


def bands(n_rows: int, row_pixels: int) -> Iterator[slice]:
    """Row slices of about :data:`BAND_PIXELS` pixels: full-size conversions done a band at a time
    allocate band-sized temporaries instead of full-size float64 copies."""
    step = max(1, BAND_PIXELS // max(1, row_pixels))
    for r in range(0, n_rows, step):
        yield slice(r, min(n_rows, r + step))


def affine_to(arr: np.ndarray, factor: float, offset: float, dtype) -> np.ndarray:
    """``rint((arr - offset) * factor)`` clipped into ``dtype`` (uint8/uint16), or as float32 without
    rounding; computed a band of rows at a time."""
    out = np.empty(arr.shape, dtype=dtype)
    row = int(np.prod(arr.shape[1:], dtype=np.int64)) if arr.ndim > 1 else 1
    top = None if np.dtype(dtype).kind == "f" else float(np.iinfo(dtype).max)
    for b in bands(arr.shape[0], row):
        v = (arr[b].astype(np.float64) - offset) * factor
        if top is not None:
            np.rint(v, out=v)
            np.clip(v, 0.0, top, out=v)
        out[b] = v
    return out


def display_range(arr: np.ndarray, path: str) -> tuple[np.ndarray, float, int]:
    """Decoded pixels -> ``(stored, scale, CLAHE depth)`` (see the package doc for the conventions).

    8-bit stays as it is. Deeper integers are min-max stretched onto uint16 (one 2-byte copy, never
    a float one). Float images inside [0, 1] are kept (as float32), others min-max scaled.
    """
    if arr.dtype == np.uint8:
        return arr, 1.0 / 255.0, 8
    if arr.dtype.kind not in "uif":
        raise ImageDecodeError(path, f"unsupported pixel type {arr.dtype} (expected 8/16-bit integer or float)")
    if arr.dtype.kind == "f":
        if not all(np.isfinite(arr[b]).all() for b in bands(arr.shape[0], arr.size // max(1, arr.shape[0]))):
            raise ImageDecodeError(path, "image contains NaN or infinite pixel values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            return arr.astype(np.float32, copy=False), 1.0, 16
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.float32), 1.0, 16
        return affine_to(arr, 1.0 / (hi - lo), lo, np.float32), 1.0, 16
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint16), 1.0 / 65535.0, 16
    if arr.dtype in (np.uint16, np.int16, np.int32, np.int8):
        return cv2.normalize(arr, None, 0, 65535, cv2.NORM_MINMAX, dtype=cv2.CV_16U), 1.0 / 65535.0, 16
    return affine_to(arr, 65535.0 / (hi - lo), lo, np.uint16), 1.0 / 65535.0, 16
