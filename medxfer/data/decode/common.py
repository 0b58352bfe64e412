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

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.samples * self.sample_bytes * self.frames


@dataclass
class Decoded:
    """Decoded pixels plus what preprocessing needs to know about where they came from."""

    pixels: np.ndarray  # float32 [0,1], HxW or HxWx3
    bits: int  # 8 or 16: the integer depth CLAHE should work at
    fmt: str  # png, jpeg, tiff, bmp, ..., dicom
    header: Header  # the stored image (its size, before any reduced decoding)


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


# ----------------------------------------------------------------------------- headers

def to_unit(arr: np.ndarray, path: str) -> tuple[np.ndarray, int]:
    """Integer/float pixels -> float32 [0,1] and the bit depth CLAHE should use (see module doc)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1.0 / 255.0), 8
    if arr.dtype.kind not in "uif":
        raise ImageDecodeError(path, f"unsupported pixel type {arr.dtype} (expected 8/16-bit integer or float)")
    a = arr.astype(np.float32)
    if arr.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageDecodeError(path, "image contains NaN or infinite pixel values")
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            return a, 16
    return minmax(a), 16


def minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)
