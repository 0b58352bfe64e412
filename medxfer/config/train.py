"""How weights are learned: the training loop, early stopping, checkpoints, pretraining (``train``, ``pretrain``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from medxfer.config.base import EpochMetric, Seed, _Section
from medxfer.metrics.registry import EPOCH_METRICS


class EarlyStoppingConfig(_Section):
    metric: EpochMetric = Field("val_auroc", description="Validation metric that picks the best epoch: "
                                + ", ".join(EPOCH_METRICS) + ".")
    mode: Literal["max", "min"] | None = Field(
        None, description="Whether larger or smaller is better (default: the metric's own direction)."
    )
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without improvement (None: never)."
    )

    @property
    def direction(self) -> str:
        """'max' or 'min': the explicit ``mode``, else the metric's own direction."""
        return self.mode or EPOCH_METRICS[self.metric]

class CheckpointSection(_Section):
    """When a run writes a checkpoint. Each one holds the latest state and the best weights so far."""

    every_minutes: float | None = Field(
        10.0, gt=0, description="Write when this many minutes have passed since the last checkpoint "
        "(None: only by epochs). A restarted worker group loses at most this much work.",
    )
    every_epochs: int | None = Field(
        None, ge=1, description="Also write every N epochs (None: only by time).",
    )
    keep: int = Field(1, ge=1, description="Checkpoints kept in the run folder (the newest ones).")

class TrainConfig(_Section):
    """The worker loop: optimiser, schedule, loss, augmentation and fine-tuning strategy."""

    epochs: int = Field(10, ge=1, le=10_000, description="Total epochs of the run.")
    max_epochs_this_run: int | None = Field(
        None,
        ge=1,
        description="Stop after this many epochs in this invocation (the next run with the same "
        "name resumes). Useful to split long runs and to test resume.",
    )
    batch_size: int = Field(64, ge=2, description="Images per worker per step; at least 2, as batch norm "
                            "cannot normalise a batch of one image.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimiser.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (of the head, with backbone_lr_mult).")
    weight_decay: float = Field(1e-4, ge=0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up before the cosine decay.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="LR schedule after warm-up.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (multiclass).")
    loss: str = Field(
        "ce", description="Loss for multiclass: 'ce' (cross-entropy), 'weighted_ce' (class-weighted) or 'focal' "
        "(the names in medxfer.train.losses.LOSSES).",
    )
    class_weights: Literal["auto", "none"] | list[float] = Field(
        "auto",
        description="Class weights for weighted_ce/focal: 'auto' (inverse training frequency), "
        "'none', or explicit values.",
    )
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss gamma.")
    augment: bool = Field(True, description="Random flips and small affine on the training tensors.")
    hflip: bool = Field(True, description="Allow horizontal flips (turn off when laterality matters).")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip gradient norm (None: off).")
    amp: Literal["auto", "off"] = Field("auto", description="Mixed precision on GPU (bf16 where supported).")
    freeze: str = Field(
        "none",
        description="Fine-tuning: 'none', 'backbone' (train the head only; linear probing), "
        "or 'partial:N' (train the last N stages and the head).",
    )
    backbone_lr_mult: float = Field(
        1.0, gt=0, description="Backbone LR = lr * this (layer-wise LR for fine-tuning)."
    )
    head_warmup_epochs: int = Field(
        0, ge=0, description="Train only the head for this many epochs, then everything (LP-FT)."
    )
    l2sp: float = Field(0.0, ge=0, description="L2-SP strength: pull weights toward the source weights.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the weights with this decay per "
        "step (e.g. 0.998); validation, the best epoch and the bundle then use the averaged weights.",
    )
    mixup_alpha: float = Field(
        0.0, ge=0, description="Mixup: train on blends of two images and of their labels, the weight drawn "
        "from Beta(alpha, alpha) (0: off; multiclass with ce/weighted_ce only).",
    )
    cutmix_alpha: float = Field(
        0.0, ge=0, description="CutMix: paste a box of one image into another, labels mixed by area (0: off; "
        "with mixup_alpha too, each batch uses one of the two).",
    )
    reinit_last_stage: bool = Field(False, description="Re-initialise the backbone's last stage.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    seed: Seed = Field(0, description="Seed of weights init, shuffling and augmentation.")
    checkpoint: CheckpointSection = Field(
        default_factory=CheckpointSection,
        description="Checkpoint policy; a checkpoint is always written at the end of a run and when it is "
        "asked to stop (SIGINT/SIGTERM to the command, or a node about to be preempted).",
    )

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from medxfer.train.losses import LOSSES

        if v not in LOSSES:
            raise ValueError(f"one of {', '.join(LOSSES)}")
        return v

    @model_validator(mode="after")
    def _mixing_needs_soft_targets(self) -> TrainConfig:
        from medxfer.train.losses import LOSSES

        if (self.mixup_alpha or self.cutmix_alpha) and not LOSSES[self.loss].soft_targets:
            soft = ", ".join(n for n, loss in LOSSES.items() if loss.soft_targets)
            raise ValueError(f"mixup_alpha/cutmix_alpha mix labels, which the {self.loss} loss cannot take; use "
                             f"loss {soft}")
        return self

    @field_validator("freeze")
    @classmethod
    def _freeze_form(cls, v: str) -> str:
        if v in ("none", "backbone"):
            return v
        if v.startswith("partial:") and v.split(":", 1)[1].isdigit() and int(v.split(":", 1)[1]) >= 1:
            return v
        raise ValueError(f"expected 'none', 'backbone' or 'partial:N' (N >= 1), got {v!r}")

class PretrainConfig(_Section):
    """Self-supervised source pretraining (medxfer pretrain)."""

    method: Literal["simsiam", "byol", "simclr"] = Field("simsiam", description="SSL method.")
    projection_dim: int = Field(256, ge=8, le=16_384, description="Projector output size (its layers' weights grow "
                                "with its square).")
    temperature: float = Field(0.2, gt=0, description="SimCLR temperature.")
    ema_momentum: float = Field(0.99, gt=0, lt=1, description="BYOL target-network EMA momentum.")
    crop_scale: tuple[float, float] = Field((0.4, 1.0), description="Random resized crop scale range.")
    rotation_deg: float = Field(10.0, ge=0, description="Max random rotation in degrees.")
    brightness: float = Field(0.3, ge=0, description="Max brightness jitter.")
    contrast: float = Field(0.3, ge=0, description="Max contrast jitter.")
    blur_prob: float = Field(0.3, ge=0, le=1, description="Probability of Gaussian blur.")

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale_is_a_fraction_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError(f"a range of image-area fractions, 0 < low <= high <= 1; got {list(v)}")
        return v
