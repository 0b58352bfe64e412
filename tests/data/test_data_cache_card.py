"""The dataset card (``medxfer.data.cache.dataset_card``): bad files counted and listed under their policy,
an interrupted cache rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
from datautil import mini_dataset

from medxfer import storage
from medxfer.cli import main
from medxfer.config.loading import load_config
from medxfer.data.cache import PreparedData, prepare
from medxfer.errors import DataError

pytestmark = [pytest.mark.ray]


def test_bad_files_policy_partial_cache_and_rebuild(test_data, ray_cluster, tmp_path, capsys):
    manifest = mini_dataset(test_data, tmp_path / "ds")
    base = [f"data.manifest={manifest}", f"storage.root={tmp_path / 'store'}", "preprocess.size=24",
            "preprocess.channels=3"]
    with pytest.raises(DataError, match=r"2 of 14 image\(s\) \(14\.3%\) could not be decoded.*max_bad_fraction"):
        prepare(load_config(None, base))
    with pytest.raises(DataError, match=r"2 of 14 image\(s\) could not be decoded \(data.bad_files=fail\)"):
        prepare(load_config(None, [*base, "data.bad_files=fail"]))
    cfg = load_config(None, [*base, "data.max_bad_fraction=0.2"])
    p = prepare(cfg)
    assert not p.hit
    bad = {b["path"].rsplit("/", 1)[1]: b["reason"] for b in p.card["bad_files"]["files"]}
    assert set(bad) == {"corrupt.png", "empty.jpg"}
    assert "corrupt or truncated PNG" in bad["corrupt.png"] and "empty" in bad["empty.jpg"]
    assert p.card["counts"]["train"]["total"] == 8 and p.card["input_rows"] == 14
    assert p.card["image_stats"]["formats"].keys() >= {"png", "jpeg", "dicom"}
    X, y = p.numpy("train")
    assert X.shape == (8, 3, 24, 24) and np.isfinite(X).all()
    # The failed attempts left nothing half-written behind as a "complete" cache.
    assert storage.list_dir(p.uri) == ["dataset.json", p.card["shards"]]

    # A cache folder without dataset.json is incomplete: it is rebuilt, stale shards removed.
    storage.delete(storage.join(p.uri, "dataset.json"))
    p2 = prepare(cfg)
    assert not p2.hit and p2.card["shards"] != p.card["shards"]
    assert storage.list_dir(p2.uri) == sorted(["dataset.json", p2.card["shards"]])
    assert np.array_equal(p2.numpy("train")[0], X)
    again = PreparedData.open(p2.uri)
    assert again.hit and again.key == p2.key and again.image_shape == (3, 24, 24)
    # The CLI with local paths finds the same cache.
    job = tmp_path / "job.yaml"
    job.write_text(
        f"data:\n  manifest: {manifest}\n  max_bad_fraction: 0.2\npreprocess:\n  size: 24\n  channels: 3\n"
        f"storage:\n  root: {tmp_path / 'store'}\n"
    )
    capsys.readouterr()
    assert main(["preprocess", "--config", str(job)]) == 0
    assert f"cache hit: {p2.uri}" in capsys.readouterr().out



def test_a_fifo_in_a_training_manifest_is_refused_by_name_before_any_decoding(test_data, tmp_path):
    """A FIFO left in an export folder (opening it waits for a writer) is no image file: the manifest
    check names it, as it names a missing file, before anything is read; nothing waits for ever."""
    import os

    manifest = mini_dataset(test_data, tmp_path / "ds")
    os.mkfifo(tmp_path / "ds" / "img" / "pipe.png")
    with open(manifest, "a") as f:
        f.write("img/pipe.png,a,train\n")
    cfg = load_config(None, [f"data.manifest={manifest}", f"storage.root={tmp_path / 'store'}", "preprocess.size=24",
                             "data.engine=local", "data.max_bad_fraction=0.5"])
    with pytest.raises(DataError, match=r"1 of 15 image file\(s\) do not exist or are not regular files.*img/pipe\.png"):
        prepare(cfg)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("dataset.json"))
