"""Benchmark 2: what Ray Train costs over a plain PyTorch loop (and what a second worker buys).

Same model (ResNet-18, the default standard stem), same images (PneumoniaMNIST train split,
28x28, from the preprocessed cache), same batch size, same optimiser, same number of steps.

- baseline: a plain single-process loop over tensors in memory, torch using every core;
- the same loop with the allocator setting medxfer's processes run with (``medxfer.runtime.allocator``);
- medxfer ``run_training`` in this process (``num_workers: 0``), with 1 Ray Train worker (every
  core), then 2 workers (a core each), with per-epoch validation and checkpoints.

Throughput is train images/s of the second epoch (the first includes start-up and warm-up).
Ray gets one logical CPU more than the machine has so Ray Data can run beside the workers —
the same reservation advice as for real clusters.

    .venv/bin/python benchmarks/bench_train_overhead.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import finished, record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402
from medxfer.runtime.allocator import glibc_tunables, tune_this_process  # noqa: E402

BATCH = 64


def job(root: Path, manifest: str, name: str, workers: int, cpus: float, epochs: int) -> JobConfig:
    return JobConfig.model_validate({
        "name": name,
        "data": {"manifest": manifest},
        "preprocess": {"channels": 1, "size": 28},
        "model": {"backbone": "resnet18"},
        "train": {"epochs": epochs, "batch_size": BATCH, "lr": 1e-3, "augment": False, "warmup_epochs": 0},
        "scaling": {"num_workers": workers, "cpus_per_worker": cpus},
        "storage": {"root": str(root)},
    })


def plain_loop(X: np.ndarray, y: np.ndarray, epochs: int, threads: int) -> float:
    """A plain single-process PyTorch loop; returns images/s of the last epoch."""
    from medxfer.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("resnet18", 2, 1, stem=JobConfig().model.stem)  # the stem run_training uses
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    ips = 0.0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(Xt))
        t0, n = time.perf_counter(), 0
        for i in range(0, len(Xt) - BATCH + 1, BATCH):
            idx = perm[i : i + BATCH]
            loss = loss_fn(model(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n += len(idx)
        ips = n / (time.perf_counter() - t0)
        print(f"plain epoch {epoch + 1}: {ips:.1f} img/s", flush=True)
    return ips


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    import ray

    from medxfer.data.cache import prepare
    from medxfer.data.importers import import_medmnist
    from medxfer.runtime import init_ray
    from medxfer.supervised.stage import run_training

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import_medmnist(test_data_dir() / "medmnist" / "pneumoniamnist.npz", str(root / "pneu"), "pneumoniamnist")
        manifest = str(root / "pneu" / "manifest.csv")
        init_ray(num_cpus=cpus + 1)
        prepared = prepare(job(root, manifest, "prep", 1, 1, 1))
        X, y = prepared.numpy("train")
        ray.shutdown()
        base = plain_loop(X, y, args.epochs, cpus)  # glibc's allocator defaults, as a plain script runs
        # The same loop with the allocator setting every medxfer process runs with: how much of
        # medxfer's speed is that setting. From here on this process keeps it, as the command does.
        base_tuned = plain_loop(X, y, args.epochs, cpus) if tune_this_process() else None
        runs = {}
        for workers in sorted({0, 1, cpus}):  # 0: in this process (Ray Train's local mode)
            if workers:
                init_ray(num_cpus=cpus + 1)
            per_worker = cpus / max(1, workers)
            res = finished(run_training(job(root, manifest, f"w{workers}", workers, per_worker, args.epochs), "source"))
            ray.shutdown()
            ips = res["history"][-1]["images_per_s"]
            runs[str(workers)] = {"images_per_s": round(ips, 1), "ratio_to_plain": round(ips / base, 3),
                                  "cpus_per_worker": per_worker, "wall_time_s": res["wall_time_s"]}
    record("train_overhead", {
        "what": f"ResNet-18 on PneumoniaMNIST 28x28 train ({len(X)} images), batch {BATCH}, "
                f"AdamW, {args.epochs} epochs; images/s of the last epoch",
        "baseline": {"kind": "plain single-process PyTorch loop, data in memory",
                     "images_per_s": round(base, 1), "torch_threads": cpus},
        "baseline_with_medxfer_allocator": None if base_tuned is None else {
            "images_per_s": round(base_tuned, 1), "ratio_to_plain": round(base_tuned / base, 3)},
        "medxfer_allocator": glibc_tunables(),
        "ray_train": runs,
    })


if __name__ == "__main__":
    main()
