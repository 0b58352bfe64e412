"""Raster pixels with OpenCV: 8/16-bit and float, gray and colour (BGR kept as decoded, swapped to
RGB after resizing; BGRA and CMYK JPEG -> BGR), the EXIF orientation applied, and large JPEGs
decoded at reduced scale.

With a ``target`` size, a JPEG much larger than it is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg's DCT scaling (OpenCV's ``IMREAD_REDUCED_*``), keeping at least twice the target on its
short side for the resize to average down from. Other formats gain nothing from it (OpenCV
would decode them in full and resize) and are decoded in full. A decoded size that differs from
the header's is refused.
"""

from __future__ import annotations

import cv2
import numpy as np

from medxfer.data.decode.common import NAMES, Decoded, Header, display_range, input_errors
from medxfer.data.decode.header import unreadable
from medxfer.errors import ImageDecodeError

_REDUCED = {
    (2, False): cv2.IMREAD_REDUCED_GRAYSCALE_2, (4, False): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, False): cv2.IMREAD_REDUCED_GRAYSCALE_8, (2, True): cv2.IMREAD_REDUCED_COLOR_2,
    (4, True): cv2.IMREAD_REDUCED_COLOR_4, (8, True): cv2.IMREAD_REDUCED_COLOR_8,
}


def _reduction(h: Header, target: int | None) -> int:
    """1, 2, 4 or 8: the largest JPEG scale-down keeping twice ``target`` on the short side."""
    if target is None or h.fmt != "jpeg" or h.sample_bytes != 1:
        return 1
    short = min(h.width, h.height)
    return next((f for f in (8, 4, 2) if short // f >= 2 * target), 1)


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (TIFF/EXIF tag 274) to HxW or HxWxC pixels."""
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = img.swapaxes(0, 1)
    elif orientation == 6:
        img = np.rot90(img, -1)
    elif orientation == 7:
        img = img[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        img = np.rot90(img, 1)
    return np.ascontiguousarray(img)


def decode_raster(data: bytes, path: str, h: Header, target: int | None) -> Decoded:
    factor = _reduction(h, target)
    flags = cv2.IMREAD_UNCHANGED if factor == 1 else _REDUCED[(factor, h.color)] | cv2.IMREAD_IGNORE_ORIENTATION
    with input_errors(path, f"OpenCV could not decode the {NAMES[h.fmt]} file"):
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.size == 0:
        raise unreadable(path, h.fmt)
    if img.shape[:2] != (-(-h.height // factor), -(-h.width // factor)):
        raise ImageDecodeError(path, f"the {NAMES[h.fmt]} file's header and its pixel data disagree on the size")
    bgr = False
    if img.ndim == 3:
        c = img.shape[2]
        if c in (1, 2):  # gray (+ alpha)
            img = img[:, :, 0]
        elif c == 3:
            bgr = True  # swapped on the resized array: no full-size copy for the channel order
        elif c == 4:  # BGRA; OpenCV already turned CMYK JPEGs into BGR
            img, bgr = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), True
        else:
            raise ImageDecodeError(path, f"unsupported number of channels: {c}")
    elif img.ndim != 2:
        raise ImageDecodeError(path, f"unsupported image shape {img.shape}")
    stored, scale, bits = display_range(_orient(img, h.orientation), path)
    return Decoded(stored, scale, bits, h.fmt, h, bgr=bgr)
