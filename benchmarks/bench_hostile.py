"""Benchmark 9: peak memory of ``medxfer preprocess`` on a hostile corpus against a clean corpus of the same count.

The hostile corpus is the tests' (``tests/hostile.py``, :func:`corpus`): compressed DICOM frames
larger than their header, palette LUTs that expand without end, deflated DICOMs that inflate past
the memory budget or parse past the time budget, a TIFF with one huge tile, every raster format
just over and just under the pixel limit, a sparse 8 GiB file named .png, a file that crashes its
decoder (the decode workers' test hook), DICOMs with planted patient text, and good X-rays. The
clean corpus holds only its good files, copied under new names until the count is the same.

Each corpus goes through ``medxfer import folder`` and then ``medxfer preprocess`` (a fresh command;
with ``data.engine: ray`` it starts its own local Ray) inside a memory cgroup (``tests/memtree.py``):
the peak of the whole process tree, Ray's processes, the decode workers and the page cache of the
files read and written included. Limits as in the tests (``hostile.LIMITS``: 2 Mpx, 64 MiB per
file, a decode budget of 512 MiB and 8 s). Rounds interleave clean and hostile runs per engine;
reported: the highest peak, the median wall time, and hostile / clean ratios.

    .venv/bin/python benchmarks/bench_hostile.py [--repeats 2] [--engines local ray]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile  # noqa: E402
from memtree import run_measured  # noqa: E402

from benchmarks.common import own_ray_env, record, test_data_dir  # noqa: E402
from medxfer.data.decode.sandbox import CRASH_MARKER_ENV  # noqa: E402

MIB = hostile.MIB


def corpora(work: Path) -> dict[str, tuple[Path, int, int]]:
    """``{"clean"|"hostile": (manifest, files, bad files expected)}``, imported with ``medxfer import folder``."""
    files, want = hostile.corpus(test_data_dir())
    good = [n for n, r in want.items() if r is None]
    clean = {}
    for i in range(len(files)):
        name = good[i % len(good)]
        stem, dot, ext = name.rpartition(".")
        clean[f"{stem}_{i}.{ext}" if dot else f"{name}_{i}"] = files[name]
    out = {}
    for kind, chosen, bad in (("clean", clean, 0), ("hostile", files, sum(r is not None for r in want.values()))):
        folder = work / kind / "images"
        hostile.write_corpus(folder, chosen)
        r = _medxfer(["import", "folder", "--root", str(folder), "--out", str(work / kind / "dataset"),
                      "--split-fractions", "0.6,0.2,0.2"], work, timeout=600)
        if r.returncode:
            raise SystemExit(f"import folder failed:\n{r.stderr[-3000:]}")
        out[kind] = (work / kind / "dataset" / "manifest.csv", len(chosen), bad)
    return out


def _medxfer(args: list[str], cwd: Path, timeout: float):
    exe = shutil.which("medxfer", path=str(Path(sys.executable).parent)) or "medxfer"
    env = own_ray_env(cwd / "ray")  # under the run's temp folder: a short path
    env[CRASH_MARKER_ENV] = hostile.CRASH
    return run_measured([exe, *args], env=env, timeout=timeout, cwd=cwd)


def preprocess(manifest: Path, engine: str, root: Path) -> dict:
    job = root.parent / f"{root.name}.yaml"
    job.write_text(yaml.safe_dump({
        "data": {"manifest": str(manifest), "max_bad_fraction": 1.0, "engine": engine, **hostile.LIMITS},
        "preprocess": {"size": 64, "channels": 3}, "storage": {"root": str(root)}}))
    m = _medxfer(["preprocess", "--config", str(job)], root.parent, timeout=1200)
    if m.returncode:
        raise SystemExit(f"preprocess failed:\n{(m.stdout + m.stderr)[-3000:]}")
    line = next(ln for ln in m.stdout.splitlines() if ln.startswith("preprocessed"))
    head, _, tail = line.partition(" -> ")
    return {"peak_mib": round(m.peak_bytes / MIB), "seconds": round(m.seconds, 1), "method": m.method,
            "printed": f"{head} -> <root>/cache/<key> {tail.split(' ', 1)[1]}"}  # the CLI's line, its paths left out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    args = ap.parse_args()
    runs: dict[str, dict[str, list[dict]]] = {e: {"clean": [], "hostile": []} for e in args.engines}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = corpora(work)
        for i in range(args.repeats):
            for engine in args.engines:
                for kind in ("clean", "hostile"):
                    r = preprocess(sets[kind][0], engine, work / f"root-{engine}-{kind}-{i}")
                    runs[engine][kind].append(r)
                    print(f"round {i + 1}/{args.repeats} {engine} {kind}: {r}", flush=True)
    engines = {}
    for engine, by_kind in runs.items():
        summary = {kind: {"peak_mib": max(r["peak_mib"] for r in rs),
                          "seconds": statistics.median(r["seconds"] for r in rs)} for kind, rs in by_kind.items()}
        summary["peak_ratio"] = round(summary["hostile"]["peak_mib"] / summary["clean"]["peak_mib"], 2)
        summary["seconds_ratio"] = round(summary["hostile"]["seconds"] / summary["clean"]["seconds"], 2)
        summary["rounds"] = by_kind
        engines[engine] = summary
    files, bad = sets["hostile"][1], sets["hostile"][2]
    record("hostile_memory", {
        "what": f"medxfer preprocess of {files} files ({bad} hostile: tests/hostile.py corpus) vs {files} clean files, "
                f"64 px, 3 channels; data.max_pixels {hostile.LIMITS['max_pixels']:,}, max_image_bytes "
                f"{hostile.LIMITS['max_image_bytes'] // MIB} MiB, max_decode_bytes "
                f"{hostile.LIMITS['max_decode_bytes'] // MIB} MiB, decode_timeout_s {hostile.LIMITS['decode_timeout_s']}",
        "files": files,
        "hostile_files": bad,
        "limits": hostile.LIMITS,
        "engines": engines,
        "notes": "peak: memory.max_usage_in_bytes of a cgroup v1 memory group holding the command and every process "
                 "it started (page cache included), the highest over rounds; seconds: wall time of the command "
                 "(Ray's start-up included for the ray engine), the median over rounds. The hostile run's time "
                 "includes the 8 s the time-budget file takes before it is stopped.",
    })


if __name__ == "__main__":
    main()
