"""Everything with state in one checkpoint folder: weights, best weights, optimiser, schedule, progress.

Layout: ``model.safetensors`` (the latest weights, no pickle), ``best.safetensors`` (the best
epoch's weights, when that is not the latest one), ``optim.pt`` (optimizer + scheduler state:
tensors and numbers only, read back with ``torch.load(weights_only=True)``, which refuses
arbitrary objects) and ``state.json`` (epoch, best metric and its epoch, epochs without
improvement, the per-epoch history).

Why the best weights ride in the latest checkpoint: a run keeps one checkpoint folder, not one
per improvement, so checkpoints can be written by a time/epoch policy instead of every epoch
(a ResNet-18 with its AdamW state is ~130 MB), and the bundle is still made from the best epoch.
Resuming restores all of it, so a resumed run continues the same learning-rate curve,
early-stopping count and best-so-far it would have followed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from medxfer.models import unwrap

WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
EXTRA = "extra.safetensors"
OPTIM = "optim.pt"
STATE = "state.json"


@dataclass
class TrainState:
    """Progress that must survive a restart."""

    epoch: int = 0  # epochs completed
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the best
    history: list[dict] = field(default_factory=list)
    run_start_epochs: list[int] = field(default_factory=list)  # epoch each invocation started at

    def improved(self, value: float | None, mode: str) -> bool:
        """Record ``value`` for the epoch just completed; True when it is a new best."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            better = self.best_metric is None
        elif self.best_metric is None or (isinstance(self.best_metric, float) and math.isnan(self.best_metric)):
            better = True
        else:
            better = value > self.best_metric if mode == "max" else value < self.best_metric
        if better:
            self.best_metric, self.best_epoch, self.bad_epochs = value, self.epoch, 0
        else:
            self.bad_epochs += 1
        return better


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the (unwrapped) model's tensors: safe to keep while training goes on."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(directory: str, model: nn.Module, optimizer, scheduler, state: TrainState,
                    best: dict[str, torch.Tensor] | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write the folder. ``best``: the weights to export (the best epoch's, or averaged ones) when they
    are not the latest model weights; ``extra``: further training state (e.g. the weight average)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    save_file(state_dict_cpu(model), os.path.join(directory, WEIGHTS))
    if best is not None:
        save_file(best, os.path.join(directory, BEST))
    if extra:
        save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, os.path.join(directory, EXTRA))
    torch.save({"optimizer": optimizer.state_dict() if optimizer else None,
                "scheduler": scheduler.state_dict() if scheduler else None}, os.path.join(directory, OPTIM))
    with open(os.path.join(directory, STATE), "w") as f:
        json.dump(asdict(state), f, indent=1, default=float)


def read_state(directory: str) -> TrainState:
    with open(os.path.join(directory, STATE)) as f:
        return TrainState(**json.load(f))


def read_weights(directory: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(directory, WEIGHTS))


def read_best_weights(directory: str) -> dict[str, torch.Tensor]:
    """The weights to export: ``best.safetensors`` when written, else the latest model weights."""
    from safetensors.torch import load_file

    path = os.path.join(directory, BEST)
    return load_file(path) if os.path.exists(path) else read_weights(directory)


def read_extra(directory: str) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    path = os.path.join(directory, EXTRA)
    return load_file(path) if os.path.exists(path) else None


def load_checkpoint(directory: str, model: nn.Module, optimizer=None, scheduler=None) -> TrainState:
    """Restore model (strict), optimizer and scheduler from ``directory``; returns the progress."""
    unwrap(model).load_state_dict(read_weights(directory), strict=True)
    opt_path = os.path.join(directory, OPTIM)
    if (optimizer is not None or scheduler is not None) and os.path.exists(opt_path):
        blob = torch.load(opt_path, map_location="cpu", weights_only=True)
        if optimizer is not None and blob.get("optimizer"):
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob.get("scheduler"):
            scheduler.load_state_dict(blob["scheduler"])
    return read_state(directory)
