"""The model bundle: ``model.safetensors`` + ``bundle.json`` (the model card), in one folder.

Why this shape: a bundle is what leaves the training cluster — to evaluation, the
registry, a clinician-facing service. Safetensors holds only tensors, so loading a bundle
can never run code (``torch.load`` of a pickle could); the card (:mod:`medxfer.lifecycle.card`) carries
everything needed to use the weights correctly — the preprocessing spec above all, so a model
is never fed images prepared differently from its training data — and the sha256 of the
weights file. Every load checks the card's own hash, validates the card and checks the
weights' hash, so a truncated, tampered or hand-edited bundle is refused instead of silently
producing wrong predictions.

A bundle is written once, by training, and never changed afterwards: evaluation results and
operating points live in evaluation reports and registry versions, not in the card.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medxfer import storage
from medxfer.config import PreprocessConfig
from medxfer.errors import BundleError, MedxferError
from medxfer.lifecycle.card import (
    ModelCard,
    card_bytes,
    check_card,
    format1_weights_sha256,
    new_card,
    seal,
    upgraded_card,
)

if TYPE_CHECKING:
    import torch

WEIGHTS = "model.safetensors"
CARD = "bundle.json"


def _module_version(name: str) -> str:
    """A package's ``__version__`` without importing it when it is not loaded yet.

    Why: importing torchvision only to read its version cost ~3 s of every training command
    (torchvision imports torch._dynamo). Its ``version.py`` holds the same string as
    ``__version__`` (with the build tag, e.g. ``+cu130``, that package metadata drops).
    """
    import importlib.metadata
    import importlib.util
    import sys

    mod = sys.modules.get(name)
    if getattr(mod, "__version__", None):
        return str(mod.__version__)
    spec = importlib.util.find_spec(name)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            with open(f"{folder}/version.py", encoding="utf-8") as f:
                found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read(), re.MULTILINE)
        except OSError:
            continue
        if found:
            return found.group(1)
    return importlib.metadata.version(name)


def package_versions() -> dict[str, str]:
    import numpy
    import torch

    from medxfer import __version__

    out = {"medxfer": __version__, "torch": torch.__version__, "torchvision": _module_version("torchvision"),
           "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        out["ray"] = _module_version("ray")
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return out


def _tensor_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors)


def save_bundle(uri: str, state_dict: dict[str, torch.Tensor], card: ModelCard | dict[str, Any]) -> ModelCard:
    """Write weights then card (the card last: a folder with a card is complete). Returns the card as written.

    ``card``: a built card (:mod:`medxfer.lifecycle.card_builder`), or its fields as a dict."""
    data = _tensor_bytes(state_dict)
    sha = hashlib.sha256(data).hexdigest()
    source = storage.join(uri, CARD)
    card = new_card(card, source) if isinstance(card, dict) else card
    out = seal(card, sha, card.versions or package_versions(), source)
    storage.write_bytes(storage.join(uri, WEIGHTS), data)
    storage.write_bytes(source, card_bytes(out))
    return out


@dataclass
class Bundle:
    """A loaded, verified bundle."""

    uri: str
    card: ModelCard
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    @property
    def spec(self) -> PreprocessConfig:
        return self.card.preprocess

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def id(self) -> str:
        return self.card.id or self.weights_sha256[:12]

    @property
    def weights_sha256(self) -> str:
        return str(self.card.weights_sha256)

    @property
    def card_sha256(self) -> str:
        return str(self.card.card_sha256)

    @property
    def positive_class(self) -> str | None:
        return self.card.positive_class

    def build_model(self, device: str | torch.device | None = None) -> torch.nn.Module:
        """The network in eval mode with the bundle's weights (strict: every tensor must match)."""
        from medxfer.models import create_model

        card = self.card
        if card.num_outputs < 1:
            raise BundleError(
                f"{self.uri}: a backbone-only bundle (from medxfer {card.lineage.stage or 'pretrain'}) "
                "has no classification head; fine-tune it first (model.init: this bundle's URI)"
            )
        model = create_model(card.backbone, card.num_outputs, card.in_chans, dropout=card.dropout, stem=card.stem)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise BundleError(f"{self.uri}: weights do not fit {card.backbone}: {e}") from None
        if device is not None:
            model.to(device)
        return model.eval()


def read_card(uri: str) -> Any:
    """The parsed JSON of a bundle's card (not yet checked)."""
    card_uri = storage.join(uri, CARD)
    try:
        return json.loads(storage.read_bytes(card_uri))
    except MedxferError as e:
        raise BundleError(f"{uri}: not a model bundle ({e}); expected {CARD} and {WEIGHTS}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{card_uri}: not valid JSON ({getattr(e, 'msg', e)})") from None


def _verified_bytes(uri: str, sha: str) -> bytes:
    """The weights file's bytes, once their sha256 equals the card's."""
    weights_uri = storage.join(uri, WEIGHTS)
    try:
        data = storage.read_bytes(weights_uri)
    except MedxferError as e:
        raise BundleError(f"{uri}: weights missing ({e})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise BundleError(
            f"{weights_uri}: sha256 {got[:16]}... does not match the card's {str(sha)[:16]}...; "
            "the weights were changed or truncated — re-copy the bundle from its source"
        )
    return data


def _parsed(uri: str, data: bytes, framework: str) -> dict:
    """The tensors of a verified weights file (``torch`` or ``numpy``); nothing in it is executed."""
    import importlib

    try:
        return importlib.import_module(f"safetensors.{framework}").load(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a broken bundle
        raise BundleError(f"{storage.join(uri, WEIGHTS)}: not a safetensors file ({e})") from None


def _verified_weights(uri: str, sha: str) -> dict[str, torch.Tensor]:
    return _parsed(uri, _verified_bytes(uri, sha), "torch")


def verify_bundle(uri: str) -> tuple[ModelCard, int, int]:
    """Every check :func:`load_bundle` makes, without torch: ``(card, tensors, values)``.

    What ``medxfer bundle show`` runs, so inspecting a bundle takes well under a second."""
    card = check_card(read_card(uri), storage.join(uri, CARD))
    arrays = _parsed(uri, _verified_bytes(uri, card.weights_sha256), "numpy")
    return card, len(arrays), sum(int(a.size) for a in arrays.values())


def load_bundle(uri: str) -> Bundle:
    """Read and verify a bundle: the card's hash, every card field, then the weights' sha256."""
    raw = read_card(uri)
    card = check_card(raw, storage.join(uri, CARD))
    state_dict = _verified_weights(uri, card.weights_sha256)
    return Bundle(uri=uri, card=card, state_dict=state_dict)


def upgrade_bundle(src: str, dst: str, positive_class: str | None = None) -> ModelCard:
    """Re-export a format-1 bundle as a hashed format-2 bundle at ``dst``; ``src`` is left untouched.

    The old card's weights hash is checked first; the card itself is converted by
    :func:`medxfer.lifecycle.card.upgraded_card`.
    """
    raw = read_card(src)
    old_sha = format1_weights_sha256(raw, src)
    if storage.normalize(dst).rstrip("/") == storage.normalize(src).rstrip("/") or storage.exists(
            storage.join(dst, CARD)):
        raise BundleError(f"{dst}: already holds a bundle (or is the source); give a new folder")
    state_dict = _verified_weights(src, old_sha)
    return save_bundle(dst, state_dict, upgraded_card(raw, positive_class, storage.join(dst, CARD)))
