"""Losses per task, built once from the config and the training class counts.

Why here and not inline: the loss decides what "class imbalance handled" means
(weighted cross-entropy, focal), how unknown findings in chest X-ray labels are ignored
(masked BCE: NaN = not labelled, contributes nothing), and how grades are regressed
(ordinal: MSE). Each is a plain function of (logits, target), unit-tested without Ray.

The multiclass losses ``train.loss`` can name are registered in :data:`LOSSES`; a new one is one
entry here (the config validates names against this table, so this module imports torch lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medxfer.errors import ConfigError

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # noqa: F821 - torch is imported lazily


@dataclass(frozen=True)
class Loss:
    """A multiclass training loss ``train.loss`` can name."""

    name: str
    build: Callable[[object, list[float] | None], LossFn]  # (train config, class weights or None) -> loss
    weighted: bool  # uses train.class_weights
    soft_targets: bool  # takes mixed (probability) targets, so mixup / CutMix can train with it


def auto_class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse training frequency, scaled so that the average weight over samples is 1.

    ``w_c = N / (K * n_c)``; a class absent from training gets weight 0 (it cannot be learnt).
    """
    n, k = float(sum(counts)), len(counts)
    return [n / (k * c) if c > 0 else 0.0 for c in counts]


def resolve_class_weights(setting, counts: Sequence[int] | None, num_classes: int) -> list[float] | None:
    if setting == "none" or setting is None:
        return None
    if setting == "auto":
        if not counts:
            return None
        return auto_class_weights(counts)
    weights = [float(w) for w in setting]
    if len(weights) != num_classes:
        raise ConfigError([f"train.class_weights: expected {num_classes} values (one per class), got {len(weights)}"])
    return weights


def focal_loss(logits, target, gamma: float, weight=None):
    """Multiclass focal loss (Lin et al.): CE scaled by (1 - p_true)^gamma, optional class weights."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    p_t = logp_t.exp()
    loss = -((1 - p_t) ** gamma) * logp_t
    if weight is not None:
        w = weight[target]
        return (loss * w).sum() / w.sum().clamp_min(1e-12)
    return loss.mean()


def masked_bce(logits, target):
    """Binary cross-entropy over known labels only (NaN in ``target`` = unknown, ignored)."""
    import torch
    import torch.nn.functional as F

    known = ~torch.isnan(target)
    if not known.any():
        return logits.sum() * 0.0  # keeps the graph (DDP needs a backward on every rank)
    return F.binary_cross_entropy_with_logits(logits.float()[known], target[known].float())


def ordinal_mse(logits, target):
    import torch.nn.functional as F

    return F.mse_loss(logits.float().reshape(len(logits), -1)[:, 0], target.float())


def _cross_entropy(train_cfg, weights: list[float] | None) -> LossFn:
    import torch
    import torch.nn.functional as F

    smoothing = train_cfg.label_smoothing

    def ce(logits, y):
        w = torch.tensor(weights, device=logits.device, dtype=torch.float32) if weights else None
        return F.cross_entropy(logits.float(), y, weight=w, label_smoothing=smoothing)

    return ce


def _focal(train_cfg, weights: list[float] | None) -> LossFn:
    import torch

    gamma = train_cfg.focal_gamma

    def focal(logits, y):
        w = torch.tensor(weights, device=logits.device) if weights else None
        return focal_loss(logits, y, gamma, w)

    return focal


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (
    Loss("ce", _cross_entropy, weighted=False, soft_targets=True),
    Loss("weighted_ce", _cross_entropy, weighted=True, soft_targets=True),
    Loss("focal", _focal, weighted=True, soft_targets=False),
)}


def build_loss(task: str, train_cfg, class_counts: Sequence[int] | None = None,
               num_classes: int | None = None, train: bool = True) -> LossFn:
    """The loss for ``task``. ``train=False`` gives the plain validation loss (no smoothing/weights)."""
    if task == "multilabel":
        return masked_bce
    if task == "ordinal":
        return ordinal_mse
    if task != "multiclass":
        raise ConfigError([f"data.task: unknown task {task!r}"])
    if not train:
        import torch.nn.functional as F

        return lambda logits, y: F.cross_entropy(logits.float(), y)
    loss = LOSSES[train_cfg.loss]
    k = num_classes or (len(class_counts) if class_counts else 0)
    weights = resolve_class_weights(train_cfg.class_weights, class_counts, k) if loss.weighted else None
    return loss.build(train_cfg, weights)
