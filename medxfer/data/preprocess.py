"""The one preprocessing function: image bytes + spec -> normalised CHW tensor.

Why one pure function: the cache (Ray Data), training, evaluation and batch prediction all call
:func:`preprocess_bytes` with the spec stored in the model bundle, so a model is never fed images
prepared differently from the ones it was trained on. No Ray, no I/O: unit-testable on bytes.

Order of operations (each step documented because it changes the pixels):

1. decode to float [0,1] (:mod:`medxfer.data.decode`: windowing, MONOCHROME1, colour, EXIF
   orientation). Without CLAHE a JPEG much larger than ``size`` is decoded at reduced scale (still
   at least twice ``size``), the same in every caller; with CLAHE it is decoded in full, so that
   CLAHE's tiles keep the detail they were tuned on;
2. to 1 channel (ITU-R BT.601 luma) when ``channels == 1`` and the image is colour;
3. optional CLAHE at the image's own integer depth (uint8 for 8-bit sources, uint16 otherwise;
   colour images on the L channel of Lab), before resizing so tiles see full-resolution detail;
4. gray -> 3 channels by replication when ``channels == 3``;
5. resize to ``size`` x ``size``: ``letterbox`` (keep aspect, pad with black, centred),
   ``stretch`` or ``center_crop`` (central square of the short side). INTER_AREA when shrinking,
   INTER_LINEAR when enlarging: neither overshoots, so pixels stay in [0,1];
6. ``(x - mean) / std`` per channel, then CHW in ``spec.dtype``.
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
from medxfer.errors import DataError

__all__ = ["preprocess_bytes", "preprocess_image", "preprocess_pixels", "decode_image", "output_shape"]


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


def _to_gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def _clahe(img: np.ndarray, bits: int, clip: float, grid: int) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(grid), int(grid)))
    if img.ndim == 3:
        # Colour: equalise lightness only, so hues are not shifted.
        u8 = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
        lab = cv2.cvtColor(u8, cv2.COLOR_RGB2LAB)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
    if bits <= 8:
        u8 = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
        return clahe.apply(u8).astype(np.float32) / 255.0
    u16 = np.round(np.clip(img, 0, 1) * 65535.0).astype(np.uint16)
    return clahe.apply(u16).astype(np.float32) / 65535.0


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    interp = cv2.INTER_AREA if (w < iw and h < ih) else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def _fit(img: np.ndarray, size: int, mode: str) -> np.ndarray:
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
    out = np.zeros((size, size) + img.shape[2:], dtype=np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def preprocess_pixels(img: np.ndarray, spec: PreprocessConfig, bits: int = 8) -> np.ndarray:
    """Steps 2-6 on already-decoded float [0,1] pixels (HxW or HxWx3); returns CHW ``spec.dtype``."""
    channels = _channels(spec)
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if channels == 1:
        img = _to_gray(img)
    if spec.clahe:
        img = _clahe(img, bits, spec.clahe_clip_limit, spec.clahe_tile_grid)
    if channels == 3 and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = _fit(np.ascontiguousarray(img), spec.size, spec.resize)
    if img.ndim == 2:
        img = img[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, -1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 1, -1)
    out = (img - mean) / std
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(spec.dtype, copy=False)


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
    return preprocess_pixels(d.pixels, spec, d.bits), d


def preprocess_bytes(
    data: bytes,
    spec: PreprocessConfig,
    path: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> np.ndarray:
    """Image bytes -> ``(channels, size, size)`` array in ``spec.dtype``. Raises ImageDecodeError."""
    return preprocess_image(data, spec, path, max_pixels, max_image_bytes)[0]
