"""Bytes -> pixels: OpenCV for raster formats, pydicom for DICOM, each size-checked from its header first.

Why one decoder for everything: preprocessing, training and prediction must see exactly the same
pixels for the same file, so every path into the model goes through :func:`decode`. The package:
``header`` (what a file's header says, Pillow and pydicom, nothing decoded), ``opencv`` (raster
pixels), ``dicom`` (DICOM pixels and display transforms), ``common`` (limits, types, scaling).

Conventions (documented because they change what the model sees):

* Output is float32 in [0, 1], ``(H, W)`` for grayscale or ``(H, W, 3)`` RGB.
* 8-bit images are divided by 255 (they are already display-ready).
* 16-bit, signed and float images (raw detector values, CT, 12-bit data in 16-bit PNGs) are
  min-max scaled per image: their absolute range rarely means anything across devices. A float
  image already inside [0, 1] is kept as is.
* An EXIF orientation tag is applied, as photo viewers do: a phone photo of a lesion taken with
  the phone turned comes out upright.
* DICOM: see :mod:`medxfer.data.decode.dicom` (rescale, window, MONOCHROME1, colour, frames).
* With a ``target`` size, large JPEGs are decoded at reduced scale (:mod:`~medxfer.data.decode.opencv`).

Guards, all before a pixel buffer exists: the header is read and checked against the pixel and
byte limits; formats whose size cannot be read from a header are refused.

Errors (:class:`ImageDecodeError`) name the file and the kind of problem, never a value from inside
the file (DICOM strings hold patient names) nor a library's own message (those quote values). A
``MemoryError`` is not the file's fault: it passes through, so a job fails instead of recording
a good image as bad.
"""

from __future__ import annotations

import numpy as np

from medxfer.data.decode.common import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    SUFFIXES,
    Decoded,
    Header,
    out_of_memory,
)
from medxfer.data.decode.dicom import decode_dicom, dicom_header, quiet_pydicom, read_dicom
from medxfer.data.decode.header import check_header, is_dicom, raster_header
from medxfer.data.decode.opencv import decode_raster
from medxfer.errors import ImageDecodeError

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "DEFAULT_MAX_PIXELS", "SUFFIXES", "Decoded", "Header", "decode", "decode_image",
           "is_dicom", "out_of_memory", "read_header"]


def read_header(data: bytes, path: str = "") -> Header:
    """Format, size, layout and orientation from the header alone; nothing is decoded.

    A prefix of the file is enough when it holds the header (for DICOM, everything before the
    pixel data). Raises ImageDecodeError for files whose header cannot be read.
    """
    if not data:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    if is_dicom(data, path):
        with quiet_pydicom():
            return dicom_header(read_dicom(bytes(data), path, header_only=True), path)
    return raster_header(bytes(data), path)


def decode(
    data: bytes,
    path: str = "",
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    target: int | None = None,
) -> Decoded:
    """Decode image bytes (any supported format) into :class:`Decoded`; raises ImageDecodeError.

    ``target``: the side length the caller will shrink the image to; large JPEGs are then decoded
    at reduced scale (:mod:`medxfer.data.decode.opencv`). ``None`` decodes at full size.
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    data = bytes(data)
    if is_dicom(data, path):
        return decode_dicom(data, path, frame, window, max_pixels, max_image_bytes)
    h = raster_header(data, path)
    check_header(path, h, max_pixels, max_image_bytes)
    return decode_raster(data, path, h, target)


def decode_image(
    data: bytes,
    path: str = "",
    spec=None,
    *,
    frame: int | None = None,
    window: tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> np.ndarray:
    """Pixels only, at full size: float32 in [0,1], HxW or HxWx3. ``spec`` supplies frame/window."""
    if spec is not None:
        frame = spec.frame if frame is None else frame
        window = spec.window if window is None else window
    return decode(data, path, frame=frame or 0, window=window, max_pixels=max_pixels,
                  max_image_bytes=max_image_bytes).pixels
