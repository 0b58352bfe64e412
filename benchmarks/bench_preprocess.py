"""Benchmark 1: preprocessing throughput of medxfer's Ray Data pipeline vs a plain OpenCV loop.

Full-size inputs: 1024x1024 8-bit PNG chest X-rays made from the real images in
``$MEDXFER_TEST_DATA/images/cxr`` (resized, flipped and shifted so files differ). The spec is
the one a CXR job uses: decode, CLAHE, letterbox to 224, normalise.

Baseline (same run): a fresh Python process reading each file and calling the same pure function,
``medxfer.data.preprocess.preprocess_bytes``, with glibc's allocator defaults, as a person's
script runs; then the same loop with the allocator setting medxfer's processes run with
(``medxfer.runtime.allocator``), to show how much of the pipeline's lead is that setting rather than
parallelism. Then ``medxfer.data.cache.prepare`` (the real Ray Data pipeline, writing the Parquet
cache) on a local Ray limited to 1, then N CPUs, each on a cold cache, and the in-process engine.

This machine's speed drifts by 10-20 % over minutes, so one of each, minutes apart, does not make
a ratio. Every pipeline runs ``--repeats`` times, interleaved (baseline, tuned baseline, Ray Data
1 CPU, Ray Data N CPUs, local engine; then again), and each ratio is the median of the
per-round ratios to that round's baseline. Reported: median images/s, those ratios, every
round's numbers, and scaling from 1 to N CPUs.

    .venv/bin/python benchmarks/bench_preprocess.py [--images 600] [--repeats 3]

``--against REV`` measures instead what the code of this checkout costs against another revision's
(the decode workers' cost against main's in-process decoding, for one): both engines of each, every
run a fresh process running ``prepare`` on a cold cache after a warm-up, REV's ``medxfer`` package
exported with ``git archive`` and put first on ``PYTHONPATH``; interleaved rounds, each ratio
this checkout / REV within its round, the median reported. ``--image-size``, ``--size`` and
``--no-clahe`` make the small-image variant, where a fixed cost per image shows most:

    .venv/bin/python benchmarks/bench_preprocess.py --against ea66ad2 --images 600 --repeats 3
    .venv/bin/python benchmarks/bench_preprocess.py --against ea66ad2 --images 3000 --image-size 64 \
        --size 28 --no-clahe --repeats 3 --tag _small
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
from benchmarks.common import own_ray_env, record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402
from medxfer.runtime.allocator import glibc_tunables, tune_this_process  # noqa: E402


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


SPEC = {"channels": 1, "size": 224, "clahe": True}  # --size and --no-clahe change it


def job(folder: Path, root: Path, manifest: Path | None = None, engine: str = "ray") -> JobConfig:
    return JobConfig.model_validate({
        "name": "bench-preprocess",
        "data": {"manifest": str(manifest or folder / "manifest.csv"), "engine": engine},
        "preprocess": SPEC,
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
    spec = ["--size", str(SPEC["size"])] + ([] if SPEC["clahe"] else ["--no-clahe"])
    out = subprocess.run([sys.executable, __file__, "--loop", str(folder), *spec], env=env, check=True,
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
        n = prepared.total_rows
        return n / prepared.decode_seconds, n / wall
    finally:
        ray.shutdown()


# One run of prepare() in a fresh process, importing whichever medxfer PYTHONPATH puts first: the warm-up
# manifest (other key) starts Ray's workers and the decode workers, then the timed run on a cold cache.
_PIPELINE = """
import json, sys, time
import pandas as pd
args = json.loads(sys.argv[1])
from medxfer.runtime.allocator import tune_this_process
tune_this_process()
from medxfer.config import JobConfig
from medxfer.data.cache import prepare
import medxfer
def job(manifest, root):
    return JobConfig.model_validate({"name": "bench-preprocess", "data": {"manifest": manifest, "engine": args["engine"]},
                                     "preprocess": args["spec"], "storage": {"root": root}})
if args["engine"] == "ray":
    from medxfer.runtime import init_ray
    init_ray(num_cpus=args["cpus"])
prepare(job(args["warmup"], args["root"]))
usage = args["cpuacct"] and (lambda: int(open(args["cpuacct"] + "/cpuacct.usage").read()) / 1e9)
c0 = usage() if usage else 0.0
t0 = time.perf_counter()
p = prepare(job(args["manifest"], args["root"]))
wall = time.perf_counter() - t0
cpu = usage() - c0 if usage else None
assert not p.hit
n = p.card["total"]  # the card by key, not PreparedData's accessors: this runs on older medxfer revisions too
print(json.dumps({"pipeline": n / p.card["timing"]["decode_seconds"], "end_to_end": n / wall,
                  "cpu_ms_per_image": cpu * 1000 / n if cpu is not None else None, "code": medxfer.__file__}))
"""

CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def fresh_pipeline(folder: Path, root: Path, engine: str, cpus: int, code: Path | None) -> tuple[float, float, float]:
    """:data:`_PIPELINE` in a fresh process: this checkout's medxfer, or ``code``'s (a folder holding one).
    ``(pipeline images/s, end-to-end images/s, CPU ms per image or nan)``: the CPU time of the whole
    process tree (decode workers, Ray's processes) during the timed run, from a cpuacct cgroup of its own
    where the machine lets one be made. Other jobs on the machine slow a run's wall time, not its CPU time."""
    import json
    import uuid

    warm = folder / "warmup.csv"
    if not warm.exists():
        pd.read_csv(folder / "manifest.csv").head(32 * cpus).to_csv(warm, index=False)
    env = own_ray_env(root.parent / "ray")  # the run's temp folder: a short path
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), *filter(None, [env.get("PYTHONPATH")])])
    group = CPUACCT / f"medxfer-bench-{uuid.uuid4().hex[:10]}" if os.access(CPUACCT, os.W_OK) else None
    spec = {"manifest": str(folder / "manifest.csv"), "warmup": str(warm), "root": str(root), "engine": engine,
            "cpus": cpus, "spec": SPEC, "cpuacct": str(group) if group else None}
    cmd = [sys.executable, "-c", _PIPELINE, json.dumps(spec)]
    if group:
        group.mkdir()
        cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=folder)
    finally:
        if group:
            _remove_cgroup(group)
    if r.returncode:
        raise SystemExit(f"prepare failed ({code or 'this checkout'}, {engine}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    want = str(code) if code is not None else str(Path(__file__).resolve().parents[1])
    assert out["code"].startswith(want), (out["code"], want)  # the code meant, not the other
    return out["pipeline"], out["end_to_end"], out["cpu_ms_per_image"] or float("nan")


def _remove_cgroup(group: Path) -> None:
    """Once the run's processes are gone (Ray's stop a moment after the driver)."""
    for _ in range(300):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def export(rev: str, into: Path) -> Path:
    """``rev``'s medxfer package, exported with git archive into ``into``; the folder holding it."""
    repo = Path(__file__).resolve().parents[1]
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "medxfer"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def against(args) -> None:
    """This checkout's preprocessing against ``args.against``'s, side by side in the same rounds."""
    cpus = os.cpu_count() or 1
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        make_images(folder, args.images, args.image_size)
        ref = export(args.against, Path(tmp) / "ref")
        for i in range(args.repeats):
            r = {}
            for engine in ("local", "ray"):
                for side, code in (("ref", ref), ("this", None)):
                    r[f"{engine}_{side}"], r[f"{engine}_{side}_end_to_end"], r[f"{engine}_{side}_cpu_ms"] = (
                        round(x, 3) for x in fresh_pipeline(folder, Path(tmp) / f"root-{engine}-{side}-{i}", engine,
                                                            cpus, code))
                r[f"{engine}_ratio"] = round(r[f"{engine}_this"] / r[f"{engine}_ref"], 3)
                r[f"{engine}_cpu_ratio"] = round(r[f"{engine}_this_cpu_ms"] / r[f"{engine}_ref_cpu_ms"], 3)
            rounds.append(r)
            print(f"round {i + 1}/{args.repeats}: {r}", flush=True)
    rev = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", args.against],
                         capture_output=True, text=True).stdout.strip() or args.against
    record(f"preprocess_against{args.tag}", {
        "what": f"{args.images} PNG {args.image_size}x{args.image_size} gray -> "
                + ("CLAHE -> " if SPEC["clahe"] else "") + f"letterbox {SPEC['size']} -> normalise -> Parquet cache; "
                f"this checkout against {rev}, median of {args.repeats} interleaved rounds",
        "against": rev,
        "engines": {e: {"ref_images_per_s": _median(rounds, f"{e}_ref"), "images_per_s": _median(rounds, f"{e}_this"),
                        "ratio": round(statistics.median(r[f"{e}_ratio"] for r in rounds), 3),
                        "ref_cpu_ms_per_image": _median(rounds, f"{e}_ref_cpu_ms", 3),
                        "cpu_ms_per_image": _median(rounds, f"{e}_this_cpu_ms", 3),
                        "cpu_ratio": round(statistics.median(r[f"{e}_cpu_ratio"] for r in rounds), 3),
                        "cpus": cpus} for e in ("local", "ray")},
        "rounds": rounds,
        "notes": "images/s of the pipeline stage (decode_seconds of the card) after a warm-up run in the same process; "
                 "ratio: this checkout / the other revision within each round, median over rounds. cpu_ms_per_image: "
                 "CPU time of the run's whole process tree (its own cpuacct cgroup) during the timed prepare(), per "
                 "image; cpu_ratio: this checkout's / the other revision's (above 1: this code uses more). Every run "
                 "is a fresh process, both sides alike.",
    })


def _median(rounds: list[dict], key: str, digits: int = 2) -> float:
    return round(statistics.median(r[key] for r in rounds), digits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3, help="Interleaved rounds of every pipeline (medians reported).")
    ap.add_argument("--tag", default="", help="Suffix of the result file (e.g. _2400: preprocess_throughput_2400.json).")
    ap.add_argument("--loop", type=Path, help=argparse.SUPPRESS)  # internal: one baseline loop, in a fresh process
    ap.add_argument("--against", metavar="REV", help="Compare this checkout with REV's code instead (see the top).")
    ap.add_argument("--image-size", type=int, default=1024, help="Side of the generated PNGs.")
    ap.add_argument("--size", type=int, default=224, help="preprocess.size.")
    ap.add_argument("--no-clahe", action="store_true", help="preprocess.clahe: false.")
    args = ap.parse_args()
    SPEC.update(size=args.size, clahe=not args.no_clahe)
    if args.loop:
        print(loop(args.loop))
        return
    if args.against:
        against(args)
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
        make_images(folder, args.images, args.image_size)
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
        "what": f"{args.images} PNG {args.image_size}x{args.image_size} gray -> " + ("CLAHE -> " if SPEC["clahe"] else "")
                + f"letterbox {SPEC['size']} -> normalise -> Parquet cache; median of {args.repeats} interleaved rounds",
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
