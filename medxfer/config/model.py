"""Which network and where its starting weights come from (``model``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
)

from medxfer.config.base import NAME_PATTERN, _Section
from medxfer.models.backbones import BACKBONE_NAMES, WITHOUT_IMAGENET_WEIGHTS

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
