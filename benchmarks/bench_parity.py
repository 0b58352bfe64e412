"""Benchmark 0: is ``medxfer finetune`` as good and as fast as the plain PyTorch script?

For each seed, one after the other on an otherwise idle machine (the order is reversed on odd
seeds, so drift in the machine's speed favours none of them):

1. ``benchmarks/plain_train.py``: a plain single-process PyTorch script (ResNet-18, AdamW, warm-up +
   cosine, the same augmentation, batch and epochs), BreastMNIST 64x64 arrays already in memory;
2. the ``medxfer finetune`` *command* in a new process on the same images as PNG files with a
   manifest, with one Ray Train worker (the default): Ray start, preprocessing into a fresh
   cache, the worker group, training, checkpoints, the bundle;
3. the same command with ``scaling.num_workers: 0``: training in the command's own process
   (Ray Train's local mode), no Ray cluster;
4. ``medxfer evaluate`` of each bundle on the test split (timed apart: the plain script's test
   score comes free with its training, medxfer's is a separate command with bootstrap intervals).

Recorded per seed: wall time of each process, training images/s, test AUROC; top level, for the
default command: the mean ``wall_ratio`` (medxfer finetune wall time / plain wall time) and
``auroc_difference`` (medxfer minus plain, mean over seeds), plus the lines medxfer printed; the
same ratios for the in-process run under ``in_process``.

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
from medxfer.runtime.allocator import glibc_tunables  # noqa: E402

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
        commands = {"plain": [sys.executable, str(REPO / "benchmarks" / "plain_train.py"), "--npz", str(npz),
                              "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed",
                              str(seed), "--out", str(out / "plain.json")]}
        for side, workers in MEDXFER_SIDES.items():
            job = {
                "name": f"parity-s{seed}",
                "data": {"manifest": str(dataset / "manifest.csv")},
                "preprocess": {"channels": 1, "size": 64},
                "model": {"backbone": "resnet18", "init": "scratch"},
                "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "seed": seed},
                "scaling": {"num_workers": workers, "cpus_per_worker": os.cpu_count() or 1},
                # A fresh root per side: each builds its cache inside its timed run.
                "storage": {"root": str(out / side / "root")},
                "evaluate": {"bootstrap": 1000, "seed": seed},
            }
            (out / side).mkdir()
            (out / side / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
            commands[side] = [str(BIN / "medxfer"), "finetune", "--config", str(out / side / "job.yaml")]
        # Reverse the order on odd seeds, so a machine that slows down (or speeds up) over the run
        # does not always favour the same side.
        order = list(commands) if seed % 2 == 0 else list(reversed(commands))
        walls, outputs = {}, {}
        for side in order:
            walls[side], outputs[side] = timed(commands[side], out / f"{side}.log", env)
        plain = json.loads((out / "plain.json").read_text())
        row = {
            "seed": seed,
            "order": order,
            "plain": {"wall_s": round(walls["plain"], 1), "train_images_per_s": round(plain["train_images_per_s"], 1),
                      "test_auroc": round(plain["test_auroc"], 4), "best_val_auroc": round(plain["best_val_auroc"], 4)},
        }
        for side in MEDXFER_SIDES:
            row[side] = medxfer_side(out / side, f"parity-s{seed}", walls[side], outputs[side], plain, walls["plain"],
                                     env)
        seeds.append(row)
        print(json.dumps(row), flush=True)

    def mean(side: str, key: str) -> float:
        return float(np.mean([r[side][key] for r in seeds]))

    record("parity", {
        "what": f"BreastMNIST 64x64, ResNet-18 from scratch, {args.epochs} epochs, batch {args.batch_size}, "
                "AdamW + warm-up/cosine; plain PyTorch script vs the medxfer finetune command (new process, "
                "cold cache) with one Ray Train worker (medxfer) and in its own process (in_process), one after "
                "the other per seed, the order reversed on odd seeds; medxfer with its allocator setting "
                "(medxfer.runtime.allocator), the plain script with glibc's defaults",
        "medxfer_allocator": glibc_tunables(),
        "wall_ratio": round(mean("medxfer", "wall_ratio"), 3),
        "auroc_difference": round(mean("medxfer", "auroc_difference"), 4),
        "images_per_s_ratio": round(mean("medxfer", "images_per_s_ratio"), 3),
        "plain_test_auroc_mean": round(mean("plain", "test_auroc"), 4),
        "medxfer_test_auroc_mean": round(mean("medxfer", "test_auroc"), 4),
        "in_process": {"wall_ratio": round(mean("in_process", "wall_ratio"), 3),
                       "auroc_difference": round(mean("in_process", "auroc_difference"), 4),
                       "images_per_s_ratio": round(mean("in_process", "images_per_s_ratio"), 3),
                       "test_auroc_mean": round(mean("in_process", "test_auroc"), 4)},
        "seeds": seeds,
    })


#: The medxfer commands compared with the plain script: ``scaling.num_workers`` of each.
MEDXFER_SIDES = {"medxfer": 1, "in_process": 0}


def medxfer_side(folder: Path, name: str, wall: float, output: str, plain: dict, plain_wall: float, env: dict) -> dict:
    """One medxfer command's numbers, its bundle evaluated on the test split, and its ratios to the plain script."""
    run = folder / "root" / "runs" / name
    result = json.loads((run / "result.json").read_text())
    ev_wall, _ = timed([str(BIN / "medxfer"), "evaluate", "--bundle", str(run / "bundle"), "--data",
                        str(folder / "job.yaml"), "--out", str(folder / "report")], folder / "evaluate.log", env)
    report = json.loads((folder / "report" / "report.json").read_text())
    epoch_loop_s = sum(h["epoch_seconds"] for h in result["history"])
    side = {"wall_s": round(wall, 1), "train_images_per_s": round(result["images_per_s"], 1),
            "test_auroc": round(report["metrics"]["auroc"]["value"], 4),
            "best_val_auroc": round(result["best"].get("val_auroc", float("nan")), 4),
            "best_epoch": result["best"]["epoch"], "output_lines": len(output.splitlines()),
            # Where the time went: the epoch loop, and everything else (process and Ray start, worker
            # group, preprocessing, checkpoints, the bundle).
            "epoch_loop_s": round(epoch_loop_s, 1), "outside_epochs_s": round(wall - epoch_loop_s, 1),
            "evaluate_wall_s": round(ev_wall, 1)}
    side["wall_ratio"] = round(wall / plain_wall, 3)
    side["images_per_s_ratio"] = round(result["images_per_s"] / plain["train_images_per_s"], 3)
    side["auroc_difference"] = round(side["test_auroc"] - plain["test_auroc"], 4)
    return side


if __name__ == "__main__":
    main()
