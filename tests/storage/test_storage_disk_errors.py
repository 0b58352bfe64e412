"""Storage paths that cannot be written are named in the error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medxfer import storage
from medxfer.errors import StorageError

REPO = Path(__file__).resolve().parents[2]


def test_unwritable_storage_paths_are_named(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    (root / "runs").write_text("a regular file where the runs folder should be\n")
    uri = storage.join(str(root), "runs", "r1", "result.json")
    with pytest.raises(StorageError, match=r"runs/r1/result\.json: could not write: Not a directory"):
        storage.write_json(uri, {"a": 1})
    with pytest.raises(StorageError, match=r"runs/r1: could not create the folder"):
        storage.makedirs(storage.join(str(root), "runs", "r1"))
    with pytest.raises(StorageError, match="could not create"):
        storage.put_if_absent(storage.join(str(root), "runs", "lock.json"), b"{}")
    assert (root / "runs").read_text().startswith("a regular file")  # nothing clobbered
