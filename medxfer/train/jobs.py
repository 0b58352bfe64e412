"""``source-train`` and ``finetune``: what is particular to supervised runs, around the one launcher.

The launcher (:mod:`medxfer.train.launch`) runs every stage; this module adds the supervised
stages' checks — the source bundle is verified before any worker starts, a reused run name
must mean the same model and data — and their model card.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from medxfer.config import JobConfig
from medxfer.errors import ConfigError

if TYPE_CHECKING:
    from medxfer.data.cache import PreparedData
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.lifecycle.card import ModelCard
    from medxfer.train.plan import RunPlan

log = logging.getLogger("medxfer.train")

STAGES = ("source", "finetune")


def check_source(cfg: JobConfig) -> Bundle | None:
    """Load and verify the source bundle named by ``model.init`` (None for scratch/imagenet)."""
    init = cfg.model.init
    if init in ("scratch", "imagenet"):
        return None
    from medxfer.lifecycle.bundle import load_bundle

    b = load_bundle(init)
    if b.card.backbone != cfg.model.backbone:
        raise ConfigError([
            f"model.backbone: {cfg.model.backbone!r}, but the source bundle {init} holds a "
            f"{b.card.backbone!r}; set model.backbone: {b.card.backbone}"
        ])
    return b


def supervised_card(cfg: JobConfig, stage: str, prepared: PreparedData, plan: RunPlan, source: Bundle | None,
                    positive: tuple[str | None, str | None], best_metrics: dict) -> ModelCard:
    """The bundle card of a source-train or finetune run (the one builder: ``medxfer.lifecycle.card_builder.build_card``)."""
    from medxfer.lifecycle.card_builder import build_card

    return build_card(cfg, stage, task=prepared.task, classes=list(prepared.classes), plan=plan, spec=prepared.spec,
                      data_fingerprint=prepared.key, source=source, positive=positive,
                      data_uri=prepared.uri,
                      metrics={"val": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
                               "epoch": best_metrics.get("epoch")})


def run_training(cfg: JobConfig, stage: str = "source", prepared: PreparedData | None = None) -> dict:
    """Train (or resume) the source-train or finetune run ``cfg.name``; returns its result.json.

    ``prepared``: an already prepared dataset (``medxfer.data.cache.prepare(cfg)``), when the
    caller has one (retraining reuses it); prepared here otherwise.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    from medxfer.train.launch import StageInputs, launch, supervised_inputs

    def inputs(use_gpu: bool) -> StageInputs:
        source = check_source(cfg)
        if stage == "finetune" and cfg.model.init == "scratch":
            log.warning("fine-tuning %s from scratch: no source weights (set model.init or --source)", cfg.name)
        data = prepared
        if data is None:
            from medxfer.data.cache import prepare

            data = prepare(cfg)
        return supervised_inputs(cfg, stage, data, use_gpu, source)

    return launch(cfg, stage, inputs)
