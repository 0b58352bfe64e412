"""The S3 backend (``medxfer.storage.s3``): errors that name the bucket or the endpoint, and pyarrow
filesystems that carry no credentials into Ray."""

from __future__ import annotations

import pytest

from medxfer import storage
from medxfer.errors import StorageError


def test_missing_bucket_is_named(s3_server):
    with pytest.raises(StorageError, match="s3://no-such-bucket-xyz/k: bucket does not exist"):
        storage.write_bytes("s3://no-such-bucket-xyz/k", b"x")


def test_unreachable_endpoint_names_it(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setattr("medxfer.storage.s3.DEFAULT_RETRIES", 0)
    with pytest.raises(StorageError, match=r"cannot reach the S3 endpoint http://127.0.0.1:9"):
        storage.read_bytes("s3://b/k")


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


def test_keys_are_read_as_s3_has_them_and_folder_markers_are_no_files(s3_root):
    """``#`` and ``?`` are characters of an S3 key (a partner's ``scan#2.dcm``), not a URL's fragment or
    query; the empty ``name/`` objects that the S3 console's "Create folder" writes are no files."""
    names = ["scan#2.png", "what?.png", "a b.png", "pct%20.png", "ünï.png"]
    for i, name in enumerate(names):
        storage.write_bytes(storage.join(s3_root, "in", name), bytes([i]) * 4)
    from medxfer.storage.s3 import split_s3

    bucket, key = split_s3(storage.join(s3_root, "in"))
    storage.s3_client().put_object(Bucket=bucket, Key=f"{key}/folder/", Body=b"")
    files = storage.list_files(storage.join(s3_root, "in"))
    assert sorted(f.rsplit("/", 1)[1] for f in files) == sorted(names)
    got = storage.read_many(files, 1 << 20)
    assert {f.rsplit("/", 1)[1]: g for f, g in zip(files, got, strict=True)} == {
        n: bytes([i]) * 4 for i, n in enumerate(names)}
    assert storage.exists(storage.join(s3_root, "in", "scan#2.png"))
    storage.delete(storage.join(s3_root, "in"), recursive=True)  # the marker too
    assert storage.s3_client().list_objects_v2(Bucket=bucket, Prefix=f"{key}/").get("KeyCount") == 0
