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
