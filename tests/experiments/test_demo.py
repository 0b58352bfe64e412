"""`medxfer demo --fast` end to end on the real MedMNIST files (what `make demo` runs, cut down)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medxfer.data.phantom import make_npz


def test_phantoms_are_medmnist_shaped(tmp_path):
    from medxfer.data.medmnist import load_npz

    p = make_npz(tmp_path / "t.npz", "target", seed=3)
    arrays = load_npz(p)
    assert {s: len(a[0]) for s, a in arrays.items()} == {"train": 546, "val": 78, "test": 156}
    images, labels = arrays["train"]
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert set(np.unique(labels).tolist()) == {0, 1}


def test_demo_data_dir_missing_files_is_a_clear_error(tmp_path):
    from medxfer.errors import DataError
    from medxfer.experiments.demo import find_data

    with pytest.raises(DataError, match="pneumoniamnist.npz"):
        find_data(str(tmp_path), str(tmp_path / "root"))


@pytest.mark.ray
@pytest.mark.slow
def test_demo_fast_end_to_end(ray_cluster, test_data, tmp_path, capsys):
    from medxfer.experiments.demo import run_demo

    summary = run_demo(str(test_data / "medmnist"), str(tmp_path / "demo"), fast=True)
    out = capsys.readouterr().out
    assert summary["data"] == "files"
    rows = {r["run"]: r for r in summary["rows"]}
    assert set(rows) == {"demo-source-fast", "demo-transfer-fast", "demo-scratch-fast"}
    # Learning happened on real chest X-rays even in one short epoch (~20 steps): the whole 95% interval
    # of the test AUROC (624 images) lies above chance.
    assert rows["demo-source-fast"]["test_auroc"]["ci"][0] > 0.55
    for r in rows.values():
        lo, hi = r["test_auroc"]["ci"]
        assert lo <= r["test_auroc"]["value"] <= hi
    # Classes by their published names, the finding positive, from the import to the reports.
    assert summary["classes"] == ["malignant", "normal_or_benign"] and summary["positive_class"] == "malignant"
    assert rows["demo-source-fast"]["positive_class"] == "pneumonia"
    report = json.loads((tmp_path / "demo" / "runs" / "demo-transfer-fast" / "report" / "report.json").read_text())
    assert report["positive_class"] == "malignant" and "import.json" in report["positive_class_reason"]
    assert "demo-transfer-fast     breastmnist     malignant" in out
    # The low-label comparison: trials at 10 % of the labels (2 seeds each), and 100 %, each with its reading.
    cells = {(r["arm"], r["fraction"]): r for r in summary["by_fraction"]}
    assert set(cells) == {(a, f) for a in ("transfer", "scratch") for f in (0.1, 1.0)}
    assert cells[("transfer", 0.1)]["n_seeds"] == 2 and cells[("transfer", 0.1)]["train_images"] == 55
    low = cells[("transfer", 0.1)]["paired_vs_scratch"]
    assert low["seeds"] == 2 and low["ci"][0] <= low["difference"] <= low["ci"][1]
    assert len(summary["readings"]) == 2
    assert summary["readings"][0].startswith("at 10% of the labels (55 training images, 2 seeds), transfer is ")
    assert summary["readings"][1].startswith("at 100% of the labels (546 training images, 1 seed), transfer is ")
    for line in summary["readings"]:
        assert line in out and line.endswith(("transfer helped", "transfer hurt",
                                              "no significant difference between transfer and scratch"))
    # The picture: test AUROC against the label fraction, its path printed.
    plot = tmp_path / "demo" / "label_efficiency.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {plot}" in out
    # The registry has exactly one champion, and it is one of the two candidates.
    assert summary["champion"]["version"] in {d["version"] for d in summary["promotion"]}
    assert summary["promotion"][0]["promoted"]  # first candidate on an empty registry
    assert "registry: transfer -> v0001: PROMOTED" in out
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["readings"] == summary["readings"]
