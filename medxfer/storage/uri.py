"""URI strings: schemes, joining, parents, names, and names resolved against a folder.

Why these are strings and not backend methods: an object store names a file by '/'-separated
keys under ``scheme://``, and a local file by an OS path (plain or ``file://``). These rules are
the same for every object store, so a new backend inherits them instead of repeating them.

Local names are text everywhere above the local backend. A Linux file name is bytes, and one
that is not valid UTF-8 (a Latin-1 export, a broken device) reaches Python as a string with lone
surrogates, which no UTF-8 file (CSV, JSON, Parquet) and no UTF-8 terminal can hold. Such a name
is carried as its ``file://`` URI with the bytes that are not UTF-8 written ``%XX``
(:func:`text_path`, RFC 8089's percent-encoding): readable, valid in every output, and
:func:`local_path` turns it back into the bytes on disk.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

LOCAL = "file"
_FILE = "file://"


def scheme(uri: str) -> str:
    """``s3``, ``gs``, ...; ``file`` for local paths, with or without ``file://``."""
    u = str(uri)
    return u.split("://", 1)[0].lower() if "://" in u else LOCAL


def _is_file_uri(u: str) -> bool:
    return u[:7].lower() == _FILE


def local_path(uri: str) -> str:
    """The OS path of a local URI: ``file://`` removed and its ``%XX`` escapes decoded into the
    bytes of the name (undecodable ones as Python's surrogate escapes, which ``open`` turns back)."""
    u = str(uri)
    if not _is_file_uri(u):
        return u
    rest = u[len(_FILE):]
    return unquote(rest, errors="surrogateescape") if "%" in rest else rest


def is_text(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def text_path(path: str) -> str:
    """A local OS path as medxfer writes it: unchanged when it is valid UTF-8, else its ``file://``
    URI (relative when the path is) with each byte that is not UTF-8, and '%', written ``%XX``.

    Raises ValueError for a lone surrogate that no file name can hold (only JSON text makes those).
    """
    if is_text(path):
        return path
    out = []
    for ch in path:
        if "\udc80" <= ch <= "\udcff":  # a byte os.fsdecode could not decode
            out.append(f"%{ord(ch) - 0xDC00:02X}")
        elif "\ud800" <= ch <= "\udfff":
            raise ValueError(f"{path.encode('utf-8', 'backslashreplace').decode()}: not a file name (a lone "
                             "surrogate)")
        else:
            out.append("%25" if ch == "%" else ch)
    return _FILE + "".join(out)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or a local path."""
    base = str(uri)
    if scheme(base) == LOCAL:
        return text_path(str(Path(local_path(base), *[local_path(str(p)) for p in parts])))
    out = base.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def parent(uri: str) -> str:
    u = str(uri).rstrip("/")
    if scheme(u) == LOCAL:
        return text_path(str(Path(local_path(u)).parent))
    prefix, rest = u.split("://", 1)
    return u if "/" not in rest else f"{prefix}://{rest.rsplit('/', 1)[0]}"


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def normalize(uri: str) -> str:
    """Absolute local paths (so Ray workers in other folders agree); other URIs without a trailing '/'."""
    return text_path(os.path.abspath(local_path(uri))) if scheme(uri) == LOCAL else str(uri).rstrip("/")


def relative_name(uri: str, folder: str) -> str | None:
    """The '/'-separated name of ``uri`` under ``folder``, or None when it does not lie under it."""
    if scheme(uri) != scheme(folder):
        return None
    if scheme(uri) == LOCAL:
        path, base = local_path(uri), local_path(folder).rstrip(os.sep)
        if not path.startswith(base + os.sep):
            return None
        return text_path(path[len(base) + 1:].replace(os.sep, "/"))
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

    Relative names may not leave the folder: their indexes are listed in ``leaving``. A ``file://``
    URI follows the rules of the path it holds: ``file:///abs/x.png`` is the absolute path, and
    ``file://img/x.png`` (or ``file://../x.png``) is relative, joined onto the folder and listed in
    ``leaving`` when it climbs out, exactly like ``img/x.png``. Names with a scheme other than
    ``file`` are listed in ``schemes`` for the caller to check against the backends it has. Plain
    names, the usual case, take a fast path (a prefix each). Local results are text
    (:func:`text_path`).
    """
    local = scheme(folder) == LOCAL
    base = local_path(folder).rstrip(os.sep) if local else str(folder).rstrip("/")
    sep = os.sep if local else "/"
    if sep == "/" and all(_plain(n) for n in names):
        uris = [f"{base}/{n}" for n in names]
        if local and not is_text(base):
            uris = [text_path(u) for u in uris]
        return Resolved(uris, [True] * len(names))
    out = Resolved()
    for i, name in enumerate(names):
        out.relative.append(False)
        rel = None
        if _is_file_uri(name):
            path = local_path(name)
            if path.startswith("/"):
                out.uris.append(text_path(os.path.normpath(path)))
            else:
                rel = path  # file://img/x.png: the relative name img/x.png
        elif scheme(name) != LOCAL:
            out.schemes.append(i)
            out.uris.append(name.rstrip("/"))
        elif name.startswith("/"):
            out.uris.append(text_path(os.path.normpath(name)))
        else:
            rel = name
        if rel is None:
            continue
        out.relative[-1] = True
        rel = rel.replace("\\", "/")
        if not local:
            prefix, rest = base.split("://", 1)
            joined = f"{prefix}://" + posixpath.normpath(f"{rest}/{rel}")
        else:
            joined = os.path.normpath(os.path.join(base, rel))
        if not joined.startswith(base + sep):
            out.leaving.append(i)
        out.uris.append(text_path(joined) if local else joined)
    return out
