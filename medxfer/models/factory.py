"""Backbones created by name, each wrapped the same way: ``backbone`` (pooled features) + ``head``.

Why one wrapper: freezing, layer-wise learning rates, partial loading of source weights and
the model bundle all need to know "which tensors are the head" and "what are the stages".
With every backbone wrapped as ``Classifier(backbone=..., head=Linear)`` the head is always
``head.*`` and the stages are listed once per backbone in :data:`BACKBONES`, as timm keeps a
pretrained config next to each model.

Grayscale: when a 3-channel pretrained first convolution meets 1-channel images, its RGB
kernels are summed (timm's ``adapt_input_conv``), which gives the same response to a gray
image as the RGB network gives to that image replicated on three channels.

Small images: ``stem="small"`` sets the first convolution's stride to 1 (kernel unchanged,
so ImageNet or source weights still load). A 28x28 image then reaches the last stage as a
2x2 map instead of 1x1 (64x64: 4x4 instead of 2x2), at 4x the compute of the standard stem.
``stem_for_size`` resolves ``model.stem: auto`` (small for inputs of 64 pixels or less). It is
opt-in, not the default, because it did not pay for its compute where it was measured
(benchmarks/results/stem.md).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medxfer.errors import ConfigError
from medxfer.models.backbones import BACKBONES, BackboneSpec

log = logging.getLogger("medxfer.models")

SMALL_INPUT_MAX = 64


class Classifier(nn.Module):
    """``head(dropout(backbone(x)))``; ``backbone`` returns pooled features."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, num_outputs: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(spec.num_features, num_outputs)
        self.backbone_name = spec.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ConfigError([f"model.backbone: unknown backbone {name!r}; valid: {', '.join(list_backbones())}"])
    return BACKBONES[name]


def stem_for_size(size: int, stem: str = "auto") -> str:
    """'small' (first-conv stride 1) for images of SMALL_INPUT_MAX pixels or less when 'auto'."""
    if stem == "auto":
        return "small" if size <= SMALL_INPUT_MAX else "standard"
    if stem not in ("small", "standard"):
        raise ConfigError([f"model.stem: expected auto, small or standard; found {stem!r}"])
    return stem


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(module.get_submodule(parent_path) if parent_path else module, attr, new)


def adapt_conv_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a conv kernel (O, I, kh, kw) to ``in_chans`` inputs.

    3 -> 1 sums the RGB kernels (gray image == RGB replicated gives the same response);
    otherwise the kernels are tiled and rescaled so the expected activation is unchanged.
    """
    src = weight.shape[1]
    if src == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)


def _replace_first_conv(net: nn.Module, spec: BackboneSpec, in_chans: int, stride1: bool) -> None:
    old = _get(net, spec.first_conv)
    assert isinstance(old, nn.Conv2d)
    stride = (1, 1) if stride1 else old.stride
    if old.in_channels == in_chans and old.stride == stride:
        return
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        old.kernel_size,
        stride=stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_conv_weight(old.weight, in_chans))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    _set(net, spec.first_conv, new)


def _imagenet_weights(spec: BackboneSpec):
    if not spec.weights:
        raise ConfigError([f"model.init: no ImageNet weights for {spec.name}; use init: scratch or a bundle"])
    import torchvision.models as tvm

    enum_name, member = spec.weights.split(".")
    return getattr(getattr(tvm, enum_name), member)


def _imagenet_error(backbone: str, weights, e: Exception) -> ConfigError:
    import torch.hub

    cache = f"{torch.hub.get_dir()}/checkpoints"
    url = getattr(weights, "url", "")
    return ConfigError([
        f"model.init: imagenet: could not get the ImageNet weights of {backbone} ({type(e).__name__}: {e}). Fix: "
        f"run once with network access (they are cached in {cache}), or download {url} into that folder "
        "(TORCH_HOME moves it), or set model.init: scratch"
    ])


def check_imagenet(cfg) -> None:
    """``model.init: imagenet``: the weights are cached, or fetched now — on the driver, before any worker starts.

    Without this, an offline cluster learns it only inside every Ray Train worker, after data
    preparation, with one traceback per attempt. Fetching on the driver also fills the cache
    that workers on the same node read.
    """
    if cfg.model.init != "imagenet":
        return
    import os
    from urllib.parse import urlparse

    import torch.hub

    weights = _imagenet_weights(get_spec(cfg.model.backbone))
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
    if os.path.exists(cached):
        return
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:
        raise _imagenet_error(cfg.model.backbone, weights, e) from None


def create_model(
    backbone: str,
    num_outputs: int,
    in_chans: int,
    dropout: float = 0.0,
    pretrained: str | bool | None = None,
    stem: str = "standard",
) -> Classifier:
    """Build a classifier by backbone name.

    ``pretrained``: None/False/'scratch' for random weights, True/'imagenet' for torchvision's
    ImageNet weights (downloaded to ``$TORCH_HOME/hub/checkpoints`` on first use).
    ``stem``: 'standard' or 'small' (first-conv stride 1; see the module docstring).
    """
    spec = get_spec(backbone)
    if num_outputs < 1:
        raise ConfigError([f"num_outputs must be >= 1, got {num_outputs}"])
    if stem not in ("standard", "small"):
        raise ConfigError([f"model.stem: expected small or standard, got {stem!r}"])
    use_imagenet = pretrained in (True, "imagenet")
    if pretrained not in (None, False, "scratch", True, "imagenet"):
        raise ConfigError([f"pretrained: expected None, 'scratch' or 'imagenet', got {pretrained!r}"])
    weights = _imagenet_weights(spec) if use_imagenet else None
    try:
        net = spec.builder(weights=weights)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad partial download a RuntimeError
        if not use_imagenet:
            raise
        raise _imagenet_error(backbone, weights, e) from None
    _replace_first_conv(net, spec, in_chans, stride1=(stem == "small"))
    _set(net, spec.classifier, nn.Identity())
    model = Classifier(net, spec, num_outputs, dropout)
    model.stem = stem
    return model


# ----------------------------------------------------------------------------- stages and loading


def stage_prefixes(model: nn.Module) -> list[tuple[str, ...]]:
    """Stages of ``model`` as state-dict key prefixes (``backbone.layer4`` ...), input -> output."""
    model = unwrap(model)
    spec = get_spec(model.backbone_name)
    return [tuple(f"backbone.{p}" for p in stage) for stage in spec.stages]


def stage_of(name: str, stages: list[tuple[str, ...]]) -> int | None:
    """Index of the stage a parameter belongs to (None: head or outside the listed stages)."""
    for i, prefixes in enumerate(stages):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None


def is_head(name: str) -> bool:
    return name.startswith("head.")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def reinit_last_stage(model: nn.Module, seed: int = 0) -> list[str]:
    """Re-initialise every module of the backbone's last stage; returns the module names."""
    model = unwrap(model)
    last = stage_prefixes(model)[-1]
    torch.manual_seed(seed)
    done = []
    for name, mod in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in last) and hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
            done.append(name)
    return done


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def load_source_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every source tensor whose name and shape match; report what happened.

    ``loaded``: copied (the first conv is adapted when only its input channels differ);
    ``skipped``: present in the source but not used (shape changed, e.g. the head of a
    different class count, or no such tensor in the model) with the reason;
    ``new``: tensors of the model that keep their fresh initialisation.
    """
    target = unwrap(model)
    own = target.state_dict()
    src = _strip_prefix(dict(state_dict))
    first_conv = f"backbone.{get_spec(target.backbone_name).first_conv}.weight"
    loaded, skipped, new, to_load = [], [], [], {}
    for name, t in own.items():
        if name not in src:
            new.append(name)
            continue
        s = src[name]
        if tuple(s.shape) == tuple(t.shape):
            to_load[name] = s.to(t.dtype)
            loaded.append(name)
        elif name == first_conv and s.ndim == 4 and s.shape[0] == t.shape[0] and s.shape[2:] == t.shape[2:]:
            to_load[name] = adapt_conv_weight(s, t.shape[1]).to(t.dtype)
            loaded.append(name)
        else:
            skipped.append(f"{name} (shape {tuple(s.shape)} -> {tuple(t.shape)})")
            new.append(name)
    skipped.extend(f"{k} (not in model)" for k in src if k not in own)
    target.load_state_dict(to_load, strict=False)
    log.info("source weights: %d loaded, %d skipped, %d new", len(loaded), len(skipped), len(new))
    for s in skipped:
        log.info("  skipped %s", s)
    return {"loaded": loaded, "skipped": skipped, "new": new}
