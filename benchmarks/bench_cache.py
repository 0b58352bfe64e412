"""Benchmark 3: a training job's data stage on a cache miss vs a cache hit.

``medxfer.data.cache.prepare`` on PneumoniaMNIST (5,856 PNGs imported from the real file): the
first call decodes and writes the Parquet cache (miss), the second finds ``dataset.json`` and
decodes nothing (hit). Both on the same local Ray, local storage; the ratio is miss / hit.

    .venv/bin/python benchmarks/bench_cache.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402


def main() -> None:
    import ray

    from medxfer.data.cache import prepare
    from medxfer.data.importers import import_medmnist
    from medxfer.runtime import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import_medmnist(test_data_dir() / "medmnist" / "pneumoniamnist.npz", str(root / "pneu"), "pneumoniamnist")
        cfg = JobConfig.model_validate({
            "data": {"manifest": str(root / "pneu" / "manifest.csv")},
            "preprocess": {"channels": 1, "size": 64, "clahe": True},
            "storage": {"root": str(root)},
        })
        init_ray()
        t0 = time.perf_counter()
        miss = prepare(cfg)
        t_miss = time.perf_counter() - t0
        t0 = time.perf_counter()
        hit = prepare(cfg)
        t_hit = time.perf_counter() - t0
        # What a training job then does with a split this small (< 2 GiB): read it into memory with pyarrow.
        t0 = time.perf_counter()
        x, _ = hit.numpy("train")
        t_memory = time.perf_counter() - t0
        # What a larger split does instead: open it as a Ray Dataset (streamed shards) and count.
        t0 = time.perf_counter()
        n = hit.dataset("train").count()
        t_open = time.perf_counter() - t0
        ray.shutdown()
        assert len(x) == n
    assert not miss.hit and hit.hit
    record("cache", {
        "what": "prepare() of PneumoniaMNIST (5,856 PNG, CLAHE, 64x64) on a local folder",
        "miss_seconds": round(t_miss, 2),
        "hit_seconds": round(t_hit, 3),
        "ratio_miss_over_hit": round(t_miss / t_hit, 1),
        "hit_then_read_train_split_into_memory_seconds": round(t_memory, 3),
        "hit_then_open_train_split_seconds": round(t_open, 2),
        "train_rows": n,
        "decode_seconds_on_miss": miss.decode_seconds,
    })


if __name__ == "__main__":
    main()
