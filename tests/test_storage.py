"""Storage round-trips through a local folder and a real S3 protocol server (moto on loopback)."""

from __future__ import annotations

import threading

import pytest

from medxfer import storage
from medxfer.errors import StorageError


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_root")


def test_bytes_json_roundtrip_and_listing(root):
    storage.write_bytes(storage.join(root, "a/b.bin"), b"\x00\x01abc")
    storage.write_json(storage.join(root, "a/c.json"), {"x": [1, 2]})
    assert storage.read_bytes(storage.join(root, "a/b.bin")) == b"\x00\x01abc"
    assert storage.read_json(storage.join(root, "a/c.json")) == {"x": [1, 2]}
    files = storage.list_files(storage.join(root, "a"))
    assert [storage.basename(f) for f in files] == ["b.bin", "c.json"]
    assert storage.list_dir(root) == ["a"]
    assert storage.exists(storage.join(root, "a")) and not storage.exists(storage.join(root, "zz"))


def test_overwrite_is_whole(root):
    uri = storage.join(root, "card.json")
    storage.write_json(uri, {"v": 1})
    storage.write_json(uri, {"v": 2, "pad": "x" * 10000})
    assert storage.read_json(uri)["v"] == 2


def test_put_if_absent_has_one_winner(root):
    uri = storage.join(root, "lock")
    wins = []

    def race(i):
        wins.append(storage.put_if_absent(uri, str(i).encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(wins) == 1
    assert storage.read_bytes(uri).decode() in {str(i) for i in range(8)}


def test_copy_tree_and_delete(root, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("hi")
    (src / "g.txt").write_text("yo")
    dst = storage.join(root, "copy")
    storage.copy_tree(str(src), dst)
    assert storage.read_text(storage.join(dst, "d/f.txt")) == "hi"
    storage.delete(dst, recursive=True)
    assert storage.list_files(dst) == []


def test_pyarrow_filesystem_sees_what_boto3_wrote(root):
    uri = storage.join(root, "pa/x.txt")
    storage.write_text(uri, "from boto3")
    fs, path = storage.pyarrow_fs(uri)
    with fs.open_input_stream(path) as f:
        assert f.read() == b"from boto3"


def test_missing_object_names_uri(root):
    uri = storage.join(root, "missing.json")
    with pytest.raises(StorageError, match="missing.json: not found"):
        storage.read_json(uri)


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StorageError, match="s3://no-such-bucket-xyz/k: bucket does not exist"):
        storage.write_bytes("s3://no-such-bucket-xyz/k", b"x")


def test_unreachable_endpoint_names_it(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setattr(storage, "DEFAULT_RETRIES", 0)
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127.0.0.1:9"):
        storage.read_bytes("s3://b/k")


def test_local_permission_error_is_named(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        with pytest.raises(StorageError, match="permission denied"):
            storage.write_bytes(str(ro / "x"), b"1")
    finally:
        ro.chmod(0o700)
