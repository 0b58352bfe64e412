"""One storage API for every place medxfer reads and writes: local folders, ``s3://``, and whatever
backend is added next.

Callers use the functions here (``storage.read_bytes(uri)``, ``storage.read_many(uris)``, ...)
and never look at a URI's scheme: each call goes to the backend registered for it
(:mod:`medxfer.storage.backend`), imported the first time a URI with its scheme is used:
:mod:`~medxfer.storage.file` for local folders (plain paths and ``file://``), :mod:`~medxfer.storage.s3`.
A new backend is one module ``medxfer/storage/<scheme>.py`` plus its test.

Small writes are atomic, so a reader never sees half a file. Every failure is a
:class:`StorageError` naming the URI and the cause (:class:`NotFound` when nothing is there).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from medxfer.errors import StorageError
from medxfer.storage.backend import Backend, NotAFile, NotFound, TooLarge, backend_for, register, schemes
from medxfer.storage.layout import Layout
from medxfer.storage.tree import copy_tree
from medxfer.storage.uri import (
    Resolved,
    basename,
    is_text,
    join,
    local_path,
    normalize,
    parent,
    relative_name,
    resolve_names,
    text_path,
)

__all__ = [
    "Backend", "Layout", "NotAFile", "NotFound", "Resolved", "StorageError", "backend_for", "basename", "copy_tree",
    "delete", "exists", "is_dir", "is_text", "join", "links_leaving", "list_dir", "list_files", "local_dir",
    "local_file", "local_path", "makedirs", "missing", "node_local", "normalize", "os_error", "parent",
    "put_if_absent", "pyarrow_fs", "ray_storage", "read_bytes", "read_head", "read_json", "read_many", "read_text",
    "register", "relative_name", "resolve_names", "s3_client", "schemes", "supported", "text_path", "TooLarge",
    "write_bytes", "write_json", "write_many", "write_text",
]

def node_local(uri: str) -> bool:
    """Whether ``uri`` lies on this machine's disk, where other nodes of a cluster may not see it."""
    return backend_for(uri).node_local


def os_error(uri: str, e: OSError, action: str) -> StorageError:
    """The StorageError for an OSError a library raised while it worked on ``uri`` (pyarrow's Parquet
    writer): a full disk is named with the file system to free, like the backends' own writes."""
    from medxfer.storage.file import local_error

    return local_error(uri, e, action)


def s3_client():
    """A boto3 S3 client from the standard credential chain and ``AWS_ENDPOINT_URL`` (for tools and
    tests that create buckets; medxfer's own reads and writes go through the functions here)."""
    from medxfer.storage.s3 import s3_client as client

    return client()


def supported(uri: str) -> bool:
    """Whether a backend serves ``uri``'s scheme."""
    try:
        backend_for(uri)
        return True
    except StorageError:
        return False


# ----------------------------------------------------------------------------- one object


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """The file's bytes; with ``max_bytes``, a larger file raises :class:`TooLarge` without being read."""
    if max_bytes is None:
        return backend_for(uri).read(uri)
    return backend_for(uri).read_at_most(uri, max_bytes)


def read_head(uri: str, nbytes: int) -> bytes:
    """The first ``nbytes`` of a file (all of it when smaller): enough for an image header."""
    return backend_for(uri).read_head(uri, nbytes)


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a temp file renamed into place locally, a single PUT on S3."""
    backend_for(uri).write(uri, data)


def put_if_absent(uri: str, data: bytes) -> bool:
    """Create ``uri`` only if it does not exist; True if this call created it (locks, promotions)."""
    return backend_for(uri).put_if_absent(uri, data)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise StorageError(f"{uri}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))


def exists(uri: str) -> bool:
    """A file, or a folder holding anything."""
    return backend_for(uri).exists(uri)


def is_dir(uri: str) -> bool:
    return backend_for(uri).is_dir(uri)


def delete(uri: str, recursive: bool = False) -> None:
    backend_for(uri).delete(uri, recursive)


def makedirs(uri: str) -> None:
    backend_for(uri).makedirs(uri)


def list_files(uri: str) -> list[str]:
    """All files under ``uri`` (recursive), as full URIs/paths, sorted."""
    return backend_for(uri).list_files(uri)


def list_dir(uri: str) -> list[str]:
    """Immediate children names (files and 'folders') under ``uri``."""
    return backend_for(uri).list_dir(uri)


def links_leaving(root: str, files: list[str]) -> list[str]:
    """The ``files`` under ``root`` that are symlinks (or inside linked folders) leading outside it.

    Listing a folder follows file symlinks, so a tree can name any file the process may read;
    callers that copy or list a tree drop or refuse these. Stores without links have none.
    """
    return backend_for(root).links_leaving(root, files)


# ----------------------------------------------------------------------------- many objects


def _by_backend(uris: Sequence[str]) -> tuple[dict[Backend, list[int]], dict[int, StorageError]]:
    """Indexes of ``uris`` grouped by backend; a URI no backend serves gets its error instead."""
    groups: dict[Backend, list[int]] = {}
    errors: dict[int, StorageError] = {}
    for i, u in enumerate(uris):
        try:
            groups.setdefault(backend_for(u), []).append(i)
        except StorageError as e:
            errors[i] = e
    return groups, errors


def read_many(uris: Sequence[str], max_bytes: int | None = None) -> list[bytes | StorageError]:
    """Each file's bytes in order, or the StorageError reading it gave (returned, not raised).

    The one reader of image bytes: the preprocessing cache and prediction both use it. Backends
    whose requests are latency-bound read on a few threads. With ``max_bytes`` (an image's
    ``data.max_image_bytes``), a larger file is a :class:`TooLarge` in its place: its size is
    learnt first (a stat, a HEAD), so a sparse multi-GB file is never read into memory.
    """
    groups, errors = _by_backend(uris)
    out: list[Any] = [errors.get(i) for i in range(len(uris))]
    for backend, idx in groups.items():
        some = [uris[i] for i in idx]
        got = backend.read_many(some) if max_bytes is None else backend.read_many(some, max_bytes)
        for i, r in zip(idx, got, strict=True):
            out[i] = r
    return out


def write_many(items: Sequence[tuple[str, bytes]]) -> None:
    """Write many files (an import's images): concurrently where that pays, not atomically one by one
    — the caller marks completion with one atomic write (the manifest). Raises the first failure."""
    groups, errors = _by_backend([u for u, _ in items])
    if errors:
        raise next(iter(errors.values()))
    for backend, idx in groups.items():
        backend.write_many([items[i] for i in idx])


def missing(uris: Sequence[str]) -> list[str]:
    """Those of ``uris`` that are not files, in order; batched per backend (S3: listings, not HEADs)."""
    groups, errors = _by_backend(uris)
    gone = set(errors)
    for backend, idx in groups.items():
        lost = set(backend.missing([uris[i] for i in idx]))
        gone.update(i for i in idx if uris[i] in lost)
    return [uris[i] for i in sorted(gone)]


# ----------------------------------------------------------------------------- other libraries


def pyarrow_fs(uri: str):
    """``(filesystem, path)`` for Ray Data readers and writers; it carries no credentials."""
    return backend_for(uri).pyarrow_fs(uri)


def ray_storage(uri: str):
    """``(storage_path, storage_filesystem)`` for Ray Train's ``RunConfig`` (a local folder is created)."""
    return backend_for(uri).ray_storage(uri)


def local_dir(uri: str) -> str | None:
    """``uri``'s path on this machine's disk when its store is a local folder, else None (then copy)."""
    return local_path(uri) if backend_for(uri).node_local else None


def local_file(uri: str, folder: str) -> str:
    """A local path holding the file at ``uri``, for libraries that only open paths: the file itself
    when it is on this machine's disk, else a copy in ``folder``."""
    path = local_dir(uri)
    if path is not None:
        if not os.path.isfile(path):
            raise NotFound(f"{uri}: not found")
        return path
    target = join(folder, basename(uri))
    write_bytes(target, read_bytes(uri))
    return target
