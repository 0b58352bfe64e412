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


# ----------------------------------------------------------------------------- containment


@pytest.mark.s3
@pytest.mark.parametrize("dst_kind", ["local", "s3"])
def test_copy_tree_refuses_names_leaving_the_destination(s3_root, tmp_path, dst_kind):
    """S3 keys are plain strings: a prefix may hold ``b/../../x`` or ``b//x``. Copying such a tree
    (what ``registry promote`` does with a bundle) must not write outside the destination."""
    bucket, key = storage.split_s3(s3_root)
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


@pytest.mark.s3
def test_s3_filesystems_handed_to_ray_carry_no_credentials(s3_server, monkeypatch):
    """The pyarrow filesystem is pickled into Ray Data tasks and Ray Train's RunConfig; built from the
    standard credential chain it pickles without the keys, and workers resolve their own."""
    import pickle

    import ray.cloudpickle

    from medxfer.config import JobConfig
    from medxfer.train.launch import run_config

    secret, key_id = "MARKER-SECRET-3b9d", "MARKER-KEYID-77aa"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "MARKER-TOKEN-11cc")
    fs, path = storage.pyarrow_fs("s3://some-bucket/root/cache")
    rc = run_config(JobConfig(name="creds"), "s3://some-bucket/root/runs")
    for obj in (fs, rc):
        for blob in (pickle.dumps(obj), ray.cloudpickle.dumps(obj)):
            assert secret.encode() not in blob and key_id.encode() not in blob and b"MARKER-TOKEN" not in blob
    # The filesystem still works: it reads the keys from the environment where it is used.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    bucket = "medxfer-creds-check"
    storage.s3_client().create_bucket(Bucket=bucket)
    storage.write_text(f"s3://{bucket}/x.txt", "hello")
    fs2 = pickle.loads(pickle.dumps(storage.pyarrow_fs(f"s3://{bucket}/x.txt")[0]))
    with fs2.open_input_stream(f"{bucket}/x.txt") as f:
        assert f.read() == b"hello"
