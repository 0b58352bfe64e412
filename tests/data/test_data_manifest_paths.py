"""A manifest's paths (``medxfer.data.manifest.paths``): kept inside its folder, unique, present —
locally and on S3."""

from __future__ import annotations

import json
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
    with pytest.raises(DataError, match=r"7 of 12 image file\(s\) do not exist or are not regular files.*e\.g\. .*img/a/0\.png"):
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
    with pytest.raises(DataError, match=r"1 of 8 image file\(s\) do not exist or are not regular files.*e\.g\. s3://.*img/b/2\.png"):
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


def test_file_uris_in_a_manifest_obey_the_rules_of_plain_paths(tmp_path):
    """``file://../../x`` is refused like ``../x`` (it used to be read relative to the working directory),
    ``file://img/...`` resolves inside the manifest's folder and is checked for symlinks like ``img/...``,
    and ``file:///abs`` is the absolute path."""
    inside = tmp_path / "ds"
    inside.mkdir()
    df = dataset(inside)
    for form in ("file://../../etc/passwd", "file://../secret.png", "file://img/../../secret.png"):
        esc = df.copy()
        esc.loc[1, "path"] = form
        with pytest.raises(DataError, match=r"leave the manifest's folder via '\.\.' at line\(s\) 3"):
            load_manifest(write_csv(inside, esc), DataConfig())
    ok = df.copy()
    ok.loc[0, "path"] = "file://img/a/0.png"
    ok.loc[1, "path"] = "file://" + str(inside / "img/a/1.png")
    out = load_manifest(write_csv(inside, ok), DataConfig())
    assert list(out["path"][:2]) == [str(inside / "img/a/0.png"), str(inside / "img/a/1.png")]
    (tmp_path / "secret.png").write_bytes(PNG)
    os.remove(inside / "img/a/2.png")
    os.symlink(tmp_path / "secret.png", inside / "img/a/2.png")
    ok.loc[2, "path"] = "file://img/a/2.png"
    with pytest.raises(DataError, match=r"line\(s\) 4 are symlinks leading outside"):
        load_manifest(write_csv(inside, ok), DataConfig())


def test_names_that_are_not_utf8_resolve_from_their_file_uri(tmp_path):
    """A manifest names a file whose name is not UTF-8 by its file:// URI (%XX bytes): it resolves to the
    file and stays text. JSON's surrogate escapes are no text a table can hold: refused, with the way out."""
    df = dataset(tmp_path)
    raw = os.fsencode(str(tmp_path / "img" / "a")) + b"/\xff.png"
    with open(raw, "wb") as f:
        f.write(PNG)
    df.loc[0, "path"] = "file://img/a/%FF.png"
    out = load_manifest(write_csv(tmp_path, df), DataConfig())
    assert out["path"][0] == "file://" + str(tmp_path / "img/a/%FF.png")
    assert storage.read_bytes(out["path"][0]) == PNG
    rows = df.to_dict("records")
    rows[0]["path"] = os.fsdecode(b"img/a/\xff.png")
    for name, text in (("m.json", json.dumps(rows)), ("m.jsonl", "\n".join(json.dumps(r) for r in rows))):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=r"m\.jsonl?: holds a lone surrogate escape .* \(file://img/M%FCller\.png\)"):
            load_manifest(str(tmp_path / name), DataConfig())
