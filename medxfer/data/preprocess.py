"""The one preprocessing function: image bytes + spec -> normalised CHW tensor.

Why one pure function: the cache (Ray Data), training, evaluation and batch prediction all call
:func:`preprocess_bytes` with the spec stored in the model bundle, so a model is never fed images
prepared differently from the ones it was trained on. No Ray, no I/O: unit-testable on bytes.
(Untrusted bytes reach it through :mod:`medxfer.data.decode.sandbox`, which runs this very
function in a process with a memory and time budget.)

Order of operations (each step documented because it changes the pixels):

1. decode (:mod:`medxfer.data.decode`: windowing, MONOCHROME1, colour, EXIF orientation) to the
   image's stored depth: uint8, uint16, or float32 for float images, with the scale that maps it to
   [0, 1]. Without CLAHE a JPEG much larger than ``size`` is decoded at reduced scale (still at
   least twice ``size``), the same in every caller; with CLAHE it is decoded in full, so that
   CLAHE's tiles keep the detail they were tuned on;
2. to 1 channel (ITU-R BT.601 luma, at the stored depth) when ``channels == 1`` and the image is colour;
3. optional CLAHE at the image's own integer depth (uint8 for 8-bit sources, uint16 otherwise;
   colour images on the L channel of Lab, at 8 bits), before resizing so tiles see full-resolution detail;
4. resize to ``size`` x ``size`` at the stored depth: ``letterbox`` (keep aspect, pad with black,
   centred), ``stretch`` or ``center_crop`` (central square of the short side). INTER_AREA when
   shrinking, INTER_LINEAR when enlarging: neither overshoots. Integer images are rounded to their
   depth by the resize (half a grey level at most), as Pillow and torchvision resize them;
5. to float32 [0, 1] (the first float copy, output-sized), colour to RGB order, and gray -> 3
   channels by replication when ``channels == 3``;
6. ``(x - mean) / std`` per channel, then CHW in ``spec.dtype``.

Peak memory is therefore the decoded array plus at most two arrays of its size (a gray or CLAHE
copy) plus output-sized arrays: no full-size float32 copy, no gray image repeated to 3 channels
before it is shrunk.
"""

from __future__ import annotations

import cv2
import numpy as np

from medxfer.config import PreprocessConfig
from medxfer.data.decode import (  # noqa: F401 - decode_image re-exported
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    Decoded,
    decode,
    decode_image,
)
from medxfer.data.decode.common import affine_to
from medxfer.errors import DataError

__all__ = ["preprocess_bytes", "preprocess_image", "preprocess_pixels", "preprocess_decoded", "decode_image",
           "output_shape"]


def _channels(spec: PreprocessConfig) -> int:
    """The spec's channel count; 'auto' must have been resolved against the dataset (the cache does,
    and bundles carry the resolved spec), since one dataset's tensors need one shape."""
    if spec.channels == "auto":
        raise DataError(
            "preprocess.channels is 'auto' here; it is resolved from the dataset when the cache is "
            "prepared, and a model bundle must carry the resolved number (1 or 3)"
        )
    return int(spec.channels)


def output_shape(spec: PreprocessConfig) -> tuple[int, int, int]:
    return (_channels(spec), int(spec.size), int(spec.size))


def _to_int(img: np.ndarray, scale: float, dtype) -> np.ndarray:
    """Pixels whose values times ``scale`` lie in [0, 1] -> uint8/uint16 over that depth's full range."""
    top = float(np.iinfo(dtype).max)
    if img.dtype == dtype and abs(scale * top - 1.0) < 1e-12:
        return img
    return affine_to(img, scale * top, 0.0, dtype)


def _clahe(img: np.ndarray, scale: float, bits: int, bgr: bool, clip: float, grid: int) -> tuple[np.ndarray, float]:
    """CLAHE at the image's integer depth -> ``(equalised pixels, their scale)``."""
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(grid), int(grid)))
    if img.ndim == 3:
        # Colour: equalise lightness only, so hues are not shifted.
        to_lab, from_lab = (cv2.COLOR_BGR2LAB, cv2.COLOR_LAB2BGR) if bgr else (cv2.COLOR_RGB2LAB, cv2.COLOR_LAB2RGB)
        lab = cv2.cvtColor(_to_int(img, scale, np.uint8), to_lab)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, from_lab, dst=lab), 1.0 / 255.0  # in place: one colour copy, not two
    if bits <= 8:
        return clahe.apply(_to_int(img, scale, np.uint8)), 1.0 / 255.0
    return clahe.apply(_to_int(img, scale, np.uint16)), 1.0 / 65535.0


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    interp = cv2.INTER_AREA if (w < iw and h < ih) else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def _fit(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize to ``size`` x ``size`` (see step 4), keeping ``img``'s dtype."""
    h, w = img.shape[:2]
    if mode == "stretch":
        return _resize(img, size, size)
    if mode == "center_crop":
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        return _resize(np.ascontiguousarray(img[y0 : y0 + s, x0 : x0 + s]), size, size)
    # letterbox
    scale = size / max(h, w)
    nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
    small = _resize(img, nw, nh)
    out = np.zeros((size, size) + img.shape[2:], dtype=img.dtype)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def _prepare(img: np.ndarray, scale: float, bits: int, bgr: bool, spec: PreprocessConfig) -> np.ndarray:
    """Steps 2-6 on pixels at their stored depth (``img * scale`` in [0, 1]); returns CHW ``spec.dtype``."""
    channels = _channels(spec)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    if channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    if spec.clahe:
        img, scale = _clahe(img, scale, bits, bgr, spec.clahe_clip_limit, spec.clahe_tile_grid)
    small = _fit(np.ascontiguousarray(img), spec.size, spec.resize)
    unit = small.astype(np.float32) * np.float32(scale)
    if unit.ndim == 3 and bgr:
        unit = unit[:, :, ::-1]
    if unit.ndim == 2:
        unit = unit[:, :, None]
    if channels == 3 and unit.shape[2] == 1:
        unit = np.repeat(unit, 3, axis=2)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, -1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 1, -1)
    out = (unit - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(spec.dtype, copy=False)


def preprocess_pixels(img: np.ndarray, spec: PreprocessConfig, bits: int = 8) -> np.ndarray:
    """Steps 2-6 on already-decoded float [0,1] pixels (HxW or HxWx3 RGB); returns CHW ``spec.dtype``."""
    return _prepare(np.asarray(img, dtype=np.float32), 1.0, bits, False, spec)


def preprocess_decoded(d: Decoded, spec: PreprocessConfig) -> np.ndarray:
    """Steps 2-6 on a :class:`Decoded` at its stored depth; returns CHW ``spec.dtype``."""
    return _prepare(d.stored, d.scale, d.bits, d.bgr, spec)


def preprocess_image(
    data: bytes,
    spec: PreprocessConfig,
    path: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> tuple[np.ndarray, Decoded]:
    """Image bytes -> ``(array (channels, size, size) in spec.dtype, the Decoded it came from)``.

    The one path from bytes to tensor: the cache builds its card from the Decoded (the stored size
    and format), prediction keeps the array. Raises ImageDecodeError for files that cannot be used.
    """
    d = decode(data, path, frame=spec.frame, window=spec.window, max_pixels=max_pixels,
               max_image_bytes=max_image_bytes, target=None if spec.clahe else spec.size)
    return preprocess_decoded(d, spec), d


def preprocess_bytes(
    data: bytes,
    spec: PreprocessConfig,
    path: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> np.ndarray:
    """Image bytes -> ``(channels, size, size)`` array in ``spec.dtype``. Raises ImageDecodeError."""
    return preprocess_image(data, spec, path, max_pixels, max_image_bytes)[0]
