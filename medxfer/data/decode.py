"""Bytes -> pixels: OpenCV for PNG/JPEG/TIFF/BMP, pydicom for DICOM, with guards for bad files.

Why one decoder for everything: preprocessing, training and prediction must see exactly the same
pixels for the same file, so every path into the model goes through :func:`decode`.

Conventions (documented because they change what the model sees):

* Output is float32 in [0, 1], ``(H, W)`` for grayscale or ``(H, W, 3)`` RGB.
* 8-bit images are divided by 255 (they are already display-ready).
* 16-bit, signed and float images (raw detector values, CT, 12-bit data in 16-bit PNGs) are
  min-max scaled per image: their absolute range rarely means anything across devices. A float
  image already inside [0, 1] is kept as is.
* DICOM: modality LUT / rescale slope+intercept first (-> Hounsfield units for CT), then the
  window: ``spec.window`` when given, else the file's VOI LUT, else its Window Center/Width,
  else the frame's full range. MONOCHROME1 ("white is zero") is inverted so bone is bright as in
  MONOCHROME2. Colour (RGB, YBR_*) and PALETTE COLOR come out as RGB. Multi-frame files yield
  one chosen frame (``frame``, default the first).

Guards: empty bytes, undecodable bytes, decompression bombs (PNG/JPEG/BMP/TIFF dimensions are
read from the header *before* decoding; DICOM Rows x Columns before pixel decoding), DICOM
without pixel data, compressed transfer syntaxes whose decoder plugin is missing (the message
names the package to install). Error messages never contain DICOM header values (patient names,
IDs, dates): only technical attributes such as the transfer syntax.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from medxfer.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's limit; DataConfig.max_pixels overrides it

# Transfer syntax UID prefix -> the package that decodes it (pydicom's plugins).
_TS_PLUGIN_HINTS = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or Pillow built with OpenJPEG)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or Pillow built with OpenJPEG)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or Pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (or numpy, built in)",
}


@dataclass
class Decoded:
    """Decoded pixels plus what preprocessing needs to know about where they came from."""

    pixels: np.ndarray  # float32 [0,1], HxW or HxWx3
    bits: int  # 8 or 16: the integer depth CLAHE should work at
    fmt: str  # png, jpeg, tiff, bmp, dicom, other


# ----------------------------------------------------------------------------- header sniffing


def is_dicom(data: bytes, path: str = "") -> bool:
    """DICOM Part 10 files carry 'DICM' at offset 128; files without the preamble are named .dcm."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return str(path).lower().endswith((".dcm", ".dicom"))


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            return None
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA:  # start of scan before any frame header: give up, let the decoder judge
            return None
        i += 2 + seg_len
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width/height of the first IFD of a classic TIFF (BigTIFF: None, the decoder's own limit applies)."""
    if data[:4] not in (b"II*\x00", b"MM\x00*") or len(data) < 8:
        return None
    e = "<" if data[:2] == b"II" else ">"
    try:
        off = struct.unpack(e + "I", data[4:8])[0]
        count = struct.unpack(e + "H", data[off : off + 2])[0]
        w = h = None
        for k in range(count):
            ent = data[off + 2 + 12 * k : off + 14 + 12 * k]
            tag, typ = struct.unpack(e + "HH", ent[:4])
            if tag in (256, 257):
                val = struct.unpack(e + "H", ent[8:10])[0] if typ == 3 else struct.unpack(e + "I", ent[8:12])[0]
                if tag == 256:
                    w = val
                else:
                    h = val
        return (w, h) if w and h else None
    except (struct.error, IndexError):
        return None


def header_size(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """``(format, (width, height) or None)`` read from the header only, without decoding."""
    for fmt, fn in (("png", _png_size), ("jpeg", _jpeg_size), ("bmp", _bmp_size), ("tiff", _tiff_size)):
        size = fn(data)
        if size is not None:
            return fmt, size
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", None
    if data[:2] == b"\xff\xd8":
        return "jpeg", None
    return "other", None


def _check_pixels(path: str, w: int, h: int, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageDecodeError(path, f"image header declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageDecodeError(
            path,
            f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
            "(possible decompression bomb; raise data.max_pixels if the file is genuine)",
        )


# ----------------------------------------------------------------------------- scaling


def _to_unit(arr: np.ndarray, path: str) -> tuple[np.ndarray, int]:
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
    return _minmax(a), 16


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


# ----------------------------------------------------------------------------- OpenCV


def _decode_opencv(data: bytes, path: str, max_pixels: int) -> Decoded:
    fmt, size = header_size(data)
    if size is not None:
        _check_pixels(path, size[0], size[1], max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageDecodeError(path, f"OpenCV could not decode the image: {str(e).strip()[:200]}") from None
    if img is None or img.size == 0:
        what = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP"}.get(fmt)
        reason = (
            f"corrupt or truncated {what} file" if what else
            "not a decodable image (expected PNG, JPEG, TIFF, BMP or DICOM)"
        )
        raise ImageDecodeError(path, reason)
    h, w = img.shape[:2]
    _check_pixels(path, w, h, max_pixels)  # formats whose header we do not parse
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1:
            img = img[:, :, 0]
        elif c == 2:  # gray + alpha
            img = img[:, :, 0]
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif c == 4:  # BGRA; OpenCV already turned CMYK JPEGs into BGR
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageDecodeError(path, f"unsupported number of channels: {c}")
    elif img.ndim != 2:
        raise ImageDecodeError(path, f"unsupported image shape {img.shape}")
    pixels, bits = _to_unit(img, path)
    return Decoded(np.ascontiguousarray(pixels), bits, fmt)


# ----------------------------------------------------------------------------- DICOM


def _window_linear(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window functions, mapped to [0, 1]."""
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        w = max(width, 1e-6)
        return np.clip((x - center) / w + 0.5, 0.0, 1.0).astype(np.float32)
    w = max(width, 1.0)
    if w == 1.0:
        return (x > center - 0.5).astype(np.float32)
    y = ((x - (center - 0.5)) / (w - 1.0)) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _first(v) -> float:
    """Window Center/Width may be multi-valued; the first pair is the default view."""
    try:
        return float(v[0])
    except TypeError:
        return float(v)


def _plugin_hint(ts_uid: str) -> str:
    return _TS_PLUGIN_HINTS.get(ts_uid, "a decoder for it (or convert the file to an uncompressed transfer syntax)")


def _decode_dicom(
    data: bytes, path: str, frame: int, window: tuple[float, float] | None, max_pixels: int
) -> Decoded:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except (InvalidDicomError, EOFError, ValueError, OSError, struct.error) as e:
            raise ImageDecodeError(path, f"not a readable DICOM file ({type(e).__name__})") from None
        except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on garbage input
            raise ImageDecodeError(path, f"not a readable DICOM file ({type(e).__name__})") from None
        if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise ImageDecodeError(
                path, "DICOM file has no pixel data (e.g. a structured report or presentation state)"
            )
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            raise ImageDecodeError(path, "DICOM file lacks Rows/Columns") from None
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        _check_pixels(path, cols, rows, max_pixels)
        if nframes > 1 and frame >= nframes:
            raise ImageDecodeError(path, f"frame {frame} requested but the file has {nframes} frames")
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            # A bare dataset without the Part 10 header: infer the syntax from how it was read.
            from pydicom.dataset import FileMetaDataset

            implicit, little = getattr(ds, "original_encoding", (True, True))
            if meta is None:
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
            )
        ts = ds.file_meta.TransferSyntaxUID
        ts_uid, ts_name = str(ts), getattr(ts, "name", str(ts))
        if not getattr(ts, "is_transfer_syntax", True) or getattr(ts, "is_compressed", False):  # unknown UIDs too
            try:
                dec = get_decoder(ts_uid)
            except NotImplementedError:
                raise ImageDecodeError(
                    path,
                    f"DICOM transfer syntax '{ts_name}' is not supported by pydicom; convert the file to "
                    "an uncompressed transfer syntax (e.g. gdcmconv --raw)",
                ) from None
            if not dec.is_available:
                raise ImageDecodeError(
                    path,
                    f"DICOM transfer syntax '{ts_name}' needs a decoder plugin that is not installed: "
                    f"pip install {_plugin_hint(ts_uid)}",
                )
        try:
            ds.pixel_array_options(index=frame if nframes > 1 else None)
            arr = ds.pixel_array
        except (NotImplementedError, RuntimeError) as e:
            msg = str(e)
            if "plugin" in msg.lower() or "decod" in msg.lower():
                raise ImageDecodeError(
                    path,
                    f"could not decode DICOM pixel data ('{ts_name}'); install {_plugin_hint(ts_uid)}",
                ) from None
            raise ImageDecodeError(path, f"could not decode DICOM pixel data ('{ts_name}')") from None
        except Exception as e:  # noqa: BLE001
            raise ImageDecodeError(
                path, f"could not decode DICOM pixel data ('{ts_name}', {type(e).__name__})"
            ) from None

        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
        if arr.ndim == 3 and nframes > 1 and arr.shape[-1] not in (3, 4):
            arr = arr[0]  # defensive: some plugins ignore the index option
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(arr, ds)
            px = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 65535.0)
            return Decoded(np.ascontiguousarray(np.clip(px, 0.0, 1.0)), 8, "dicom")
        if arr.ndim == 3:  # RGB / YBR: pydicom converts YBR to RGB by default
            bits = int(ds.get("BitsStored", 8) or 8)
            if arr.dtype == np.uint8 or bits <= 8:
                px = arr.astype(np.float32) / 255.0
                return Decoded(np.ascontiguousarray(np.clip(px, 0, 1)), 8, "dicom")
            px = arr.astype(np.float32) / float(2**bits - 1)
            return Decoded(np.ascontiguousarray(np.clip(px, 0, 1)), 16, "dicom")

        values = apply_modality_lut(arr, ds).astype(np.float64)
        if window is not None:
            out = _window_linear(values, float(window[0]), float(window[1]))
        elif "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
            lut = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
            try:
                nbits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
                out = np.clip(lut / float(2**nbits - 1), 0.0, 1.0).astype(np.float32)
            except (AttributeError, IndexError, TypeError, ValueError):
                out = _minmax(lut)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            try:
                c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
                out = _window_linear(values, c, w, str(ds.get("VOILUTFunction", "LINEAR")))
            except (TypeError, ValueError):
                out = _minmax(values)
        else:
            out = _minmax(values)
        if photometric == "MONOCHROME1":
            out = 1.0 - out
        bits = int(ds.get("BitsStored", 16) or 16)
        if not np.isfinite(out).all():
            raise ImageDecodeError(path, "DICOM pixel data produced non-finite values")
        return Decoded(np.ascontiguousarray(out.astype(np.float32)), 8 if bits <= 8 else 16, "dicom")


# ----------------------------------------------------------------------------- public


def decode(
    data: bytes,
    path: str = "",
    *,
    frame: int = 0,
    window: tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Decode image bytes (any supported format) into :class:`Decoded`; raises ImageDecodeError."""
    if data is None or len(data) == 0:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    if is_dicom(data, path):
        return _decode_dicom(bytes(data), path, frame, window, max_pixels)
    return _decode_opencv(bytes(data), path, max_pixels)


def decode_image(
    data: bytes,
    path: str = "",
    spec=None,
    *,
    frame: int | None = None,
    window: tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Pixels only: float32 in [0,1], HxW or HxWx3. ``spec`` (PreprocessConfig) supplies frame/window."""
    if spec is not None:
        frame = spec.frame if frame is None else frame
        window = spec.window if window is None else window
    return decode(data, path, frame=frame or 0, window=window, max_pixels=max_pixels).pixels
