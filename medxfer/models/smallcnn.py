"""A small CNN for tiny images, trained from scratch (no pretrained weights exist for it)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv blocks (32-64-128-256 channels) for tiny images such as 28x28 MedMNIST.

    Fast enough for CPU tests and laptops; not pretrained on anything.
    """

    def __init__(self, in_chans: int = 3):
        super().__init__()
        chans = [in_chans, 32, 64, 128, 256]
        for i in range(4):
            layers: list[nn.Module] = [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            setattr(self, f"block{i + 1}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = getattr(self, f"block{i + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))
