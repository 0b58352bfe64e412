"""Benchmark 1: preprocessing throughput of medxfer's Ray Data pipeline vs a plain OpenCV loop.

Full-size inputs: 1024x1024 8-bit PNG chest X-rays made from the real images in
``$MEDXFER_TEST_DATA/images/cxr`` (resized, flipped and shifted so files differ). The spec is
the one a CXR job uses: decode, CLAHE, letterbox to 224, normalise.

Baseline (same run): a fresh Python process reading each file and calling the same pure function,
``medxfer.data.preprocess.preprocess_bytes``, with glibc's allocator defaults, as a person's
script runs; then the same loop with the allocator setting medxfer's processes run with
(``medxfer.allocator``), to show how much of the pipeline's lead is that setting rather than
parallelism. Then ``medxfer.data.cache.prepare`` (the real Ray Data pipeline, writing the Parquet
cache) on a local Ray limited to 1, then N CPUs, each on a cold cache, and the in-process engine.

This machine's speed drifts by 10-20 % over minutes, so one of each, minutes apart, does not make
a ratio. Every pipeline runs ``--repeats`` times, interleaved (baseline, tuned baseline, Ray Data
1 CPU, Ray Data N CPUs, local engine; then again), and each ratio is the median of the
per-round ratios to that round's baseline. Reported: median images/s, those ratios, every
round's numbers, and scaling from 1 to N CPUs.

    .venv/bin/python benchmarks/bench_preprocess.py [--images 600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import record, test_data_dir  # noqa: E402
from medxfer.allocator import glibc_tunables, tune_this_process  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402


def make_images(folder: Path, n: int, size: int = 1024) -> list[Path]:
    sources = sorted((test_data_dir() / "images" / "cxr").glob("*.png")) + sorted(
        (test_data_dir() / "images" / "cxr").glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no chest X-rays under {test_data_dir() / 'images' / 'cxr'}; set MEDXFER_TEST_DATA")
    base = [cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_CUBIC)
            for p in sources]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = base[i % len(base)]
        if i // len(base) % 2:
            img = img[:, ::-1]
        img = np.roll(img, int(rng.integers(-20, 20)), axis=int(rng.integers(0, 2)))
        p = folder / "images" / f"cxr_{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.ascontiguousarray(img))
        paths.append(p)
    pd.DataFrame({"path": [f"images/{p.name}" for p in paths],
                  "label": ["a" if i % 2 else "b" for i in range(n)],
                  "split": ["train"] * n}).to_csv(folder / "manifest.csv", index=False)
    return paths


def job(folder: Path, root: Path, manifest: Path | None = None, engine: str = "ray") -> JobConfig:
    return JobConfig.model_validate({
        "name": "bench-preprocess",
        "data": {"manifest": str(manifest or folder / "manifest.csv"), "engine": engine},
        "preprocess": {"channels": 1, "size": 224, "clahe": True},
        "storage": {"root": str(root)},
    })


def loop(folder: Path) -> float:
    """The plain loop over every image of ``folder``'s manifest, in this process: images/s."""
    from medxfer.data.preprocess import preprocess_bytes

    cfg = job(folder, folder / "unused")
    paths = [folder / p for p in pd.read_csv(folder / "manifest.csv")["path"]]
    cv2.setNumThreads(1)  # one core, as a plain loop in one process would use
    t0 = time.perf_counter()
    for p in paths:
        preprocess_bytes(p.read_bytes(), cfg.preprocess, str(p))
    return len(paths) / (time.perf_counter() - t0)


def baseline(folder: Path, tunables: str | None = None) -> float:
    """:func:`loop` in a fresh process: glibc's allocator defaults, or ``tunables`` (GLIBC_TUNABLES)."""
    env = dict(os.environ, MEDXFER_ALLOCATOR="system")
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, __file__, "--loop", str(folder)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def ray_pipeline(folder: Path, cfg_root: Path, cpus: int, engine: str = "ray") -> tuple[float, float]:
    import ray

    from medxfer.data.cache import prepare
    from medxfer.runtime import init_ray

    init_ray(num_cpus=cpus)
    try:
        # Warm-up (another cache key): 4 blocks per CPU, so every one of Ray's worker processes
        # starts and imports here and the timed run measures throughput, not process start-up.
        # (4 x cpus images made one block: one task, one warm worker, the others started in the
        # timed run.)
        warm = folder / "warmup.csv"
        pd.read_csv(folder / "manifest.csv").head(32 * cpus).to_csv(warm, index=False)
        prepare(job(folder, cfg_root, manifest=warm, engine=engine))
        t0 = time.perf_counter()
        prepared = prepare(job(folder, cfg_root, engine=engine))
        wall = time.perf_counter() - t0
        assert not prepared.hit
        n = prepared.card["total"]
        return n / prepared.card["timing"]["decode_seconds"], n / wall
    finally:
        ray.shutdown()


def _median(rounds: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3, help="Interleaved rounds of every pipeline (medians reported).")
    ap.add_argument("--tag", default="", help="Suffix of the result file (e.g. _2400: preprocess_throughput_2400.json).")
    ap.add_argument("--loop", type=Path, help=argparse.SUPPRESS)  # internal: one baseline loop, in a fresh process
    args = ap.parse_args()
    if args.loop:
        print(loop(args.loop))
        return
    cpus = os.cpu_count() or 1
    # The setting every medxfer process runs with: the command's own (the local engine below),
    # and Ray's workers get it from init_ray. None when a person's own allocator setting is in force.
    tunables = glibc_tunables()
    tune_this_process()
    cv2.setNumThreads(0)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        make_images(folder, args.images)
        for i in range(args.repeats):
            base = baseline(folder)  # glibc's allocator defaults: the plain loop a person would write
            r = {"baseline": round(base, 1)}
            if tunables:
                r["baseline_with_medxfer_allocator"] = round(baseline(folder, tunables), 1)
            for c in sorted({1, cpus}):
                r[f"ray_data_{c}"], r[f"ray_data_{c}_end_to_end"] = (
                    round(x, 1) for x in ray_pipeline(folder, Path(tmp) / f"root-{c}-{i}", c))
            # data.engine: local (what `auto` picks for up to data.local_max_images): the same blocks on threads
            r["local"], r["local_end_to_end"] = (
                round(x, 1) for x in ray_pipeline(folder, Path(tmp) / f"root-local-{i}", cpus, engine="local"))
            for key in [k for k in r if k != "baseline" and not k.endswith("_end_to_end")]:
                r[f"{key}_ratio"] = round(r[key] / base, 3)
            rounds.append(r)
            print(f"round {i + 1}/{args.repeats}: {r}", flush=True)

    def pipeline(key: str) -> dict:
        return {"pipeline_images_per_s": _median(rounds, key), "end_to_end_images_per_s": _median(rounds, f"{key}_end_to_end"),
                "ratio_to_baseline": _median(rounds, f"{key}_ratio")}

    ray_data = {str(c): pipeline(f"ray_data_{c}") for c in sorted({1, cpus})}
    record(f"preprocess_throughput{args.tag}", {
        "what": f"{args.images} PNG 1024x1024 gray -> CLAHE -> letterbox 224 -> normalise -> Parquet cache; "
                f"median of {args.repeats} interleaved rounds",
        "baseline": {"kind": "single-process loop in a fresh process, preprocess_bytes, cv2 1 thread",
                     "images_per_s": _median(rounds, "baseline")},
        "baseline_with_medxfer_allocator": {
            "images_per_s": _median(rounds, "baseline_with_medxfer_allocator"),
            "ratio_to_baseline": _median(rounds, "baseline_with_medxfer_allocator_ratio")} if tunables else None,
        "medxfer_allocator": tunables,
        "ray_data": ray_data,
        "local_engine": {str(cpus): pipeline("local")},
        "scaling_1_to_n_cpus": round(statistics.median(r[f"ray_data_{cpus}"] / r["ray_data_1"] for r in rounds), 2)
        if cpus > 1 else None,
        "rounds": rounds,
        "notes": "ray_data: data.engine ray; local_engine: data.engine local (threads in the command's process). "
                 "pipeline_images_per_s counts the Ray Data stage (read, decode, preprocess, write shards) "
                 "after a warm-up run that starts Ray's worker processes; end_to_end adds manifest checks "
                 "and the dataset card. Ratios: the median over rounds of each round's ratio to its own baseline.",
    })


if __name__ == "__main__":
    main()
