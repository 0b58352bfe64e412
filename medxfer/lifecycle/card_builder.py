"""A run's model card, assembled where the run ends: from its config, plan, data and source bundle.

Why apart from the schema (:mod:`medxfer.lifecycle.card`): building a card reads the training
config, the run plan, the import record beside the manifest (storage) and the source bundle;
reading or checking a card needs none of that. Source training, fine-tuning and pretraining all
build their card with :func:`build_card`, so every stage's card says the same things the same way,
and write their bundle through :func:`bundle_writer` (the engine, which names no stage and no card,
calls it where the run ends). What only supervised cards need — the positive class — is the
supervised stage's (:mod:`medxfer.supervised.classifier_card`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from medxfer.config import JobConfig, PreprocessConfig
from medxfer.lifecycle.card import InputSpec, Lineage, ModelCard, new_card

if TYPE_CHECKING:
    from collections.abc import Callable

    from medxfer.lifecycle.bundle import Bundle
    from medxfer.train.checkpoint import TrainState
    from medxfer.train.launch import WrittenBundle
    from medxfer.train.plan import RunPlan


# ----------------------------------------------------------------------------- builder


def _lineage(cfg: JobConfig, stage: str, source: Bundle | None) -> Lineage:
    method = cfg.pretrain.method if stage == "pretrain" else None
    if source is None:
        return Lineage(stage=stage, init=cfg.model.init, method=method)
    card = source.card
    return Lineage(stage=stage, init=cfg.model.init, method=method, source_uri=cfg.model.init,
                   source_bundle_id=source.id, source_weights_sha256=card.weights_sha256,
                   source_card_sha256=card.card_sha256, source_data_fingerprint=card.data_fingerprint,
                   source_lineage=card.lineage.model_dump(mode="json"))


def build_card(cfg: JobConfig, stage: str, *, task: str, classes: list[str], plan: RunPlan,
               spec: PreprocessConfig, data_fingerprint: str, source: Bundle | None = None,
               positive: tuple[str | None, str | None] = (None, None), **extra: Any) -> ModelCard:
    """The card of a training (``source``/``finetune``) or pretraining (``pretrain``) run.

    ``plan``: the run plan (:class:`medxfer.train.plan.RunPlan`: stem, input channels, outputs); ``source``: the
    verified bundle ``model.init`` named, if any; ``positive``: a multiclass run's positive class and where it
    was named (:func:`medxfer.supervised.classifier_card.resolve_positive_class`);
    ``extra``: stage-specific fields of :class:`ModelCard` (``metrics``, ``pretraining``, ...).
    """
    return new_card({
        "name": cfg.model.name,
        "run": cfg.name,
        "task": task,
        "classes": list(classes),
        "positive_class": positive[0],
        "positive_class_source": positive[1],
        "backbone": cfg.model.backbone,
        "stem": plan.stem,
        "in_chans": plan.in_chans,
        "num_outputs": plan.num_outputs,
        "dropout": cfg.model.dropout,
        "preprocess": spec,
        "input": InputSpec(shape=(spec.channels, spec.size, spec.size),
                           note="output of medxfer.data.preprocess.preprocess_bytes with this spec"),
        "lineage": _lineage(cfg, stage, source),
        "data_fingerprint": data_fingerprint,
        "config": cfg.model_dump(mode="json"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }, f"{cfg.name} card")


# ----------------------------------------------------------------------------- the run's bundle


def bundle_writer(card: Callable[[dict, TrainState], ModelCard],
                  export: Callable[[dict], dict] | None = None) -> Callable[[str, dict, dict, TrainState], WrittenBundle]:
    """A stage's ``StageInputs.write_bundle``: the bundle of the run's final weights with its card.

    ``card(best epoch's metrics, state)``: the stage's card; ``export(weights)``: the tensors the bundle
    holds (all of them by default; pretraining keeps the backbone's)."""
    from medxfer.lifecycle.bundle import save_bundle
    from medxfer.train.launch import WrittenBundle

    def write(uri: str, weights: dict, best: dict, state: TrainState) -> WrittenBundle:
        saved = save_bundle(uri, export(weights) if export is not None else weights, card(best, state))
        return WrittenBundle(id=saved.id, lineage=saved.lineage.model_dump(mode="json"))

    return write
