"""The storage interface every backend implements, and the registry that picks one by URI scheme.

Why one interface: the cache, the manifest checks, prediction, the registry and the run
folders all read and write through it, so a new kind of storage (GCS, Azure, a mounted volume
with other semantics) is one module ``medxfer/storage/<scheme>.py`` that subclasses
:class:`Backend` and calls :func:`register` — found the first time a URI with its scheme is
used — plus its test. Nothing above ``medxfer.storage`` knows which schemes exist.

Every failure is a :class:`~medxfer.errors.StorageError` whose message starts with the URI;
:class:`NotFound` when the object does not exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from medxfer.errors import StorageError
from medxfer.storage import uri as uris

T = TypeVar("T")


class NotFound(StorageError):
    """The object (or file) does not exist."""


class TooLarge(StorageError):
    """The object is larger than the caller's limit; it was not read (a property of the file, not
    a storage failure: an image's caller records it as a bad file)."""

    def __init__(self, uri: str, size: int | None, limit: int):
        self.uri, self.size, self.limit = uri, size, limit
        super().__init__(f"{uri}: {self.reason}")

    @property
    def reason(self) -> str:
        """What is wrong, without the URI: ``size`` is None when only "more than the limit" is known."""
        size = f"{self.size:,} bytes" if self.size is not None else f"more than {self.limit:,} bytes"
        return f"file is {size}, above the limit of {self.limit:,}; not read"


class NotAFile(StorageError):
    """The name is a FIFO, a device, a socket or a folder, not a file; it was not read (a property of
    the path, like :class:`TooLarge`: an image's caller records it as a bad file)."""

    def __init__(self, uri: str, kind: str):
        self.uri, self.kind = uri, kind
        super().__init__(f"{uri}: {self.reason}")

    @property
    def reason(self) -> str:
        return f"not a regular file ({self.kind}); medxfer reads image files only"


class Backend:
    """One kind of storage. URIs passed in are full (``s3://b/k``, ``/abs/path``, ``file:///p``)."""

    #: Concurrent requests for the many-file operations: above 1 for latency-bound stores.
    io_threads: int = 1
    #: Whether the store is one machine's disk: other Ray nodes see it only if it is a shared mount
    #: (checked against the cluster by :func:`medxfer.runtime.require_shared_storage`).
    node_local: bool = False

    # -- reading
    def read(self, uri: str) -> bytes:
        raise NotImplementedError

    def read_head(self, uri: str, nbytes: int) -> bytes:
        """The first ``nbytes`` (all of it when smaller): enough for an image header."""
        return self.read(uri)[:nbytes]

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        """The whole file when it holds at most ``max_bytes``, else :class:`TooLarge`.

        Backends that can learn the size first (a stat, a HEAD) override this so that an oversized
        file (a sparse multi-GB file named ``.png``) is never read; this fallback reads, then checks."""
        data = self.read(uri)
        if len(data) > max_bytes:
            raise TooLarge(uri, len(data), max_bytes)
        return data

    def read_many(self, uris_: Sequence[str], max_bytes: int | None = None) -> list[bytes | StorageError]:
        """Each file's bytes, or the StorageError reading it gave: one bad file fails no other.
        With ``max_bytes``, a larger file is a :class:`TooLarge` in its place, unread."""
        if max_bytes is None:
            return self.each(self.read, uris_)
        return self.each(lambda u: self.read_at_most(u, max_bytes), uris_)

    # -- writing
    def write(self, uri: str, data: bytes) -> None:
        """Atomically: a reader sees the old object or the new one, never a part."""
        raise NotImplementedError

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Bulk files whose completion another, atomic write marks (an import's manifest)."""
        self.each_or_raise(lambda it: self.write(*it), items)

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Create ``uri`` only if it does not exist; True if this call created it. Two writers
        racing for one name cannot both win (registry promotion, run and retrain locks)."""
        raise NotImplementedError

    def makedirs(self, uri: str) -> None:
        """Create a folder where folders exist; object stores have none to create."""

    def delete(self, uri: str, recursive: bool = False) -> None:
        raise NotImplementedError

    # -- listing
    def exists(self, uri: str) -> bool:
        """A file, or a folder holding anything."""
        raise NotImplementedError

    def is_dir(self, uri: str) -> bool:
        raise NotImplementedError

    def missing(self, uris_: Sequence[str]) -> list[str]:
        """Those of ``uris_`` that are not files."""
        return [u for u in uris_ if not self.exists(u) or self.is_dir(u)]

    def list_files(self, uri: str) -> list[str]:
        """Every file under ``uri`` (recursive), as full URIs, sorted; [] when there is none."""
        raise NotImplementedError

    def list_dir(self, uri: str) -> list[str]:
        """Names of the immediate children (files and folders), sorted."""
        raise NotImplementedError

    def links_leaving(self, root: str, files: Sequence[str]) -> list[str]:
        """Files under ``root`` that are links leading outside it; stores without links have none."""
        return []

    # -- handing over to other libraries
    def pyarrow_fs(self, uri: str) -> tuple[Any, str]:
        """``(pyarrow filesystem, path)`` for Ray Data readers and writers. It is pickled into
        Ray tasks, so it must carry no credentials: each worker resolves its own."""
        raise NotImplementedError

    def ray_storage(self, uri: str) -> tuple[str, Any]:
        """``(storage_path, storage_filesystem)`` for Ray Train's RunConfig."""
        fs, path = self.pyarrow_fs(uri)
        return path, fs

    # -- helpers for subclasses
    def each(self, fn: Callable[[T], Any], items: Sequence[T], threads: int | None = None) -> list[Any]:
        """``fn`` over ``items`` on ``threads`` (default ``io_threads``), a StorageError returned in its place."""

        def one(item: T) -> Any:
            try:
                return fn(item)
            except StorageError as e:
                return e

        threads = self.io_threads if threads is None else threads
        if threads <= 1 or len(items) <= 1:
            return [one(it) for it in items]
        with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
            return list(pool.map(one, items))

    def each_or_raise(self, fn: Callable[[T], Any], items: Sequence[T], threads: int | None = None) -> None:
        """``fn`` over ``items`` as :meth:`each`, then the first StorageError raised."""
        for result in self.each(fn, items, threads):
            if isinstance(result, StorageError):
                raise result


_BACKENDS: dict[str, Backend] = {}


def register(scheme: str, backend: Backend) -> None:
    """Serve URIs of ``scheme`` (``file`` for local paths) with ``backend``."""
    _BACKENDS[scheme.lower()] = backend


#: Modules of this package that are not backends (every other ``medxfer/storage/<scheme>.py`` is one).
_NOT_BACKENDS = {"backend", "layout", "tree", "uri"}


def schemes() -> list[str]:
    """Every scheme a backend module of this package serves (each imported, so it registers itself)."""
    import pkgutil

    package = importlib.import_module("medxfer.storage")
    for m in pkgutil.iter_modules(package.__path__):
        if m.name not in _NOT_BACKENDS:
            importlib.import_module(f"medxfer.storage.{m.name}")
    return sorted(_BACKENDS)


def backend_for(uri: str) -> Backend:
    """The backend for ``uri``'s scheme, imported from ``medxfer/storage/<scheme>.py`` on first use."""
    s = uris.scheme(uri)
    if s not in _BACKENDS and s.isidentifier():
        try:
            importlib.import_module(f"medxfer.storage.{s}")
        except ModuleNotFoundError as e:
            if e.name != f"medxfer.storage.{s}":
                raise  # the backend exists but a library it needs is missing: say which
    if s not in _BACKENDS:
        known = ", ".join(f"{k}://" for k in schemes() if k != uris.LOCAL)
        raise StorageError(f"{uri}: no storage backend for {s}:// URIs; use a local path or {known}")
    return _BACKENDS[s]
