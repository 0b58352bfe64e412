"""The backbones medxfer builds, by name: one entry each, with where its parts are.

Why a table of its own: ``medxfer config validate`` checks ``model.backbone`` against these names
without importing torch, so this module imports nothing heavy (torchvision and the small CNN are
imported by the builders, when a model is built). A new backbone is one :class:`BackboneSpec`
here; :mod:`medxfer.models.factory` builds, adapts and loads any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and where its parts are."""

    name: str
    builder: Callable[..., nn.Module]
    weights: str  # torchvision weights enum name, for model.init=imagenet
    first_conv: str  # attribute path of the first convolution inside the torchvision model
    classifier: str  # attribute path of the torchvision classifier, replaced by Identity
    num_features: int
    stages: tuple[tuple[str, ...], ...]  # module prefixes (inside the backbone), input -> output


def _tv(name: str) -> Callable[..., nn.Module]:
    """A torchvision builder, imported when a model is built (this table must not import torch)."""

    def build(weights=None):
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=weights)

    return build


def _smallcnn(weights=None) -> nn.Module:
    from medxfer.models.smallcnn import SmallCNN

    return SmallCNN(3)


_RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))

BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        "resnet18", _tv("resnet18"), "ResNet18_Weights.IMAGENET1K_V1", "conv1", "fc", 512, _RESNET_STAGES
    ),
    "resnet34": BackboneSpec(
        "resnet34", _tv("resnet34"), "ResNet34_Weights.IMAGENET1K_V1", "conv1", "fc", 512, _RESNET_STAGES
    ),
    "resnet50": BackboneSpec(
        "resnet50", _tv("resnet50"), "ResNet50_Weights.IMAGENET1K_V2", "conv1", "fc", 2048, _RESNET_STAGES
    ),
    "densenet121": BackboneSpec(
        "densenet121",
        _tv("densenet121"),
        "DenseNet121_Weights.IMAGENET1K_V1",
        "features.conv0",
        "classifier",
        1024,
        (
            ("features.conv0", "features.norm0"),
            ("features.denseblock1", "features.transition1"),
            ("features.denseblock2", "features.transition2"),
            ("features.denseblock3", "features.transition3"),
            ("features.denseblock4", "features.norm5"),
        ),
    ),
    "efficientnet_b0": BackboneSpec(
        "efficientnet_b0",
        _tv("efficientnet_b0"),
        "EfficientNet_B0_Weights.IMAGENET1K_V1",
        "features.0.0",
        "classifier",
        1280,
        (
            ("features.0",),
            ("features.1", "features.2"),
            ("features.3",),
            ("features.4", "features.5"),
            ("features.6", "features.7", "features.8"),
        ),
    ),
    "smallcnn": BackboneSpec(
        "smallcnn",
        _smallcnn,
        "",
        "block1.0",
        "fc",
        256,
        (("block1",), ("block2",), ("block3",), ("block4",)),
    ),
}


BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)
WITHOUT_IMAGENET_WEIGHTS: tuple[str, ...] = tuple(n for n, spec in BACKBONES.items() if not spec.weights)
