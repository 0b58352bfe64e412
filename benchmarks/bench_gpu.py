"""Benchmark 6 (GPU machines only): training throughput fed by the real pipeline vs the GPU ceiling.

On one NVIDIA GPU: ResNet-18 and ResNet-50 at 224x224, bf16 AMP, channels-last, trained by
medxfer's ``run_training`` (1 Ray Train worker on the GPU, fed by Ray Data shards of the cache
built from real chest X-rays), versus the same model stepping on synthetic tensors already on
the GPU (the input-pipeline ceiling). GPU utilisation is sampled with nvidia-smi meanwhile.
Ratio = pipeline / synthetic: how much of the GPU the data path keeps busy.

    .venv/bin/python benchmarks/bench_gpu.py [--images 2048] [--batch 128]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_preprocess import make_images  # noqa: E402
from benchmarks.common import finished, record  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402


class UtilSampler(threading.Thread):
    """nvidia-smi utilisation samples every 0.5 s while running."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples.append(int(out.split()[0]))
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.5)

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def synthetic(backbone: str, batch: int, steps: int = 60) -> float:
    from medxfer.models import create_model

    model = create_model(backbone, 2, 3).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device="cuda")
    for i in range(steps + 10):
        if i == 10:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs an NVIDIA GPU")
    import ray

    from medxfer.data.cache import prepare
    from medxfer.runtime import init_ray
    from medxfer.supervised.stage import run_training

    cpus = os.cpu_count() or 1
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        make_images(folder, args.images)
        init_ray()

        def job(backbone: str) -> JobConfig:
            return JobConfig.model_validate({
                "name": f"gpu-{backbone}", "data": {"manifest": str(folder / "manifest.csv"),
                                                    "split_fractions": [0.9, 0.1, 0.0]},
                "preprocess": {"channels": 3, "size": 224, "mean": [0.5], "std": [0.5]},
                "model": {"backbone": backbone},
                "train": {"epochs": args.epochs, "batch_size": args.batch, "augment": True},
                "scaling": {"num_workers": 1, "use_gpu": True, "cpus_per_worker": max(1, cpus // 2)},
                "storage": {"root": str(Path(tmp) / "root")},
            })

        t0 = time.perf_counter()
        prepare(job("resnet18"))
        prep_s = time.perf_counter() - t0
        for backbone in ("resnet18", "resnet50"):
            ceiling = synthetic(backbone, args.batch)
            sampler = UtilSampler()
            sampler.start()
            res = finished(run_training(job(backbone), "source"))
            sampler.stop.set()
            ips = max(h["images_per_s"] for h in res["history"][1:] or res["history"])
            out[backbone] = {"pipeline_images_per_s": round(ips, 1), "synthetic_images_per_s": round(ceiling, 1),
                             "ratio": round(ips / ceiling, 3), "gpu_util_mean_pct": sampler.mean()}
        ray.shutdown()
    record("gpu", {"what": f"{args.images} real CXR-derived PNGs -> cache (224, 3ch); bf16 AMP, channels-last, "
                           f"batch {args.batch}", "cache_build_s": round(prep_s, 1), "results": out})


if __name__ == "__main__":
    main()
