"""Backbone registry: ``create_model`` by name, partial loading of source weights, stages."""

from medxfer.models.registry import (
    BACKBONES,
    Classifier,
    adapt_conv_weight,
    create_model,
    is_head,
    list_backbones,
    load_source_weights,
    reinit_last_stage,
    stage_of,
    stage_prefixes,
    stem_for_size,
    unwrap,
)

__all__ = [
    "BACKBONES",
    "Classifier",
    "adapt_conv_weight",
    "create_model",
    "is_head",
    "list_backbones",
    "load_source_weights",
    "reinit_last_stage",
    "stage_of",
    "stage_prefixes",
    "stem_for_size",
    "unwrap",
]
