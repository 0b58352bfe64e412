"""SimSiam, BYOL and SimCLR as small modules around one backbone feature extractor.

Why these three: SimSiam and BYOL learn without negative pairs, so they work with the
small per-GPU batches a hospital's few GPUs allow (SimSiam needs only stop-gradient and a
predictor; BYOL adds a slowly moving EMA target, which makes it the more stable of the two
at very small batches). SimCLR (NT-Xent over the two views) is here for comparison: it
wants large batches, since its negatives are the other images of the local batch.

Each method's ``forward(view1, view2)`` returns ``(loss, stats)`` so the whole step is one
call through DistributedDataParallel. ``stats["repr_std"]`` is the collapse monitor of the
SimSiam paper: the per-dimension std of the l2-normalised embeddings, times sqrt(dim) —
about 1 for a healthy representation, 0 when every image maps to the same point.

The backbone is a medxfer classification model with its head replaced by ``Identity``
(:func:`feature_extractor`), so ``backbone.state_dict()`` carries exactly the model's
backbone key names and a fine-tuning model loads every one of them.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("simsiam", "byol", "simclr")


# ----------------------------------------------------------------------------- heads


def _mlp(in_dim: int, hidden: int, out_dim: int, out_bn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=not out_bn),
    ]
    if out_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def _repr_std(z: torch.Tensor) -> torch.Tensor:
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])


def _neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, z) with the gradient stopped at z (SimSiam's D)."""
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()


class SimSiam(nn.Module):
    """Chen & He 2021: projector + predictor, stop-gradient, symmetric negative cosine.

    Loss in [-1, 1]; -1 when every prediction matches the other view's projection.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, projection_dim: int = 256):
        super().__init__()
        self.backbone = backbone
        hidden = max(projection_dim, feat_dim)
        self.projector = _mlp(feat_dim, hidden, projection_dim, out_bn=True)
        self.predictor = _mlp(projection_dim, max(projection_dim // 4, 8), projection_dim)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor):
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        p = self.predictor(z)
        z1, z2 = z.chunk(2)
        p1, p2 = p.chunk(2)
        loss = 0.5 * (_neg_cosine(p1, z2) + _neg_cosine(p2, z1))
        return loss, {"repr_std": _repr_std(z1)}


class BYOL(nn.Module):
    """Grill et al. 2020: an online network predicts an EMA target network's projection.

    Loss = 2 - 2 cos (symmetrised and averaged, so in [0, 4]); call :meth:`update_target`
    after every optimiser step. The target is excluded from gradients (and so from DDP's
    buckets) but is part of the state dict, so checkpoints resume it exactly.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, projection_dim: int = 256):
        super().__init__()
        self.backbone = backbone
        hidden = max(2 * projection_dim, feat_dim)
        self.projector = _mlp(feat_dim, hidden, projection_dim)
        self.predictor = _mlp(projection_dim, hidden, projection_dim)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)

    def _target_params(self):
        yield from self.target_backbone.parameters()
        yield from self.target_projector.parameters()

    def forward(self, v1: torch.Tensor, v2: torch.Tensor):
        x = torch.cat([v1, v2])
        p = self.predictor(self.projector(self.backbone(x)))
        with torch.no_grad():
            t = self.target_projector(self.target_backbone(x))
        p1, p2 = p.chunk(2)
        t1, t2 = t.chunk(2)

        def d(a, b):
            return 2 - 2 * F.cosine_similarity(a.float(), b.detach().float(), dim=-1).mean()

        loss = 0.5 * (d(p1, t2) + d(p2, t1))
        return loss, {"repr_std": _repr_std(t1)}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        online = list(self.backbone.parameters()) + list(self.projector.parameters())
        for po, pt in zip(online, self._target_params(), strict=True):
            pt.mul_(momentum).add_(po.detach(), alpha=1 - momentum)
        online_b = list(self.backbone.buffers()) + list(self.projector.buffers())
        target_b = list(self.target_backbone.buffers()) + list(self.target_projector.buffers())
        for bo, bt in zip(online_b, target_b, strict=True):
            bt.copy_(bo)


class SimCLR(nn.Module):
    """Chen et al. 2020: NT-Xent over the 2N views of the local batch.

    Negatives are the local batch only (no all-gather across workers), so this method
    needs the largest per-worker batch of the three. Loss >= 0, about log(2N - 1) at start.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, projection_dim: int = 128, temperature: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.projector = _mlp(feat_dim, max(projection_dim, feat_dim), projection_dim)
        self.temperature = temperature

    def forward(self, v1: torch.Tensor, v2: torch.Tensor):
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        return nt_xent(z, self.temperature), {"repr_std": _repr_std(z.chunk(2)[0])}


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent for ``z`` = the two views' embeddings stacked (2N, D): row i's positive is i +- N."""
    z = F.normalize(z.float(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, n2), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def build_method(name: str, backbone: nn.Module, feat_dim: int, pretrain_cfg) -> nn.Module:
    """The SSL module for ``pretrain.method``, sized by the ``pretrain`` config section."""
    if name == "simsiam":
        return SimSiam(backbone, feat_dim, pretrain_cfg.projection_dim)
    if name == "byol":
        return BYOL(backbone, feat_dim, pretrain_cfg.projection_dim)
    if name == "simclr":
        return SimCLR(backbone, feat_dim, pretrain_cfg.projection_dim, pretrain_cfg.temperature)
    raise ValueError(f"unknown pretraining method {name!r}; choose one of {', '.join(METHODS)}")


def byol_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: the EMA momentum rises from ``base`` to 1 along a cosine."""
    if total_steps <= 0:
        return base
    frac = min(max(step / total_steps, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * frac) + 1) / 2
