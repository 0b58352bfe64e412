"""The local backend (``medxfer.storage.file``): permission errors named, and links leading out of a
folder found."""

from __future__ import annotations

import os

import pytest

from medxfer import storage
from medxfer.errors import StorageError


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


def test_links_leaving_a_folder_are_found_through_linked_files_and_linked_folders(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "a.png").write_bytes(b"a")
    (root / "alias.png").symlink_to(root / "a.png")  # inside: fine
    (root / "sub" / "out.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    files = [*storage.list_files(str(root)), str(root / "linked" / "secret.png")]  # as a manifest may name it
    assert sorted(os.path.relpath(f, root) for f in storage.links_leaving(str(root), files)) == [
        "linked/secret.png", "sub/out.png"]
    assert storage.links_leaving(str(root), [str(root / "gone.png")]) == []  # missing: reported elsewhere


def test_a_fifo_or_device_named_as_an_image_is_refused_at_once_not_waited_on(tmp_path):
    """Opening a FIFO for reading waits for a writer that never comes; a device may never end. Both
    are StorageErrors naming the kind of file, returned in the file's place by ``read_many`` at once,
    so a folder or manifest that names one costs one bad row, not a batch that never finishes."""
    import threading

    fifo, dev, good = tmp_path / "scan.png", tmp_path / "zero.png", tmp_path / "good.png"
    os.mkfifo(fifo)
    dev.symlink_to("/dev/zero")
    good.write_bytes(b"png")
    got: list = []
    reader = threading.Thread(target=lambda: got.append(storage.read_many([str(fifo), str(dev), str(good)], 1 << 20)),
                              daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # unblock the reader thread (a writer opens the FIFO), then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO waited for a writer")
    fifo_err, dev_err, data = got[0]
    assert isinstance(fifo_err, StorageError) and "not a regular file (a FIFO)" in str(fifo_err), fifo_err
    assert isinstance(dev_err, StorageError) and "not a regular file (a character device)" in str(dev_err), dev_err
    assert data == b"png"
    with pytest.raises(StorageError, match=r"not a regular file \(a FIFO\)"):
        storage.read_head(str(fifo), 64)  # the header sample for channels: auto opens files too
