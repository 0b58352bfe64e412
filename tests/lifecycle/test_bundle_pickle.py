"""A pickle disguised as weights is refused and never run: bundles load safetensors only.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from medxfer.errors import BundleError

REPO = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this creates a file: proof that something was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_disguised_as_weights_is_refused_and_never_run(tmp_path):
    import hashlib

    import torch
    from evalutil import tiny_bundle

    from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle
    from medxfer.lifecycle.card import card_digest
    from medxfer.train.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(str(marker)))
    # 1) A bundle whose weights file is a pickle, with a card that vouches for it (sha matches).
    b = tmp_path / "bundle"
    tiny_bundle(str(b))
    (b / WEIGHTS).write_bytes(evil)
    card = json.loads((b / CARD).read_text())
    card["weights_sha256"] = hashlib.sha256(evil).hexdigest()
    card["card_sha256"] = card_digest(card)  # the card vouches for the payload, hash and all
    (b / CARD).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(str(b))
    # 2) Tampered weights with the original card: refused by the hash, with the fix named.
    tiny_bundle(str(tmp_path / "b2"))
    raw = bytearray((tmp_path / "b2" / WEIGHTS).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "b2" / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="re-copy the bundle"):
        load_bundle(str(tmp_path / "b2"))
    # 3) A training checkpoint whose optimizer state is a pickle payload: torch refuses it.
    from medxfer.models import create_model
    from medxfer.train.checkpoint import TrainState, save_checkpoint

    model = create_model("smallcnn", 2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = tmp_path / "ckpt"
    save_checkpoint(str(ck), model, opt, None, TrainState(epoch=1))
    torch.save(_Payload(str(marker)), ck / "optim.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(str(ck), model, opt, None)
    assert not marker.exists()
