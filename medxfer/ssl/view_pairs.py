"""Batched, seeded view augmentations for self-supervised pretraining, run on the workers.

Why on the workers and batched: the cache holds each image preprocessed once; the random
views change every step, so they are made from the cached tensors right before the forward
pass, on the worker's device, for a whole batch at once (one ``grid_sample`` for all the
geometry, one grouped convolution for the blur) instead of image by image in Ray Data.

Why these transforms: medical images are mostly grayscale and their intensities carry the
finding, so the views use geometry (random resized crop, horizontal flip, small rotations),
mild brightness/contrast and blur — never hue or saturation jitter, never vertical flips
(anatomy has an up). Everything happens in pixel space ([0, 1], undoing the spec's
normalisation) and is clamped there, so a view has the same shape, dtype and value range as
the cached image it came from.

Every random number comes from the ``torch.Generator`` passed in (on the CPU, then moved to
the images' device), so a seed reproduces the views on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewSpec:
    """The augmentation parameters; built from a job config with :meth:`from_config`."""

    crop_scale: tuple[float, float] = (0.4, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotation_deg: float = 10.0
    hflip: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    blur_prob: float = 0.3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.brightness >= 1 or self.contrast >= 1:
            raise ValueError("brightness and contrast jitter must be < 1 (a factor of 1 +- value)")

    @classmethod
    def from_config(cls, cfg) -> ViewSpec:
        """From a :class:`medxfer.config.JobConfig`: the ``pretrain`` section, ``train.hflip``
        (off when laterality matters) and the preprocessing spec's mean/std."""
        p = cfg.pretrain
        return cls(
            crop_scale=tuple(p.crop_scale),
            rotation_deg=p.rotation_deg,
            hflip=cfg.train.hflip,
            brightness=min(p.brightness, 0.95),
            contrast=min(p.contrast, 0.95),
            blur_prob=p.blur_prob,
            mean=tuple(cfg.preprocess.mean),
            std=tuple(cfg.preprocess.std),
        )


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _geometry(n: int, spec: ViewSpec, g: torch.Generator) -> torch.Tensor:
    """Affine matrices (n, 2, 3) mapping output to input coordinates: crop, flip, rotation.

    In normalised coordinates ([-1, 1] across the image) a crop of relative width ``w``
    and height ``h`` centred at ``c`` is ``x_in = diag(w, h) x_out + c``; a flip negates
    ``w``; a rotation multiplies by ``R(angle)``. One matrix per image, one ``grid_sample``.
    """
    area = _uniform(n, spec.crop_scale[0], spec.crop_scale[1], g)
    log_r = _uniform(n, math.log(spec.ratio[0]), math.log(spec.ratio[1]), g)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=g) - 1)
    cy = (1 - h) * (2 * torch.rand(n, generator=g) - 1)
    if spec.hflip:
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        w = w * flip
    angle = _uniform(n, -spec.rotation_deg, spec.rotation_deg, g) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * w
    theta[:, 0, 1] = -sin * h
    theta[:, 1, 0] = sin * w
    theta[:, 1, 1] = cos * h
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (sigma 0: unchanged), as a grouped conv."""
    b, c, hgt, wid = x.shape
    sig_max = float(sigma.max())
    if sig_max <= 0:
        return x
    radius = max(1, min(math.ceil(3 * sig_max), min(hgt, wid) // 2 - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x.device, x.dtype).clamp(min=1e-6).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = torch.where((sigma.to(x.device) > 0).view(b, 1), k, (t == 0).to(x.dtype).view(1, -1).expand(b, -1))
    k = k / k.sum(dim=1, keepdim=True)
    k = k.repeat_interleave(c, dim=0)  # (b*c, K): one kernel per image channel
    y = x.reshape(1, b * c, hgt, wid)
    y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.reshape(b, c, hgt, wid)


def random_view(x: torch.Tensor, spec: ViewSpec, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image in a normalised batch ``x`` (B, C, H, W).

    Same shape and dtype as ``x``; values stay within the normalised image of [0, 1].
    """
    if x.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")
    n, c, hgt, wid = x.shape
    dtype, dev = x.dtype, x.device
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    pix = (x.float() * std + mean).clamp(0, 1)

    theta = _geometry(n, spec, generator).to(dev)
    grid = F.affine_grid(theta, [n, c, hgt, wid], align_corners=False)
    # Border replication, as in fine-tuning's augmentation (medxfer.train.augment): no artificial
    # black frames for the network to key on.
    pix = F.grid_sample(pix, grid, mode="bilinear", padding_mode="border", align_corners=False)

    bright = _uniform(n, 1 - spec.brightness, 1 + spec.brightness, generator).to(dev).view(n, 1, 1, 1)
    contrast = _uniform(n, 1 - spec.contrast, 1 + spec.contrast, generator).to(dev).view(n, 1, 1, 1)
    pix = (pix * bright).clamp(0, 1)
    m = pix.mean(dim=(1, 2, 3), keepdim=True)
    pix = ((pix - m) * contrast + m).clamp(0, 1)

    # Blur strength scales with the image: SimCLR's sigma in [0.1, 2] is for 224 px; a 28 px
    # image keeps a floor of 0.5 px so the blur still does something.
    sig_hi = max(0.5, 2.0 * min(hgt, wid) / 224)
    do_blur = torch.rand(n, generator=generator) < spec.blur_prob
    sigma = torch.where(do_blur, _uniform(n, 0.1, sig_hi, generator), torch.zeros(n))
    if bool(do_blur.any()):
        pix = _blur(pix, sigma).clamp(0, 1)

    return ((pix - mean) / std).to(dtype)


def two_views(
    x: torch.Tensor, spec: ViewSpec, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random views of each image (the input pair of every SSL method here)."""
    return random_view(x, spec, generator), random_view(x, spec, generator)
