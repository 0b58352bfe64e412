"""Benchmark 1: preprocessing throughput of medxfer's Ray Data pipeline vs a plain OpenCV loop.

Full-size inputs: 1024x1024 8-bit PNG chest X-rays made from the real images in
``$MEDXFER_TEST_DATA/images/cxr`` (resized, flipped and shifted so files differ). The spec is
the one a CXR job uses: decode, CLAHE, letterbox to 224, normalise.

Baseline (same run): a single process reading each file and calling the same pure function,
``medxfer.data.preprocess.preprocess_bytes``, with glibc's allocator defaults; then the same loop
with the allocator setting medxfer's processes run with (``medxfer.allocator``), to show how much
of the pipeline's lead is that setting rather than parallelism. Then ``medxfer.data.cache.prepare`` (the real
Ray Data pipeline, writing the Parquet cache) on a local Ray limited to 1, then N CPUs, each
on a cold cache. Reported: images/s, ratio to the baseline, and scaling from 1 to N CPUs.

    .venv/bin/python benchmarks/bench_preprocess.py [--images 600]
"""

from __future__ import annotations

import argparse
import os
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


def baseline(paths: list[Path], cfg: JobConfig) -> float:
    from medxfer.data.preprocess import preprocess_bytes

    cv2.setNumThreads(1)  # one core, as a plain loop in one process would use
    t0 = time.perf_counter()
    for p in paths:
        preprocess_bytes(p.read_bytes(), cfg.preprocess, str(p))
    return len(paths) / (time.perf_counter() - t0)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--tag", default="", help="Suffix of the result file (e.g. _2400: preprocess_throughput_2400.json).")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        paths = make_images(folder, args.images)
        cfg = job(folder, Path(tmp) / "unused")
        base = baseline(paths, cfg)  # glibc's allocator defaults: the plain loop a person would write
        # The same loop with the allocator setting every medxfer process runs with (the command's
        # own, for the local engine below; Ray's workers get it from init_ray).
        base_tuned = baseline(paths, cfg) if tune_this_process() else None
        cv2.setNumThreads(0)
        runs = {}
        for c in sorted({1, cpus}):
            pipeline_ips, end_to_end_ips = ray_pipeline(folder, Path(tmp) / f"root-{c}", c)
            runs[c] = {"pipeline_images_per_s": round(pipeline_ips, 1),
                       "end_to_end_images_per_s": round(end_to_end_ips, 1),
                       "ratio_to_baseline": round(pipeline_ips / base, 2)}
        # data.engine: local (what `auto` picks for up to data.local_max_images): the same blocks on threads
        local_ips, local_e2e = ray_pipeline(folder, Path(tmp) / "root-local", cpus, engine="local")
        local = {"pipeline_images_per_s": round(local_ips, 1), "end_to_end_images_per_s": round(local_e2e, 1),
                 "ratio_to_baseline": round(local_ips / base, 2)}
    record(f"preprocess_throughput{args.tag}", {
        "what": f"{args.images} PNG 1024x1024 gray -> CLAHE -> letterbox 224 -> normalise -> Parquet cache",
        "baseline": {"kind": "single-process loop, preprocess_bytes, cv2 1 thread",
                     "images_per_s": round(base, 1)},
        "baseline_with_medxfer_allocator": None if base_tuned is None else {
            "images_per_s": round(base_tuned, 1), "ratio_to_baseline": round(base_tuned / base, 2)},
        "medxfer_allocator": glibc_tunables(),
        "ray_data": {str(c): r for c, r in runs.items()},
        "local_engine": {str(cpus): local},
        "scaling_1_to_n_cpus": round(runs[cpus]["pipeline_images_per_s"] / runs[1]["pipeline_images_per_s"], 2)
        if cpus > 1 else None,
        "notes": "ray_data: data.engine ray; local_engine: data.engine local (threads in the command's process). "
                 "pipeline_images_per_s counts the Ray Data stage (read, decode, preprocess, write shards) "
                 "after a warm-up run that starts Ray's worker processes; end_to_end adds manifest checks "
                 "and the dataset card.",
    })


if __name__ == "__main__":
    main()
