"""Benchmark 4: medxfer's test-set numbers next to the published MedMNIST v2 table.

Runs the real path — import, cache, ``run_training`` (Ray Train), ``evaluate_bundle`` — from
scratch for PneumoniaMNIST (28x28), BreastMNIST (28x28) and BreastMNIST (64x64), over several
seeds, and reports mean and spread of test AUROC and accuracy beside the published rows
(MedMNIST v2, Yang et al. 2023: ResNet-18 (28) and Google AutoML Vision).

Accuracy here is at the argmax (the operating point medxfer also reports is chosen on val).

    .venv/bin/python benchmarks/bench_accuracy.py [--seeds 0 1 2] [--source-epochs 8] [--target-epochs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402

PUBLISHED = {
    "pneumoniamnist": {"ResNet-18 (28)": {"auroc": 0.944, "accuracy": 0.854},
                       "Google AutoML Vision": {"auroc": 0.991, "accuracy": 0.946}},
    "breastmnist": {"ResNet-18 (28)": {"auroc": 0.901, "accuracy": 0.863},
                    "Google AutoML Vision": {"auroc": 0.919, "accuracy": 0.861}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source-epochs", type=int, default=8)
    ap.add_argument("--target-epochs", type=int, default=30)
    ap.add_argument("--sets", nargs="+", default=["pneumoniamnist:28", "breastmnist:28", "breastmnist:64"])
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    args = ap.parse_args()

    from medxfer.data.importers import import_medmnist
    from medxfer.evaluate import evaluate_bundle
    from medxfer.runtime import init_ray
    from medxfer.train.jobs import run_training

    work = Path(args.work)
    init_ray()
    cpus = os.cpu_count() or 1
    results = {}
    for item in args.sets:
        name, size = item.split(":")
        size = int(size)
        npz = test_data_dir() / "medmnist" / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
        ds = work / "datasets" / f"{name}_{size}"
        if not (ds / "manifest.csv").exists():
            import_medmnist(npz, str(ds), name)
        epochs = args.source_epochs if name == "pneumoniamnist" else args.target_epochs
        per_seed = []
        for seed in args.seeds:
            cfg = JobConfig.model_validate({
                "name": f"acc-{name}-{size}-s{seed}",
                "data": {"manifest": str(ds / "manifest.csv")},
                "preprocess": {"channels": 1, "size": size},
                "model": {"backbone": "resnet18"},
                "train": {"epochs": epochs, "batch_size": 64 if name == "pneumoniamnist" else 32, "lr": 1e-3,
                          "seed": seed, "warmup_epochs": 1},
                "scaling": {"num_workers": 1, "cpus_per_worker": max(1, cpus - 1)},
                "storage": {"root": str(work)},
                "evaluate": {"bootstrap": 1000, "seed": seed},
            })
            res = run_training(cfg, "source")
            rep = evaluate_bundle(res["bundle"], cfg, "test")
            m = rep["metrics"]
            per_seed.append({"seed": seed, "test_auroc": m["auroc"]["value"], "test_auroc_ci": m["auroc"]["ci"],
                             "test_accuracy": rep.get("accuracy_argmax", m["accuracy"]["value"]),
                             "best_epoch": res["best"]["epoch"], "train_s": res["wall_time_s"]})
            print(f"{name} {size}px seed {seed}: AUROC {per_seed[-1]['test_auroc']:.3f} "
                  f"ACC {per_seed[-1]['test_accuracy']:.3f}", flush=True)
        au = np.array([r["test_auroc"] for r in per_seed])
        ac = np.array([r["test_accuracy"] for r in per_seed])
        results[f"{name}_{size}"] = {
            "epochs": epochs,
            "seeds": per_seed,
            "test_auroc_mean": float(au.mean()), "test_auroc_std": float(au.std(ddof=1)) if len(au) > 1 else 0.0,
            "test_accuracy_mean": float(ac.mean()), "test_accuracy_std": float(ac.std(ddof=1)) if len(ac) > 1 else 0.0,
            "published": PUBLISHED.get(name),
        }
    record("accuracy", {
        "what": "ResNet-18 from scratch via medxfer (Ray Train, 1 worker), AdamW, cosine, best epoch on val; "
                "test split",
        "results": results,
    })


if __name__ == "__main__":
    main()
