"""Turning model outputs into probabilities, the one way every stage does it.

Why one function: validation during training, evaluation and batch prediction must agree
on what a "probability" is for each task (softmax, sigmoid, or a raw grade), or metrics
computed in different places would quietly disagree.
"""

from __future__ import annotations

import numpy as np
import torch


def outputs_to_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """multiclass: softmax (N,K); multilabel: sigmoid (N,K); ordinal: the raw grade (N,)."""
    logits = logits.float()
    if task == "multiclass":
        return torch.softmax(logits, dim=1)
    if task == "multilabel":
        return torch.sigmoid(logits)
    if task == "ordinal":
        return logits.reshape(len(logits), -1)[:, 0]
    raise ValueError(f"unknown task {task!r}")


def ordinal_to_grade(pred: np.ndarray, num_grades: int) -> np.ndarray:
    """Round a regressed grade and clip it to 0..num_grades-1."""
    return np.clip(np.rint(pred), 0, num_grades - 1).astype(np.int64)


@torch.no_grad()
def predict_arrays(
    model: torch.nn.Module,
    X: np.ndarray,
    task: str,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Scores for preprocessed images ``X`` (N,C,H,W) as float32 numpy (see outputs_to_scores).

    ``tta``: average the scores of each image and its horizontal mirror (test-time augmentation;
    only where laterality does not matter)."""
    if device is None:
        device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(X), batch_size):
        chunk = X[i : i + batch_size]
        # Arrays from Ray's object store are read-only; torch wants writable memory, so copy those.
        chunk = np.array(chunk, dtype=np.float32, copy=not chunk.flags.writeable or None)
        xb = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
        scores = outputs_to_scores(model(xb), task)
        if tta:
            scores = (scores + outputs_to_scores(model(torch.flip(xb, dims=[-1])), task)) / 2
        out.append(scores.cpu().numpy())
    if not out:
        k = getattr(getattr(model, "head", None), "out_features", 0)
        return np.zeros((0,) if task == "ordinal" else (0, k), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
