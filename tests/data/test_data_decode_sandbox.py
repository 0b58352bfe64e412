"""The decode worker (``medxfer.data.decode.sandbox``): the same tensors as preprocessing in this
process, and one bad row for a file over its memory or time budget or one that kills its decoder,
while the rest of the batch is decoded. No Ray: real worker processes, real files."""

from __future__ import annotations

import time

import hostile
import numpy as np
import pytest
from datautil import read_image

from medxfer.config import DataConfig, PreprocessConfig
from medxfer.data.decode import sandbox
from medxfer.data.decode.sandbox import DecodeLimits, preprocess_files, read_headers
from medxfer.data.preprocess import preprocess_image

SPEC = PreprocessConfig(size=32, channels=3)


def _shared(test_data) -> list[tuple[str, bytes]]:
    names = ("cxr/nih_00000001_000_cardiomegaly.png", "cxr/cxr_rgb_1036x885.jpg", "cxr/siim_monochrome1.dcm",
             "dicom/CT_small.dcm", "dicom/examples_palette.dcm", "dicom/examples_ybr_color.dcm")
    return [(n, read_image(test_data, n)) for n in names]


def test_the_worker_gives_exactly_what_preprocessing_gives_here(test_data):
    items = [*_shared(test_data), ("junk.png", b"\x89PNG\r\n\x1a\n" + bytes(64)), ("empty.dcm", b"")]
    got = preprocess_files(items, SPEC, DecodeLimits())
    assert len(got) == len(items)
    for (path, data), r in zip(items[:-2], got, strict=False):
        want, d = preprocess_image(data, SPEC, path)
        assert r.reason is None and r.array.dtype == want.dtype and np.array_equal(r.array, want), path
        assert (r.height, r.width, r.fmt, r.color) == (d.header.height, d.header.width, d.fmt, d.color), path
    assert got[-2].array is None and got[-2].reason == "corrupt or truncated PNG file"
    assert got[-1].array is None and "empty" in got[-1].reason
    # Headers are read there too (a header read can inflate a whole deflated DICOM).
    heads = read_headers(items[:2], DecodeLimits())
    assert [(h.fmt, h.color) for h in heads] == [("png", False), ("jpeg", True)]


def test_defaults_agree_with_the_config():
    cfg = DataConfig()
    assert DecodeLimits.of(cfg) == DecodeLimits()
    assert cfg.max_decode_bytes >= 4 * cfg.max_image_bytes  # the largest image it admits fits its budget


BIG = {  # files whose decode needs far more than 24 MiB; True: a genuine image that decodes with room
    "deflated-dicom": (lambda: hostile.deflate_bomb_dicom(256 << 20), False),  # pydicom inflates it whole, unchecked
    "png": (lambda: hostile.raster("png", hostile.gradient(6000, 6000)), True),  # OpenCV
    "jpeg2000": (lambda: hostile.raster("jpeg2000", hostile.gradient(6000, 6000)), True),  # OpenJPEG: fails silently
    "webp": (lambda: hostile.raster("webp", hostile.gradient(6000, 6000)), True),  # libwebp: fails silently
    "dicom-jpeg": (lambda: hostile.jpeg_frame_dicom(size=6000), True),  # pydicom's JPEG plug-in
    "dicom-j2k": (lambda: hostile.j2k_frame_dicom(size=4000), True),  # Pillow in pydicom: "broken data stream"
    "dicom-palette": (lambda: hostile.palette_dicom(size=6000), True),  # the palette applied
}


@pytest.mark.parametrize("kind", list(BIG))
def test_a_decode_over_the_memory_budget_is_one_bad_row_whatever_the_decoder(kind, test_data):
    """Every decoder's allocations are bounded: a file whose decode needs more than the budget is a
    bad row naming it, and the files around it are decoded."""
    make, genuine = BIG[kind]
    items = _shared(test_data)[:2]
    items.insert(1, ("big", make()))
    got = preprocess_files(items, SPEC, DecodeLimits(max_decode_bytes=24 << 20))
    assert got[1].array is None
    assert got[1].reason == ("exceeds the decode memory budget of 25,165,824 bytes (data.max_decode_bytes); raise it "
                             "if the file is genuine")
    assert got[0].reason is None and got[2].reason is None
    if genuine:  # the same file with room to decode: a good image
        assert preprocess_files(items[1:2], SPEC, DecodeLimits())[0].reason is None


def test_a_crash_kills_one_file_and_the_batch_goes_on(test_data, monkeypatch):
    """A decoder that crashes (SIGSEGV from the worker, through the test hook: no decoder here is known
    to crash) on one file: that file is retried once, alone, then is a bad row; the files before and after
    it in the batch are decoded."""
    monkeypatch.setenv(sandbox.CRASH_MARKER_ENV, "ZZ-CRASH-ME")
    sandbox.shutdown()  # workers read the hook when they start
    try:
        good = _shared(test_data)
        items = [*good[:3], ("crash.png", b"\x89PNG ZZ-CRASH-ME"), *good[3:]]
        got = preprocess_files(items, SPEC, DecodeLimits())
        crashed = "the decoder crashed (SIGSEGV) while decoding it, twice"
        assert [r.reason for r in got] == [None] * 3 + [crashed] + [None] * 3
        for (path, data), r in zip(items, got, strict=True):
            if r.reason is None:
                assert np.array_equal(r.array, preprocess_image(data, SPEC, path)[0]), path
    finally:
        sandbox.shutdown()


def test_a_file_that_takes_too_long_is_stopped_and_is_one_bad_row(test_data):
    """A real slow file: a 4 KB deflated DICOM that inflates to 32 MB of zeros, which pydicom then
    parses as four million empty elements (seconds, in flat memory). Stopped at the time budget, not
    retried; the other files are decoded."""
    items = [*_shared(test_data)[:2], ("slow.dcm", hostile.deflate_bomb_dicom(32 << 20)), *_shared(test_data)[3:4]]
    t0 = time.monotonic()
    got = preprocess_files(items, SPEC, DecodeLimits(timeout_s=1.0))
    took = time.monotonic() - t0
    assert got[2].reason == ("took longer than data.decode_timeout_s (1 s) to decode; stopped (raise it if the file "
                             "is genuine)")
    assert [r.reason for i, r in enumerate(got) if i != 2] == [None, None, None]
    assert took < 30, took


def test_a_file_larger_than_the_budget_itself_is_a_bad_row(test_data):
    """Its bytes alone do not fit the worker's budget: refused when they arrive, the rest decoded."""
    limits = DecodeLimits(max_decode_bytes=8 << 20)
    items = [_shared(test_data)[3], ("huge.bin", bytes(24 << 20)), _shared(test_data)[3]]
    got = preprocess_files(items, SPEC, limits)
    assert [r.reason is None for r in got] == [True, False, True]
    assert got[1].reason.startswith("exceeds the decode memory budget of 8,388,608 bytes")
