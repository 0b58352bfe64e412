"""URI strings: schemes, joining, parents, names, and names resolved against a folder.

Why these are strings and not backend methods: an object store names a file by '/'-separated
keys under ``scheme://``, and a local file by an OS path (plain or ``file://``). These rules are
the same for every object store, so a new backend inherits them instead of repeating them.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

LOCAL = "file"


def scheme(uri: str) -> str:
    """``s3``, ``gs``, ...; ``file`` for local paths, with or without ``file://``."""
    u = str(uri)
    return u.split("://", 1)[0].lower() if "://" in u else LOCAL


def local_path(uri: str) -> str:
    """The OS path of a local URI (``file://`` removed)."""
    u = str(uri)
    return u[len("file://"):] if u.startswith("file://") else u


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or a local path."""
    base = str(uri)
    if scheme(base) == LOCAL:
        return str(Path(local_path(base), *[str(p) for p in parts]))
    out = base.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def parent(uri: str) -> str:
    u = str(uri).rstrip("/")
    if scheme(u) == LOCAL:
        return str(Path(local_path(u)).parent)
    prefix, rest = u.split("://", 1)
    return u if "/" not in rest else f"{prefix}://{rest.rsplit('/', 1)[0]}"


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def normalize(uri: str) -> str:
    """Absolute local paths (so Ray workers in other folders agree); other URIs without a trailing '/'."""
    return os.path.abspath(local_path(uri)) if scheme(uri) == LOCAL else str(uri).rstrip("/")


def relative_name(uri: str, folder: str) -> str | None:
    """The '/'-separated name of ``uri`` under ``folder``, or None when it does not lie under it."""
    if scheme(uri) != scheme(folder):
        return None
    if scheme(uri) == LOCAL:
        path, base = local_path(uri), local_path(folder).rstrip(os.sep)
        if not path.startswith(base + os.sep):
            return None
        return path[len(base) + 1:].replace(os.sep, "/")
    base = str(folder).rstrip("/")
    return uri[len(base) + 1:] if uri.startswith(base + "/") else None


@dataclass
class Resolved:
    """Names resolved against a folder, with what the caller must refuse (indexes into the names)."""

    uris: list[str] = field(default_factory=list)
    relative: list[bool] = field(default_factory=list)  # the name was relative to the folder
    leaving: list[int] = field(default_factory=list)  # relative names that leave the folder via '..'
    schemes: list[int] = field(default_factory=list)  # URIs whose scheme the caller must check


def _plain(name: str) -> bool:
    """A relative name with nothing to normalise: no scheme, root, '.', '..', '\\' or empty part."""
    return not ("://" in name or name.startswith(("/", ".")) or "\\" in name or "/." in name or "//" in name)


def resolve_names(folder: str, names: list[str]) -> Resolved:
    """Absolute paths and URIs as given (normalised); relative names joined onto ``folder``.

    Relative names may not leave the folder: their indexes are listed in ``leaving``. Names
    with a scheme other than ``file`` are listed in ``schemes`` for the caller to check against
    the backends it has. Plain names, the usual case, take a fast path (a prefix each).
    """
    base = str(folder).rstrip("/") if scheme(folder) != LOCAL else local_path(folder).rstrip(os.sep)
    sep = os.sep if scheme(folder) == LOCAL else "/"
    if all(_plain(n) for n in names) and sep == "/":
        return Resolved([f"{base}/{n}" for n in names], [True] * len(names))
    out = Resolved()
    for i, name in enumerate(names):
        out.relative.append(False)
        if scheme(name) == LOCAL and name.startswith("file://"):
            out.uris.append(os.path.normpath(local_path(name)))
        elif scheme(name) != LOCAL:
            out.schemes.append(i)
            out.uris.append(name.rstrip("/"))
        elif name.startswith("/"):
            out.uris.append(os.path.normpath(name))
        else:
            out.relative[-1] = True
            rel = name.replace("\\", "/")
            if sep == "/" and scheme(folder) != LOCAL:
                prefix, rest = base.split("://", 1)
                joined = f"{prefix}://" + posixpath.normpath(f"{rest}/{rel}")
            else:
                joined = os.path.normpath(os.path.join(base, rel))
            if not joined.startswith(base + sep):
                out.leaving.append(i)
            out.uris.append(joined)
    return out
