"""The storage API (``medxfer.storage``) on a local folder and on a real S3 protocol server (moto on
loopback): the same calls, the same results; and a backend registered for a new scheme serving them."""

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


def test_read_many_keeps_order_and_returns_each_files_error(root, tmp_path):
    """The one reader of image bytes: order kept across backends, a missing file or an unknown scheme is
    that file's error, not the batch's."""
    uris = [storage.join(root, f"img/{i}.png") for i in range(20)]
    storage.write_many([(u, f"image {i}".encode()) for i, u in enumerate(uris)])
    local = tmp_path / "local.png"
    local.write_bytes(b"local image")
    asked = [*uris[:10], storage.join(root, "img/missing.png"), str(local), "gs://bucket/x.png", *uris[10:]]
    got = storage.read_many(asked)
    assert got[:10] == [f"image {i}".encode() for i in range(10)]
    assert isinstance(got[10], storage.NotFound) and str(got[10]).startswith(asked[10])
    assert got[11] == b"local image"
    assert isinstance(got[12], StorageError) and "no storage backend for gs://" in str(got[12])
    assert got[13:] == [f"image {i}".encode() for i in range(10, 20)]
    assert storage.missing(asked) == [asked[10], asked[12]]
    assert storage.is_dir(storage.join(root, "img")) and not storage.is_dir(uris[0])
    assert storage.read_head(uris[3], 5) == b"image"


def test_reads_are_bounded_by_the_size_first(root, tmp_path):
    """With a limit, a file is read only when it holds at most that many bytes: its size is learnt
    first (stat, S3 HEAD), so a sparse 8 GiB file costs nothing; the others are read whole, in order."""
    uris = [storage.join(root, f"b/{n}.png") for n in ("small", "exact", "over")]
    storage.write_many([(uris[0], b"x" * 10), (uris[1], b"y" * 100), (uris[2], b"z" * 101)])
    got = storage.read_many(uris, max_bytes=100)
    assert got[:2] == [b"x" * 10, b"y" * 100]
    assert isinstance(got[2], storage.TooLarge) and str(got[2]) == (
        f"{uris[2]}: file is 101 bytes, above the limit of 100; not read")
    assert storage.read_bytes(uris[1], max_bytes=100) == b"y" * 100
    with pytest.raises(storage.TooLarge, match="file is 101 bytes"):
        storage.read_bytes(uris[2], max_bytes=100)
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as f:
        f.truncate(8 << 30)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = storage.read_many([str(sparse), str(tmp_path / "none.png")], max_bytes=64 << 20)
    assert got[0].size == 8 << 30 and "not read" in str(got[0]) and isinstance(got[1], storage.NotFound)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: nothing was read


def test_an_unknown_scheme_is_named_with_the_ones_there_are():
    with pytest.raises(StorageError, match=r"gs://b/k: no storage backend for gs:// URIs; use a local path or s3://"):
        storage.read_bytes("gs://b/k")
    assert not storage.supported("gs://b/k") and storage.supported("s3://b/k") and storage.supported("/tmp/x")


class MemoryBackend(storage.Backend):
    """A whole backend in a few lines: what a new scheme (GCS, Azure, a mounted volume) has to provide."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def read(self, uri):
        if uri not in self.objects:
            raise storage.NotFound(f"{uri}: not found")
        return self.objects[uri]

    def write(self, uri, data):
        self.objects[uri] = bytes(data)

    def put_if_absent(self, uri, data):
        if uri in self.objects:
            return False
        self.objects[uri] = bytes(data)
        return True

    def delete(self, uri, recursive=False):
        for k in [k for k in self.objects if k == uri or (recursive and k.startswith(uri.rstrip("/") + "/"))]:
            del self.objects[k]

    def list_files(self, uri):
        return sorted(k for k in self.objects if k.startswith(uri.rstrip("/") + "/"))

    def exists(self, uri):
        return uri in self.objects or self.is_dir(uri)

    def is_dir(self, uri):
        return bool(self.list_files(uri))

    def list_dir(self, uri):
        prefix = uri.rstrip("/") + "/"
        return sorted({k[len(prefix):].split("/", 1)[0] for k in self.list_files(uri)})


def test_a_backend_registered_for_a_scheme_serves_every_call(tmp_path, monkeypatch):
    """Registering one class is all a new storage needs: the facade, copying trees across backends,
    manifests' path checks and the many-file reader then work with its URIs."""
    from medxfer.storage import backend

    monkeypatch.setattr(backend, "_BACKENDS", dict(backend._BACKENDS))  # "mem" served by this test only
    mem = MemoryBackend()
    storage.register("mem", mem)
    storage.write_json("mem://bucket/a/card.json", {"v": 1})
    storage.write_many([(f"mem://bucket/a/img/{i}.png", bytes([i])) for i in range(3)])
    assert storage.read_json("mem://bucket/a/card.json") == {"v": 1}
    assert storage.list_dir("mem://bucket/a") == ["card.json", "img"]
    assert storage.read_many(["mem://bucket/a/img/2.png", "mem://bucket/a/img/9.png"])[0] == b"\x02"
    assert storage.missing(["mem://bucket/a/img/0.png", "mem://bucket/a/img/9.png"]) == ["mem://bucket/a/img/9.png"]
    assert not storage.put_if_absent("mem://bucket/a/card.json", b"other")
    storage.copy_tree("mem://bucket/a", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "img" / "1.png").read_bytes() == b"\x01"
    storage.copy_tree(str(tmp_path / "copy"), "mem://bucket/b")
    assert storage.list_files("mem://bucket/b") == ["mem://bucket/b/card.json"] + [
        f"mem://bucket/b/img/{i}.png" for i in range(3)]
    storage.delete("mem://bucket/b", recursive=True)
    assert not storage.exists("mem://bucket/b")
