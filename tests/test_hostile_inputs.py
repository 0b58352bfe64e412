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
from pathlib import Path

import hostile
import pandas as pd
import pytest
import yaml
from evalutil import tiny_bundle
from memtree import run_measured

from medxfer.data.decode.sandbox import CRASH_MARKER_ENV

CRASH = "ZZ-DECODER-CRASH-7731"
MIB = 1 << 20
LIMITS = {"max_pixels": 2_097_152, "max_image_bytes": 64 * MIB, "max_decode_bytes": 512 * MIB, "decode_timeout_s": 8}
# Peak memory of the whole process tree, page cache included. The in-process engines: the command
# (~0.5 GB with torch for predict), the decode workers' fork server, two workers of at most
# max_decode_bytes over their start size each. With Ray: a local Ray (GCS, raylet, dashboard agent,
# several worker processes, the object store) around the same decode workers.
LOCAL_BUDGET = 2560 * MIB
RAY_BUDGET = 5120 * MIB
OVER = "above the limit of 2,097,152; refused from its header"
BUDGET = "exceeds the decode memory budget of 536,870,912 bytes (data.max_decode_bytes)"


def _corpus(test_data) -> tuple[dict[str, bytes | None], dict[str, str | None]]:
    """name -> bytes (None: made on disk), and name -> the reason expected (None: a good file)."""
    files: dict[str, bytes | None] = {}
    want: dict[str, str | None] = {}

    def add(name, data, reason=None):
        files[name], want[name] = data, reason

    for fmt in ("png", "jpeg", "jpeg2000", "webp", "bmp", "pnm", "gif", "tiff"):
        # Formats whose suffix import and predict do not list go without one, as PACS exports do: the
        # decoder tells formats by their bytes.
        ext = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}.get(fmt, "")
        add(f"near_{fmt}{ext}", hostile.raster(fmt, hostile.gradient(1400, 1400, colour=fmt in ("png", "webp"))))
        add(f"over_{fmt}{ext}", hostile.raster(fmt, hostile.gradient(1500, 1500)), OVER)
    for rel in ("cxr/nih_00000001_000_cardiomegaly.png", "cxr/tbx11k_tb_tb0005.png", "cxr/siim_monochrome1.dcm",
                "dicom/CT_small.dcm", "dicom/examples_palette.dcm", "dicom/examples_rgb_color.dcm"):
        add(Path(rel).name, (test_data / "images" / rel).read_bytes())
    add("frame_ok.dcm", hostile.jpeg_frame_dicom())
    add("frame_j2k_ok.dcm", hostile.j2k_frame_dicom())
    add("palette_segmented_ok.dcm", hostile.palette_dicom(hostile.segmented_lut(7)))
    add("frame_jpeg_20000.dcm", hostile.jpeg_frame_dicom((20000, 20000)), "compressed frame declares 20000x20000")
    add("frame_j2k_20000.dcm", hostile.j2k_frame_dicom((20000, 20000)), "compressed frame declares 20000x20000")
    add("palette_segmented_bomb.dcm", hostile.palette_dicom(hostile.segmented_lut(25)),
        "segmented red palette lookup table would expand past 65,536 entries")
    add("palette_long_lut.dcm", hostile.palette_dicom(lut_bytes=100_000), "palette lookup table holds 100,000 bytes")
    add("deflate_memory_bomb.dcm", hostile.deflate_bomb_dicom(1 << 30), BUDGET)
    add("deflate_time_bomb.dcm", hostile.deflate_bomb_dicom(128 * MIB),
        "took longer than data.decode_timeout_s (8 s) to decode")
    add("tiff_huge_tile.tif", hostile.tiff_one_tile(64, 64, 16000), "TIFF tiles of 16000x16000")
    add("tiff_bogus_strips.tif", hostile.tiff_bogus_strips(), "corrupt or truncated TIFF file")
    add("sparse_8gib.png", None, "file is 8,589,934,592 bytes, above the limit of 67,108,864; not read")
    add("crash.png", b"\x89PNG\r\n\x1a\n" + CRASH.encode(), "the decoder crashed (SIGSEGV) while decoding it, twice")
    planted_reasons = {"frames.dcm": "NumberOfFrames is not a whole number", "rows.dcm": "Rows is not a whole number",
                       "slope.dcm": "value and display transforms", "intercept.dcm": "value and display transforms",
                       "bits.dcm": "could not decode DICOM pixel data", "photometric.dcm": "could not decode DICOM",
                       "syntax.dcm": "DICOM transfer syntax is not one pydicom knows"}
    for name, data in hostile.planted_dicoms(test_data).items():
        add(f"planted_{name}", data, planted_reasons.get(name))
    return files, want


# The Ray runs take a part of it: each kind of failure a worker process can meet (its decoder crashing,
# its memory and time budgets, a refused header, an unread file, a planted value) and a few good files.
# Every format has been through the same decode workers in the in-process runs.
RAY_PART = ("nih_00000001_000_cardiomegaly.png", "CT_small.dcm", "frame_ok.dcm", "near_png.png", "crash.png",
            "deflate_memory_bomb.dcm", "deflate_time_bomb.dcm", "frame_jpeg_20000.dcm", "palette_segmented_bomb.dcm",
            "sparse_8gib.png", "planted_syntax.dcm", "planted_frames.dcm")


def _imported(test_data, base: Path, names=None):
    """The corpus (or the ``names`` of it) as a folder of two classes, imported with ``medxfer import
    folder``; the folders and the expectations."""
    files, want = _corpus(test_data)
    if names is not None:
        files, want = {n: files[n] for n in names}, {n: want[n] for n in names}
    folder = base / "images"
    for i, (name, data) in enumerate(sorted(files.items())):
        target = folder / ("normal" if i % 2 else "abnormal") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            hostile.sparse(target, 8 << 30)
        else:
            target.write_bytes(data)
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


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[CRASH_MARKER_ENV] = CRASH
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
