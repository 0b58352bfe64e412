"""The model bundle: ``model.safetensors`` + ``bundle.json`` (the model card), in one folder.

Why this shape: a bundle is what leaves the training cluster — to evaluation, the
registry, a clinician-facing service. Safetensors holds only tensors, so loading a bundle
can never run code (``torch.load`` of a pickle could); the card carries everything needed
to use the weights correctly — the preprocessing spec above all, so a model is never fed
images prepared differently from its training data — and the sha256 of the weights file,
checked on every load, so a truncated or tampered file is refused instead of silently
producing wrong predictions.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from typing import Any

import torch

from medxfer import storage
from medxfer.errors import BundleError, MedxferError

WEIGHTS = "model.safetensors"
CARD = "bundle.json"
FORMAT = "medxfer-bundle/1"
REQUIRED = ("task", "classes", "backbone", "in_chans", "num_outputs", "preprocess", "weights_sha256")


def package_versions() -> dict[str, str]:
    import numpy
    import torchvision

    from medxfer import __version__

    out = {"medxfer": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
           "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    return out


def _tensor_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors)


def save_bundle(uri: str, state_dict: dict[str, torch.Tensor], card: dict[str, Any]) -> dict[str, Any]:
    """Write weights then card (the card last: a folder with a card is complete). Returns the card."""
    missing = [k for k in REQUIRED if k != "weights_sha256" and k not in card]
    if missing:
        raise BundleError(f"{uri}: card lacks {', '.join(missing)}")
    data = _tensor_bytes(state_dict)
    sha = hashlib.sha256(data).hexdigest()
    card = dict(card)
    card.setdefault("format", FORMAT)
    card["weights_sha256"] = sha
    card.setdefault("id", f"{card.get('name', 'model')}@{sha[:12]}")
    card.setdefault("versions", package_versions())
    storage.write_bytes(storage.join(uri, WEIGHTS), data)
    storage.write_bytes(storage.join(uri, CARD), (json.dumps(card, indent=2, default=str) + "\n").encode())
    return card


@dataclass
class Bundle:
    """A loaded, verified bundle."""

    uri: str
    card: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    @property
    def spec(self):
        from medxfer.config import PreprocessConfig

        return PreprocessConfig.model_validate(self.card["preprocess"])

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def task(self) -> str:
        return str(self.card["task"])

    @property
    def id(self) -> str:
        return str(self.card.get("id", self.card["weights_sha256"][:12]))

    def build_model(self, device: str | torch.device | None = None) -> torch.nn.Module:
        """The network in eval mode with the bundle's weights (strict: every tensor must match)."""
        from medxfer.models import create_model

        if int(self.card.get("num_outputs", 0)) < 1:
            raise BundleError(
                f"{self.uri}: a backbone-only bundle (from medxfer {self.card.get('lineage', {}).get('stage', 'pretrain')}) "
                "has no classification head; fine-tune it first (model.init: this bundle's URI)"
            )
        model = create_model(
            self.card["backbone"],
            int(self.card["num_outputs"]),
            int(self.card["in_chans"]),
            dropout=float(self.card.get("dropout", 0.0)),
            stem=self.card.get("stem", "standard"),
        )
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise BundleError(f"{self.uri}: weights do not fit {self.card['backbone']}: {e}") from None
        if device is not None:
            model.to(device)
        return model.eval()


def load_bundle(uri: str) -> Bundle:
    """Read and verify a bundle: card present and complete, weights' sha256 equal to the card's."""
    from safetensors.torch import load

    card_uri, weights_uri = storage.join(uri, CARD), storage.join(uri, WEIGHTS)
    try:
        card = json.loads(storage.read_bytes(card_uri))
    except MedxferError as e:
        raise BundleError(f"{uri}: not a model bundle ({e}); expected {CARD} and {WEIGHTS}") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{card_uri}: not valid JSON ({e.msg})") from None
    if not isinstance(card, dict):
        raise BundleError(f"{card_uri}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise BundleError(f"{card_uri}: card lacks {', '.join(missing)}")
    try:
        data = storage.read_bytes(weights_uri)
    except MedxferError as e:
        raise BundleError(f"{uri}: weights missing ({e})") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha != card["weights_sha256"]:
        raise BundleError(
            f"{weights_uri}: sha256 {sha[:16]}... does not match the card's {str(card['weights_sha256'])[:16]}...; "
            "the weights were changed or truncated — re-copy the bundle from its source"
        )
    try:
        state_dict = load(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a broken bundle
        raise BundleError(f"{weights_uri}: not a safetensors file ({e})") from None
    return Bundle(uri=uri, card=card, state_dict=state_dict)


def cmd_bundle_show(args) -> int:
    """``medxfer bundle show URI``: print the card and say whether the weights verify."""
    b = load_bundle(args.uri)
    card = dict(b.card)
    config = card.pop("config", None)
    print(json.dumps(card, indent=2, default=str))
    if config is not None:
        print(f"(training config: {len(json.dumps(config))} bytes; see {storage.join(args.uri, CARD)})")
    n = sum(t.numel() for t in b.state_dict.values())
    print(f"weights: {len(b.state_dict)} tensors, {n:,} values, sha256 verified ({card['weights_sha256'][:16]}...)")
    return 0
