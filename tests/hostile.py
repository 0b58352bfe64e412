"""Hand-made hostile files for the decoder tests: what an attacker or a broken device writes.

Each builder writes real bytes of a real format (no mocks): a TIFF or BigTIFF whose directory
holds the width/height tags given (repeats included), a WebP whose lossless header claims a
size its data does not hold, and DICOMs whose numeric attributes hold a patient identifier.
"""

from __future__ import annotations

import copy
import io
import struct

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
