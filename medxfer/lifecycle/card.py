"""The model card (a bundle's ``bundle.json``) as one typed, versioned model, and its one builder.

Why typed: the card decides how a bundle's weights are used — which output is which class,
which class is positive, how an image is prepared. A card read from storage is input like any
other, so it is validated field by field before anything is built from it: a ``num_outputs`` of
200 million would otherwise allocate a 200 GB head, a ``preprocess.size`` of 100000 would fail
deep inside a Ray task. Errors name the field.

Why hashed: the card carries the sha256 of its own canonical JSON (``card_sha256``), and it
carries the weights' sha256, so one hash covers both; the registry records it next to the
weights' when a version is registered. A card edited after training (class names swapped, a
spec changed) no longer matches and is refused wherever a bundle is loaded. Inside one bundle
this catches edits, not someone who recomputes the hash too; for registered versions the
registry's record, written once with a conditional create, catches that as well.

Versions: ``medxfer-bundle/2`` is this model. ``medxfer-bundle/1`` cards (unhashed, and possibly
edited by ``evaluate``) are refused with the command that re-exports them, ``medxfer bundle
upgrade``: reading them would let anyone strip the hash by writing ``/1`` into a card.

Source training, fine-tuning and pretraining all build their card with :func:`build_card`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from medxfer import storage
from medxfer.config import NAME_PATTERN, Backbone, JobConfig, PreprocessConfig
from medxfer.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.train.plan import RunPlan

FORMAT = "medxfer-bundle/2"
OLD_FORMATS = ("medxfer-bundle/1",)
MAX_CLASSES = 10_000
SHA256 = r"^[0-9a-f]{64}$"

# Where a card's positive class came from, and how evaluate explains it.
POSITIVE_SOURCES = {
    "data.positive_class": "named in the training config (data.positive_class)",
    "import.json": "named at import (import.json beside the manifest: the class `medxfer import folder "
    "--positive-class` named, or the finding of a binary MedMNIST set)",
    "bundle upgrade": "named by `medxfer bundle upgrade --positive-class`",
    "default": "the default: the last class; name it with data.positive_class when training "
    "(or evaluate.positive_class for one evaluation)",
}

ClassName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lineage(_Part):
    """Where the weights came from: the stage, the init and, for a bundle init, that bundle's identity."""

    stage: Literal["source", "finetune", "pretrain"] | None = None
    init: str = "scratch"
    method: str | None = None
    source_uri: str | None = None
    source_bundle_id: str | None = None
    source_weights_sha256: str | None = None
    source_card_sha256: str | None = None
    source_data_fingerprint: str | None = None
    source_lineage: dict[str, Any] | None = None


class InputSpec(_Part):
    shape: tuple[int, int, int]
    dtype: Literal["float32"] = "float32"
    note: str = ""


class ModelCard(_Part):
    """Everything needed to use a bundle's weights correctly, and nothing that changes after training."""

    format: Literal["medxfer-bundle/2"] = FORMAT
    name: str = Field("medxfer-model", pattern=NAME_PATTERN)
    run: str | None = None
    id: str | None = None
    task: Literal["multiclass", "multilabel", "ordinal", "self-supervised"]
    classes: list[ClassName] = Field(max_length=MAX_CLASSES)
    positive_class: str | None = None
    positive_class_source: Literal["data.positive_class", "import.json", "bundle upgrade", "default"] | None = None
    backbone: Backbone
    stem: Literal["standard", "small"] = "standard"
    in_chans: Literal[1, 3]
    num_outputs: int = Field(ge=0, le=MAX_CLASSES)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    preprocess: PreprocessConfig
    input: InputSpec | None = None
    lineage: Lineage = Field(default_factory=Lineage)
    data_fingerprint: str | None = None
    data_fingerprints: list[str] | None = None
    data_uri: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    pretraining: dict[str, Any] | None = None
    weights: str | None = None
    config: dict[str, Any] | None = None
    created: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    weights_sha256: str | None = Field(None, pattern=SHA256)
    card_sha256: str | None = Field(None, pattern=SHA256)

    @model_validator(mode="before")
    @classmethod
    def _default_positive_class(cls, data: Any) -> Any:
        """A multiclass card always names its positive class; unnamed, it is the last class, said to be the default."""
        if isinstance(data, dict) and data.get("task") == "multiclass" and data.get("positive_class") is None:
            classes = data.get("classes")
            if isinstance(classes, list) and classes:
                data = {**data, "positive_class": classes[-1], "positive_class_source": "default"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        k = len(self.classes)
        if len(set(self.classes)) != k:
            raise ValueError(f"classes: names repeat ({self.classes})")
        want = {"multiclass": k, "multilabel": k, "ordinal": 1, "self-supervised": 0}[self.task]
        if self.num_outputs != want:
            raise ValueError(f"num_outputs: {self.num_outputs} does not fit a {self.task} card with {k} classes "
                             f"(expected {want})")
        least = {"multiclass": 2, "multilabel": 1, "ordinal": 2, "self-supervised": 0}[self.task]
        if k < least or (self.task == "self-supervised" and k):
            raise ValueError(f"classes: a {self.task} card needs {'none' if not least else f'at least {least}'}; "
                             f"found {k}")
        if self.positive_class is not None and (self.task != "multiclass" or self.positive_class not in self.classes):
            raise ValueError(f"positive_class: {self.positive_class!r} is not one of the classes {self.classes} "
                             f"of this {self.task} card")
        if self.in_chans != self.preprocess.channels:
            raise ValueError(f"in_chans: {self.in_chans} differs from preprocess.channels {self.preprocess.channels}")
        p = self.preprocess
        if self.input is not None and tuple(self.input.shape) != (p.channels, p.size, p.size):
            raise ValueError(f"input.shape: {list(self.input.shape)} differs from the preprocessing spec's "
                             f"{[p.channels, p.size, p.size]}")
        return self


def card_digest(card: dict) -> str:
    """sha256 of the card's canonical JSON (sorted keys, no whitespace), ``card_sha256`` left out."""
    body = {k: v for k, v in card.items() if k != "card_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_card(raw: dict, source: str) -> ModelCard:
    """``raw`` as a :class:`ModelCard`; BundleError (exit 2) with one line per bad field."""
    from medxfer.config.loading import describe_error

    try:
        return ModelCard.model_validate(raw)
    except ValidationError as e:
        lines = [describe_error(err, source, ModelCard) if err.get("loc") else
                 f"{source}: {str(err['msg']).removeprefix('Value error, ')}" for err in e.errors()]
        raise BundleError("\n".join(lines)) from None


def check_card(raw: Any, source: str) -> ModelCard:
    """A card as read from storage: current format, its hash intact, every field valid."""
    if not isinstance(raw, dict):
        raise BundleError(f"{source}: expected a JSON object")
    fmt = raw.get("format")
    if fmt in OLD_FORMATS:
        raise BundleError(
            f"{source}: written by an older medxfer (format {fmt}), whose card is not covered by a hash; "
            f"re-export it: medxfer bundle upgrade {storage.parent(source)} NEW_FOLDER (checks the weights, "
            "writes a hashed copy, leaves this one as it is), then use NEW_FOLDER")
    if fmt != FORMAT:
        raise BundleError(f"{source}: format {fmt!r} is not a medxfer bundle card ({FORMAT}); "
                          "expected the bundle.json that medxfer training writes")
    stored = raw.get("card_sha256")
    if not isinstance(stored, str) or card_digest(raw) != stored:
        raise BundleError(
            f"{source}: the card does not match its card_sha256 — it was edited after training (class names, "
            "spec, ...); re-copy the bundle from its source or from the registry")
    card = parse_card(raw, source)
    if card.weights_sha256 is None:
        raise BundleError(f"{source}: weights_sha256: missing; the card cannot vouch for the weights")
    return card


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


def _lineage(cfg: JobConfig, stage: str, source: Bundle | None) -> dict:
    lineage: dict[str, Any] = {"stage": stage, "init": cfg.model.init}
    if stage == "pretrain":
        lineage["method"] = cfg.pretrain.method
    if source is not None:
        lineage.update(
            source_uri=cfg.model.init,
            source_bundle_id=source.id,
            source_weights_sha256=source.card["weights_sha256"],
            source_card_sha256=source.card.get("card_sha256"),
            source_data_fingerprint=source.card.get("data_fingerprint"),
            source_lineage=source.card.get("lineage"),
        )
    return lineage


def build_card(cfg: JobConfig, stage: str, *, task: str, classes: list[str], plan: RunPlan,
               spec: PreprocessConfig, data_fingerprint: str, source: Bundle | None = None,
               positive: tuple[str | None, str | None] = (None, None), **extra: Any) -> ModelCard:
    """The card of a training (``source``/``finetune``) or pretraining (``pretrain``) run.

    ``plan``: the run plan (:class:`medxfer.train.plan.RunPlan`: stem, input channels, outputs); ``source``: the
    verified bundle ``model.init`` named, if any; ``positive``: from :func:`resolve_positive_class`;
    ``extra``: stage-specific fields of :class:`ModelCard` (``metrics``, ``pretraining``, ...).
    """
    card = {
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
        "preprocess": spec.model_dump(mode="json"),
        "input": {"shape": [spec.channels, spec.size, spec.size], "dtype": "float32",
                  "note": "output of medxfer.data.preprocess.preprocess_bytes with this spec"},
        "lineage": _lineage(cfg, stage, source),
        "data_fingerprint": data_fingerprint,
        "config": cfg.model_dump(mode="json"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    return parse_card(card, f"{cfg.name} card")
