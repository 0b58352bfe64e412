"""Importers: MedMNIST .npz to local folders and to S3, the MD5-checked download, class folders."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from medxfer import storage
from medxfer.cli import main
from medxfer.data import medmnist
from medxfer.data.importers import import_medmnist
from medxfer.errors import DataError


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
    assert set(m["label"]) == {"0", "1"}
    z = np.load(npz)
    row = m[(m["split"] == "test")].iloc[7]
    idx = int(row["path"].rsplit("/", 1)[1].split(".")[0])
    assert row["path"] == f"images/test/{row['label']}/{idx}.png"
    assert np.array_equal(_decode_png((out / row["path"]).read_bytes()), z["test_images"][idx])
    assert int(row["label"]) == int(np.asarray(z["test_labels"]).reshape(-1)[idx])


def test_import_rgb_with_n_by_1_labels(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for sp, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{sp}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{sp}_labels"] = rng.integers(0, 3, (n, 1))
    np.savez(tmp_path / "rgbmnist.npz", **arrays)
    s = import_medmnist(tmp_path / "rgbmnist.npz", str(tmp_path / "out"))
    assert s["images"] == 10 and s["splits"] == {"train": 6, "val": 2, "test": 2}
    m = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    first = m.iloc[0]
    img = _decode_png((tmp_path / "out" / first["path"]).read_bytes())
    assert img.shape == (28, 28, 3) and np.array_equal(img, arrays["train_images"][0])
    assert first["label"] == str(int(arrays["train_labels"][0, 0]))


@pytest.mark.s3
def test_import_breastmnist_to_s3_is_quick(test_data, s3_root):
    out = storage.join(s3_root, "datasets", "breast")
    t = time.perf_counter()
    assert main(["import", "medmnist", "--npz", str(test_data / "medmnist/breastmnist.npz"), "--out", out]) == 0
    elapsed = time.perf_counter() - t
    files = storage.list_files(out)
    assert len([f for f in files if f.endswith(".png")]) == 780
    m = pd.read_csv(__import__("io").BytesIO(storage.read_bytes(storage.join(out, "manifest.csv"))), dtype=str)
    assert len(m) == 780 and m["split"].value_counts().to_dict() == {"train": 546, "test": 156, "val": 78}
    assert elapsed < 30, f"780 PNGs to S3 took {elapsed:.1f}s"


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www (stands in for Zenodo)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_verifies_md5_and_caches(test_data, http_dir, tmp_path, monkeypatch):
    www, base = http_dir
    monkeypatch.setattr(medmnist, "URL", base + "/{name}{suffix}.npz?download=1")
    monkeypatch.setenv("MEDXFER_CACHE_DIR", str(tmp_path / "cache"))
    # breastmnist_64.npz in the shared data is byte-identical to the official file.
    (www / "breastmnist_64.npz").write_bytes((test_data / "medmnist/breastmnist_64.npz").read_bytes())
    got = medmnist.download("breastmnist", 64)
    assert got == tmp_path / "cache" / "medmnist" / "breastmnist_64.npz"
    assert medmnist.md5_of(got) == medmnist.OFFICIAL_MD5["breastmnist"][64]
    (www / "breastmnist_64.npz").unlink()
    assert medmnist.download("breastmnist", 64) == got  # served from the verified cache
    # The shared breastmnist.npz is a modified copy: its MD5 is not the official one.
    (www / "breastmnist.npz").write_bytes((test_data / "medmnist/breastmnist.npz").read_bytes())
    with pytest.raises(DataError, match="MD5 mismatch"):
        medmnist.download("breastmnist", 28)
    assert not (tmp_path / "cache" / "medmnist" / "breastmnist.npz").exists()


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    monkeypatch.setattr(medmnist, "URL", f"http://127.0.0.1:{port}/" + "{name}{suffix}.npz")
    monkeypatch.setenv("MEDXFER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="are you offline.*--npz FILE"):
        medmnist.download("pneumoniamnist", 28, timeout=5)
    with pytest.raises(DataError, match="unknown MedMNIST dataset 'pneumonia'"):
        medmnist.download("pneumonia")


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


def test_import_medmnist_refuses_a_non_npz_without_numpys_unsafe_advice(tmp_path, capsys):
    not_npz = tmp_path / "scan.npz"
    not_npz.write_bytes(b"\x80\x04\x95 this is a pickle, not an npz")
    npy = tmp_path / "arr.npz"
    np.save(npy.with_suffix(".npy"), np.zeros(3))
    npy.write_bytes(npy.with_suffix(".npy").read_bytes())  # one .npy array named .npz
    objects = tmp_path / "objects.npz"
    np.savez(objects, train_images=np.array([{"a": 1}], dtype=object), train_labels=np.zeros(1))
    for f in (not_npz, npy, objects):
        assert main(["import", "medmnist", "--npz", str(f), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"{f}: not a MedMNIST .npz file" in err, err
        assert "allow_pickle" not in err and "unsafe" not in err and "pickle.load" not in err
