"""DICOM decoding (``medxfer.data.decode.dicom``) on the real shared files: photometric
interpretation, rescale and windows, frames, colour, compressed syntaxes, and errors that never
carry a header value. No Ray."""

from __future__ import annotations

import copy
import io
import logging
import os

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
