"""Copying trees (``medxfer.storage.tree``): nothing written outside the destination, by S3 key
names or by local symlinks; everything checked before the first write."""

from __future__ import annotations

import pytest

from medxfer import storage
from medxfer.errors import StorageError
from medxfer.storage.s3 import split_s3


@pytest.mark.s3
@pytest.mark.parametrize("dst_kind", ["local", "s3"])
def test_copy_tree_refuses_names_leaving_the_destination(s3_root, tmp_path, dst_kind):
    """S3 keys are plain strings: a prefix may hold ``b/../../x`` or ``b//x``. Copying such a tree
    (what ``registry promote`` does with a bundle) must not write outside the destination."""
    bucket, key = split_s3(s3_root)
    client = storage.s3_client()
    src = f"{s3_root}/bundle"
    dst = str(tmp_path / "registry" / "v1") if dst_kind == "local" else f"{s3_root}/registry/v1"
    for i, bad in enumerate(("../../escaped.txt", "/abs.txt", "./dot.txt")):  # b/../../x, b//x, b/./x
        prefix = f"{key}/bundle-{i}"
        client.put_object(Bucket=bucket, Key=f"{prefix}/model.safetensors", Body=b"weights")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{bad}", Body=b"evil")
        with pytest.raises(StorageError, match="would leave the destination"):
            storage.copy_tree(f"s3://{bucket}/{prefix}", dst)
        assert storage.list_files(dst) == []  # checked before the first write: nothing copied
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "registry" / "escaped.txt").exists()
    assert storage.list_files(f"{s3_root}/registry") == []
    # Folder markers carry no file and are left out; ordinary names copy as before.
    client.put_object(Bucket=bucket, Key=f"{key}/bundle/sub/", Body=b"")
    client.put_object(Bucket=bucket, Key=f"{key}/bundle/sub/card.json", Body=b"{}")
    storage.copy_tree(src, dst)
    assert [f[len(dst) + 1:].replace("\\", "/") for f in storage.list_files(dst)] == ["sub/card.json"]


def test_copy_tree_does_not_follow_symlinks_out_of_the_source(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not part of the bundle")
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "card.json").write_text("{}")
    (src / "alias.json").symlink_to(src / "card.json")  # inside the tree: copied as a file
    (src / "notes.txt").symlink_to(secret)
    dst = tmp_path / "registry" / "v1"
    with pytest.raises(StorageError, match=r"symlink\(s\) lead outside the folder.*notes.txt"):
        storage.copy_tree(str(src), str(dst))
    assert not dst.exists()
    (src / "notes.txt").unlink()
    storage.copy_tree(str(src), str(dst))
    assert sorted(p.name for p in dst.iterdir()) == ["alias.json", "card.json", "model.safetensors"]
    assert not (dst / "alias.json").is_symlink() and (dst / "alias.json").read_text() == "{}"


def test_a_name_that_is_not_utf8_is_named_as_such_and_nothing_is_copied(tmp_path):
    import os

    src = tmp_path / "bundle"
    src.mkdir()
    (src / "model.bin").write_bytes(b"w")
    with open(os.fsencode(str(src)) + b"/notes-\xff.txt", "wb") as f:
        f.write(b"x")
    with pytest.raises(StorageError, match=r"1 file name\(s\) are not UTF-8 text.*Rename those files"):
        storage.copy_tree(str(src), str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()
