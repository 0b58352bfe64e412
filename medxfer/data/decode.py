"""Bytes -> pixels: OpenCV for raster formats, pydicom for DICOM, each size-checked from its header first.

Why one decoder for everything: preprocessing, training and prediction must see exactly the same
pixels for the same file, so every path into the model goes through :func:`decode`.

Conventions (documented because they change what the model sees):

* Output is float32 in [0, 1], ``(H, W)`` for grayscale or ``(H, W, 3)`` RGB.
* 8-bit images are divided by 255 (they are already display-ready).
* 16-bit, signed and float images (raw detector values, CT, 12-bit data in 16-bit PNGs) are
  min-max scaled per image: their absolute range rarely means anything across devices. A float
  image already inside [0, 1] is kept as is.
* An EXIF orientation tag is applied, as photo viewers do: a phone photo of a lesion taken with
  the phone turned comes out upright.
* DICOM: modality LUT / rescale slope+intercept first (-> Hounsfield units for CT), then the
  window: ``spec.window`` when given, else the file's VOI LUT, else its Window Center/Width,
  else the frame's full range. MONOCHROME1 ("white is zero") is inverted so bone is bright as in
  MONOCHROME2. Colour (RGB, YBR_*) and PALETTE COLOR come out as RGB. Multi-frame files yield
  one chosen frame (``frame``, default the first).
* With a ``target`` size, a JPEG much larger than it is decoded at 1/2, 1/4 or 1/8 scale by
  libjpeg's DCT scaling (OpenCV's ``IMREAD_REDUCED_*``), keeping at least twice the target on its
  short side for the resize to average down from. Other formats gain nothing from it (OpenCV
  would decode them in full and resize) and are decoded in full.

Guards, all before a pixel buffer exists. A raster file's header is read by Pillow, lazily
(``Image.open`` decodes nothing): format, size, bands, bit depth, orientation. Only formats whose
header Pillow reads and OpenCV decodes are accepted — PNG, JPEG, BMP, TIFF (BigTIFF too), WebP,
JPEG 2000, PNM/PFM, Sun raster, GIF, AVIF; anything else (Radiance HDR, PAM, OpenEXR...) is
refused, since its size would only be known by decoding it. In a TIFF with repeated width or
height tags both Pillow and libtiff (OpenCV's TIFF decoder) take the first, so the size checked
is the size decoded; a decoded size that differs from the header's is refused all the same.
DICOM: Rows, Columns, SamplesPerPixel, BitsAllocated and NumberOfFrames before pixel decoding.
Two limits apply: pixels (``data.max_pixels``) and bytes of the decoded buffer
(``data.max_image_bytes``: width x height x samples x bytes per sample, x frames for DICOM).

Errors (:class:`ImageDecodeError`) name the file and the kind of problem, never a value from inside
the file (DICOM strings hold patient names) nor a library's own message (those quote values). A
``MemoryError`` is not the file's fault: it passes through, so a job fails instead of recording
a good image as bad.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from medxfer.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's limit; DataConfig.max_pixels overrides it
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024**2  # DataConfig.max_image_bytes overrides it

# Pillow's decompression-bomb limit is fixed and process-wide; medxfer applies its own,
# configurable limits to every header (below), so Pillow's would only override the settings.
Image.MAX_IMAGE_PIXELS = None

# Pillow's format name -> medxfer's, for the formats both Pillow (header) and OpenCV (pixels) read.
_FORMATS = {
    "PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff", "WEBP": "webp",
    "JPEG2000": "jpeg2000", "PPM": "pnm", "SUN": "sun", "GIF": "gif", "AVIF": "avif",
}
_OPEN = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "JPEG2000", "PPM", "SUN", "GIF", "AVIF")
_NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "webp": "WebP", "jpeg2000": "JPEG 2000",
          "pnm": "PNM", "sun": "Sun raster", "gif": "GIF", "avif": "AVIF", "dicom": "DICOM"}
# Leading bytes, only to name the format of a file whose header is unreadable.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"), (b"II*\x00", "tiff"),
          (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"), (b"GIF8", "gif"),
          (b"\x00\x00\x00\x0cjP  ", "jpeg2000"), (b"\xffO\xffQ", "jpeg2000"))
_GRAY_MODES = ("1", "L", "LA", "I", "F")
_REDUCED = {
    (2, False): cv2.IMREAD_REDUCED_GRAYSCALE_2, (4, False): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (8, False): cv2.IMREAD_REDUCED_GRAYSCALE_8, (2, True): cv2.IMREAD_REDUCED_COLOR_2,
    (4, True): cv2.IMREAD_REDUCED_COLOR_4, (8, True): cv2.IMREAD_REDUCED_COLOR_8,
}
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
def _input_errors(path: str, what: str) -> Iterator[None]:
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


def is_dicom(data: bytes, path: str = "") -> bool:
    """DICOM Part 10 files carry 'DICM' at offset 128; files without the preamble are named .dcm."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return str(path).lower().endswith((".dcm", ".dicom"))


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), "other")


def _unreadable(path: str, fmt: str) -> ImageDecodeError:
    if fmt in _NAMES:
        return ImageDecodeError(path, f"corrupt or truncated {_NAMES[fmt]} file")
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
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def _raster_header(data: bytes, path: str) -> Header:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=_OPEN)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - unidentified or malformed: named by its leading bytes
        raise _unreadable(path, _sniff(data)) from None
    with im, _input_errors(path, "unreadable image header"):
        fmt = _FORMATS.get(im.format or "")
        if fmt is None:
            raise _unreadable(path, "other")
        palette = im.mode in ("P", "PA")
        return Header(
            fmt=fmt,
            width=int(im.size[0]),
            height=int(im.size[1]),
            samples=4 if palette else len(im.getbands()),  # a palette is expanded to colour
            sample_bytes=_sample_bytes(im),
            color=not (im.mode in _GRAY_MODES or im.mode.startswith("I;16")),
            orientation=_orientation(im),
        )


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
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


def _read_dicom(data: bytes, path: str, header_only: bool):
    import pydicom

    with _input_errors(path, "not a readable DICOM file"):
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=header_only)


def _dicom_int(ds, keyword: str, path: str, default: int | None = None) -> int:
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


def _dicom_header(ds, path: str) -> Header:
    rows, cols = _dicom_int(ds, "Rows", path), _dicom_int(ds, "Columns", path)
    samples = _dicom_int(ds, "SamplesPerPixel", path, 1)
    bits = _dicom_int(ds, "BitsAllocated", path, 16)
    frames = _dicom_int(ds, "NumberOfFrames", path, 1)
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


def read_header(data: bytes, path: str = "") -> Header:
    """Format, size, layout and orientation from the header alone; nothing is decoded.

    A prefix of the file is enough when it holds the header (for DICOM, everything before the
    pixel data). Raises ImageDecodeError for files whose header cannot be read.
    """
    if not data:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    if is_dicom(data, path):
        with _quiet_pydicom():
            return _dicom_header(_read_dicom(bytes(data), path, header_only=True), path)
    return _raster_header(bytes(data), path)


def _check_header(path: str, h: Header, max_pixels: int, max_image_bytes: int) -> None:
    w, ht = h.width, h.height
    if w <= 0 or ht <= 0:
        raise ImageDecodeError(path, f"image header declares an empty size {w}x{ht}")
    if w * ht > max_pixels:
        raise ImageDecodeError(
            path,
            f"image is {w}x{ht} = {w * ht:,} pixels, above the limit of {max_pixels:,}; refused from its "
            "header before decoding (possible decompression bomb; raise data.max_pixels if the file is genuine)",
        )
    if h.nbytes > max_image_bytes:
        frames = " in all its frames" if h.frames > 1 else ""
        raise ImageDecodeError(
            path,
            f"image is {w}x{ht} with {h.samples} sample(s) of {h.sample_bytes} byte(s) per pixel: {h.nbytes:,} "
            f"bytes decoded{frames}, above the limit of {max_image_bytes:,}; refused from its header before "
            "decoding (raise data.max_image_bytes if the file is genuine)",
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


def _decode_raster(data: bytes, path: str, h: Header, target: int | None) -> Decoded:
    factor = _reduction(h, target)
    flags = cv2.IMREAD_UNCHANGED if factor == 1 else _REDUCED[(factor, h.color)] | cv2.IMREAD_IGNORE_ORIENTATION
    with _input_errors(path, f"OpenCV could not decode the {_NAMES[h.fmt]} file"):
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.size == 0:
        raise _unreadable(path, h.fmt)
    if img.shape[:2] != (-(-h.height // factor), -(-h.width // factor)):
        raise ImageDecodeError(path, f"the {_NAMES[h.fmt]} file's header and its pixel data disagree on the size")
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
    pixels, bits = _to_unit(_orient(img, h.orientation), path)
    return Decoded(np.ascontiguousarray(pixels), bits, h.fmt, h)


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
        bits = _dicom_int(ds, "BitsStored", path, 8)
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
    return out, 8 if _dicom_int(ds, "BitsStored", path, 16) <= 8 else 16


def _decode_dicom(
    data: bytes, path: str, frame: int, window: tuple[float, float] | None, max_pixels: int, max_image_bytes: int
) -> Decoded:
    with _quiet_pydicom():
        ds = _read_dicom(data, path, header_only=False)
        if not any(t in ds for t in _PIXEL_TAGS):
            raise ImageDecodeError(
                path, "DICOM file has no pixel data (e.g. a structured report or presentation state)"
            )
        h = _dicom_header(ds, path)
        _check_header(path, h, max_pixels, max_image_bytes)
        if h.frames > 1 and frame >= h.frames:
            raise ImageDecodeError(path, f"frame {frame} requested but the file has {h.frames} frames")
        _ensure_transfer_syntax(ds)
        _check_decoder(path, ds.file_meta.TransferSyntaxUID)
        arr = _dicom_pixels(ds, path, frame, h.frames)
        with _input_errors(path, "could not apply the DICOM file's value and display transforms"):
            out, bits = _dicom_display(ds, arr, path, window)
        if not np.isfinite(out).all():
            raise ImageDecodeError(path, "DICOM pixel data produced non-finite values")
        return Decoded(np.ascontiguousarray(np.clip(out, 0.0, 1.0).astype(np.float32)), bits, "dicom", h)


# ----------------------------------------------------------------------------- public


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
    at reduced scale (module docstring). ``None`` decodes at full size.
    """
    if data is None or len(data) == 0:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    data = bytes(data)
    if is_dicom(data, path):
        return _decode_dicom(data, path, frame, window, max_pixels, max_image_bytes)
    h = _raster_header(data, path)
    _check_header(path, h, max_pixels, max_image_bytes)
    return _decode_raster(data, path, h, target)


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
