"""Backbones by name (``backbones``, torch-free), and building, adapting and loading them (``registry``).

The names below are imported from :mod:`medxfer.models.factory` on first use, so importing
``medxfer.models.backbones`` (as config validation does) does not import torch.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("medxfer.models.factory"), name)
    raise AttributeError(f"module 'medxfer.models' has no attribute {name!r}")
