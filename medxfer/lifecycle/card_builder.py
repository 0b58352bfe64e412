"""A run's model card, assembled where the run ends: from its config, plan, data and source bundle.

Why apart from the schema (:mod:`medxfer.lifecycle.card`): building a card reads the training
config, the run plan, the import record beside the manifest (storage) and the source bundle;
reading or checking a card needs none of that. Source training, fine-tuning and pretraining all
build their card with :func:`build_card`, so every stage's card says the same things the same way.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from medxfer.config import JobConfig, PreprocessConfig
from medxfer.errors import ConfigError
from medxfer.lifecycle.card import InputSpec, Lineage, ModelCard, new_card

if TYPE_CHECKING:
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.train.plan import RunPlan


# ----------------------------------------------------------------------------- positive class


def _import_hint(manifest: str | None) -> str | None:
    """The positive class the import wrote beside ``manifest`` (``import folder --positive-class``, or
    the finding of a binary MedMNIST set), if any."""
    from medxfer.data.manifest.imported import import_record

    hint = import_record(manifest).get("positive_class")
    return str(hint) if hint is not None else None


def resolve_positive_class(cfg: JobConfig, task: str, classes: list[str]) -> tuple[str | None, str | None]:
    """``(class, source)`` for a multiclass run, checked against its classes before training starts."""
    if task != "multiclass":
        return None, None
    if cfg.data.positive_class is not None:
        name, source = cfg.data.positive_class, "data.positive_class"
    else:
        hint = _import_hint(cfg.data.manifest)
        name, source = (hint, "import.json") if hint else (classes[-1], "default")
    if name not in classes:
        from medxfer.data.manifest.imported import record_uri

        where = "data.positive_class" if source == "data.positive_class" else \
            f"{record_uri(cfg.data.manifest)} positive_class"
        raise ConfigError([f"{where}: {name!r} is not one of the classes {list(classes)}; name one of them "
                           "(data.positive_class)"])
    return name, source


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
    verified bundle ``model.init`` named, if any; ``positive``: from :func:`resolve_positive_class`;
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
