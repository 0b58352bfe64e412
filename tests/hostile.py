"""Hand-made hostile files for the decoder tests and benchmarks: what an attacker or a broken device writes.

Each builder writes real bytes of a real format (no mocks): a TIFF or BigTIFF whose directory
holds the width/height tags given (repeats included), a WebP whose lossless header claims a
size its data does not hold, DICOMs whose attributes hold patient-looking text, compressed DICOM
frames, palette LUTs, deflated DICOMs and TIFF tiles that cost a decoder far more than their size;
:func:`corpus` gathers them, with good files, into the hostile corpus (tests/data/test_hostile_inputs.py,
benchmarks/bench_hostile.py).
"""

from __future__ import annotations

import copy
import io
import struct
import zlib

import numpy as np

PLANTED = "PID-55501234"  # an identifier a malformed attribute carries; must never reach an output


def tiff(widths: list[int], heights: list[int], big: bool = False) -> bytes:
    """An uncompressed 8-bit gray TIFF (BigTIFF with ``big``) of widths[0] x heights[0] pixels,
    its first directory listing every width and height tag given, in order."""
    w, h = widths[0], heights[0]
    pixels = (bytes(range(256)) * (w * h // 256 + 1))[: w * h]
    entries = [(256, 4, v) for v in widths] + [(257, 4, v) for v in heights] + [
        (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, None), (277, 3, 1), (278, 4, h), (279, 4, w * h)]
    if big:
        start = 16 + 8 + 20 * len(entries) + 8
        out = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", len(entries))
        out += b"".join(struct.pack("<HHQQ", t, typ, 1, start if v is None else v) for t, typ, v in entries)
        return out + struct.pack("<Q", 0) + pixels
    start = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for t, typ, v in entries:
        v = start if v is None else v
        out += struct.pack("<HHIHH", t, typ, 1, v, 0) if typ == 3 else struct.pack("<HHII", t, typ, 1, v)
    return out + struct.pack("<I", 0) + pixels


def webp_lossless(width: int, height: int) -> bytes:
    """A WebP whose lossless (VP8L) header claims width x height, followed by a little junk."""
    body = b"\x2f" + struct.pack("<I", (width - 1) | ((height - 1) << 14)) + b"\x00" * 59
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def malformed_dicoms(test_data) -> dict[str, bytes]:
    """CT_small with a patient identifier in a numeric attribute, one attribute per file.

    Written with implicit VR, where a value's bytes go out as given and are typed by the
    dictionary when read back, as a broken exporter's would be.
    """
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    base = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    base.PatientName, base.PatientID = "DOE^JANE", PLANTED
    out = {}
    for name, tag in (("frames.dcm", 0x00280008), ("slope.dcm", 0x00281053), ("window.dcm", 0x00281050)):
        ds = copy.deepcopy(base)
        ds.add_new(tag, "LO", PLANTED)  # NumberOfFrames (IS), RescaleSlope (DS), WindowCenter (DS)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
        out[name] = buf.getvalue()
    return out


# ----------------------------------------------------------------------------- the hostile corpus
# Generators of files that cost a decoder far more than their size, or that lie about themselves.
# Each returns real bytes of its format; none is decoded here.

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
DEFLATED = "1.2.840.10008.1.2.1.99"


def gradient(width: int, height: int, colour: bool = False, depth: int = 8) -> np.ndarray:
    """A smooth image (cheap to encode and decode at any size), gray or BGR, 8 or 16 bits."""
    top = 255 if depth == 8 else 65535
    x = np.linspace(0, top, width, dtype=np.float64)[None, :]
    y = np.linspace(0, top // 2, height, dtype=np.float64)[:, None]
    img = ((x + y) % (top + 1)).astype(np.uint8 if depth == 8 else np.uint16)
    return np.dstack([img, img[:, ::-1], np.flipud(img)]) if colour else img


def raster(fmt: str, img: np.ndarray) -> bytes:
    """``img`` encoded as png, jpeg, jpeg2000 (JP2), webp, bmp, pnm, gif or tiff."""
    import cv2

    if fmt == "gif":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img if img.ndim == 2 else img[:, :, ::-1]).save(buf, format="GIF")
        return buf.getvalue()
    ext = {"png": ".png", "jpeg": ".jpg", "jpeg2000": ".jp2", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif",
           "pnm": ".ppm" if img.ndim == 3 else ".pgm"}[fmt]
    ok, buf = cv2.imencode(ext, img)
    assert ok, fmt
    return buf.tobytes()


def j2k_codestream(img: np.ndarray) -> bytes:
    """A bare JPEG 2000 codestream (what DICOM encapsulates), lossless."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG2000", no_jp2=True, irreversible=False)
    return buf.getvalue()


def patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its start-of-frame marker declaring ``width`` x ``height`` (the data unchanged)."""
    i = 2
    while jpeg[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def patch_j2k_size(code: bytes, width: int, height: int) -> bytes:
    """The codestream with its SIZ marker declaring ``width`` x ``height`` (tiles of that size too)."""
    i = code.find(b"\xff\x4f\xff\x51") + 4
    return code[: i + 4] + struct.pack(">II", width, height) + code[i + 12 : i + 20] + struct.pack(
        ">II", width, height) + code[i + 28 :]


def dicom(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _base_dataset(rows: int, cols: int, photometric: str, samples: int = 1, bits: int = 8):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "DOE^JANE", PLANTED, "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    return ds


def encapsulated_dicom(frame: bytes, ts_uid: str, rows: int, cols: int, samples: int = 1) -> bytes:
    """A DICOM holding one compressed ``frame`` under ``ts_uid``, its header saying ``rows`` x ``cols``."""
    from pydicom.encaps import encapsulate

    ds = _base_dataset(rows, cols, "MONOCHROME2" if samples == 1 else "YBR_FULL_422", samples)
    ds.file_meta.TransferSyntaxUID = ts_uid
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return dicom(ds)


def jpeg_frame_dicom(declared: tuple[int, int] | None = None, size: int = 64) -> bytes:
    """A JPEG Baseline DICOM of ``size`` x ``size``; with ``declared``, its frame's SOF says that size instead."""
    import cv2

    frame = cv2.imencode(".jpg", gradient(size, size))[1].tobytes()
    if declared:
        frame = patch_jpeg_size(frame, *declared)
    return encapsulated_dicom(frame, JPEG_BASELINE, size, size)


def j2k_frame_dicom(declared: tuple[int, int] | None = None, size: int = 64) -> bytes:
    """A JPEG 2000 DICOM of ``size`` x ``size``; with ``declared``, its frame's SIZ says that size instead."""
    frame = j2k_codestream(gradient(size, size))
    if declared:
        frame = patch_j2k_size(frame, *declared)
    return encapsulated_dicom(frame, J2K_LOSSLESS, size, size)


def segmented_lut(doublings: int) -> list[int]:
    """16-bit segmented palette LUT data (PS3.3 C.7.9.2) that expands to 2 ** ``doublings`` x 2 entries:
    a discrete segment of two values, then indirect segments each replaying every segment before it."""
    data = [0, 2, 0, 65535]  # discrete: 2 entries
    for k in range(doublings):
        data += [2, k + 1, 0, 0]  # indirect: replay the k + 1 segments from offset 0
    return data


def palette_dicom(segmented: list[int] | None = None, lut_entries: int = 256, lut_bytes: int | None = None,
                  size: int = 32) -> bytes:
    """A PALETTE COLOR DICOM (8-bit indices, 16-bit LUTs): plain LUTs of ``lut_entries`` entries (holding
    ``lut_bytes`` bytes, if given), or the ``segmented`` LUT data in all three channels."""
    ds = _base_dataset(size, size, "PALETTE COLOR")
    ds.PixelData = (np.arange(size * size) % lut_entries).astype(np.uint8).tobytes()
    desc = [lut_entries if lut_entries < 65536 else 0, 0, 16]
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", desc)
        if segmented is not None:
            setattr(ds, f"Segmented{colour}PaletteColorLookupTableData",
                    struct.pack(f"<{len(segmented)}H", *segmented))
        else:
            lut = (np.linspace(0, 65535, lut_entries)).astype("<u2").tobytes()
            if lut_bytes is not None:
                lut = (lut * (lut_bytes // len(lut) + 1))[:lut_bytes]
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut)
    return dicom(ds)


def _zeros_deflated(n: int, raw: bool = True) -> bytes:
    """Deflate (raw, or with zlib's header) of ``n`` zero bytes, made a MiB at a time."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    parts = []
    while n > 0:
        parts.append(c.compress(chunk[: min(n, len(chunk))]))
        n -= len(chunk)
    return b"".join(parts) + c.flush()


def deflate_bomb_dicom(inflated: int) -> bytes:
    """A Deflated Explicit VR DICOM whose dataset inflates to ``inflated`` bytes (pydicom inflates it whole
    on reading, before any attribute can be checked): no header says its size."""
    ds = _base_dataset(8, 8, "MONOCHROME2")
    meta = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = DEFLATED
    from pydicom.filewriter import write_file_meta_info

    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + _zeros_deflated(inflated)


def _tiff(entries: list[tuple[int, int, int]], payload: bytes) -> bytes:
    """A little-endian TIFF with one directory of ``(tag, type, value)`` entries (value None: the
    payload's offset), then ``payload``."""
    start = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for t, typ, v in sorted(entries):
        v = start if v is None else v
        out += struct.pack("<HHIHH", t, typ, 1, v, 0) if typ == 3 else struct.pack("<HHII", t, typ, 1, v)
    return out + struct.pack("<I", 0) + payload


def tiff_one_tile(width: int, height: int, tile: int) -> bytes:
    """A deflated 8-bit gray TIFF of ``width`` x ``height`` stored as one ``tile`` x ``tile`` tile."""
    data = _zeros_deflated(tile * tile, raw=False)
    return _tiff([(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
                  (322, 4, tile), (323, 4, tile), (324, 4, None), (325, 4, len(data))], data)


def tiff_bogus_strips(width: int = 64, height: int = 64) -> bytes:
    """A TIFF whose one strip claims 4e9 rows and 4e9 bytes (its data is 64 bytes)."""
    data = zlib.compress(bytes(width * height))
    return _tiff([(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, None),
                  (277, 3, 1), (278, 4, 4_000_000_000), (279, 4, 4_000_000_000)], data)


def sparse(path, size: int) -> None:
    """A sparse file of ``size`` bytes (no blocks on disk) at ``path``."""
    with open(path, "wb") as f:
        f.truncate(size)


def planted_dicoms(test_data) -> dict[str, bytes]:
    """CT_small with patient-looking text in each string element a decoder message could quote, one per
    file: the transfer syntax UID, the photometric interpretation, the VOI LUT function, the modality, and
    the numeric strings (frames, slope, intercept, window centre/width, bits stored read as text)."""
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    base = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    base.PatientName, base.PatientID = "DOE^JANE", PLANTED
    out = dict(malformed_dicoms(test_data))
    text = f"{PLANTED} DOE^JANE"
    for name, tag in (("intercept.dcm", 0x00281052), ("width.dcm", 0x00281051), ("bits.dcm", 0x00280101),
                      ("rows.dcm", 0x00280010)):
        ds = copy.deepcopy(base)
        ds.add_new(tag, "LO", text)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=True)
        out[name] = buf.getvalue()
    from pydicom import config

    old = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:  # pydicom would warn (and log) on each of these, quoting the value: as a broken exporter, write them
        for name, keyword in (("photometric.dcm", "PhotometricInterpretation"), ("voi_function.dcm", "VOILUTFunction"),
                              ("modality.dcm", "Modality")):
            ds = copy.deepcopy(base)
            setattr(ds, keyword, text[:16])
            out[name] = dicom(ds)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = old
    ds = copy.deepcopy(base)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    raw = dicom(ds)
    out["syntax.dcm"] = raw.replace(b"1.2.840.10008.1.2.1\0", b"PID-55501234 DOEJANE", 1)  # same length
    assert out["syntax.dcm"] != raw
    return out


# ----------------------------------------------------------------------------- the corpus

MIB = 1 << 20
CRASH = "ZZ-DECODER-CRASH-7731"  # the decode workers' crash hook (MEDXFER_TEST_DECODER_CRASH_MARKER)
# decode_timeout_s: room for the good files on a loaded CI machine, and far less than the time bomb needs
# (192 MiB of zeros parsed as 24 million DICOM elements: about 2 us each here, 48 s; at 0.5 us still 12 s)
LIMITS = {"max_pixels": 2_097_152, "max_image_bytes": 64 * MIB, "max_decode_bytes": 512 * MIB, "decode_timeout_s": 12}
OVER = "above the limit of 2,097,152; refused from its header"
BUDGET = "exceeds the decode memory budget of 536,870,912 bytes (data.max_decode_bytes)"


def corpus(test_data) -> tuple[dict[str, bytes | None], dict[str, str | None]]:
    """The hostile corpus for a job under :data:`LIMITS`: name -> bytes (None: a sparse 8 GiB file, made
    on disk by :func:`sparse`), and name -> the reason its bad row must give (None: a good file).

    Hostile: compressed DICOM frames larger than their header, palette LUTs (a segmented one that
    expands without end, one longer than its descriptor), a deflated DICOM that inflates past the
    memory budget and one whose parsing outlasts the time budget, a TIFF with one huge tile and one
    with impossible strips, every raster format just over the pixel limit, the sparse file, a file
    that crashes its decoder (with :data:`CRASH` in the decode workers' crash hook), and DICOMs with
    patient-looking text planted in the elements a message could quote. Good: every raster format
    just under the limit, real X-rays and DICOMs, sound compressed and palette DICOMs."""
    files: dict[str, bytes | None] = {}
    want: dict[str, str | None] = {}

    def add(name, data, reason=None):
        files[name], want[name] = data, reason

    for fmt in ("png", "jpeg", "jpeg2000", "webp", "bmp", "pnm", "gif", "tiff"):
        # Formats whose suffix import and predict do not list go without one, as PACS exports do: the
        # decoder tells formats by their bytes.
        ext = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}.get(fmt, "")
        add(f"near_{fmt}{ext}", raster(fmt, gradient(1400, 1400, colour=fmt in ("png", "webp"))))
        add(f"over_{fmt}{ext}", raster(fmt, gradient(1500, 1500)), OVER)
    for rel in ("cxr/nih_00000001_000_cardiomegaly.png", "cxr/tbx11k_tb_tb0005.png", "cxr/siim_monochrome1.dcm",
                "dicom/CT_small.dcm", "dicom/examples_palette.dcm", "dicom/examples_rgb_color.dcm"):
        add(rel.rsplit("/", 1)[1], (test_data / "images" / rel).read_bytes())
    add("frame_ok.dcm", jpeg_frame_dicom())
    add("frame_j2k_ok.dcm", j2k_frame_dicom())
    add("palette_segmented_ok.dcm", palette_dicom(segmented_lut(7)))
    add("frame_jpeg_20000.dcm", jpeg_frame_dicom((20000, 20000)), "compressed frame declares 20000x20000")
    add("frame_j2k_20000.dcm", j2k_frame_dicom((20000, 20000)), "compressed frame declares 20000x20000")
    add("palette_segmented_bomb.dcm", palette_dicom(segmented_lut(25)),
        "segmented red palette lookup table would expand past 65,536 entries")
    add("palette_long_lut.dcm", palette_dicom(lut_bytes=100_000), "palette lookup table holds 100,000 bytes")
    add("deflate_memory_bomb.dcm", deflate_bomb_dicom(1 << 30), BUDGET)
    add("deflate_time_bomb.dcm", deflate_bomb_dicom(192 * MIB),
        "took longer than data.decode_timeout_s (12 s) to decode")
    add("tiff_huge_tile.tif", tiff_one_tile(64, 64, 16000), "TIFF tiles of 16000x16000")
    add("tiff_bogus_strips.tif", tiff_bogus_strips(), "corrupt or truncated TIFF file")
    add("sparse_8gib.png", None, "file is 8,589,934,592 bytes, above the limit of 67,108,864; not read")
    add("crash.png", b"\x89PNG\r\n\x1a\n" + CRASH.encode(), "the decoder crashed (SIGSEGV) while decoding it, twice")
    planted_reasons = {"frames.dcm": "NumberOfFrames is not a whole number", "rows.dcm": "Rows is not a whole number",
                       "slope.dcm": "value and display transforms", "intercept.dcm": "value and display transforms",
                       "bits.dcm": "could not decode DICOM pixel data", "photometric.dcm": "could not decode DICOM",
                       "syntax.dcm": "DICOM transfer syntax is not one pydicom knows"}
    for name, data in planted_dicoms(test_data).items():
        add(f"planted_{name}", data, planted_reasons.get(name))
    return files, want


def write_corpus(folder, files: dict[str, bytes | None]) -> None:
    """``files`` (as :func:`corpus` gives them) under ``folder`` in two class folders, for ``import folder``."""
    for i, (name, data) in enumerate(sorted(files.items())):
        target = folder / ("normal" if i % 2 else "abnormal") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            sparse(target, 8 << 30)
        else:
            target.write_bytes(data)
