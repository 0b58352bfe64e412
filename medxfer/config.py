"""The job config: one pydantic tree that every medxfer command reads.

Why one tree: a run folder, a model bundle and a Kubernetes ConfigMap all carry the same
YAML, so a result can always be traced back to exactly the settings that produced it.
Every model forbids unknown keys, so a typo fails loudly instead of silently falling back
to a default (see ``medxfer.config_io`` for the loader and the error messages).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medxfer.metrics.bootstrap import BCA_MAX_N
from medxfer.metrics.operating_point import RULE_FORMS, parse_rule
from medxfer.metrics.registry import EPOCH_METRICS, METRICS
from medxfer.models.backbones import BACKBONE_NAMES, WITHOUT_IMAGENET_WEIGHTS

# Run, model and registry names become folder names (runs/<name>/, registry/<model>/): one pattern
# for all of them, checked wherever a name enters, so none can climb out of its folder.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _one_of(names: Collection[str]) -> Callable[[str], str]:
    def check(v: str) -> str:
        if v not in names:
            raise ValueError(f"one of {', '.join(names)}")
        return v

    return check


def _rule(v: str) -> str:
    parse_rule(v)  # a ValueError names the forms expected
    return v


# Checked against the metric registry (medxfer.metrics) with the config, so `config validate` catches them.
EpochMetric = Annotated[str, AfterValidator(_one_of(EPOCH_METRICS))]
RegisteredMetric = Annotated[str, AfterValidator(_one_of(METRICS))]
OperatingRule = Annotated[str, AfterValidator(_rule)]


class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    # Class names like "0"/"1" come from YAML and --set as numbers: accept them as strings.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class DataConfig(_Section):
    """Where the labelled images are and how to split and subsample them."""

    manifest: str | None = Field(
        None,
        description="URI of the manifest (CSV, JSON lines or Parquet) with columns path,label "
        "and optional split, patient_id. Relative paths resolve against the manifest's folder.",
    )
    extra_manifests: list[str] = Field(
        default_factory=list,
        description="More manifests pooled with `manifest` (multi-source training/pretraining); "
        "their union is used and per-source counts go into the dataset card.",
    )
    task: Literal["multiclass", "multilabel", "ordinal"] = Field(
        "multiclass",
        description="multiclass: one class per image; multilabel: several '|'-separated findings; "
        "ordinal: an integer grade (e.g. retinopathy 0-4), trained as regression.",
    )
    classes: list[str] | None = Field(
        None,
        description="Class (or finding) names in output order. Default: sorted labels found in the "
        "manifest. For ordinal tasks, the grades in order.",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2),
        description="train/val/test fractions used only when the manifest has no split column; "
        "the split is stratified and grouped by patient_id when present.",
    )
    split_seed: int = Field(0, description="Seed of the split made when the manifest has none.")
    label_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Keep this stratified fraction of the training labels (label-efficiency "
        "studies). Validation and test are never subsampled.",
    )
    label_seed: int = Field(0, description="Seed of the label_fraction subsample.")
    positive_class: str | None = Field(
        None,
        description="multiclass: the class whose probability is the score of binary metrics, operating "
        "points and decisions (e.g. melanoma). Stored in the model card, so evaluate and predict agree. "
        "Default: the class named by `medxfer import folder --positive-class` (import.json beside the "
        "manifest), else the last class.",
    )
    bad_files: Literal["fail", "skip"] = Field(
        "skip",
        description="What to do with an undecodable image: stop, or skip and count it.",
    )
    max_bad_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="With bad_files=skip, fail anyway when more than this fraction is bad.",
    )
    max_pixels: int = Field(
        178_956_970,
        gt=0,
        description="Refuse images with more pixels than this (decompression-bomb guard; "
        "the default matches Pillow's). Read from the file's header, before decoding.",
    )
    max_image_bytes: int = Field(
        256 * 1024**2,
        gt=0,
        description="Refuse images whose decoded pixel buffer would exceed this many bytes: width x "
        "height x channels x bytes per sample (x frames for DICOM), read from the header before "
        "decoding. A 16-bit image needs twice the memory of an 8-bit one with the same pixels.",
    )
    engine: Literal["auto", "ray", "local"] = Field(
        "auto",
        description="Where preprocessing runs on a cache miss: 'ray' (Ray Data tasks over the cluster's CPUs), "
        "'local' (threads in this process, no Ray), or 'auto': local for manifests of at most "
        "local_max_images images, where starting Ray would cost more than the decoding. Both write the same cache.",
    )
    local_max_images: int = Field(2000, ge=0, description="With engine=auto, the most images preprocessed locally.")

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"must be three non-negative fractions summing to 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _positive_class_fits(self) -> DataConfig:
        if self.positive_class is None:
            return self
        if self.task != "multiclass":
            raise ValueError(f"positive_class applies to multiclass tasks only (task is {self.task}); remove it")
        if self.classes and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of data.classes {self.classes}")
        return self


class PreprocessConfig(_Section):
    """How an image becomes a tensor. Frozen: it is hashed into the cache key and travels in bundles."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    channels: Literal[1, 3, "auto"] = Field(
        "auto",
        description="Output channels: 1 (grayscale), 3 (RGB), or 'auto': 3 when any image of a seeded "
        "sample of the manifest stores colour, else 1 (read from the files' headers before the cache "
        "key is made; the cache card and model bundles record the resolved number).",
    )
    size: int = Field(64, ge=8, le=2048, description="Output height and width in pixels.")
    resize: Literal["letterbox", "stretch", "center_crop"] = Field(
        "letterbox",
        description="letterbox keeps the aspect ratio and pads; stretch ignores it; "
        "center_crop crops the short side's square then resizes.",
    )
    clahe: bool = Field(False, description="Apply CLAHE (local contrast equalisation) before resizing.")
    clahe_clip_limit: float = Field(2.0, gt=0, description="CLAHE clip limit.")
    clahe_tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side.")
    window: tuple[float, float] | None = Field(
        None,
        description="DICOM window (center, width) in modality units. Default: the file's VOI LUT "
        "or window, else the full range.",
    )
    frame: int = Field(0, ge=0, description="Frame of multi-frame DICOM files to use.")
    mean: list[float] = Field(default_factory=lambda: [0.5], description="Per-channel mean, on [0,1] pixels.")
    std: list[float] = Field(default_factory=lambda: [0.5], description="Per-channel std, on [0,1] pixels.")
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="dtype of the cached tensors (float16 halves the cache)."
    )

    @model_validator(mode="after")
    def _norm_matches_channels(self) -> PreprocessConfig:
        most = 3 if self.channels == "auto" else self.channels
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if len(vals) not in (1, most):
                raise ValueError(f"{name} needs 1 or {most} values, got {len(vals)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


#: The backbones medxfer builds (``medxfer.models.backbones``, which imports no torch).
Backbone = Literal[tuple(sorted(BACKBONE_NAMES))]


class ModelConfig(_Section):
    """Which network, and where its starting weights come from."""

    backbone: Backbone = Field("resnet18", description="Backbone name.")
    init: str = Field(
        "scratch",
        description="Starting weights: 'scratch', 'imagenet' (torchvision weights, downloaded on "
        "first use), or the URI of a medxfer model bundle (source training or pretraining).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classification head.")
    stem: Literal["auto", "small", "standard"] = Field(
        "standard",
        description="First-conv stride: 'standard' as in torchvision; 'small' uses stride 1 (more "
        "spatial detail for 28-64 px images, pretrained kernels still load, 4x compute); 'auto' picks "
        "small when preprocess.size <= 64. Opt-in: it did not pay for its compute where measured "
        "(benchmarks/results/stem.md).",
    )
    name: str = Field(
        "medxfer-model", pattern=NAME_PATTERN, description="Model name in the registry (registry/<name>/)."
    )

    @field_validator("init")
    @classmethod
    def _imagenet_weights_exist(cls, v: str, info: ValidationInfo) -> str:
        backbone = info.data.get("backbone")
        if v == "imagenet" and backbone in WITHOUT_IMAGENET_WEIGHTS:
            raise ValueError(f"scratch or a bundle URI: {backbone} has no ImageNet weights")
        return v


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
    batch_size: int = Field(64, ge=1, description="Images per worker per step.")
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
    seed: int = Field(0, description="Seed of weights init, shuffling and augmentation.")
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
    projection_dim: int = Field(256, ge=8, description="Projector output size.")
    temperature: float = Field(0.2, gt=0, description="SimCLR temperature.")
    ema_momentum: float = Field(0.99, gt=0, lt=1, description="BYOL target-network EMA momentum.")
    crop_scale: tuple[float, float] = Field((0.4, 1.0), description="Random resized crop scale range.")
    rotation_deg: float = Field(10.0, ge=0, description="Max random rotation in degrees.")
    brightness: float = Field(0.3, ge=0, description="Max brightness jitter.")
    contrast: float = Field(0.3, ge=0, description="Max contrast jitter.")
    blur_prob: float = Field(0.3, ge=0, le=1, description="Probability of Gaussian blur.")


class ScalingSection(_Section):
    """How many Ray Train workers and what each gets."""

    num_workers: int = Field(1, ge=1, description="Data-parallel workers.")
    use_gpu: Literal["auto"] | bool = Field("auto", description="'auto' uses GPUs when the cluster has them.")
    cpus_per_worker: float = Field(
        1.0,
        gt=0,
        description="CPUs per worker. Keep total below the cluster's CPUs so Ray Data has CPU left.",
    )
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per worker when using GPUs.")


class FailureSection(_Section):
    max_failures: int = Field(
        2, ge=-1, description="Worker-group restarts from the last checkpoint (-1: unlimited)."
    )


class StorageSection(_Section):
    """Where datasets, caches, runs and the registry live."""

    root: str = Field(
        "./medxfer-runs",
        description="Local folder or s3://bucket/prefix holding datasets/, cache/, runs/, registry/.",
    )


class EvaluateSection(_Section):
    split: Literal["train", "val", "test"] = Field("test", description="Split to report on.")
    operating_point: OperatingRule = Field(
        "youden",
        description=f"Threshold rule chosen on validation: {RULE_FORMS} (a fixed threshold).",
    )
    positive_class: str | None = Field(
        None,
        description="Evaluate with this class as positive instead of the one in the model card "
        "(data.positive_class at training); the report says which was used and why.",
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for the confidence intervals.")
    seed: int = Field(0, description="Bootstrap seed.")
    bca_max_images: int = Field(BCA_MAX_N, ge=0, description="BCa intervals up to this many images, percentile above "
                                "(BCa's leave-one-out pass grows with the square of the images; 0: always percentile).")
    batch_size: int = Field(256, ge=1, description="Inference batch size.")
    engine: Literal["auto", "ray", "local"] = Field(
        "auto",
        description="Where inference runs: 'ray' (Ray Data actor pool of model replicas, GPU when "
        "present), 'local' (in the driver process), or 'auto': local when the evaluated images "
        "number at most local_max_images (actor start-up would dominate), Ray otherwise.",
    )
    local_max_images: int = Field(
        5000, ge=0, description="With engine=auto, the most images scored in-process."
    )


class PromotionSection(_Section):
    """When a challenger replaces the champion."""

    metric: RegisteredMetric = Field("auroc", description="Headline metric compared on the holdout, in its "
                                     "registered direction: " + ", ".join(METRICS) + ".")
    margin: float = Field(0.005, ge=0, description="Challenger must beat the champion by this much.")
    no_sensitivity_drop: bool = Field(
        True, description="Also refuse a challenger whose sensitivity at the operating point is lower."
    )
    lock_ttl_s: int = Field(
        900,
        ge=60,
        description="medxfer retrain: the run lock's lease, renewed every third of it while the run works; "
        "a lease not renewed for this long belongs to a crashed run and is taken over (a retry of the same "
        "tick waits for it).",
    )


class PredictSection(_Section):
    batch_size: int = Field(64, ge=1, description="Images per inference batch.")
    fail_on_bad: bool = Field(False, description="Stop on the first undecodable file.")


class ExperimentArm(_Section):
    """One arm of an experiment: a name and the config overrides that make it (as ``--set``)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.+-]{1,64}$", description="Arm name in tables and plots.")
    set: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        description="Overrides applied to this job config, e.g. {model.init: scratch, train.freeze: backbone}.",
    )


class ExperimentSection(_Section):
    """``medxfer experiment label-efficiency``: arms x label fractions x seeds."""

    fractions: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0],
        description="Fractions of the target's training labels (stratified, seeded subsamples).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Seeds: subsample and training.")
    arms: list[ExperimentArm] = Field(
        default_factory=lambda: [ExperimentArm(name="scratch", set={"model.init": "scratch"})],
        description="What is compared; the arm named 'scratch' is the baseline for differences.",
    )
    parallel: int | None = Field(
        None, ge=1, description="Trials run at once as Ray tasks (default: the cluster's CPUs)."
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs (and torch threads) per trial.")

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not (0 < f <= 1) for f in v):
            raise ValueError(f"fractions must be in (0, 1], got {v}")
        return sorted(set(v))

    @field_validator("arms")
    @classmethod
    def _arm_names_unique(cls, v: list[ExperimentArm]) -> list[ExperimentArm]:
        names = [a.name for a in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arms with distinct names (each names a row of the results); {', '.join(repeated)} "
                             "repeats")
        return v


class JobConfig(_Section):
    """A medxfer job. Every section has laptop-friendly defaults."""

    name: str = Field(
        "medxfer-run",
        pattern=NAME_PATTERN,
        description="Run name: runs/<name>/ in storage. The same name resumes the same run.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    failure: FailureSection = Field(default_factory=FailureSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    promotion: PromotionSection = Field(default_factory=PromotionSection)
    predict: PredictSection = Field(default_factory=PredictSection)
    experiment: ExperimentSection = Field(default_factory=ExperimentSection)

    @field_validator("train")
    @classmethod
    def _mixing_needs_classes(cls, v: TrainConfig, info: ValidationInfo) -> TrainConfig:
        task = info.data["data"].task if "data" in info.data else "multiclass"
        if (v.mixup_alpha or v.cutmix_alpha) and task != "multiclass":
            raise ValueError(f"mixup_alpha and cutmix_alpha 0: mixing blends one-hot class targets, which a "
                             f"{task} task (data.task) does not have")
        return v
