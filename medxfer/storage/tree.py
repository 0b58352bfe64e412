"""Copying a folder into another, across any two backends, without ever writing outside the destination.

Why checks come before the first write: ``registry promote`` and ``retrain`` copy bundles with
this, and a refused tree must leave the destination untouched. Two ways out exist. S3 keys are
plain strings: ``b/../../x``, ``b//etc/x`` and ``b/./x`` are valid keys, and a local destination
would resolve them to places outside itself. And a local source may hold symlinks leading
outside it (a bundle's ``notes.txt`` linked to a file elsewhere would copy that file's contents).
"""

from __future__ import annotations

from medxfer.errors import StorageError
from medxfer.storage import uri as uris
from medxfer.storage.backend import backend_for


def relative_names(src: str, files: list[str]) -> list[tuple[str, str]]:
    """``(file, name relative to src)`` pairs, refusing any name that could land outside a destination.

    Only names made of ordinary parts pass; folder markers (keys ending in '/') carry no file and
    are left out.
    """
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    not_text: list[str] = []
    for f in files:
        rel = uris.relative_name(f, src)
        if rel is not None and rel.endswith("/"):
            continue
        if rel is not None and rel.startswith("file://"):  # a local name that is not UTF-8, carried as file://...%XX
            not_text.append(f)
        elif rel is None or any(part in ("", ".", "..") for part in rel.split("/")):
            bad.append(f)
        pairs.append((f, rel))
    if not_text:
        raise StorageError(
            f"{src}: {len(not_text)} file name(s) are not UTF-8 text, e.g. {not_text[0]}; nothing was copied "
            "(object stores and the registry name files in UTF-8). Rename those files"
        )
    if bad:
        raise StorageError(
            f"{src}: {len(bad)} name(s) would leave the destination when copied, e.g. {bad[0]!r}; "
            "nothing was copied. Remove those objects (names with '..', '.' or empty parts)"
        )
    return pairs


def copy_tree(src: str, dst: str) -> None:
    """Copy every file under ``src`` to the same relative place under ``dst``; everything checked first."""
    source, dest = backend_for(src), backend_for(dst)
    files = source.list_files(src)
    outside = source.links_leaving(src, files)
    if outside:
        raise StorageError(
            f"{src}: {len(outside)} symlink(s) lead outside the folder, e.g. {outside[0]}; nothing was "
            "copied. Replace the links with the files, or remove them"
        )
    for f, rel in relative_names(src, files):
        dest.write(uris.join(dst, rel), source.read(f))
