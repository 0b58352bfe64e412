"""Optimiser, schedule and fine-tuning strategy: which weights learn, and how fast.

Why these pieces: fine-tuning a source model on a small target set works best when the
backbone moves less than the new head — by freezing it (linear probing, ``freeze:
backbone``), freezing all but its last N stages (``partial:N``), giving it a smaller
learning rate (``backbone_lr_mult``), training the head alone first (LP-FT,
``head_warmup_epochs``), or pulling it toward the source weights (L2-SP). All of them are
expressed as parameter groups and per-group LR factors, so DDP sees a fixed set of
trainable parameters for the whole run.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medxfer.models import is_head, stage_of, stage_prefixes, unwrap


def trainable_mask(model: nn.Module, freeze: str) -> dict[str, bool]:
    """name -> trainable, for 'none', 'backbone' or 'partial:N' (last N stages + head)."""
    m = unwrap(model)
    names = [n for n, _ in m.named_parameters()]
    if freeze == "none":
        return {n: True for n in names}
    if freeze == "backbone":
        return {n: is_head(n) for n in names}
    if freeze.startswith("partial:"):
        n_train = int(freeze.split(":", 1)[1])
        stages = stage_prefixes(m)
        first_trained = max(0, len(stages) - n_train)
        out = {}
        for n in names:
            s = stage_of(n, stages)
            # Parameters outside the listed stages (besides the head) sit after the last stage.
            out[n] = is_head(n) or (s is None) or s >= first_trained
        return out
    raise ValueError(f"train.freeze: expected none, backbone or partial:N, got {freeze!r}")


def apply_freeze(model: nn.Module, freeze: str) -> list[str]:
    """Set ``requires_grad`` from the strategy (before DDP wraps the model); returns frozen names."""
    mask = trainable_mask(model, freeze)
    frozen = []
    for n, p in unwrap(model).named_parameters():
        p.requires_grad_(mask[n])
        if not mask[n]:
            frozen.append(n)
    return frozen


def set_frozen_norm_eval(model: nn.Module, backbone_too: bool = False) -> None:
    """Put batch-norm layers whose weights are frozen in eval mode, so their running stats stay put.

    ``backbone_too``: during head warm-up the whole backbone counts as frozen.
    """
    for name, mod in unwrap(model).named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            params = list(mod.parameters())
            frozen = params and not any(p.requires_grad for p in params)
            if frozen or (backbone_too and name.startswith("backbone.")):
                mod.eval()


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float) -> list[dict]:
    """Trainable parameters in up to four groups: head/backbone x decay/no-decay.

    Biases and normalisation weights (1-d tensors) get no weight decay. Each group carries
    ``name`` and ``base_lr`` so the schedule can treat backbone and head differently.
    """
    groups: dict[tuple[str, bool], list] = {}
    for n, p in unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if is_head(n) else "backbone"
        groups.setdefault((part, p.ndim > 1), []).append(p)
    out = []
    for (part, decay), params in sorted(groups.items()):
        base = lr * (backbone_lr_mult if part == "backbone" else 1.0)
        out.append({"params": params, "lr": base, "base_lr": base, "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{part}{'' if decay else '_no_decay'}"})
    return out


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    groups = param_groups(model, train_cfg.lr, train_cfg.weight_decay, train_cfg.backbone_lr_mult)
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=train_cfg.lr)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float, schedule: str) -> float:
    """Linear warm-up to 1 over ``warmup_epochs``, then cosine decay to 0 (or constant)."""
    total = max(1, steps_per_epoch * epochs)
    warm = int(round(warmup_epochs * steps_per_epoch))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg, steps_per_epoch: int):
    """A per-step LambdaLR; backbone groups get factor 0 during the head warm-up epochs (LP-FT)."""
    head_warm_steps = train_cfg.head_warmup_epochs * steps_per_epoch

    def make(group):
        backbone = group["name"].startswith("backbone")

        def f(step: int) -> float:
            if backbone and step < head_warm_steps:
                return 0.0
            return lr_factor(step, steps_per_epoch, train_cfg.epochs, train_cfg.warmup_epochs, train_cfg.schedule)

        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [make(g) for g in optimizer.param_groups])


def l2sp_reference(model: nn.Module) -> dict[str, torch.Tensor]:
    """A frozen copy of the backbone's current (source) weights, the anchor of L2-SP."""
    return {n: p.detach().clone() for n, p in unwrap(model).named_parameters() if not is_head(n) and p.requires_grad}


def l2sp_penalty(model: nn.Module, reference: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """alpha/2 * sum ||w - w_source||^2 over backbone weights (Li et al., 2018)."""
    total = None
    for n, p in unwrap(model).named_parameters():
        ref = reference.get(n)
        if ref is None:
            continue
        term = (p - ref.to(p.device)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * alpha * total
