"""MedMNIST files (``medxfer.data.medmnist``): the MD5-checked download through pooch, from a real HTTP
server on loopback, ``.npz`` files that are not what they claim, and the published class names an
import gives the images (in MedMNIST's class order, with a binary set's finding as positive class)."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import numpy as np
import pandas as pd
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


# ----------------------------------------------------------------------------- class names


def _npz(path, labels_by_split: dict, size: int = 8):
    """A MedMNIST-shaped .npz with the given labels ((N,) indices or (N,K) 0/1 rows) and random images."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, labels in labels_by_split.items():
        labels = np.asarray(labels)
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
    np.savez(path, **arrays)
    return path


def test_every_2d_set_has_its_published_label_names_in_index_order():
    assert set(medmnist.PUBLISHED_LABELS) == set(medmnist.OFFICIAL_MD5)
    for name, published in medmnist.PUBLISHED_LABELS.items():
        names = medmnist.class_names(name)
        assert len(names) == len(set(names)) == len(published), name
        assert all(n and not set(n) & set(" ,|()") for n in names), names  # typed as-is in YAML and --set
    # Index by index as MedMNIST's INFO table (medmnist/info.py) publishes them.
    assert medmnist.class_names("breastmnist") == ["malignant", "normal_or_benign"]  # "normal, benign"
    assert medmnist.class_names("pneumoniamnist_64") == ["normal", "pneumonia"]
    chest = medmnist.class_names("chestmnist")
    assert len(chest) == 14 and chest[2] == "effusion" and chest[12] == "pleural" and chest[13] == "hernia"
    assert medmnist.class_names("dermamnist")[4:6] == ["melanoma", "melanocytic_nevi"]
    assert medmnist.class_names("pathmnist")[7] == "cancer-associated_stroma"
    assert medmnist.class_names("bloodmnist")[3] == "immature_granulocytes"
    assert medmnist.class_names("tissuemnist")[0] == "collecting_duct_or_connecting_tubule"
    assert medmnist.class_names("octmnist")[3] == "normal"
    assert medmnist.class_names("retinamnist") == ["0", "1", "2", "3", "4"]  # grades, published as numbers
    assert medmnist.class_names("organcmnist")[1:3] == ["femur-left", "femur-right"]
    assert medmnist.class_names("scans") is None
    # A binary set's positive class is its finding, in the manifest's form; multi-class sets name none.
    assert medmnist.finding("breastmnist", medmnist.class_names("breastmnist")) == "malignant"
    assert medmnist.finding("breastmnist", None) == "0" and medmnist.finding("pneumoniamnist", None) == "1"
    assert medmnist.finding("octmnist", None) is None


def test_import_names_classes_in_medmnist_order_and_records_the_finding(test_data, tmp_path, capsys):
    from medxfer.config.loading import validate_dict
    from medxfer.data.manifest import load_manifest
    from medxfer.supervised.classifier_card import resolve_positive_class

    npz = test_data / "medmnist" / "breastmnist.npz"
    named, index = tmp_path / "named", tmp_path / "index"
    assert main(["import", "medmnist", "--npz", str(npz), "--out", str(named)]) == 0
    out = capsys.readouterr().out
    assert "classes (published names, MedMNIST's order): malignant, normal_or_benign" in out
    assert "positive class: malignant (the finding" in out
    assert main(["import", "medmnist", "--npz", str(npz), "--out", str(index), "--label-names", "index"]) == 0
    assert "classes (class indices, MedMNIST's order): 0, 1" in capsys.readouterr().out
    rec = json.loads((named / "import.json").read_text())
    assert (rec["label_names"], rec["classes"], rec["positive_class"]) == ("names", ["malignant", "normal_or_benign"],
                                                                         "malignant")
    rec = json.loads((index / "import.json").read_text())
    assert (rec["label_names"], rec["classes"], rec["positive_class"]) == ("index", ["0", "1"], "0")
    a, b = pd.read_csv(named / "manifest.csv", dtype=str), pd.read_csv(index / "manifest.csv", dtype=str)
    # The same image names either way (splits and label subsets follow them); only the label differs.
    assert a["path"].tolist() == b["path"].tolist() and a["split"].tolist() == b["split"].tolist()
    assert (a["label"] == b["label"].map({"0": "malignant", "1": "normal_or_benign"})).all()
    for folder, classes, positive in ((named, ["malignant", "normal_or_benign"], "malignant"), (index, ["0", "1"], "0")):
        cfg = validate_dict({"data": {"manifest": str(folder / "manifest.csv")}})
        assert load_manifest(None, cfg.data).attrs["classes"] == classes
        assert resolve_positive_class(cfg, "multiclass", classes) == (positive, "import.json")


def test_the_import_order_is_the_class_order_where_sorted_names_differ(tmp_path):
    """DermaMNIST's class 5 (melanocytic nevi) sorts before class 4 (melanoma): training keeps MedMNIST's
    order, so output i is MedMNIST's class i in both label forms; data.classes still decides when given."""
    from medxfer.config import DataConfig
    from medxfer.data.importers import import_medmnist
    from medxfer.data.manifest import encode_labels, load_manifest

    k = np.arange(7)
    npz = _npz(tmp_path / "dermamnist.npz", {"train": np.repeat(k, 2), "val": k, "test": k})
    import_medmnist(npz, str(tmp_path / "derma"))
    manifest = str(tmp_path / "derma" / "manifest.csv")
    names = medmnist.class_names("dermamnist")
    assert sorted(names) != names
    df = load_manifest(manifest, DataConfig())
    assert df.attrs["classes"] == names
    assert encode_labels(["melanoma", "melanocytic_nevi"], df.attrs["classes"], "multiclass").tolist() == [4, 5]
    assert load_manifest(manifest, DataConfig(classes=sorted(names))).attrs["classes"] == sorted(names)
    (tmp_path / "derma" / "import.json").unlink()  # a manifest without its record: sorted, as before
    assert load_manifest(manifest, DataConfig()).attrs["classes"] == sorted(names)

    # ChestMNIST's findings (multilabel rows of 14 columns): named, and in MedMNIST's order.
    rows = np.zeros((4, 14), np.uint8)
    rows[0, [2, 4]] = rows[1, 8] = rows[2, 0] = 1  # effusion|mass, consolidation, atelectasis, none
    import_medmnist(_npz(tmp_path / "chestmnist.npz", {"train": rows, "val": rows, "test": rows}),
                    str(tmp_path / "chest"))
    chest = load_manifest(str(tmp_path / "chest" / "manifest.csv"), DataConfig(task="multilabel"))
    assert chest["label"].tolist()[:4] == ["effusion|mass", "consolidation", "atelectasis", "none"]
    assert chest.attrs["classes"] == ["atelectasis", "effusion", "mass", "consolidation"]


def test_manifests_imported_before_class_names_keep_working(test_data, tmp_path):
    """An index manifest with the import.json medxfer wrote before names (no positive class), or none:
    the same classes and the same default positive class as then."""
    from medxfer.config.loading import validate_dict
    from medxfer.data.importers import import_medmnist
    from medxfer.data.manifest import load_manifest
    from medxfer.supervised.classifier_card import resolve_positive_class

    import_medmnist(test_data / "medmnist" / "breastmnist.npz", str(tmp_path / "b"), label_names="index")
    old = {"name": "breastmnist", "source": "breastmnist.npz", "images": 780,
           "splits": {"train": 546, "val": 78, "test": 156}, "classes": ["0", "1"], "license": "CC BY 4.0",
           "seconds": 1.0}
    cfg = validate_dict({"data": {"manifest": str(tmp_path / "b" / "manifest.csv")}})
    for record in (old, None):
        if record is None:
            (tmp_path / "b" / "import.json").unlink()
        else:
            (tmp_path / "b" / "import.json").write_text(json.dumps(record))
        assert load_manifest(None, cfg.data).attrs["classes"] == ["0", "1"]
        assert resolve_positive_class(cfg, "multiclass", ["0", "1"]) == ("1", "default")


def test_a_model_with_index_classes_meeting_named_images_says_how_to_import_them(test_data, tmp_path):
    """A bundle trained before names (classes '0', '1') still evaluates on data imported with
    --label-names index; on named data the error says so, exit 2, before anything is scored."""
    from evalutil import breast_job, breast_manifest, tiny_bundle

    from medxfer.errors import DataError
    from medxfer.evaluate import evaluate_bundle

    bundle = str(tmp_path / "old" / "bundle")
    tiny_bundle(bundle, classes=("0", "1"), size=28, positive_class="0")
    index = breast_job(str(tmp_path / "root"), breast_manifest(test_data, tmp_path / "i", label_names="index"),
                       data={"positive_class": "0"}, evaluate={"bootstrap": 50})
    rep = evaluate_bundle(bundle, index, "test", out=str(tmp_path / "rep"))
    assert rep["classes"] == ["0", "1"] and rep["positive_class"] == "0" and rep["holdout"]["n"] == 156
    named = breast_job(str(tmp_path / "root"), breast_manifest(test_data, tmp_path / "n"), evaluate={"bootstrap": 50})
    with pytest.raises(DataError, match=r"'malignant' x\d+.*import medmnist --label-names index"):
        evaluate_bundle(bundle, named, "test", out=str(tmp_path / "rep2"))
    assert main(["evaluate", "--bundle", bundle, "--data", str(tmp_path / "n" / "manifest.csv"),
                 "--set", f"storage.root={tmp_path / 'root'}", "--out", str(tmp_path / "rep3")]) == 2


def test_import_names_refuses_what_it_cannot_name(tmp_path, capsys):
    # A set without published names: names are refused with the fix, indices work.
    scans = _npz(tmp_path / "scans.npz", {"train": [0, 1, 0], "val": [1], "test": [0]})
    assert main(["import", "medmnist", "--npz", str(scans), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "'scans' is not a MedMNIST set with published label names" in err and "--label-names index" in err
    assert not (tmp_path / "a" / "manifest.csv").exists()
    assert main(["import", "medmnist", "--npz", str(scans), "--out", str(tmp_path / "a"),
                 "--label-names", "index"]) == 0
    assert json.loads((tmp_path / "a" / "import.json").read_text())["classes"] == ["0", "1"]
    # A file named after a set whose labels do not fit it (class 2 in a two-class set).
    wrong = _npz(tmp_path / "breastmnist.npz", {"train": [0, 1, 2], "val": [1], "test": [0]})
    assert main(["import", "medmnist", "--npz", str(wrong), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "class index 2 is outside this set's 2 classes (malignant, normal_or_benign)" in err, err
    assert not (tmp_path / "b" / "manifest.csv").exists()
