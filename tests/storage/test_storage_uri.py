"""URI strings (``medxfer.storage.uri``): names resolved against a folder, relative names, parents —
the same rules for local paths and for every object store."""

from __future__ import annotations

import os

import pytest

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


def test_names_that_are_not_utf8_are_text_and_resolve_back_to_the_bytes_on_disk(tmp_path):
    """Linux names are bytes; one that is not UTF-8 (Latin-1 'Müller') is carried as its file:// URI with
    %XX bytes, which every storage call turns back into the file, and which every output can hold."""
    raw = os.fsencode(str(tmp_path)) + b"/M\xfcller 100%.png"
    with open(raw, "wb") as f:
        f.write(b"pixels")
    on_disk = os.fsdecode(raw)  # what os.listdir gives: a lone surrogate for the byte 0xFC
    text = storage.text_path(on_disk)
    assert text == "file://" + str(tmp_path) + "/M%FCller 100%25.png" and storage.is_text(text)
    assert storage.text_path(str(tmp_path / "Müller.png")) == str(tmp_path / "Müller.png")  # UTF-8: unchanged
    assert storage.local_path(text) == on_disk and storage.read_bytes(text) == b"pixels"
    assert storage.list_files(str(tmp_path)) == [text] and storage.list_dir(str(tmp_path)) == [
        "file://M%FCller 100%25.png"]
    assert storage.relative_name(text, str(tmp_path)) == "file://M%FCller 100%25.png"  # relative, still text
    assert storage.join(str(tmp_path), "file://M%FCller 100%25.png") == text
    assert storage.basename(text) == "M%FCller 100%25.png" and storage.parent(text) == str(tmp_path)
    bad_dir = os.fsdecode(os.fsencode(str(tmp_path)) + b"/d\xff")
    assert storage.join(bad_dir, "x.png") == "file://" + str(tmp_path) + "/d%FF/x.png"
    assert storage.normalize(bad_dir) == "file://" + str(tmp_path) + "/d%FF"
    with pytest.raises(ValueError, match="lone surrogate"):
        storage.text_path("x\ud800.png")  # no file name holds this (only JSON text can)


def test_file_uris_follow_the_rules_of_the_paths_they_hold(tmp_path):
    """file:///abs is the absolute path; file://rel and file://../x are relative names, joined onto the
    folder and refused when they climb out, exactly like rel and ../x (not resolved against the cwd)."""
    folder = str(tmp_path / "ds")
    r = storage.resolve_names(folder, ["file://img/a.png", "file://../../x.png", "file://./img/../b.png",
                                       "file:///abs/y.png", "FILE:///abs/z%20z.png", "file://", "file://img/%FF.png"])
    assert r.uris[:3] == [os.path.join(folder, "img/a.png"), os.path.normpath(os.path.join(folder, "../../x.png")),
                          os.path.join(folder, "b.png")]
    assert r.uris[3:6] == ["/abs/y.png", "/abs/z z.png", folder]
    assert r.uris[6] == "file://" + folder + "/img/%FF.png"
    assert r.relative == [True, True, True, False, False, True, True]
    assert r.leaving == [1, 5] and not r.schemes
    plain = storage.resolve_names(folder, ["img/a.png", "../../x.png", "./img/../b.png"])
    assert plain.uris == r.uris[:3] and plain.leaving == [1]
