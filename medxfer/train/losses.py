"""Losses per task, built once from the config and the training class counts.

Why here and not inline: the loss decides what "class imbalance handled" means
(weighted cross-entropy, focal), how unknown findings in chest X-ray labels are ignored
(masked BCE: NaN = not labelled, contributes nothing), and how grades are regressed
(ordinal: MSE). Each is a plain function of (logits, target), unit-tested without Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from medxfer.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multiclass focal loss (Lin et al.): CE scaled by (1 - p_true)^gamma, optional class weights."""
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    p_t = logp_t.exp()
    loss = -((1 - p_t) ** gamma) * logp_t
    if weight is not None:
        w = weight[target]
        return (loss * w).sum() / w.sum().clamp_min(1e-12)
    return loss.mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over known labels only (NaN in ``target`` = unknown, ignored)."""
    known = ~torch.isnan(target)
    if not known.any():
        return logits.sum() * 0.0  # keeps the graph (DDP needs a backward on every rank)
    return F.binary_cross_entropy_with_logits(logits.float()[known], target[known].float())


def ordinal_mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits.float().reshape(len(logits), -1)[:, 0], target.float())


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
        return lambda logits, y: F.cross_entropy(logits.float(), y)
    k = num_classes or (len(class_counts) if class_counts else 0)
    weights = None
    if train_cfg.loss in ("weighted_ce", "focal"):
        weights = resolve_class_weights(train_cfg.class_weights, class_counts, k)
    smoothing = train_cfg.label_smoothing
    if train_cfg.loss == "focal":
        gamma = train_cfg.focal_gamma

        def _focal(logits, y):
            w = torch.tensor(weights, device=logits.device) if weights else None
            return focal_loss(logits, y, gamma, w)

        return _focal

    def _ce(logits, y):
        w = torch.tensor(weights, device=logits.device, dtype=torch.float32) if weights else None
        return F.cross_entropy(logits.float(), y, weight=w, label_smoothing=smoothing)

    return _ce
