"""DICOM decoding (``medxfer.data.decode.dicom``) on the real shared files: photometric
interpretation, rescale and windows, frames, colour, compressed syntaxes, and errors that never
carry a header value. No Ray."""

from __future__ import annotations

import copy
import io
import logging
import os
import time

import hostile
import numpy as np
import pydicom
import pytest
from datautil import dicom_bytes, read_image
from pydicom.pixels import get_decoder

from medxfer.config import PreprocessConfig
from medxfer.data.decode import decode, decode_image
from medxfer.errors import ImageDecodeError

J2K = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"


def test_monochrome1_is_inverted_relative_to_monochrome2(test_data):
    m1 = decode_image(read_image(test_data, "cxr/siim_monochrome1.dcm"))
    m2 = decode_image(read_image(test_data, "cxr/siim_monochrome2.dcm"))
    assert m1.shape == m2.shape == (1024, 1024)
    assert np.corrcoef(m1.ravel(), m2.ravel())[0, 1] < -0.99


def test_ct_rescale_slope_intercept_and_explicit_window(test_data):
    data = read_image(test_data, "dicom/CT_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0.0  # the file really exercises the rescale
    c, w = 40.0, 400.0
    expected = np.clip((hu - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    got = decode_image(data, window=(c, w))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without a window: CT_small has none, so the full range of the frame.
    full = decode_image(data)
    assert full.min() == 0.0 and full.max() == 1.0


def test_multiframe_chosen_frame_and_bad_frame(test_data):
    data = read_image(test_data, "dicom/examples_ybr_color.dcm")
    f0 = decode_image(data)
    f0_again = decode_image(data, spec=PreprocessConfig(frame=0, channels=3, mean=[0.5], std=[0.5]))
    f20 = decode_image(data, frame=20)
    assert f0.shape == f20.shape == (240, 320, 3)
    assert np.array_equal(f0, f0_again)
    assert not np.array_equal(f0, f20)
    with pytest.raises(ImageDecodeError, match="frame 30 requested but the file has 30 frames"):
        decode(data, "x.dcm", frame=30)


def test_palette_and_rgb_dicom_come_out_rgb(test_data):
    pal = decode_image(read_image(test_data, "dicom/examples_palette.dcm"))
    assert pal.shape == (350, 800, 3)
    # A palette maps to colours: the channels are not all equal.
    assert np.abs(pal[..., 0] - pal[..., 2]).max() > 0.1
    rgb = decode_image(read_image(test_data, "dicom/examples_rgb_color.dcm"))
    assert rgb.shape == (240, 320, 3)


def test_jpeg2000_decodes_when_a_plugin_is_installed(test_data):
    data = read_image(test_data, "dicom/J2K_pixelrep_mismatch.dcm")
    if get_decoder(J2K).is_available:
        img = decode_image(data)
        assert img.shape == (512, 512) and img.std() > 0.05
    else:
        with pytest.raises(ImageDecodeError, match="pylibjpeg-openjpeg"):
            decode(data, "j2k.dcm")


def test_missing_decoder_plugin_gives_a_named_install_hint(test_data):
    if get_decoder(HTJ2K).is_available:
        pytest.skip("an HTJ2K decoder is installed here")
    ds = pydicom.dcmread(io.BytesIO(read_image(test_data, "dicom/J2K_pixelrep_mismatch.dcm")))
    ds.file_meta.TransferSyntaxUID = HTJ2K
    with pytest.raises(ImageDecodeError) as e:
        decode(dicom_bytes(ds), "htj2k.dcm")
    assert "pip install pylibjpeg-openjpeg" in str(e.value)
    assert "High-Throughput JPEG 2000" in str(e.value)


def test_dicom_errors_never_leak_header_values(test_data):
    ds = pydicom.dcmread(io.BytesIO(read_image(test_data, "dicom/CT_small.dcm")))
    ds.PatientName = "SECRET^PATIENT"
    ds.PatientID = "ID-998877"
    no_pixels = copy.deepcopy(ds)
    del no_pixels.PixelData
    with pytest.raises(ImageDecodeError, match="no pixel data") as e:
        decode(dicom_bytes(no_pixels), "sr.dcm")
    assert "SECRET" not in str(e.value) and "998877" not in str(e.value)
    big = copy.deepcopy(ds)
    big.Rows, big.Columns = 60000, 60000
    with pytest.raises(ImageDecodeError, match="decompression bomb") as e:
        decode(dicom_bytes(big), "big.dcm")
    assert "SECRET" not in str(e.value)
    truncated = dicom_bytes(ds)[:-5000]
    with pytest.raises(ImageDecodeError) as e:
        decode(truncated, "trunc.dcm")
    assert "SECRET" not in str(e.value) and "998877" not in str(e.value)


def test_dicom_without_preamble_is_read_by_extension(test_data, tmp_path):
    ds = pydicom.dcmread(io.BytesIO(read_image(test_data, "dicom/MR_small.dcm")))
    raw = io.BytesIO()
    pydicom.dcmwrite(raw, ds, enforce_file_format=False)
    data = raw.getvalue()
    if data[128:132] == b"DICM":
        data = data[132:]  # strip preamble + magic, leaving a bare dataset with its meta group
    assert data[128:132] != b"DICM"
    img = decode_image(data, os.fspath(tmp_path / "bare.dcm"))
    assert img.shape == (64, 64)


def test_malformed_dicom_values_reach_no_message_and_no_log(test_data, caplog):
    files = hostile.malformed_dicoms(test_data)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ImageDecodeError) as e:
            decode(files["frames.dcm"], "frames.dcm")
        assert e.value.reason == "DICOM NumberOfFrames is not a whole number"
        with pytest.raises(ImageDecodeError) as e:
            decode(files["slope.dcm"], "slope.dcm")
        assert "value and display transforms" in e.value.reason
        img = decode_image(files["window.dcm"], "window.dcm")  # a window that is no number: full range
        assert img.min() == 0.0 and img.max() == 1.0
    for text in [str(e.value), caplog.text]:
        assert hostile.PLANTED not in text and "55501234" not in text and "DOE" not in text


# ----------------------------------------------------------------------------- checks before decoding


def test_a_compressed_frame_larger_than_rows_and_columns_is_refused_before_decoding():
    """The frame's own JPEG (SOF) or JPEG 2000 (SIZ) header is what its decoder allocates: a frame
    declaring 20000x20000 in a 64x64 DICOM is refused from those headers, in milliseconds."""
    assert decode(hostile.jpeg_frame_dicom(), "ok.dcm").pixels.shape == (64, 64)
    assert decode(hostile.j2k_frame_dicom(), "ok.dcm").pixels.shape == (64, 64)
    for name, data, family in (("jpeg.dcm", hostile.jpeg_frame_dicom((20000, 20000)), "JPEG"),
                               ("j2k.dcm", hostile.j2k_frame_dicom((20000, 20000)), "JPEG 2000"),
                               ("smaller.dcm", hostile.jpeg_frame_dicom((32, 64)), "JPEG")):
        with pytest.raises(ImageDecodeError) as e:
            decode(data, name)
        assert f"compressed frame declares {'32x64' if name == 'smaller.dcm' else '20000x20000'} with 1 component(s) " \
               f"in its {family} header, but Rows/Columns/SamplesPerPixel say 64x64 with 1" in e.value.reason


def test_palette_lookup_tables_are_checked_before_they_are_expanded():
    """A segmented LUT whose indirect segments double it 25 times (2 KB of data, 2**26 entries: pydicom
    would expand it for minutes) is refused from its segments; a plain LUT longer than its descriptor
    too. Sound palettes, plain and segmented, come out as pydicom's own colour LUT gives them."""
    from pydicom.pixels import apply_color_lut

    t0 = time.monotonic()
    with pytest.raises(ImageDecodeError, match="segmented red palette lookup table would expand past 65,536 entries"):
        decode(hostile.palette_dicom(hostile.segmented_lut(25)), "bomb.dcm")
    assert time.monotonic() - t0 < 5
    with pytest.raises(ImageDecodeError, match="red palette lookup table holds 100,000 bytes, not the 256 entries"):
        decode(hostile.palette_dicom(lut_bytes=100_000), "long.dcm")
    for data in (hostile.palette_dicom(), hostile.palette_dicom(hostile.segmented_lut(7))):
        ds = pydicom.dcmread(io.BytesIO(data))
        want = apply_color_lut(ds.pixel_array, ds)[..., :3].astype(np.float64) / 65535
        np.testing.assert_allclose(decode(data, "p.dcm").pixels, want, atol=1e-6)


def test_grey_display_through_a_table_equals_the_transforms_on_the_whole_image(test_data):
    """The display transforms applied as a table of the stored values that occur give what pydicom's
    functions give on the whole image, rounded to 1/65535: with a window, the file's own window, a
    VOI LUT and the full-range fallback, MONOCHROME1 inverted."""
    from medxfer.data.decode.dicom import _gray_unit

    for rel, window in (("dicom/CT_small.dcm", (40.0, 400.0)), ("dicom/CT_small.dcm", None),
                        ("dicom/MR_small.dcm", None), ("cxr/siim_monochrome1.dcm", None),
                        ("dicom/examples_overlay.dcm", (300.0, 600.0))):
        data = read_image(test_data, rel)
        ds = pydicom.dcmread(io.BytesIO(data))
        whole = np.clip(_gray_unit(ds, ds.pixel_array, window, None), 0, 1)
        if str(ds.PhotometricInterpretation) == "MONOCHROME1":
            whole = 1 - whole
        got = decode(data, rel, window=window)
        assert got.stored.dtype == np.uint16
        assert np.abs(got.pixels - whole).max() <= 0.5 / 65535 + 1e-7, rel


def test_every_message_names_the_problem_never_a_planted_value(test_data, caplog):
    """Patient-looking text in each string element a decoder message could quote (the transfer syntax
    UID, photometric interpretation, VOI LUT function, modality, the numeric strings): no reason and no
    log line carries it, and the syntax is named as unknown, not quoted."""
    files = hostile.planted_dicoms(test_data)
    with caplog.at_level(logging.DEBUG):
        reasons = {}
        for name, data in files.items():
            try:
                decode(data, name)
                reasons[name] = ""
            except ImageDecodeError as e:
                reasons[name] = str(e)
    assert reasons["syntax.dcm"].startswith("syntax.dcm: DICOM transfer syntax is not one pydicom knows")
    assert sum(bool(r) for r in reasons.values()) >= 6
    for text in [*reasons.values(), caplog.text]:
        assert hostile.PLANTED not in text and "55501234" not in text and "DOE" not in text, text
