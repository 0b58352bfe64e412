"""Importers (``medxfer.data.importers``): MedMNIST arrays to PNGs + manifest, locally and on S3; class
folders to a manifest, without links leading out of the root."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pandas as pd
import pytest

from medxfer import storage
from medxfer.cli import main
from medxfer.config import PreprocessConfig
from medxfer.data.importers import import_medmnist


def _decode_png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def test_import_breastmnist_to_local_folder(test_data, tmp_path, capsys):
    npz = test_data / "medmnist" / "breastmnist.npz"
    out = tmp_path / "breast"
    assert main(["import", "medmnist", "--npz", str(npz), "--out", str(out)]) == 0
    assert "imported 780 images" in capsys.readouterr().out
    m = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(m.columns) == ["path", "label", "split"]
    assert len(m) == 780
    assert m["split"].value_counts().to_dict() == {"train": 546, "test": 156, "val": 78}
    assert set(m["label"]) == {"malignant", "normal_or_benign"}  # MedMNIST's published names, class 0 and 1
    z = np.load(npz)
    row = m[(m["split"] == "test")].iloc[7]
    idx = int(row["path"].rsplit("/", 1)[1].split(".")[0])
    index = int(np.asarray(z["test_labels"]).reshape(-1)[idx])
    assert row["path"] == f"images/test/{index}/{idx}.png"  # folders keep the index: the same image names
    assert np.array_equal(_decode_png((out / row["path"]).read_bytes()), z["test_images"][idx])
    assert row["label"] == ["malignant", "normal_or_benign"][index]


def test_import_rgb_with_n_by_1_labels(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for sp, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{sp}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{sp}_labels"] = rng.integers(0, 3, (n, 1))
    np.savez(tmp_path / "rgbmnist.npz", **arrays)
    s = import_medmnist(tmp_path / "rgbmnist.npz", str(tmp_path / "out"), label_names="index")  # no published names
    assert s["images"] == 10 and s["splits"] == {"train": 6, "val": 2, "test": 2}
    m = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    first = m.iloc[0]
    img = _decode_png((tmp_path / "out" / first["path"]).read_bytes())
    assert img.shape == (28, 28, 3) and np.array_equal(img, arrays["train_images"][0])
    assert first["label"] == str(int(arrays["train_labels"][0, 0]))


@pytest.mark.s3
def test_import_breastmnist_to_s3_from_an_npz_on_s3(test_data, s3_root, tmp_path, monkeypatch):
    """Images and manifest written to S3 (timed in benchmarks/bench_data_plane.py); the .npz itself read
    from S3 through a local copy in the cache folder."""
    monkeypatch.setenv("MEDXFER_CACHE_DIR", str(tmp_path / "cache"))
    out = storage.join(s3_root, "datasets", "breast")
    npz = storage.join(s3_root, "uploads", "breastmnist.npz")
    storage.write_bytes(npz, (test_data / "medmnist/breastmnist.npz").read_bytes())
    assert main(["import", "medmnist", "--npz", npz, "--out", out]) == 0
    files = storage.list_files(out)
    assert len([f for f in files if f.endswith(".png")]) == 780
    m = pd.read_csv(__import__("io").BytesIO(storage.read_bytes(storage.join(out, "manifest.csv"))), dtype=str)
    assert len(m) == 780 and m["split"].value_counts().to_dict() == {"train": 546, "test": 156, "val": 78}
    assert (tmp_path / "cache" / "medmnist" / "breastmnist.npz").is_file()
    missing = storage.join(s3_root, "uploads", "nope.npz")
    assert main(["import", "medmnist", "--npz", missing, "--out", storage.join(s3_root, "o")]) == 2


def test_import_folder_per_class(tmp_path, capsys):
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    for c, n in (("normal", 10), ("pneumonia", 10)):
        (tmp_path / "root" / c).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "root" / c / f"{i}.png").write_bytes(png)
    (tmp_path / "root" / "normal" / ".DS_Store").write_bytes(b"junk")
    assert main(["import", "folder", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "root"),
                 "--split-fractions", "0.6,0.2,0.2"]) == 0
    m = pd.read_csv(tmp_path / "root" / "manifest.csv", dtype=str)
    assert len(m) == 20 and set(m["label"]) == {"normal", "pneumonia"}
    assert m["path"].iloc[0].startswith(("normal/", "pneumonia/"))  # relative to the manifest
    assert m.groupby("label")["split"].value_counts().unstack().loc["normal"].to_dict() == {
        "test": 2, "train": 6, "val": 2
    }
    # Split folders are recognised; a manifest elsewhere gets absolute paths.
    for sp in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "s" / sp / c).mkdir(parents=True)
            (tmp_path / "s" / sp / c / "x.png").write_bytes(png)
    assert main(["import", "folder", "--root", str(tmp_path / "s"), "--out", str(tmp_path / "elsewhere")]) == 0
    m2 = pd.read_csv(tmp_path / "elsewhere" / "manifest.csv", dtype=str)
    assert sorted(m2["split"]) == ["test", "test", "train", "train"]
    assert m2["path"].iloc[0].startswith(str(tmp_path / "s"))
    assert main(["import", "folder", "--root", str(tmp_path / "s"), "--out", str(tmp_path / "x"),
                 "--split-fractions", "0.5,0.5"]) == 2
    assert "need three" in capsys.readouterr().err


def test_import_folder_leaves_out_symlinks_leading_outside_the_root(tmp_path, capsys):
    """With the manifest elsewhere the paths are absolute, so no manifest check could catch a link
    to a file outside the root: the importer itself must not list it."""
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    secret = tmp_path / "elsewhere" / "other-patient.png"
    secret.parent.mkdir()
    secret.write_bytes(png)
    root = tmp_path / "root"
    for c in ("benign", "malignant"):
        (root / c).mkdir(parents=True)
        (root / c / "1.png").write_bytes(png)
    (root / "benign" / "inside-link.png").symlink_to(root / "malignant" / "1.png")
    (root / "malignant" / "outside-link.png").symlink_to(secret)
    (root / "linked-class").symlink_to(secret.parent, target_is_directory=True)
    for out in (tmp_path / "out", root):  # manifest elsewhere (absolute paths) and inside the root
        assert main(["import", "folder", "--root", str(root), "--out", str(out)]) == 0
        m = pd.read_csv(out / "manifest.csv", dtype=str)
        names = sorted(p.rsplit("/", 1)[1] for p in m["path"])
        assert names == ["1.png", "1.png", "inside-link.png"], m
        assert not any("other-patient" in p or "outside-link" in p for p in m["path"])


def test_import_folder_missing_root_says_not_found(tmp_path, capsys):
    assert main(["import", "folder", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope: folder not found" in err and "Traceback" not in err


def test_names_that_are_not_utf8_or_look_like_formulas_go_through_import_and_preprocess(tmp_path):
    """A file name that is not UTF-8 (bytes on disk) is one row like any other: the manifest names it by
    its file:// URI with %XX bytes, preprocessing resolves that back to the file, and the cache's path
    column, dataset.json and the CLI output hold it as text. Names beginning with '-' or '=' are written
    to the manifest as they are (medxfer reads it back) and still resolve. A class folder whose name is
    not UTF-8 cannot be a class: its file is left out and named. Printing under an ASCII terminal
    encoding never raises."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    png = cv2.imencode(".png", np.full((8, 8), 99, np.uint8))[1].tobytes()
    root = os.fsencode(str(tmp_path / "root"))
    names = {b"-neg/\xff.png", b"-neg/=SUM(1,2).png", b"-neg/-x.png", b"-neg/ok.png", b"\xce\xa9mega/+y.png",
             b"\xce\xa9mega/@z.png", b"\xce\xa9mega/M\xfcller.png", b"\xce\xa9mega/2.png", b"bad\xfe/1.png"}
    for n in names:
        os.makedirs(os.path.dirname(root + b"/" + n), exist_ok=True)
        with open(root + b"/" + n, "wb") as f:
            f.write(png)
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}  # a terminal that cannot show 'Ω'
    r = subprocess.run([sys.executable, "-m", "medxfer", "import", "folder", "--root", str(tmp_path / "root"),
                        "--out", str(tmp_path / "root"), "--split-fractions", "0.5,0.25,0.25"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\\u03a9mega" in r.stdout and "1 file(s) in class folders whose names are not valid UTF-8" in r.stderr
    assert f"file://{tmp_path}/root/bad%FE/1.png" in r.stderr  # named, as text
    m = pd.read_csv(tmp_path / "root" / "manifest.csv", dtype=str)
    assert sorted(m["path"]) == sorted(["file://-neg/%FF.png", "-neg/=SUM(1,2).png", "-neg/-x.png", "-neg/ok.png",
                                        "Ωmega/+y.png", "Ωmega/@z.png", "file://Ωmega/M%FCller.png", "Ωmega/2.png"])
    assert set(m["label"]) == {"-neg", "Ωmega"}
    store = tmp_path / "store"
    job = tmp_path / "job.yaml"
    job.write_text(f"data:\n  manifest: {tmp_path / 'root/manifest.csv'}\n  engine: local\npreprocess:\n  size: 16\n"
                   f"storage:\n  root: {store}\n", encoding="utf-8")
    assert main(["preprocess", "--config", str(job)]) == 0
    (card_path,) = store.rglob("dataset.json")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert card["total"] == 8 and card["bad_files"]["count"] == 0
    cached = [p for f in sorted(store.rglob("*.parquet")) for p in pq.read_table(f).column("path").to_pylist()]
    base = str(tmp_path / "root")
    assert sorted(cached) == sorted([f"file://{base}/-neg/%FF.png", f"{base}/-neg/=SUM(1,2).png", f"{base}/-neg/-x.png",
                                     f"{base}/-neg/ok.png", f"{base}/Ωmega/+y.png", f"{base}/Ωmega/@z.png",
                                     f"file://{base}/Ωmega/M%FCller.png", f"{base}/Ωmega/2.png"])


def test_every_format_the_decoder_reads_is_listed_by_import_folder_and_predict(tmp_path):
    """WebP, JPEG 2000, GIF and PNM files were skipped by the listings though the decoder reads them:
    the listings take their endings from the decoder's own list, and each file decodes."""
    import io

    from PIL import Image

    from medxfer.data.decode import SUFFIXES
    from medxfer.data.preprocess import preprocess_bytes
    from medxfer.lifecycle.predict import list_inputs

    gray = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251).astype(np.uint8)
    files = {f"img{ext}": cv2.imencode(ext, gray)[1].tobytes()
             for ext in (".png", ".jpg", ".bmp", ".tif", ".webp", ".jp2", ".pgm", ".sr", ".avif")}
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="GIF")
    files["img.gif"] = buf.getvalue()
    assert {"." + n.rsplit(".", 1)[1] for n in files} <= SUFFIXES
    for c in ("a", "b"):
        (tmp_path / "root" / c).mkdir(parents=True)
        for name, data in files.items():
            (tmp_path / "root" / c / name).write_bytes(data)
    (tmp_path / "root" / "a" / "notes.txt").write_text("not an image")
    assert main(["import", "folder", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "root")]) == 0
    m = pd.read_csv(tmp_path / "root" / "manifest.csv", dtype=str)
    assert sorted(m["path"]) == sorted(f"{c}/{n}" for c in ("a", "b") for n in files)
    images, skipped = list_inputs(str(tmp_path / "root"))
    assert len(images) == 2 * len(files)
    assert sorted(s.rsplit("/", 1)[1] for s in skipped) == ["import.json", "manifest.csv", "notes.txt"]
    spec = PreprocessConfig(channels=1, size=16)
    for name, data in files.items():
        assert preprocess_bytes(data, spec, name).shape == (1, 16, 16), name
