"""Benchmark 7: is ``medxfer finetune`` as good and as fast as the plain PyTorch script?

For each seed, one after the other on an otherwise idle machine (even seeds run the plain script
first, odd seeds ``medxfer`` first, so drift in the machine's speed favours neither):

1. ``benchmarks/plain_train.py``: a plain single-process PyTorch script (ResNet-18, AdamW, warm-up +
   cosine, the same augmentation, batch and epochs), BreastMNIST 64x64 arrays already in memory;
2. the ``medxfer finetune`` *command* in a new process on the same images as PNG files with a
   manifest: Ray start, preprocessing into a fresh cache, training, checkpoints, the bundle;
3. ``medxfer evaluate`` of that bundle on the test split (timed apart: the plain script's test
   score comes free with its training, medxfer's is a separate command with bootstrap intervals).

Recorded per seed: wall time of each process, training images/s, test AUROC; top level: the
mean ``wall_ratio`` (medxfer finetune wall time / plain wall time) and ``auroc_difference``
(medxfer minus plain, mean over seeds), plus the lines medxfer printed.

    .venv/bin/python benchmarks/bench_parity.py [--seeds 0 1] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, record, test_data_dir  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, str]:
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.time() - t0
    out = p.stdout + p.stderr
    log.write_text(out)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {p.returncode}); see {log}\n{out[-3000:]}")
    return wall, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "parity"))
    args = ap.parse_args()

    from medxfer.data.importers import import_medmnist

    work = Path(args.work)
    npz = test_data_dir() / "medmnist" / "breastmnist_64.npz"
    dataset = work / "datasets" / "breastmnist_64"
    if not (dataset / "manifest.csv").exists():
        import_medmnist(npz, str(dataset), "breastmnist_64")  # a one-off import, not part of either run
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    seeds = []
    for seed in args.seeds:
        out = work / f"seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        job = {
            "name": f"parity-s{seed}",
            "data": {"manifest": str(dataset / "manifest.csv")},
            "preprocess": {"channels": 1, "size": 64},
            "model": {"backbone": "resnet18", "init": "scratch"},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "seed": seed},
            "scaling": {"num_workers": 1, "cpus_per_worker": os.cpu_count() or 1},
            "storage": {"root": str(out / "root")},  # a fresh root: the cache is built inside the timed run
            "evaluate": {"bootstrap": 1000, "seed": seed},
        }
        (out / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))

        plain_cmd = [sys.executable, str(REPO / "benchmarks" / "plain_train.py"), "--npz", str(npz), "--epochs",
                     str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(seed),
                     "--out", str(out / "plain.json")]
        mx_cmd = [str(BIN / "medxfer"), "finetune", "--config", str(out / "job.yaml")]
        # Alternate which goes first, so a machine that slows down (or speeds up) over the run
        # does not always favour the same side.
        order = ["plain", "medxfer"] if seed % 2 == 0 else ["medxfer", "plain"]
        walls, outputs = {}, {}
        for side in order:
            walls[side], outputs[side] = timed(plain_cmd if side == "plain" else mx_cmd, out / f"{side}.log", env)
        plain_wall, mx_wall, mx_out = walls["plain"], walls["medxfer"], outputs["medxfer"]
        plain = json.loads((out / "plain.json").read_text())
        run = out / "root" / "runs" / job["name"]
        result = json.loads((run / "result.json").read_text())
        ev_wall, _ = timed([str(BIN / "medxfer"), "evaluate", "--bundle", str(run / "bundle"), "--data",
                            str(out / "job.yaml"), "--out", str(out / "report")], out / "evaluate.log", env)
        report = json.loads((out / "report" / "report.json").read_text())
        epoch_loop_s = sum(h["epoch_seconds"] for h in result["history"])
        row = {
            "seed": seed,
            "first": order[0],
            "plain": {"wall_s": round(plain_wall, 1), "train_images_per_s": round(plain["train_images_per_s"], 1),
                      "test_auroc": round(plain["test_auroc"], 4), "best_val_auroc": round(plain["best_val_auroc"], 4)},
            "medxfer": {"wall_s": round(mx_wall, 1), "train_images_per_s": round(result["images_per_s"], 1),
                        "test_auroc": round(report["metrics"]["auroc"]["value"], 4),
                        "best_val_auroc": round(result["best"].get("val_auroc", float("nan")), 4),
                        "best_epoch": result["best"]["epoch"], "output_lines": len(mx_out.splitlines()),
                        # Where the time went: the epoch loop, and everything else (process and Ray
                        # start, worker group, preprocessing, checkpoints, the bundle).
                        "epoch_loop_s": round(epoch_loop_s, 1),
                        "outside_epochs_s": round(mx_wall - epoch_loop_s, 1),
                        "evaluate_wall_s": round(ev_wall, 1)},
        }
        row["wall_ratio"] = round(mx_wall / plain_wall, 3)
        row["images_per_s_ratio"] = round(result["images_per_s"] / plain["train_images_per_s"], 3)
        row["auroc_difference"] = round(row["medxfer"]["test_auroc"] - row["plain"]["test_auroc"], 4)
        seeds.append(row)
        print(json.dumps(row), flush=True)
    mean = lambda k: float(np.mean([r[k] for r in seeds]))  # noqa: E731
    record("parity", {
        "what": f"BreastMNIST 64x64, ResNet-18 from scratch, {args.epochs} epochs, batch {args.batch_size}, "
                "AdamW + warm-up/cosine; plain PyTorch script vs the medxfer finetune command (new process, "
                "cold cache), one after the other per seed, the order alternating between seeds",
        "wall_ratio": round(mean("wall_ratio"), 3),
        "auroc_difference": round(mean("auroc_difference"), 4),
        "images_per_s_ratio": round(mean("images_per_s_ratio"), 3),
        "plain_test_auroc_mean": round(float(np.mean([r["plain"]["test_auroc"] for r in seeds])), 4),
        "medxfer_test_auroc_mean": round(float(np.mean([r["medxfer"]["test_auroc"] for r in seeds])), 4),
        "seeds": seeds,
    })


if __name__ == "__main__":
    main()
