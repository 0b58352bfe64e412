"""The plain PyTorch script a user would write instead of ``medxfer finetune`` (the parity baseline).

Deliberately independent of medxfer: torchvision's ResNet-18 with a one-channel first convolution,
the MedMNIST arrays already in memory, one process. The recipe is the one medxfer's defaults
run, written out by hand so the comparison is like for like:

- inputs ``(x / 255 - 0.5) / 0.5``; per-image random horizontal flip, rotation (±10°), scale
  (0.92-1.08) and shift (±8 % per side) on the batch, border padding;
- AdamW (weight decay on weights, not on biases and norms), linear warm-up over one epoch then
  cosine decay per step, gradient norm clipped at 1.0, cross-entropy;
- validation AUROC after every epoch; the best epoch's weights are scored on the test split.

    python benchmarks/plain_train.py --npz breastmnist_64.npz --epochs 40 --seed 0 --out result.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from sklearn.metrics import roc_auc_score


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    r = lambda: torch.rand(n, generator=gen)  # noqa: E731
    ang, sc = (r() * 2 - 1) * math.radians(10.0), 0.92 + r() * 0.16
    tx, ty = (r() * 2 - 1) * 0.16, (r() * 2 - 1) * 0.16
    flip = torch.where(r() < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def make_model(num_classes: int) -> torch.nn.Module:
    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


@torch.no_grad()
def auroc(model: torch.nn.Module, X: torch.Tensor, y: np.ndarray) -> float:
    model.eval()
    p = torch.cat([torch.softmax(model(X[i : i + 256]), 1) for i in range(0, len(X), 256)])[:, 1].numpy()
    return float(roc_auc_score(y, p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)
    d = np.load(args.npz)
    data = {s: (torch.from_numpy((d[f"{s}_images"].astype(np.float32)[:, None] / 255.0 - 0.5) / 0.5),
                d[f"{s}_labels"].reshape(-1).astype(np.int64)) for s in ("train", "val", "test")}
    Xtr, ytr = data["train"][0], torch.from_numpy(data["train"][1])
    model = make_model(int(ytr.max()) + 1)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    steps = len(Xtr) // args.batch_size + (len(Xtr) % args.batch_size > 1)
    total, warm = steps * args.epochs, steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / (total - warm)))))
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, seen, train_s = -1.0, None, 0, 0.0
    for epoch in range(args.epochs):
        model.train()
        t_ep = time.perf_counter()
        perm = torch.randperm(len(Xtr), generator=gen)
        for i in range(0, len(Xtr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            if len(idx) < 2:  # batch norm needs two images
                continue
            loss = F.cross_entropy(model(augment(Xtr[idx], gen)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            seen += len(idx)
        train_s += time.perf_counter() - t_ep
        val = auroc(model, *data["val"])
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.4f} val_auroc {val:.4f}", flush=True)
    model.load_state_dict(best_state)
    result = {"test_auroc": auroc(model, *data["test"]), "best_val_auroc": best, "wall_s": time.time() - t0,
              "train_images_per_s": seen / train_s, "epochs": args.epochs, "seed": args.seed}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
