"""Local folders (plain paths and ``file://``): atomic writes by rename, exclusive create by link.

Why links matter here and nowhere else: listing a folder follows file symlinks, so a tree can
name any file the process may read. Copying a tree, checking a manifest's paths and listing a
prediction folder ask :meth:`LocalBackend.links_leaving` which files lead outside their root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from medxfer.errors import StorageError
from medxfer.storage.backend import Backend, NotAFile, NotFound, TooLarge, register
from medxfer.storage.uri import LOCAL, local_path, scheme, text_path


def no_space(e: BaseException) -> bool:
    """Whether ``e`` is a full disk (or quota): ENOSPC/EDQUOT from the OS, or pyarrow's OSError,
    which carries the errno only in its text."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return isinstance(e, OSError) and ("No space left on device" in text or "Disk quota exceeded" in text)


def local_error(uri: str, e: OSError, action: str) -> StorageError:
    """The StorageError for an OSError at ``uri``: what happened, where, and the fix."""
    if isinstance(e, FileNotFoundError):
        return NotFound(f"{uri}: not found")
    if isinstance(e, PermissionError):
        return StorageError(f"{uri}: permission denied while trying to {action}")
    if no_space(e):
        return StorageError(f"{uri}: no space left on {_device_of(uri)} while trying to {action}; free space "
                            "there (or point storage.root at a larger volume) and run the command again")
    return StorageError(f"{uri}: could not {action}: {e.strerror or e}")


def _device_of(uri: str) -> str:
    """The mount point holding ``uri`` ("the file system mounted at /data"): the place to free."""
    if scheme(uri) != LOCAL:
        return "the storage"
    path = os.path.abspath(local_path(uri))
    while not os.path.ismount(path):
        up = os.path.dirname(path)
        if up == path:
            break
        path = up
    return f"the file system mounted at {text_path(path)}"


@contextmanager
def _open_regular(uri: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """``(file, its stat)`` for a regular file, unbuffered; anything else is a StorageError naming its kind.

    Why: images come from folders nobody has looked at. Opening a FIFO for reading waits for a writer
    that may never come (so it is opened non-blocking, then set back to blocking), and a device may
    never end: either named like an image is one bad file, not a batch that never finishes."""
    fd = os.open(local_path(uri), os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(uri, _kind(st.st_mode))
        os.set_blocking(fd, True)
        yield f, st


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")]
    return next((name for test, name in kinds if test(mode)), "a special file")


def inside(path: str, real_root: str) -> bool:
    """Whether ``path``, symlinks resolved, is ``real_root`` or lies under it (already resolved)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _finished_temp(path: Path, data: bytes) -> str:
    """A temp file beside ``path`` holding ``data``, flushed to disk: renamed or linked into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


class LocalBackend(Backend):
    node_local = True

    def read(self, uri: str) -> bytes:
        try:
            return Path(local_path(uri)).read_bytes()
        except OSError as e:
            raise local_error(uri, e, "read") from None

    def read_head(self, uri: str, nbytes: int) -> bytes:
        try:
            with _open_regular(uri) as (f, _):
                return f.read(nbytes)
        except OSError as e:
            raise local_error(uri, e, "read") from None

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        """``fstat`` first, then reads of what the file holds, never past ``max_bytes + 1``: a sparse
        or growing file costs no more than the limit (and a small file no buffer of the limit's size).

        Only regular files are read (:func:`_open_regular`)."""
        try:
            with _open_regular(uri) as (f, st):
                if st.st_size > max_bytes:
                    raise TooLarge(uri, st.st_size, max_bytes)
                parts, got = [], 0
                want = st.st_size + 1 if st.st_size else 1 << 20
                while got <= max_bytes:
                    ask = min(want, max_bytes + 1 - got)
                    part = f.read(ask)
                    parts.append(part)
                    got += len(part)
                    if not part or len(part) < ask:
                        break  # end of file (a short read of a regular file is its end)
                    want = 1 << 20
        except OSError as e:
            raise local_error(uri, e, "read") from None
        if got > max_bytes:
            raise TooLarge(uri, None, max_bytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, uri: str, data: bytes) -> None:
        path = Path(local_path(uri))
        try:
            tmp = _finished_temp(path, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            raise local_error(uri, e, "write") from None

    def write_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Plain writes, no fsync: bulk image files whose completion an atomic manifest marks. A few
        threads keep the disk busy (writes release the GIL)."""
        try:
            for d in {os.path.dirname(local_path(u)) for u, _ in items}:
                os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise local_error(items[0][0], e, "create the folder") from None

        def put(item: tuple[str, bytes]) -> None:
            try:
                with open(local_path(item[0]), "wb") as f:
                    f.write(item[1])
            except OSError as e:
                raise local_error(item[0], e, "write") from None

        self.each_or_raise(put, items, threads=8)

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """``os.link`` of a finished temp file: atomic and exclusive."""
        path = Path(local_path(uri))
        try:
            tmp = _finished_temp(path, data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        except OSError as e:
            raise local_error(uri, e, "create") from None

    def makedirs(self, uri: str) -> None:
        try:
            Path(local_path(uri)).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise local_error(uri, e, "create the folder") from None

    def delete(self, uri: str, recursive: bool = False) -> None:
        p = Path(local_path(uri))
        try:
            if p.is_dir() and recursive:
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        except OSError as e:
            raise local_error(uri, e, "delete") from None

    def exists(self, uri: str) -> bool:
        return os.path.exists(local_path(uri))

    def is_dir(self, uri: str) -> bool:
        return os.path.isdir(local_path(uri))

    def missing(self, uris_: Sequence[str]) -> list[str]:
        return [u for u in uris_ if not os.path.isfile(local_path(u))]

    def list_files(self, uri: str) -> list[str]:
        root = Path(local_path(uri))
        if not root.exists():
            return []
        return sorted(text_path(str(p)) for p in root.rglob("*") if p.is_file())

    def list_dir(self, uri: str) -> list[str]:
        p = Path(local_path(uri))
        return sorted(text_path(c.name) for c in p.iterdir()) if p.is_dir() else []

    def links_leaving(self, root: str, files: Sequence[str]) -> list[str]:
        """Folders first (few), then one ``lstat`` per file for the files that are links themselves;
        a missing file is not a link (whoever needs it reports it missing)."""
        real_root = os.path.realpath(local_path(root))
        folder_inside: dict[str, bool] = {}
        out = []
        for f in files:
            path = local_path(f)
            d = os.path.dirname(path)
            if d not in folder_inside:
                folder_inside[d] = inside(d, real_root)
            if not folder_inside[d]:
                out.append(f)
                continue
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode) and not inside(path, real_root):
                    out.append(f)
            except OSError:
                pass
        return out

    def pyarrow_fs(self, uri: str):
        from pyarrow import fs as pafs

        return pafs.LocalFileSystem(), os.path.abspath(local_path(uri))

    def ray_storage(self, uri: str):
        """A local run folder goes to Ray Train as a path (created here), without a filesystem."""
        self.makedirs(uri)
        return os.path.abspath(local_path(uri)), None


register(LOCAL, LocalBackend())
