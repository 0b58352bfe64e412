"""Where the labelled images are and how they become tensors (``data``, ``preprocess``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from medxfer.config.base import Seed, _Section


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
        description="Class (or finding) names in output order. Default: the labels found in the manifest, "
        "in the order its import recorded (import.json beside it: `medxfer import medmnist` keeps MedMNIST's "
        "class order), the rest sorted. For ordinal tasks, the grades in order.",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2),
        description="train/val/test fractions used only when the manifest has no split column; "
        "the split is stratified and grouped by patient_id when present.",
    )
    split_seed: Seed = Field(0, description="Seed of the split made when the manifest has none.")
    label_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Keep this stratified fraction of the training labels (label-efficiency "
        "studies). Validation and test are never subsampled.",
    )
    label_seed: Seed = Field(0, description="Seed of the label_fraction subsample.")
    positive_class: str | None = Field(
        None,
        description="multiclass: the class whose probability is the score of binary metrics, operating "
        "points and decisions (e.g. melanoma). Stored in the model card, so evaluate and predict agree. "
        "Default: the class the import named (import.json beside the manifest: `medxfer import folder "
        "--positive-class`, or the finding of a binary MedMNIST set), else the last class.",
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
    max_decode_bytes: int = Field(
        1536 * 1024**2,
        ge=64 * 1024**2,
        description="Memory one image's decode and preprocessing may use, enforced around every decoder "
        "(OpenCV, Pillow, pydicom and its plug-ins): each file is decoded in a worker process whose data "
        "segment the operating system caps at this much above its size after imports; a file that needs more "
        "is a bad file, whatever its header said. The default, 1.5 GiB, is sized for a 2-core / 8 GB worker: "
        "two decodes at once (one per core) take at most 3 GB, leaving the rest to Ray's object store and "
        "worker processes; it holds the largest image data.max_image_bytes lets through (256 MiB decoded: "
        "its bytes, the decoded array and up to two copies of it). Raise it with max_image_bytes.",
    )
    decode_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Wall-clock seconds one image's decode and preprocessing may take (a file that takes "
        "longer is stopped and is a bad file). The largest images data.max_image_bytes allows take a few "
        "seconds on one core; the default leaves room for a loaded machine.",
    )
    engine: Literal["auto", "ray", "local"] = Field(
        "auto",
        description="Where preprocessing runs on a cache miss: 'ray' (Ray Data tasks over the cluster's CPUs), "
        "'local' (threads in this process, no Ray), or 'auto': local for manifests of at most "
        "local_max_images images, where starting Ray would cost more than the decoding. Both write the same cache.",
    )
    local_max_images: int = Field(2000, ge=0, description="With engine=auto, the most images preprocessed locally.")
    in_memory_max_bytes: int | None = Field(
        None,
        ge=0,
        description="Training: each worker reads the training and validation splits into its memory when "
        "they take at most this many bytes as float32 tensors; larger splits stream from the cache, a few "
        "row groups at a time (peak memory well under this). Default: a quarter of the memory one worker "
        "can count on (Ray's memory resource of its node shared by the workers placed there; this "
        "machine's memory with scaling.num_workers: 0). 0 always streams.",
    )

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
