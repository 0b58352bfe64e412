"""DICOM with pydicom: the header's size fields checked first, then modality LUT, window and
photometric interpretation.

Modality LUT / rescale slope+intercept first (-> Hounsfield units for CT), then the window:
``spec.window`` when given, else the file's VOI LUT, else its Window Center/Width, else the
frame's full range. MONOCHROME1 ("white is zero") is inverted so bone is bright as in
MONOCHROME2. Colour (RGB, YBR_*) and PALETTE COLOR come out as RGB. Multi-frame files yield one
chosen frame. Rows, Columns, SamplesPerPixel, BitsAllocated and NumberOfFrames are checked
against the limits before pixel decoding. Errors name the attribute, never its value: DICOM
strings hold patient names.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from medxfer.data.decode.common import Decoded, Header, input_errors, minmax
from medxfer.data.decode.header import check_header
from medxfer.errors import ImageDecodeError

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

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


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns about (and logs) invalid values by quoting them; medxfer's checks name the
    attribute instead. Values are converted lazily, so every access belongs inside this block."""
    from pydicom import config

    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = old


def read_dicom(data: bytes, path: str, header_only: bool):
    import pydicom

    with input_errors(path, "not a readable DICOM file"):
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=header_only)


def dicom_int(ds, keyword: str, path: str, default: int | None = None) -> int:
    """An integer attribute, or an error naming the attribute (never its value: it may be anything)."""
    try:
        value = ds.get(keyword)
        if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
            if default is None:
                raise ImageDecodeError(path, f"DICOM file lacks {keyword}")
            return default
        number = int(value)
    except (ImageDecodeError, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - malformed values: the type of failure says nothing useful
        raise ImageDecodeError(path, f"DICOM {keyword} is not a whole number") from None
    return number


def dicom_header(ds, path: str) -> Header:
    rows, cols = dicom_int(ds, "Rows", path), dicom_int(ds, "Columns", path)
    samples = dicom_int(ds, "SamplesPerPixel", path, 1)
    bits = dicom_int(ds, "BitsAllocated", path, 16)
    frames = dicom_int(ds, "NumberOfFrames", path, 1)
    if frames < 1 or samples < 1 or bits < 1:
        raise ImageDecodeError(path, "DICOM NumberOfFrames, SamplesPerPixel or BitsAllocated is not positive")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    palette = photometric == "PALETTE COLOR"
    return Header(
        fmt="dicom",
        width=cols,
        height=rows,
        samples=3 if palette else samples,  # a palette is expanded to RGB
        sample_bytes=max(2 if palette else 1, math.ceil(bits / 8)),
        frames=frames,
        color=palette or samples >= 3,
    )


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


def _ensure_transfer_syntax(ds) -> None:
    """A bare dataset without the Part 10 header: infer the syntax from how it was read."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    from pydicom.dataset import FileMetaDataset

    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    )


def _check_decoder(path: str, ts) -> None:
    """Compressed or unknown syntaxes: name the plugin to install instead of failing inside pydicom."""
    from pydicom.pixels import get_decoder

    ts_uid, ts_name = str(ts), getattr(ts, "name", str(ts))
    if getattr(ts, "is_transfer_syntax", True) and not getattr(ts, "is_compressed", False):
        return
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


def _dicom_pixels(ds, path: str, frame: int, nframes: int) -> np.ndarray:
    ts = ds.file_meta.TransferSyntaxUID
    ts_uid, ts_name = str(ts), getattr(ts, "name", str(ts))
    try:
        ds.pixel_array_options(index=frame if nframes > 1 else None)
        arr = ds.pixel_array
    except MemoryError:
        raise
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
    if arr.ndim == 3 and nframes > 1 and arr.shape[-1] not in (3, 4):
        arr = arr[0]  # defensive: some plugins ignore the index option
    return arr


def _dicom_display(ds, arr: np.ndarray, path: str, window: tuple[float, float] | None) -> tuple[np.ndarray, int]:
    """Stored values -> ``([0,1] pixels, CLAHE depth)``: colour scaled by its depth; gray through the
    modality LUT, the window and MONOCHROME1 inversion."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 65535.0), 8
    if arr.ndim == 3:  # RGB / YBR: pydicom converts YBR to RGB by default
        bits = dicom_int(ds, "BitsStored", path, 8)
        if arr.dtype == np.uint8 or bits <= 8:
            return arr.astype(np.float32) / 255.0, 8
        return arr.astype(np.float32) / float(2**bits - 1), 16
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if window is not None:
        out = _window_linear(values, float(window[0]), float(window[1]))
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        lut = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
        try:
            nbits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            out = np.clip(lut / float(2**nbits - 1), 0.0, 1.0).astype(np.float32)
        except (AttributeError, IndexError, TypeError, ValueError):
            out = minmax(lut)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            out = _window_linear(values, c, w, str(ds.get("VOILUTFunction", "LINEAR")))
        except (TypeError, ValueError):
            out = minmax(values)
    else:
        out = minmax(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out, 8 if dicom_int(ds, "BitsStored", path, 16) <= 8 else 16


def decode_dicom(
    data: bytes, path: str, frame: int, window: tuple[float, float] | None, max_pixels: int, max_image_bytes: int
) -> Decoded:
    with quiet_pydicom():
        ds = read_dicom(data, path, header_only=False)
        if not any(t in ds for t in _PIXEL_TAGS):
            raise ImageDecodeError(
                path, "DICOM file has no pixel data (e.g. a structured report or presentation state)"
            )
        h = dicom_header(ds, path)
        check_header(path, h, max_pixels, max_image_bytes)
        if h.frames > 1 and frame >= h.frames:
            raise ImageDecodeError(path, f"frame {frame} requested but the file has {h.frames} frames")
        _ensure_transfer_syntax(ds)
        _check_decoder(path, ds.file_meta.TransferSyntaxUID)
        arr = _dicom_pixels(ds, path, frame, h.frames)
        with input_errors(path, "could not apply the DICOM file's value and display transforms"):
            out, bits = _dicom_display(ds, arr, path, window)
        if not np.isfinite(out).all():
            raise ImageDecodeError(path, "DICOM pixel data produced non-finite values")
        return Decoded(np.ascontiguousarray(np.clip(out, 0.0, 1.0).astype(np.float32)), bits, "dicom", h)


# ----------------------------------------------------------------------------- public
