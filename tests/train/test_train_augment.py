"""medxfer.train.augment: per-image random draws that a seed reproduces."""

from __future__ import annotations

import torch

from medxfer.train.augment import random_affine_flip


def test_augment_is_random_per_image_and_reproducible():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16).repeat(2, 1, 1, 1)
    a = random_affine_flip(x, torch.Generator().manual_seed(0))
    b = random_affine_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a[0], a[2])  # same input image, different draw
    assert a.min() >= x.min() - 1e-4 and a.max() <= x.max() + 1e-4  # border fill, no new extremes
