"""Benchmark 10: the cluster path at scale: N synthetic 224 px images in S3, preprocessed and trained
for one streamed epoch on two Ray nodes; how time and memory grow with N.

For each N (default 10k, 20k, 40k): phantom PNGs (``medxfer.data.phantom.write_pngs``) are written
to a bucket on moto's S3 server (its own process, loopback), then on a two-node Ray cluster of
this machine (``ray.cluster_utils.Cluster``: a head and one more node, one CPU each):

- ``preprocess``: ``medxfer.data.cache.prepare`` (Ray Data tasks on both nodes, cache on S3);
- one epoch of ``source-train`` with the split streamed (``data.in_memory_max_bytes: 0``), two
  workers of one CPU, one per node, validation included.

Sampled every 2 s: the memory (PSS, shared pages split between their users) of each node's
processes (its raylet and every process the raylet started; the head's also counts the Ray head
services and this driver), and each node's object store use. Reported: seconds, img/s, peaks.

Streamed against in-memory (``--ratio-size`` images, default 4,000): the same one-epoch run with
the splits streamed and with them in memory, alternated ``--pairs`` times (M S, then S M, ...) on
the same warm cluster, since the shared cores' load moves by a factor of two within minutes; and
the data pipeline's own CPU: the CPU seconds a worker's reader spends per image (read, decompress,
shuffle and copy one rank's epoch in this process), times the trainer's pace, as a fraction of one
core.

The model is ResNet-18 with its backbone frozen (``train.freeze: backbone``, linear probing): on
the two shared cores here the small CNN trains 1.6 img/s per core at 224 px (it keeps full
resolution in its first block), which would make 40k images take hours; a faster trainer is
also the harder test of the data path, whose cost is then a larger share.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000 20000 40000] [--ratio-size 4000] [--pairs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import finished, record  # noqa: E402

SIZE = 224
BATCH = 32


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3(work: Path) -> tuple[subprocess.Popen, str]:
    """moto's threaded S3 server in its own process (its memory is not the cluster's)."""
    port = _free_port()
    code = ("import logging, time; logging.getLogger('werkzeug').setLevel(logging.ERROR);"
            "from moto.server import ThreadedMotoServer;"
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False); s.start();"
            "time.sleep(10**9)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=open(work / "moto.log", "wb"))
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")
    return p, endpoint


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += _children(k)
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """Peak memory (PSS) per node and object store bytes per node, sampled every ``every`` seconds."""

    def __init__(self, nodes: dict, head_extra: list[int], every: float = 2.0):
        self.nodes, self.head_extra, self.every = nodes, head_extra, every  # name -> (raylet pid, address, port)
        self.peak: dict[str, int] = {}
        self.store_peak: dict[str, int] = {}
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _store(self, address: str, port: int) -> int:
        from ray._private.internal_api import node_stats

        try:
            return int(node_stats(address, port, include_memory_info=False).store_stats.object_store_bytes_used)
        except Exception:  # noqa: BLE001 - a sample missed, not a failure
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for name, (raylet, address, port) in self.nodes.items():
                pids = [raylet, *_children(raylet)] + (self.head_extra if name == "head" else [])
                mem = sum(_pss(p) for p in pids)
                total += mem
                self.peak[name] = max(self.peak.get(name, 0), mem)
                self.store_peak[name] = max(self.store_peak.get(name, 0), self._store(address, port))
            self.total_peak = max(self.total_peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        gib = 1024**3
        return {"peak_memory_gib": {k: round(v / gib, 2) for k, v in self.peak.items()},
                "peak_memory_total_gib": round(self.total_peak / gib, 2),
                "object_store_peak_mib": {k: round(v / 1024**2, 1) for k, v in self.store_peak.items()}}


def start_cluster():
    """Two logical Ray nodes of one CPU each (this machine has two cores)."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    from medxfer.runtime import init_ray

    init_ray()
    nodes = {}
    for i, node in enumerate(cluster.list_all_nodes()):
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        nodes["head" if i == 0 else f"node{i + 1}"] = (raylet, node.node_ip_address, node.node_manager_port)
    head_services = [p.process.pid for kind, procs in cluster.head_node.all_processes.items()
                     if kind != ray_constants.PROCESS_TYPE_RAYLET for p in procs]
    return ray, cluster, nodes, [os.getpid(), *head_services]


def limit_for(stream: bool) -> int:
    """``data.in_memory_max_bytes`` that streams every split (0) or reads them all into memory."""
    return 0 if stream else 64 * 1024**3


def job(root: str, manifest: str, name: str, stream: bool):
    from medxfer.config import JobConfig

    return JobConfig.model_validate({
        "name": name,
        "data": {"manifest": manifest, "in_memory_max_bytes": limit_for(stream)},
        "preprocess": {"size": SIZE, "channels": 1},
        "model": {"backbone": "resnet18", "init": "scratch"},
        "train": {"epochs": 1, "batch_size": BATCH, "lr": 1e-3, "warmup_epochs": 0, "augment": False,
                  "freeze": "backbone"},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "use_gpu": False},
        "failure": {"watchdog_s": 600},
        "storage": {"root": root},
    })


def train(cfg, sampler_args) -> dict:
    from medxfer.supervised.stage import run_training

    t0 = time.perf_counter()
    with Sampler(*sampler_args) as s:
        out = finished(run_training(cfg, "source"))
    h = out["history"][-1]
    return {"seconds": round(time.perf_counter() - t0, 1), "epoch_seconds": round(h["epoch_seconds"], 1),
            "train_images_per_s": round(h["images_per_s"], 1), "data_wait_s": round(h["data_wait_s"], 2),
            "workers": cfg.scaling.num_workers, "data_mode": out["data_mode"],
            "val_n": out["final"].get("val_n"), **s.result()}


def reader_cpu_per_image(prepared) -> dict:
    """CPU seconds one rank's reader spends per image over an epoch (this process, nothing else running in it)."""
    from medxfer.data.cache.stream import list_pieces, train_batches
    from medxfer.train.plan import IN_MEMORY_MAX_BYTES

    stream = list_pieces([prepared], "train")
    rows = stream.rows // 2
    c0, w0 = time.process_time(), time.perf_counter()
    n = sum(len(b["image"]) for b in train_batches(stream, 0, 1, 0, rows, BATCH, IN_MEMORY_MAX_BYTES // 4))
    cpu = time.process_time() - c0
    return {"images": n, "cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - w0, 2),
            "cpu_ms_per_image": round(1000 * cpu / n, 3)}


def dataset(n: int, bucket: str, stream: bool = True):
    """``n`` phantom PNGs in the bucket, and the job config of a run on them; the seconds writing took."""
    from medxfer import storage
    from medxfer.data.phantom import write_pngs

    root = f"s3://{bucket}/n{n}"
    t0 = time.perf_counter()
    manifest = write_pngs(storage.join(root, "datasets", "phantoms"), n, size=SIZE)
    return job(root, manifest, f"scale-{n}", stream), time.perf_counter() - t0


def run_size(n: int, nodes, head_extra, bucket: str) -> dict:
    """Preprocess ``n`` images and train one streamed epoch on them."""
    from medxfer.data.cache import prepare
    from medxfer.data.manifest import SPLITS

    cfg, write_s = dataset(n, bucket)
    t0 = time.perf_counter()
    with Sampler(nodes, head_extra) as s:
        prepared = prepare(cfg)
    pre_s = time.perf_counter() - t0
    return {"images": n, "write_pngs_seconds": round(write_s, 1),
            "preprocess": {"seconds": round(pre_s, 1), "images_per_s": round(n / pre_s, 1), **s.result()},
            "counts": {sp: prepared.cached_rows(sp) for sp in SPLITS},
            "streamed_epoch": train(cfg, (nodes, head_extra)),
            "loadavg_after": _loadavg()}


def run_ratio(n: int, pairs: int, workers: int, nodes, head_extra, bucket: str) -> dict:
    """The same epoch streamed and in memory on ``workers`` workers, alternated; the reader's CPU per image;
    the default limit."""
    from medxfer.data.cache import prepare
    from medxfer.runtime import worker_memory
    from medxfer.train.plan import in_memory_limit

    cfg, _ = dataset(n, bucket)
    cfg = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": workers})})
    prepared = prepare(cfg)
    runs = []
    for i in range(pairs):
        for stream in ((False, True) if i % 2 == 0 else (True, False)):
            c = cfg.model_copy(update={"name": f"ratio-{n}-{workers}w-{i}-{'stream' if stream else 'memory'}",
                                       "data": cfg.data.model_copy(update={"in_memory_max_bytes": limit_for(stream)})})
            runs.append({"pair": i, "streamed": stream, **train(c, (nodes, head_extra)), "loadavg": _loadavg()})
    default = cfg.model_copy(update={"data": cfg.data.model_copy(update={"in_memory_max_bytes": None})})
    limit = in_memory_limit(default, worker_memory(cfg.scaling, False))

    def mean(key: str, streamed: bool) -> float:
        vals = [r[key] for r in runs if r["streamed"] == streamed]
        return sum(vals) / len(vals)

    stream_ips, memory_ips = mean("train_images_per_s", True), mean("train_images_per_s", False)
    reader = reader_cpu_per_image(prepared)
    return {
        "images": n, "workers": workers, "train_images": prepared.cached_rows("train"), "runs": runs,
        "default_in_memory_limit_gib": round(limit / 1024**3, 2),
        "streamed_over_in_memory_img_s": round(stream_ips / memory_ips, 3),
        "per_pair_ratio": [round(s["train_images_per_s"] / m["train_images_per_s"], 3) for s, m in zip(
            [r for r in runs if r["streamed"]], [r for r in runs if not r["streamed"]], strict=True)],
        "streamed_peak_total_gib": max(r["peak_memory_total_gib"] for r in runs if r["streamed"]),
        "in_memory_peak_total_gib": max(r["peak_memory_total_gib"] for r in runs if not r["streamed"]),
        "reader": reader,
        # The reader's CPU at the pace each worker trains (the workers share the epoch's images).
        "reader_core_fraction_at_trainer_pace": round(reader["cpu_ms_per_image"] * stream_ips / workers / 1000, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 20_000, 40_000])
    ap.add_argument("--ratio-size", type=int, default=4000, help="images of the streamed/in-memory comparison (0: skip)")
    ap.add_argument("--pairs", type=int, default=2, help="alternated streamed/in-memory pairs")
    ap.add_argument("--ratio-workers", type=int, nargs="+", default=[1, 2],
                    help="worker counts of the comparison: 1 leaves a core to the S3 server, 2 trains on both")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--tag", default="", help="suffix of the results file: scale<tag>.json")
    ap.add_argument("--capacity-only", action="store_true",
                    help="recompute the capacity note of benchmarks/results/scale<tag>.json from its measurements")
    args = ap.parse_args()
    if args.capacity_only:
        path = Path(__file__).resolve().parent / "results" / f"scale{args.tag}.json"
        r = json.loads(path.read_text())
        r["capacity"] = capacity(r.get("ratio") or [])
        path.write_text(json.dumps(r, indent=2) + "\n")
        print(json.dumps(r["capacity"], indent=2))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="medxfer-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = _loadavg()
    moto, _ = start_s3(work)
    results: dict = {"ratio": [], "sizes": []}
    try:
        from medxfer import storage

        bucket = "medxfer-scale"
        storage.s3_client().create_bucket(Bucket=bucket)
        ray, cluster, nodes, head_extra = start_cluster()
        try:
            for w in (args.ratio_workers if args.ratio_size else []):
                results["ratio"].append(run_ratio(args.ratio_size, args.pairs, w, nodes, head_extra, bucket))
                print(json.dumps(results["ratio"][-1]), flush=True)
            for n in sorted(args.sizes):
                results["sizes"].append(run_size(n, nodes, head_extra, bucket))
                print(json.dumps(results["sizes"][-1]), flush=True)
                (work / "partial.json").write_text(json.dumps(results, indent=2))
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        moto.terminate()
        moto.wait(30)
    record(f"scale{args.tag}", {
        "what": f"phantom PNGs at {SIZE} px on moto S3 (loopback); preprocess and one streamed epoch of ResNet-18 "
                f"(backbone frozen, batch {BATCH}) on two Ray nodes of 1 CPU each (ray.cluster_utils.Cluster)",
        "loadavg_before": load_before, "loadavg_after": _loadavg(),
        "note": "the machine's 2 cores were shared with other engineers' work during the run (see loadavg)",
        **results, "summary": summarize(results["sizes"]), "capacity": capacity(results["ratio"]),
    }, work)


#: What the capacity note assumes, beyond what this benchmark and benchmark 1 measured.
ASSUMPTIONS = {
    "sources": {"CheXpert": 224_316, "MIMIC-CXR": 377_110},  # images (frontal and lateral), full resolution
    "train_fraction": 0.8,
    "full_resolution_megapixels": 7.5,  # ~2,500 x 3,000 px JPEG/DICOM; decode cost taken proportional to pixels
    "benchmark1_megapixels": 1.05,  # benchmark 1's 1024 x 1024 PNGs (+ CLAHE, letterbox 224)
    "gpu_train_images_per_s": 1500,  # ResNet-18, 224 px, one current data-centre GPU with AMP: NOT measured here
    "cpus_per_preprocess_node": 16,
    "epochs_per_night": 5,  # a nightly fine-tune; the whole cache is rebuilt (a grown manifest is a new key)
    "window_hours": 6,
}


def capacity(ratios: list[dict], assume: dict = ASSUMPTIONS) -> dict:
    """Hours for the real sources from the measured per-image costs and :data:`ASSUMPTIONS`; the smallest
    cluster (preprocessing nodes, GPUs) whose preprocess + epochs fit the nightly window."""
    bench1 = json.loads((Path(__file__).resolve().parent / "results" / "preprocess_throughput_2400.json").read_text())
    ms_cpu_1mp = 1000 / bench1["ray_data"]["1"]["pipeline_images_per_s"]  # measured: per image per CPU
    ms_cpu = ms_cpu_1mp * assume["full_resolution_megapixels"] / assume["benchmark1_megapixels"]
    reader_ms = max((r["reader"]["cpu_ms_per_image"] for r in ratios), default=None)
    gpu_rate = assume["gpu_train_images_per_s"]
    out: dict = {"assumptions": assume, "preprocess_ms_per_image_per_cpu_1mp_measured": round(ms_cpu_1mp, 1),
                 "preprocess_ms_per_image_per_cpu_full_resolution": round(ms_cpu, 1), "sources": {}}
    for name, n in assume["sources"].items():
        pre_cpu_h = n * ms_cpu / 1000 / 3600
        train = n * assume["train_fraction"]
        pre = {k: round(pre_cpu_h / (k * assume["cpus_per_preprocess_node"]), 2) for k in (1, 2, 4, 8)}
        epoch = {g: round(train / (g * gpu_rate) / 3600, 2) for g in (1, 2, 4, 8)}
        fits = sorted(((k, g) for k in pre for g in epoch
                       if pre[k] + assume["epochs_per_night"] * epoch[g] <= assume["window_hours"]),
                      key=lambda kg: (kg[0] * assume["cpus_per_preprocess_node"] / 8 + kg[1], kg))
        out["sources"][name] = {
            "images": n, "preprocess_cpu_hours": round(pre_cpu_h, 1), "preprocess_hours_on_nodes": pre,
            "epoch_hours_on_gpus": epoch, "smallest_fit_nodes_gpus": fits[0] if fits else None,
            # At the GPU's pace a worker's reader needs this much of a core (its CPU per image, measured here).
            "reader_cores_per_gpu_worker": round(gpu_rate * reader_ms / 1000, 2) if reader_ms else None,
        }
    return out


def summarize(sizes: list[dict]) -> list[dict]:
    """Per-image costs at each N: linear growth keeps them flat."""
    return [{"images": r["images"],
             "preprocess_ms_per_image": round(1000 * r["preprocess"]["seconds"] / r["images"], 2),
             "epoch_ms_per_train_image": round(1000 * r["streamed_epoch"]["epoch_seconds"] / r["counts"]["train"], 2),
             "peak_memory_total_gib": r["streamed_epoch"]["peak_memory_total_gib"]} for r in sizes]


if __name__ == "__main__":
    # The benchmark's own numbers are its output; Ray's logs stay out of it.
    sys.exit(main())
