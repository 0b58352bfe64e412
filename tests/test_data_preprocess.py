"""The preprocessing contract (``medxfer.data.preprocess``): resize modes, channels, normalisation,
CLAHE, determinism. No Ray."""

from __future__ import annotations

import numpy as np
from datautil import png, read_image

from medxfer.config import PreprocessConfig
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

