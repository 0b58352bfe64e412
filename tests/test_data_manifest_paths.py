"""A manifest's paths (``medxfer.data.manifest.paths``): kept inside its folder, unique, present —
locally and on S3."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from datautil import PNG, dataset, write_csv

from medxfer import storage
from medxfer.config import DataConfig
from medxfer.data.manifest import load_manifest
from medxfer.errors import DataError


def test_duplicates_missing_files_and_escapes(tmp_path):
    df = dataset(tmp_path)
    dup = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(DataError, match="1 duplicate path"):
        load_manifest(write_csv(tmp_path, dup), DataConfig())
    for i in range(7):
        os.remove(tmp_path / df.loc[i, "path"])
    with pytest.raises(DataError, match=r"7 of 12 image file\(s\) do not exist, e\.g\. .*img/a/0\.png"):
        load_manifest(write_csv(tmp_path, df), DataConfig())
    # check_files=False skips only the existence check
    assert len(load_manifest(write_csv(tmp_path, df), DataConfig(), check_files=False)) == 12
    sub = tmp_path / "sub"
    sub.mkdir()
    esc = dataset(sub)
    esc.loc[0, "path"] = "../../etc/passwd"
    with pytest.raises(DataError, match=r"leave the manifest's folder via '\.\.' at line\(s\) 2"):
        load_manifest(write_csv(sub, esc), DataConfig())


def test_symlink_leaving_the_manifest_folder_is_refused(tmp_path):
    inside = tmp_path / "ds"
    inside.mkdir()
    df = dataset(inside)
    outside = tmp_path / "secret.png"
    outside.write_bytes(PNG)
    os.remove(inside / "img/a/1.png")
    os.symlink(outside, inside / "img/a/1.png")
    with pytest.raises(DataError, match=r"line\(s\) 3 are symlinks leading outside"):
        load_manifest(write_csv(inside, df), DataConfig())


@pytest.mark.s3
def test_s3_manifest_relative_paths_and_missing_files(s3_root):
    root = storage.join(s3_root, "ds")
    rows = []
    for c in ("a", "b"):
        for i in range(4):
            storage.write_bytes(storage.join(root, f"img/{c}/{i}.png"), PNG)
            rows.append({"path": f"img/{c}/{i}.png", "label": c, "split": "train" if i < 3 else "test"})
    storage.write_text(storage.join(root, "manifest.csv"), pd.DataFrame(rows).to_csv(index=False))
    out = load_manifest(storage.join(root, "manifest.csv"), DataConfig())
    assert out["path"].iloc[0] == storage.join(root, "img/a/0.png")
    storage.delete(storage.join(root, "img/b/2.png"))
    with pytest.raises(DataError, match=r"1 of 8 image file\(s\) do not exist, e\.g\. s3://.*img/b/2\.png"):
        load_manifest(storage.join(root, "manifest.csv"), DataConfig())


def test_uris_no_storage_backend_serves_are_refused_with_their_lines(tmp_path):
    """A path with a scheme is taken as given only when a storage backend serves it; ``file://`` is local."""
    df = dataset(tmp_path)
    df.loc[2, "path"] = "gs://bucket/img/a/2.png"
    df.loc[3, "path"] = "file://" + str(tmp_path / "img/a/3.png")
    with pytest.raises(DataError, match=r"unsupported URI scheme at line\(s\) 4; use local paths or s3://"):
        load_manifest(write_csv(tmp_path, df), DataConfig())
    df.loc[2, "path"] = "img/a/2.png"
    out = load_manifest(write_csv(tmp_path, df), DataConfig())
    assert out["path"][3] == str(tmp_path / "img/a/3.png")
