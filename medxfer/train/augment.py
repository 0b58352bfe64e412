"""Light augmentation on batched tensors, run on the worker (GPU when there is one).

Why on tensors: the cache holds deterministic, already-preprocessed images; random
augmentation belongs after it (Ray's advice: deterministic before ``materialize``, random
after), and doing it batched on the training device costs almost nothing. Kept light on
purpose: small shifts, rotations and scales, plus horizontal flips that can be turned off
when laterality matters (a chest X-ray's heart is on the left).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    hflip: bool = True,
    max_degrees: float = 10.0,
    max_translate: float = 0.08,
    scale: tuple[float, float] = (0.92, 1.08),
) -> torch.Tensor:
    """Per-image random flip + rotation/translation/scale of an (N,C,H,W) batch.

    Out-of-image pixels are filled by border replication (no artificial black frames).
    """
    n = x.shape[0]
    if n == 0:
        return x
    dev = x.device
    rnd = lambda *s: torch.rand(*s, generator=generator).to(dev)  # noqa: E731 - CPU RNG, reproducible
    ang = (rnd(n) * 2 - 1) * math.radians(max_degrees)
    sc = scale[0] + rnd(n) * (scale[1] - scale[0])
    tx, ty = (rnd(n) * 2 - 1) * max_translate * 2, (rnd(n) * 2 - 1) * max_translate * 2
    flip = torch.where(rnd(n) < 0.5, -1.0, 1.0) if hflip else torch.ones(n, device=dev)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
