"""MedMNIST files (``medxfer.data.medmnist``): the MD5-checked download through pooch, from a real HTTP
server on loopback, and ``.npz`` files that are not what they claim."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pooch
import pytest

from medxfer.cli import main
from medxfer.data import medmnist
from medxfer.errors import DataError


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
    assert pooch.file_hash(str(got), alg="md5") == medmnist.OFFICIAL_MD5["breastmnist"][64]
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
