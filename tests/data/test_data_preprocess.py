"""The preprocessing contract (``medxfer.data.preprocess``): resize modes, channels, normalisation,
CLAHE, determinism, and a golden array that pins the output across versions. No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datautil import png, read_image
from hostile import gradient

from medxfer.config import PreprocessConfig
from medxfer.data.cache import CACHE_VERSION
from medxfer.data.preprocess import preprocess_bytes, preprocess_pixels


def test_preprocess_resize_modes_channels_and_normalisation():
    img = np.zeros((100, 200), np.float32)
    img[:, 100:] = 1.0  # left half black, right half white
    base = {"size": 50, "channels": 1, "mean": [0.5], "std": [0.5]}
    lb = preprocess_pixels(img, PreprocessConfig(resize="letterbox", **base))
    assert lb.shape == (1, 50, 50)
    assert np.all(lb[0, :12] == -1.0) and np.all(lb[0, -12:] == -1.0)  # padding rows (value 0 -> -1)
    assert lb[0, 25, 45] == 1.0
    st = preprocess_pixels(img, PreprocessConfig(resize="stretch", **base))
    assert st[0, 0, 0] == -1.0 and st[0, 0, -1] == 1.0 and st[0, :, :20].max() == -1.0
    cc = preprocess_pixels(img, PreprocessConfig(resize="center_crop", **base))
    assert cc[0, :, :20].max() == -1.0 and cc[0, :, 30:].min() == 1.0  # the middle square
    rgb = np.zeros((20, 20, 3), np.float32)
    rgb[..., 1] = 1.0
    g = preprocess_pixels(rgb, PreprocessConfig(size=20, channels=1, mean=[0.0], std=[1.0]))
    np.testing.assert_allclose(g, 0.587, atol=1e-3)  # BT.601 luma of pure green
    three = preprocess_pixels(img, PreprocessConfig(size=20, channels=3, mean=[0.1, 0.2, 0.3], std=[1, 1, 2]))
    assert three.shape == (3, 20, 20)
    np.testing.assert_allclose(three[:, 0, 0], [-0.1, -0.2, -0.15], atol=1e-6)
    h = preprocess_pixels(img, PreprocessConfig(size=20, channels=1, dtype="float16"))
    assert h.dtype == np.float16
    const = preprocess_bytes(png(np.full((8, 8), 51, np.uint8)), PreprocessConfig(size=8, channels=1))
    np.testing.assert_allclose(const, -0.6, atol=1e-6)


def test_clahe_raises_local_contrast_on_8_and_16_bit():
    rng = np.random.default_rng(0)
    low = (120 + rng.integers(0, 8, (128, 128))).astype(np.uint8)
    spec_off = PreprocessConfig(size=128, channels=1, mean=[0.0], std=[1.0])
    spec_on = PreprocessConfig(size=128, channels=1, mean=[0.0], std=[1.0], clahe=True, clahe_clip_limit=4.0)
    off = preprocess_bytes(png(low), spec_off)
    on = preprocess_bytes(png(low), spec_on)
    assert on.std() > 2 * off.std()
    low16 = (30000 + rng.integers(0, 2000, (128, 128))).astype(np.uint16)
    on16 = preprocess_bytes(png(low16), spec_on)
    assert on16.shape == (1, 128, 128) and np.isfinite(on16).all()
    colour = np.dstack([low, low // 2, low // 3])
    on_rgb = preprocess_bytes(png(colour), PreprocessConfig(size=64, channels=3, clahe=True))
    assert on_rgb.shape == (3, 64, 64)


def test_preprocess_is_deterministic_on_real_files(test_data):
    spec = PreprocessConfig(size=64, channels=1, clahe=True)
    for rel in ("cxr/tbx11k_tb_tb0005.png", "cxr/siim_monochrome2.dcm", "cxr/cxr_rgb_1036x885.jpg"):
        data = read_image(test_data, rel)
        assert np.array_equal(preprocess_bytes(data, spec, rel), preprocess_bytes(data, spec, rel))


# ----------------------------------------------------------------------------- memory

_PEAK = """
import sys
from medxfer.config import PreprocessConfig
from medxfer.data.preprocess import preprocess_bytes

def status(key):
    return next(int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith(key))

data, tiny = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
spec = PreprocessConfig(size=64, channels=int(sys.argv[3]), clahe=sys.argv[4] == "1")
preprocess_bytes(tiny, spec, "tiny.png")  # every library loaded
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the present resident size
before = status("VmRSS:")
preprocess_bytes(data, spec, "big.png")
print(status("VmHWM:") - before)
"""


@pytest.mark.slow
def test_peak_memory_is_the_decoded_image_plus_small_arrays_not_float_copies(tmp_path):
    """A 5000x5000 8-bit image (25 MB gray, 75 MB colour) to a 64 px tensor: the peak is the file's
    bytes, the decoded array and at most two gray planes its size (a gray or CLAHE copy), and for
    colour CLAHE one colour copy (its Lab image). Before, a full-size float32 copy came first (4x the
    decoded array) and, for 3 channels, the gray image repeated to 3 channels before resizing (12x):
    measured on the gray image to 3 channels, 382 MB then, 48 MB now."""
    import subprocess
    import sys

    import cv2

    side = 5000
    gray = gradient(side, side)
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(png(gray[:16, :16]))
    for name, img in (("gray", gray), ("colour", np.dstack([gray, gray[:, ::-1], gray.T]))):
        big = tmp_path / f"{name}.png"
        big.write_bytes(cv2.imencode(".png", img)[1].tobytes())
        decoded = img.nbytes
        for channels, clahe in ((3, "0"), (1, "1")) if name == "gray" else ((1, "0"), (3, "1")):
            r = subprocess.run([sys.executable, "-c", _PEAK, str(big), str(tiny), str(channels), clahe],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            grew = int(r.stdout.split()[-1])
            # the file, the decoded array, one copy of its size (colour: Lab) and two gray planes
            allowed = big.stat().st_size + (decoded if name == "gray" else 2 * decoded) + 2 * side * side + (24 << 20)
            assert grew < allowed, (name, channels, clahe, grew / 2**20, allowed / 2**20)


# ----------------------------------------------------------------------------- golden arrays

GOLDEN = Path(__file__).parents[1] / "golden" / "preprocess.npz"
# case -> (image under $MEDXFER_TEST_DATA/images, spec): PNG, JPEG and DICOM; with and without CLAHE;
# letterbox and center_crop; 1 and 3 channels; a window; a JPEG large enough to decode at reduced scale.
GOLDEN_CASES = {
    "png_gray_1ch_letterbox": ("cxr/nih_00000001_000_cardiomegaly.png", {"channels": 1}),
    "png_gray_1ch_clahe_center_crop": ("cxr/nih_00000001_000_cardiomegaly.png",
                                       {"channels": 1, "clahe": True, "resize": "center_crop"}),
    "png_rgb_3ch_letterbox": ("cxr/tbx11k_tb_tb0005.png", {"channels": 3, "mean": [0.4, 0.5, 0.6],
                                                          "std": [0.2, 0.25, 0.3]}),
    "jpeg_rgb_1ch_clahe_letterbox": ("cxr/cxr_rgb_1036x885.jpg", {"channels": 1, "clahe": True}),
    "jpeg_rgb_3ch_center_crop": ("cxr/cxr_rgb_1036x885.jpg", {"channels": 3, "resize": "center_crop"}),
    "jpeg_large_3ch_reduced_decode": ("cxr/cxr_rgb_2373x2373.jpg", {"channels": 3}),
    "dicom_monochrome1_1ch_letterbox": ("cxr/siim_monochrome1.dcm", {"channels": 1}),
    "dicom_monochrome2_3ch_clahe_center_crop": ("cxr/siim_monochrome2.dcm",
                                                {"channels": 3, "clahe": True, "resize": "center_crop"}),
    "dicom_ct_window_1ch": ("dicom/CT_small.dcm", {"channels": 1, "window": [40, 400]}),
    "dicom_palette_3ch_clahe": ("dicom/examples_palette.dcm", {"channels": 3, "clahe": True}),
}
CHANGED = ("the preprocessing contract changed: the same image and spec now give other pixels, so caches and "
           "models made before would be read as if they matched. If this is on purpose, bump CACHE_VERSION in "
           "medxfer/data/cache/key.py and regenerate the golden file deliberately: "
           "python tests/data/test_data_preprocess.py --regenerate")


def _golden_arrays(test_data) -> dict[str, np.ndarray]:
    return {name: preprocess_bytes(read_image(test_data, rel), PreprocessConfig(size=32, **spec), rel)
            for name, (rel, spec) in GOLDEN_CASES.items()}


def test_preprocessed_arrays_match_the_golden_file(test_data):
    """Real PNG, JPEG and DICOM files through ``preprocess_bytes`` give the committed arrays: a change to
    decoding, resizing, CLAHE or normalisation fails here, loudly, rather than silently mixing pixels
    across versions under one cache key."""
    golden = np.load(GOLDEN)
    assert int(golden["cache_version"]) == CACHE_VERSION, f"tests/golden was made for another CACHE_VERSION; {CHANGED}"
    for name, got in _golden_arrays(test_data).items():
        assert name in golden.files, f"no golden array for case {name!r}; {CHANGED}"
        want = golden[name]
        assert got.shape == want.shape and got.dtype == want.dtype, f"{name}: {got.shape} {got.dtype}; {CHANGED}"
        diff = float(np.abs(got - want).max())
        assert diff <= 1e-5, f"{name}: largest difference {diff:.6f}; {CHANGED}"


if __name__ == "__main__":  # python tests/data/test_data_preprocess.py --regenerate
    import argparse
    import os

    parser = argparse.ArgumentParser(description="Regenerate tests/golden/preprocess.npz (after bumping "
                                                 "CACHE_VERSION, on purpose)")
    parser.add_argument("--regenerate", action="store_true", required=True)
    parser.parse_args()
    data = Path(os.environ.get("MEDXFER_TEST_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, cache_version=np.int64(CACHE_VERSION), **_golden_arrays(data.resolve()))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size:,} bytes) for CACHE_VERSION {CACHE_VERSION}")
