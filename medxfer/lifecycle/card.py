"""The model card (a bundle's ``bundle.json``) as one typed, versioned model: its schema, canonical JSON and hash.

Why typed: the card decides how a bundle's weights are used — which output is which class,
which class is positive, how an image is prepared. A card read from storage is input like any
other, so it is validated field by field before anything is built from it: a ``num_outputs`` of
200 million would otherwise allocate a 200 GB head, a ``preprocess.size`` of 100000 would fail
deep inside a Ray task. Errors name the field. Past validation, code reads the card's attributes
(``bundle.card.task``, ``bundle.card.lineage.source_bundle_id``...): a misspelt field is an error where
it is written, not a ``KeyError`` (or a silent ``None``) where a bundle is used.

Why hashed: the card carries the sha256 of its own canonical JSON (``card_sha256``), and it
carries the weights' sha256, so one hash covers both; the registry records it next to the
weights' when a version is registered. A card edited after training (class names swapped, a
spec changed) no longer matches and is refused wherever a bundle is loaded. Inside one bundle
this catches edits, not someone who recomputes the hash too; for registered versions the
registry's record, written once with a conditional create, catches that as well. The canonical
JSON is the model's ``model_dump(mode="json")``: every field, in declaration order, so a card read
and written again is the same bytes and the same hash (``tests/golden/bundles`` holds cards
written by earlier medxfer versions to keep it so).

Versions: ``medxfer-bundle/2`` is this model. ``medxfer-bundle/1`` cards (unhashed, and possibly
edited by ``evaluate``) are refused with the command that re-exports them, ``medxfer bundle
upgrade``: reading them would let anyone strip the hash by writing ``/1`` into a card.

This module is the schema only: it reads no storage, config file or training plan. A run's card
is assembled where the run ends (:mod:`medxfer.lifecycle.card_builder`); the bundle's files are
:mod:`medxfer.lifecycle.bundle`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from medxfer import storage
from medxfer.config import NAME_PATTERN, Backbone, PreprocessConfig
from medxfer.errors import BundleError

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
    """Where the weights came from: the stage, the init and, for a bundle init, that bundle's identity.

    ``source_lineage`` is the source bundle's own lineage as that bundle wrote it: history, kept as
    written (a dict) so that an ancestor written by an older medxfer re-serialises unchanged.
    """

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
    """What the network takes: the output of ``preprocess_bytes`` with the card's spec."""

    shape: tuple[int, int, int]
    dtype: Literal["float32"] = "float32"
    note: str = ""


class ModelCard(_Part):
    """Everything needed to use a bundle's weights correctly, and nothing that changes after training.

    The dict fields are records whose shape belongs to their writer, not to the card: ``config`` is
    the training config as that medxfer version dumped it (validated as a config when it is used:
    an older config must still load as a card), ``metrics`` and ``pretraining`` are the stage's
    summary, ``versions`` maps package names to versions.
    """

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


def card_json(card: ModelCard) -> dict[str, Any]:
    """The card as JSON values: what ``bundle.json`` holds and what its hash covers."""
    return card.model_dump(mode="json")


def card_bytes(card: ModelCard) -> bytes:
    """The ``bundle.json`` file of ``card``."""
    return (json.dumps(card_json(card), indent=2) + "\n").encode()


def card_digest(card: ModelCard | dict) -> str:
    """sha256 of the card's canonical JSON (sorted keys, no whitespace), ``card_sha256`` left out.

    A dict is a card as read from storage, before it is trusted (:func:`check_card`)."""
    raw = card_json(card) if isinstance(card, ModelCard) else card
    body = {k: v for k, v in raw.items() if k != "card_sha256"}
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


def new_card(fields: dict[str, Any], source: str) -> ModelCard:
    """A card from its fields as a builder or a test gives them; what sealing sets (format, hashes) is ignored."""
    return parse_card({**fields, "format": FORMAT, "weights_sha256": None, "card_sha256": None}, source)


def seal(card: ModelCard, weights_sha256: str, versions: dict[str, str], source: str) -> ModelCard:
    """The card as a bundle stores it: the current format, the weights' hash, an id and the package
    ``versions`` (unless the card has its own), and its own hash over all of that."""
    body = card_json(card)
    body.update(format=FORMAT, weights_sha256=weights_sha256, card_sha256=None,
                id=card.id or f"{card.name}@{weights_sha256[:12]}", versions=card.versions or versions)
    sealed = parse_card(body, source)
    return sealed.model_copy(update={"card_sha256": card_digest(sealed)})


# ----------------------------------------------------------------------------- format 1


def format1_weights_sha256(raw: Any, source: str) -> str:
    """The weights hash a format-1 card names (what ``bundle upgrade`` checks first); BundleError for any other card."""
    if not isinstance(raw, dict) or raw.get("format") not in OLD_FORMATS:
        raise BundleError(f"{source}: not a format-1 bundle ({OLD_FORMATS[0]}); nothing to upgrade")
    return str(raw.get("weights_sha256"))


def upgraded_card(raw: dict[str, Any], positive_class: str | None, source: str) -> ModelCard:
    """A format-1 card as a current one, not yet sealed; what ``evaluate`` used to write into old cards
    (operating point, evaluation) is dropped — it belongs to reports and registry versions."""
    dropped = ("format", "operating_point", "evaluation", "weights_sha256", "card_sha256", "id")
    body = {k: v for k, v in raw.items() if k not in dropped}
    if body.get("task") == "multiclass":
        classes = list(body.get("classes") or [])
        body["positive_class"] = positive_class or (classes[-1] if classes else None)
        body["positive_class_source"] = "bundle upgrade" if positive_class else "default"
    elif positive_class:
        raise BundleError(f"--positive-class: a {body.get('task')} bundle has no positive class")
    return new_card(body, source)
