"""What an evaluation reads: its job config, the data as the bundle expects it, and the positive class.

The data goes through **the bundle's preprocessing spec** (``cfg.preprocess`` is replaced by it,
and the class list by the bundle's, before ``prepare``), so the numbers describe the model as it
will be used, not as some other config would feed it. The positive class of a multiclass model
is the one its card names; ``evaluate.positive_class`` overrides it for one evaluation.
"""

from __future__ import annotations

from medxfer.config import JobConfig
from medxfer.errors import ConfigError


def resolve_config(data: str | None, overrides: list[str] | None, bundle_uri: str | None) -> JobConfig:
    """The job config for an evaluation from ``--data``: a job config (YAML), a manifest, or
    (no --data) the training config stored in the bundle's card."""
    from medxfer.config.loading import deep_merge, load_config, parse_overrides, validate_dict

    if data and data.lower().endswith((".yaml", ".yml")):
        return load_config(data, overrides)
    if data:
        cfg = load_config(None, overrides)
        cfg.data.manifest = data
        return cfg
    if not bundle_uri:
        raise ConfigError(["evaluate: give --data (a manifest or job config) or a bundle whose card has a config"])
    from medxfer.lifecycle.bundle import load_bundle

    card_cfg = load_bundle(bundle_uri).card.config
    if not card_cfg:
        raise ConfigError([f"{bundle_uri}: the card holds no training config; give --data"])
    return validate_dict(deep_merge(card_cfg, parse_overrides(overrides)), f"{bundle_uri} card config")


def evaluation_config(cfg: JobConfig, bundle) -> JobConfig:
    """``cfg`` with the bundle's preprocessing spec, task and class order (what the model expects)."""
    data = cfg.data.model_copy(update={"task": bundle.task, "classes": list(bundle.classes)})
    return cfg.model_copy(update={"preprocess": bundle.spec, "data": data})


def prepare_for(bundle, cfg: JobConfig):
    """The prepared (cached) dataset of ``cfg`` as ``bundle`` reads it."""
    from medxfer.data.cache import prepare

    return prepare(evaluation_config(cfg, bundle))


def scored_splits(bundle, split: str) -> list[str]:
    """The splits to score: validation too for a multiclass model, whose operating point is chosen there."""
    return ["val", split] if bundle.task == "multiclass" else [split]


def positive_class(bundle, ecfg) -> tuple[int, str]:
    """``(index, reason)`` of the positive class: ``evaluate.positive_class``, else the card's."""
    from medxfer.lifecycle.card import POSITIVE_SOURCES

    classes = list(bundle.classes)
    name = ecfg.positive_class
    if name is not None:
        if name not in classes:
            raise ConfigError([f"evaluate.positive_class: {name!r} is not one of the bundle's classes {classes}"])
        return classes.index(name), "named for this evaluation (evaluate.positive_class)"
    return classes.index(bundle.positive_class), POSITIVE_SOURCES[bundle.card.positive_class_source]
