"""URI strings (``medxfer.storage.uri``): names resolved against a folder, relative names, parents —
the same rules for local paths and for every object store."""

from __future__ import annotations

import os

from medxfer import storage


def test_names_resolve_against_local_and_remote_folders_and_escapes_are_listed(tmp_path):
    folder = str(tmp_path / "ds")
    plain = storage.resolve_names(folder, ["img/a.png", "b.png"])
    assert plain.uris == [os.path.join(folder, "img/a.png"), os.path.join(folder, "b.png")]
    assert plain.relative == [True, True] and not plain.leaving and not plain.schemes
    mixed = storage.resolve_names(folder, ["./img/../a.png", "../x.png", "/abs/y.png", "s3://b/k.png/",
                                           "file:///abs/z.png", "img\\c.png", "gs://b/q.png"])
    assert mixed.uris == [os.path.join(folder, "a.png"), str(tmp_path / "x.png"), "/abs/y.png", "s3://b/k.png",
                          "/abs/z.png", os.path.join(folder, "img/c.png"), "gs://b/q.png"]
    assert mixed.relative == [True, True, False, False, False, True, False]
    assert mixed.leaving == [1] and mixed.schemes == [3, 6]
    remote = storage.resolve_names("s3://b/ds", ["img/a.png", "img/../../x.png", "./c.png"])
    assert remote.uris == ["s3://b/ds/img/a.png", "s3://b/x.png", "s3://b/ds/c.png"] and remote.leaving == [1]


def test_relative_names_parents_and_joins():
    assert storage.relative_name("s3://b/root/x/y.png", "s3://b/root") == "x/y.png"
    assert storage.relative_name("s3://b/rootless/y.png", "s3://b/root") is None
    assert storage.relative_name("/data/root/x/y.png", "/data/root/") == "x/y.png"
    assert storage.relative_name("/data/other/y.png", "/data/root") is None
    assert storage.relative_name("s3://b/root/y.png", "/b/root") is None  # another backend
    assert storage.parent("s3://b/root/x") == "s3://b/root" and storage.parent("s3://b") == "s3://b"
    assert storage.join("s3://b/root/", "/x/", "y") == "s3://b/root/x/y"
    assert storage.join("file:///data", "x") == "/data/x" and storage.normalize("s3://b/r/") == "s3://b/r"
