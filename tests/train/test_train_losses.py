"""medxfer.train.losses: each loss in the registry, class weights and masking, without Ray."""

from __future__ import annotations

import pytest
import torch

from medxfer.config import TrainConfig
from medxfer.train.losses import auto_class_weights, build_loss, focal_loss, masked_bce


def test_class_weights_and_weighted_ce():
    assert auto_class_weights([30, 10]) == pytest.approx([40 / 60, 40 / 20])
    cfg = TrainConfig(loss="weighted_ce", class_weights="auto")
    loss = build_loss("multiclass", cfg, [30, 10])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # a mistake on the rare class costs more than the same mistake on the common one
    assert loss(logits, torch.tensor([1, 1])) > loss(logits, torch.tensor([0, 0]))
    with pytest.raises(Exception, match="expected 2 values"):
        build_loss("multiclass", TrainConfig(loss="weighted_ce", class_weights=[1.0]), [3, 1])


def test_label_smoothing_and_focal():
    logits, y = torch.tensor([[5.0, -5.0]]), torch.tensor([0])
    plain = build_loss("multiclass", TrainConfig())(logits, y)
    smooth = build_loss("multiclass", TrainConfig(label_smoothing=0.2))(logits, y)
    assert smooth > plain
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert focal_loss(logits, y, gamma=0.0) == pytest.approx(float(ce), rel=1e-5)
    assert focal_loss(logits, y, gamma=2.0) < ce  # easy examples are down-weighted


def test_masked_bce_ignores_unknown_and_ordinal_mse():
    logits = torch.tensor([[3.0, -100.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0])
    )
    assert masked_bce(logits, target) == pytest.approx(float(known))
    all_unknown = masked_bce(logits.requires_grad_(), torch.full((2, 2), float("nan")))
    assert float(all_unknown.detach()) == 0.0 and all_unknown.requires_grad
    mse = build_loss("ordinal", TrainConfig())
    assert mse(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 3.0])) == pytest.approx(0.5)
