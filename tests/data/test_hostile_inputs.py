"""A generated hostile corpus through the commands a user runs: ``medxfer import folder`` ->
``preprocess`` and ``medxfer predict``, with the in-process engines and with Ray.

Each hostile file costs a decoder far more than its size or lies about itself: compressed DICOM
frames larger than their header, palette LUTs (a segmented one that expands without end, one longer
than its descriptor), a deflated DICOM that inflates past the memory budget and one whose parsing
outlasts the time budget, a TIFF with one huge tile and one with impossible strips, every raster
format just over the pixel limit, a sparse 8 GiB file named .png, a file that crashes its decoder
(the test hook), DICOMs with patient-looking text in the elements a message could quote. Beside
them, good files: every raster format just under the limit and real X-rays and DICOMs.

Asserted for each run: every good file is processed, every hostile file is exactly one bad row
with its reason, the command ends within a generous time, no planted text reaches any output, and
the peak memory of the command's whole process tree (Ray's processes included: a memory cgroup,
see tests/memtree.py) stays under the stated budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hostile
import pandas as pd
import pytest
import yaml
from evalutil import tiny_bundle
from hostile import CRASH, LIMITS, MIB, OVER
from memtree import run_measured

from medxfer.data.decode.sandbox import CRASH_MARKER_ENV

# Peak memory of the whole process tree, page cache included. The in-process engines: the command
# (~0.5 GB with torch for predict), the decode workers' fork server, two workers of at most
# max_decode_bytes over their start size each. With Ray: a local Ray (GCS, raylet, dashboard agent,
# several worker processes, the object store) around the same decode workers.
LOCAL_BUDGET = 2560 * MIB
RAY_BUDGET = 5120 * MIB


# The Ray runs take a part of it: each kind of failure a worker process can meet (its decoder crashing,
# its memory and time budgets, a refused header, an unread file, a planted value) and a few good files.
# Every format has been through the same decode workers in the in-process runs.
RAY_PART = ("nih_00000001_000_cardiomegaly.png", "CT_small.dcm", "frame_ok.dcm", "near_png.png", "crash.png",
            "deflate_memory_bomb.dcm", "deflate_time_bomb.dcm", "frame_jpeg_20000.dcm", "palette_segmented_bomb.dcm",
            "sparse_8gib.png", "planted_syntax.dcm", "planted_frames.dcm")


def _imported(test_data, base: Path, names=None):
    """The corpus (or the ``names`` of it) as a folder of two classes, imported with ``medxfer import
    folder``; the folders and the expectations."""
    files, want = hostile.corpus(test_data)
    if names is not None:
        files, want = {n: files[n] for n in names}, {n: want[n] for n in names}
    folder = base / "images"
    hostile.write_corpus(folder, files)
    r = _cli(["import", "folder", "--root", str(folder), "--out", str(base / "dataset"), "--split-fractions",
              "0.6,0.2,0.2"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return base, folder, want


@pytest.fixture(scope="module")
def corpus(test_data, tmp_path_factory):
    return _imported(test_data, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def ray_corpus(test_data, tmp_path_factory):
    return _imported(test_data, tmp_path_factory.mktemp("hostile-ray"), RAY_PART)


@pytest.fixture(scope="module", autouse=True)
def _own_ray_folder():
    """Ray's temp folder for the commands here: without it, ``ray.init()`` joins any cluster someone
    started on this host with ``ray start`` (/tmp/ray/ray_current_cluster), whose memory is not ours."""
    folder = tempfile.mkdtemp(prefix="mxr-", dir="/tmp")  # short: Ray's sockets live below it
    _RAY_TMP.append(folder)
    yield
    _RAY_TMP.remove(folder)
    shutil.rmtree(folder, ignore_errors=True)


_RAY_TMP: list[str] = []


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[CRASH_MARKER_ENV] = CRASH
    if _RAY_TMP:
        env["RAY_TMPDIR"] = _RAY_TMP[-1]
    return env


def _cli(args: list[str], timeout: float = 600):
    medxfer = shutil.which("medxfer", path=str(Path(sys.executable).parent)) or "medxfer"
    return subprocess.run([medxfer, *args], capture_output=True, text=True, timeout=timeout, env=_env())


def _measured(args: list[str], timeout: float, cwd: Path):
    medxfer = shutil.which("medxfer", path=str(Path(sys.executable).parent)) or "medxfer"
    return run_measured([medxfer, *args], env=_env(), timeout=timeout, cwd=cwd)


def _no_planted_text(where: Path, *texts: str) -> None:
    for variant in (hostile.PLANTED, "55501234", "DOE^JANE", "DOEJANE"):
        for t in texts:
            assert variant not in t, variant
        hits = [str(f) for f in where.rglob("*") if f.is_file() and variant.encode() in f.read_bytes()]
        assert not hits, (variant, hits)


def _check_rows(reasons: dict[str, str], want: dict[str, str | None]) -> None:
    """``reasons``: file name -> the bad-file reason ('' for a good file); one entry per file."""
    assert set(reasons) == set(want)
    for name, expected in want.items():
        if expected is None:
            assert reasons[name] == "", (name, reasons[name])
        else:
            assert expected in reasons[name], (name, reasons[name])


def _preprocess(corpus, engine: str, budget: int, timeout: float, tmp_path: Path) -> None:
    base, _, want = corpus
    root = tmp_path / "store"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "data": {"manifest": str(base / "dataset" / "manifest.csv"), "max_bad_fraction": 1.0, "engine": engine,
                 **LIMITS},
        "preprocess": {"size": 32, "channels": 3}, "storage": {"root": str(root)}}))
    m = _measured(["preprocess", "--config", str(job)], timeout=timeout, cwd=tmp_path)
    out = m.stdout + m.stderr
    assert m.returncode == 0, out[-4000:]
    bad = sum(r is not None for r in want.values())
    assert f"preprocessed {len(want)} images" in m.stdout and f"{bad} bad file(s) skipped" in m.stdout, out[-3000:]
    card = json.loads(next(root.glob("cache/*/dataset.json")).read_text())
    listed = {Path(f["path"]).name: f["reason"] for f in card["bad_files"]["files"]}
    _check_rows({name: listed.get(name, "") for name in want}, want)
    assert card["total"] == len(want) - bad
    _no_planted_text(tmp_path, out)
    assert m.peak_bytes < budget, f"peak {m.peak_bytes / MIB:.0f} MiB ({m.method}) over {budget / MIB:.0f} MiB"
    print(f"preprocess, {engine} engine: {m.seconds:.0f} s, peak {m.peak_bytes / MIB:.0f} MiB ({m.method})")


def _predict(corpus, engine: str, budget: int, timeout: float, tmp_path: Path) -> None:
    _, folder, want = corpus
    bundle = tmp_path / "bundle"
    tiny_bundle(str(bundle), classes=("normal", "abnormal"), size=32)
    out_dir = tmp_path / "pred"
    m = _measured(["predict", "--bundle", str(bundle), "--input", str(folder), "--output", str(out_dir),
                   "--engine", engine, "--max-decode-bytes", str(LIMITS["max_decode_bytes"]),
                   "--decode-timeout-s", str(LIMITS["decode_timeout_s"])], timeout=timeout, cwd=tmp_path)
    out = m.stdout + m.stderr
    assert m.returncode == 0, out[-4000:]
    df = pd.read_parquet(out_dir / "predictions.parquet")
    assert len(df) == len(want) and df["path"].is_unique
    reasons = {Path(p).name: e for p, e in zip(df["path"], df["error"], strict=True)}
    # predict reads the pixel and byte limits from DataConfig's defaults: the files just over 2 Mpx are
    # images to it, and the sparse file is over its 256 MiB default too
    predict_want = {n: (None if r == OVER else r.replace("67,108,864", "268,435,456") if r else r)
                    for n, r in want.items()}
    _check_rows(reasons, predict_want)
    good = df[df["error"] == ""]
    assert good["prob_abnormal"].notna().all() and df[df["error"] != ""]["prob_abnormal"].isna().all()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["engine"] == engine and summary["n_errors"] == sum(r is not None for r in predict_want.values())
    assert f"predicted {len(good)} of {len(want)} images" in m.stdout
    for noise in ("core_worker", "raylet", "(MapWorker", "ray.data", "Traceback"):
        assert noise not in out, (noise, out[-3000:])
    _no_planted_text(tmp_path, out)
    assert m.peak_bytes < budget, f"peak {m.peak_bytes / MIB:.0f} MiB ({m.method}) over {budget / MIB:.0f} MiB"
    print(f"predict, {engine} engine: {m.seconds:.0f} s, peak {m.peak_bytes / MIB:.0f} MiB ({m.method})")


@pytest.mark.slow
def test_hostile_corpus_through_preprocess_in_process(corpus, tmp_path):
    _preprocess(corpus, "local", LOCAL_BUDGET, 300, tmp_path)


@pytest.mark.slow
def test_hostile_corpus_through_predict_in_process(corpus, tmp_path):
    _predict(corpus, "local", LOCAL_BUDGET, 300, tmp_path)


@pytest.mark.slow
@pytest.mark.ray
def test_hostile_files_through_preprocess_with_ray(ray_corpus, tmp_path):
    _preprocess(ray_corpus, "ray", RAY_BUDGET, 600, tmp_path)


@pytest.mark.slow
@pytest.mark.ray
def test_hostile_files_through_predict_with_ray(ray_corpus, tmp_path):
    _predict(ray_corpus, "ray", RAY_BUDGET, 600, tmp_path)
