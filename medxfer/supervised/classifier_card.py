"""The card of a source-train or finetune run: the one builder (:func:`medxfer.lifecycle.card_builder.build_card`)
plus what only a classifier has — its positive class, checked before training starts, and the best
epoch's validation metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medxfer.config import JobConfig
from medxfer.errors import ConfigError

if TYPE_CHECKING:
    from medxfer.data.cache import PreparedData
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.lifecycle.card import ModelCard
    from medxfer.train.plan import RunPlan


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


def supervised_card(cfg: JobConfig, stage: str, prepared: PreparedData, plan: RunPlan, source: Bundle | None,
                    positive: tuple[str | None, str | None], best_metrics: dict) -> ModelCard:
    """The bundle card of a source-train or finetune run."""
    from medxfer.lifecycle.card_builder import build_card

    return build_card(cfg, stage, task=prepared.task, classes=list(prepared.classes), plan=plan, spec=prepared.spec,
                      data_fingerprint=prepared.key, source=source, positive=positive,
                      data_uri=prepared.uri,
                      metrics={"val": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
                               "epoch": best_metrics.get("epoch")})
