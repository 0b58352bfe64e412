"""DICOM with pydicom: the header's size fields checked first, then modality LUT, window and
photometric interpretation.

Modality LUT / rescale slope+intercept first (-> Hounsfield units for CT), then the window:
``spec.window`` when given, else the file's VOI LUT, else its Window Center/Width, else the
frame's full range. MONOCHROME1 ("white is zero") is inverted so bone is bright as in
MONOCHROME2. Colour (RGB, YBR_*) and PALETTE COLOR come out as RGB. Multi-frame files yield one
chosen frame.

Checked before any pixel is decoded: Rows, Columns, SamplesPerPixel, BitsAllocated and
NumberOfFrames against the limits; a compressed frame's own JPEG (SOF) or JPEG 2000 (SIZ) header
against Rows/Columns, since its decoder allocates what the frame says, not what the DICOM header
says; a palette's lookup tables against their descriptors, a segmented one by the length it
would expand to (its indirect segments can repeat earlier ones without end).

Grey values go through the display transforms as a lookup table: pydicom's own modality LUT,
VOI LUT and window functions applied to each stored value that occurs (at most 65,536 of them),
then the table applied to the image a band at a time, into uint16. The result is what pydicom's
functions give on the whole image, rounded to 1/65535, without the full-size float64 copies.

Errors name the attribute, never its value: DICOM strings hold patient names. A transfer syntax
is named only when it is one pydicom registers (its UID is then a standard one, not free text).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from medxfer.data.decode.common import Decoded, Header, affine_to, bands, input_errors
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


_JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                 "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic) and JPEG-LS's SOF55.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
LUT_MAX_ENTRIES = 1 << 16  # a LUT descriptor's largest count: no lookup table can index more
_SEGMENT_WORK = 1 << 16  # segments a segmented LUT may make the expander visit


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


def registered_syntax(ts) -> str | None:
    """The transfer syntax's registered name, or None when pydicom does not register the UID as one.

    Only a registered UID is ever quoted: any other value is text from the file, and can be anything."""
    from pydicom.uid import UID_dictionary

    entry = UID_dictionary.get(str(ts))
    return entry[0] if entry and entry[1] == "Transfer Syntax" else None


def _check_decoder(path: str, ts) -> None:
    """Compressed or unknown syntaxes: name the plugin to install instead of failing inside pydicom."""
    from pydicom.pixels import get_decoder

    name = registered_syntax(ts)
    if name is None:
        raise ImageDecodeError(
            path,
            "DICOM transfer syntax is not one pydicom knows (its value is not shown: it may hold any text); "
            "convert the file to an uncompressed transfer syntax (e.g. gdcmconv --raw)",
        )
    if not ts.is_compressed:
        return
    try:
        dec = get_decoder(str(ts))
    except NotImplementedError:
        raise ImageDecodeError(
            path,
            f"DICOM transfer syntax '{name}' is not supported by pydicom; convert the file to "
            "an uncompressed transfer syntax (e.g. gdcmconv --raw)",
        ) from None
    if not dec.is_available:
        raise ImageDecodeError(
            path,
            f"DICOM transfer syntax '{name}' needs a decoder plugin that is not installed: "
            f"pip install {_plugin_hint(str(ts))}",
        )


# ----------------------------------------------------------------------------- checks before decoding


def jpeg_frame_size(frame: bytes) -> tuple[int, int, int] | None:
    """``(width, height, components)`` from a JPEG / JPEG-LS codestream's start-of-frame marker."""
    if frame[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(frame)
    while i + 4 <= n:
        if frame[i] != 0xFF:
            return None
        marker = frame[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _SOF:
            if i + 10 > n:
                return None
            return (int.from_bytes(frame[i + 7 : i + 9], "big"), int.from_bytes(frame[i + 5 : i + 7], "big"),
                    frame[i + 9])
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + int.from_bytes(frame[i + 2 : i + 4], "big")
    return None


def j2k_frame_size(frame: bytes) -> tuple[int, int, int] | None:
    """``(width, height, components)`` from a JPEG 2000 codestream's SIZ marker (bare, or inside JP2 boxes)."""
    i = frame.find(b"\xff\x4f\xff\x51")
    if i < 0 or i + 4 + 38 > len(frame):
        return None
    siz = frame[i + 4 :]
    x, y, x0, y0 = (int.from_bytes(siz[k : k + 4], "big") for k in (4, 8, 12, 16))
    return x - x0, y - y0, int.from_bytes(siz[36:38], "big")


def _check_frame(ds, path: str, h: Header, frame: int, ts_uid: str) -> None:
    """A compressed frame's own header agrees with Rows/Columns/SamplesPerPixel, or the file is refused.

    Its decoder allocates the size the frame declares; a frame declaring more than the DICOM header
    (checked against the limits) would be decoded at that size first and refused only afterwards."""
    family = "JPEG" if ts_uid in _JPEG_SYNTAXES else "JPEG 2000" if ts_uid in _J2K_SYNTAXES else None
    if family is None or not getattr(ds["PixelData"], "is_undefined_length", False):
        return
    from pydicom.encaps import get_frame

    with input_errors(path, "the DICOM file's compressed pixel data cannot be split into frames"):
        data = get_frame(ds.PixelData, frame if h.frames > 1 else 0, number_of_frames=h.frames)
    size = jpeg_frame_size(data) if family == "JPEG" else j2k_frame_size(data[:65536])
    want = (h.width, h.height, dicom_int(ds, "SamplesPerPixel", path, 1))
    if size is None:
        raise ImageDecodeError(path, f"the DICOM file's compressed frame has no readable {family} frame header")
    if size != want:
        raise ImageDecodeError(
            path,
            f"the DICOM file's compressed frame declares {size[0]}x{size[1]} with {size[2]} component(s) in its "
            f"{family} header, but Rows/Columns/SamplesPerPixel say {want[0]}x{want[1]} with {want[2]}; refused "
            "before decoding (its decoder would allocate the frame's size)",
        )


def _segmented_length(data: tuple[int, ...], base: int, eight_bit: bool, little: bool, nr_segments: int | None,
                      cap: int, work: list[int], depth: int = 0) -> int:
    """The number of entries pydicom's segmented-LUT expander would produce from ``data[base:]``,
    without producing them.

    Mirrors ``pydicom.pixels.processing._expand_segmented_lut`` (PS3.3 C.7.9.2): discrete and linear
    segments add their length, an indirect one replays ``length`` segments from an offset (relative
    to where the replaying call started, as pydicom reads it). Stops with ValueError once the count
    passes ``cap``, the segments visited pass ``_SEGMENT_WORK``, or indirections nest 32 deep."""
    if depth > 32:
        raise ValueError("indirect segments nested too deeply")
    order = (3, 2, 1, 0) if little else (2, 3, 0, 1)
    end = len(data)
    total = read = 0
    i = base
    while i + 1 < end:
        work[0] += 1
        if work[0] > _SEGMENT_WORK:
            raise ValueError("too many segments")
        opcode, length = data[i], data[i + 1]
        i += 2
        if opcode == 0:
            total += length
            i += length
        elif opcode == 1:
            total += length
            i += 1
        elif opcode == 2:
            if eight_bit:
                b = [data[i + k] for k in order]
                target = (b[0] << 8 | b[1]) << 16 | (b[2] << 8 | b[3])
                i += 4
            else:
                target = data[i + 1] << 16 | data[i]
                i += 2
            total += _segmented_length(data, base + target, eight_bit, little, length, cap - total, work, depth + 1)
        else:
            raise ValueError("unknown segment type")
        if total > cap:
            raise ValueError("expands past the cap")
        read += 1
        if read == nr_segments:
            break
    return total


def _check_palette(ds, path: str) -> None:
    """A PALETTE COLOR file's lookup tables agree with their descriptor, and a segmented one expands
    to at most :data:`LUT_MAX_ENTRIES` entries, checked before pydicom expands it."""
    from struct import unpack

    try:
        desc = [int(v) for v in ds.RedPaletteColorLookupTableDescriptor]
        entries, bits = (desc[0] or LUT_MAX_ENTRIES), desc[2]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise ImageDecodeError(path, "DICOM palette colour lookup table descriptor is missing or not "
                                     "three numbers") from None
    if bits not in (8, 16) or not 0 < entries <= LUT_MAX_ENTRIES:
        raise ImageDecodeError(path, "DICOM palette colour lookup table descriptor is out of range "
                                     "(entries 1-65536, 8 or 16 bits)")
    for colour in ("Red", "Green", "Blue"):
        plain = ds.get(f"{colour}PaletteColorLookupTableData")
        if plain is not None:
            if len(plain) not in (entries, 2 * entries):
                raise ImageDecodeError(path, f"DICOM {colour.lower()} palette lookup table holds {len(plain):,} "
                                             f"bytes, not the {entries:,} entries its descriptor declares")
            continue
        segmented = ds.get(f"Segmented{colour}PaletteColorLookupTableData")
        if segmented is None:
            raise ImageDecodeError(path, f"DICOM file lacks its {colour.lower()} palette lookup table")
        little = str(ds.file_meta.TransferSyntaxUID) != "1.2.840.10008.1.2.2"  # all but Explicit VR Big Endian
        width = 1 if bits == 8 else 2
        raw = bytes(segmented)[: len(segmented) // width * width]
        values = unpack(f"{'<' if little else '>'}{len(raw) // width}{'B' if width == 1 else 'H'}", raw)
        try:
            _segmented_length(values, 0, width == 1, little, None, LUT_MAX_ENTRIES, [0])
        except (ValueError, IndexError):
            raise ImageDecodeError(
                path,
                f"DICOM segmented {colour.lower()} palette lookup table would expand past {LUT_MAX_ENTRIES:,} entries "
                "or is malformed; refused before expanding it",
            ) from None


# ----------------------------------------------------------------------------- pixels and display


def _dicom_pixels(ds, path: str, frame: int, nframes: int) -> np.ndarray:
    ts = ds.file_meta.TransferSyntaxUID
    name = registered_syntax(ts)
    what = f"'{name}'" if name else "its transfer syntax"
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
                f"could not decode DICOM pixel data ({what}); install {_plugin_hint(str(ts))}",
            ) from None
        raise ImageDecodeError(path, f"could not decode DICOM pixel data ({what})") from None
    except Exception as e:  # noqa: BLE001
        raise ImageDecodeError(
            path, f"could not decode DICOM pixel data ({what}, {type(e).__name__})"
        ) from None
    if arr.ndim == 3 and nframes > 1 and arr.shape[-1] not in (3, 4):
        arr = arr[0]  # defensive: some plugins ignore the index option
    return arr


def _present(arr: np.ndarray, lo: int, n: int) -> np.ndarray:
    """Which of the ``n`` stored values from ``lo`` occur in ``arr`` (a histogram, a band at a time)."""
    counts = np.zeros(n, dtype=np.int64)
    row = arr.size // max(1, arr.shape[0])
    for b in bands(arr.shape[0], row):
        counts += np.bincount((arr[b].astype(np.int64) - lo).ravel(), minlength=n)[:n]
    return counts > 0


def _gray_unit(ds, stored: np.ndarray, window: tuple[float, float] | None, present) -> np.ndarray:
    """Stored grey values -> [0, 1] (float64), before MONOCHROME1 inversion: modality LUT, then the
    window or VOI LUT. ``present()``: a mask of the entries of ``stored`` that occur in the image,
    for the full-range fallbacks (None: all of them do)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def minmax(v: np.ndarray) -> np.ndarray:
        seen = v if present is None else v[present()]
        lo, hi = float(seen.min()), float(seen.max())
        return np.zeros_like(v, dtype=np.float64) if hi <= lo else (v - lo) / (hi - lo)

    values = apply_modality_lut(stored, ds).astype(np.float64)
    if window is not None:
        return _window_linear(values, float(window[0]), float(window[1])).astype(np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        lut = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
        try:
            nbits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            return np.clip(lut / float(2**nbits - 1), 0.0, 1.0)
        except (AttributeError, IndexError, TypeError, ValueError):
            return minmax(lut)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            return _window_linear(values, c, w, str(ds.get("VOILUTFunction", "LINEAR"))).astype(np.float64)
        except (TypeError, ValueError):
            return minmax(values)
    return minmax(values)


def _gray_display(ds, arr: np.ndarray, path: str, window, photometric: str) -> np.ndarray:
    """Grey stored values -> uint16 display values (0 = black), through a table of the values that occur."""
    levels = None
    if arr.dtype.kind in "iub" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo < LUT_MAX_ENTRIES:
            levels = np.arange(lo, hi + 1, dtype=np.int64).astype(arr.dtype)
    if levels is None:  # float pixel data, or a 32-bit range: the transforms on the image itself
        unit = _gray_unit(ds, arr, window, None)
    else:
        unit = _gray_unit(ds, levels, window, lambda: _present(arr, lo, len(levels)))
    if not np.isfinite(unit).all():
        raise ImageDecodeError(path, "DICOM pixel data produced non-finite values")
    unit = np.clip(unit, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    if levels is None:
        return affine_to(unit, 65535.0, 0.0, np.uint16)
    table = np.rint(unit * 65535.0).astype(np.uint16)
    out = np.empty(arr.shape, dtype=np.uint16)
    for b in bands(arr.shape[0], arr.size // max(1, arr.shape[0])):
        out[b] = table[arr[b].astype(np.int64) - lo]
    return out


def _palette_display(ds, arr: np.ndarray, path: str) -> np.ndarray:
    """Palette indices -> RGB through pydicom's colour LUT, applied as a table of the indices that occur."""
    from pydicom.pixels import apply_color_lut

    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if arr.dtype.kind not in "iu" or hi - lo >= LUT_MAX_ENTRIES:
        raise ImageDecodeError(path, "DICOM palette colour image holds values no lookup table can index")
    table = apply_color_lut(np.arange(lo, hi + 1, dtype=np.int64).astype(arr.dtype), ds)[:, :3]
    out = np.empty((*arr.shape, 3), dtype=table.dtype)
    for b in bands(arr.shape[0], arr.size // max(1, arr.shape[0])):
        out[b] = table[arr[b].astype(np.int64) - lo]
    return out


def _dicom_display(ds, arr: np.ndarray, path: str, window: tuple[float, float] | None) -> tuple[np.ndarray, float, int]:
    """Stored values -> ``(display pixels, scale to [0, 1], CLAHE depth)``: colour at its depth; grey
    through the modality LUT, the window and MONOCHROME1 inversion."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper().strip()
    if photometric == "PALETTE COLOR":
        rgb = _palette_display(ds, arr, path)
        return rgb, 1.0 / (255.0 if rgb.dtype == np.uint8 else 65535.0), 8
    if arr.ndim == 3:  # RGB / YBR: pydicom converts YBR to RGB by default
        bits = dicom_int(ds, "BitsStored", path, 8)
        if arr.dtype == np.uint8:
            return arr, 1.0 / 255.0, 8
        top = float(2 ** min(max(bits, 1), 16) - 1)
        if bits <= 8:
            return affine_to(arr, 1.0, 0.0, np.uint8), 1.0 / 255.0, 8
        if arr.dtype == np.uint16:
            arr = arr if arr.flags.writeable else arr.copy()
            np.minimum(arr, np.uint16(top), out=arr)  # values above BitsStored: the brightest level
            return arr, 1.0 / top, 16
        return affine_to(arr, 65535.0 / top, 0.0, np.uint16), 1.0 / 65535.0, 16
    gray = _gray_display(ds, arr, path, window, photometric)
    return gray, 1.0 / 65535.0, 8 if dicom_int(ds, "BitsStored", path, 16) <= 8 else 16


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
        ts = ds.file_meta.TransferSyntaxUID
        _check_decoder(path, ts)
        _check_frame(ds, path, h, frame, str(ts))
        if str(ds.get("PhotometricInterpretation", "")).upper().strip() == "PALETTE COLOR":
            _check_palette(ds, path)
        arr = _dicom_pixels(ds, path, frame, h.frames)
        with input_errors(path, "could not apply the DICOM file's value and display transforms"):
            stored, scale, bits = _dicom_display(ds, arr, path, window)
        return Decoded(np.ascontiguousarray(stored), scale, bits, "dicom", h)


# ----------------------------------------------------------------------------- public
