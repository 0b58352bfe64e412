"""A full disk, for real: a 1 MiB tmpfs mounted by the test. Every write medxfer makes there fails
with a StorageError naming the file being written and "no space left on" its file system, and
nothing half-written is left that reads as valid (a cache without dataset.json, a bundle without
its card, the previous result.json intact)."""

from __future__ import annotations

import os
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest

from medxfer import storage
from medxfer.cli import main
from medxfer.errors import StorageError

NO_SPACE = r"no space left on the file system mounted at "


@pytest.fixture
def full_fs(tmp_path):
    """A 1 MiB tmpfs; skipped (with the reason) where this process may not mount one."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({r.stderr.strip() or r.returncode}); needs root, as in CI")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt, leave: int) -> None:
    """Fill the file system but ``leave`` bytes."""
    filler = mnt / ".filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def test_storage_writes_name_the_file_and_keep_what_was_there(full_fs):
    """Run-folder writes (result.json, checkpoints copied in, a bundle, an import's images): each is
    named; an atomic write leaves the old file, a bundle without its card is no bundle."""
    from evalutil import tiny_bundle

    from medxfer.errors import BundleError
    from medxfer.lifecycle.bundle import load_bundle

    run = str(full_fs / "runs" / "r1")
    storage.write_json(storage.join(run, "result.json"), {"status": "running"})
    _fill(full_fs, 16 * 1024)
    big = b"x" * (64 * 1024)
    with pytest.raises(StorageError, match=rf"^{run}/result.json: {NO_SPACE}{full_fs} while trying to write"):
        storage.write_bytes(storage.join(run, "result.json"), big)
    assert storage.read_json(storage.join(run, "result.json")) == {"status": "running"}
    assert storage.list_files(run) == [storage.join(run, "result.json")]  # no temp file left behind
    with pytest.raises(StorageError, match=rf"{run}/lock: {NO_SPACE}{full_fs}"):
        storage.put_if_absent(storage.join(run, "lock"), big)
    with pytest.raises(StorageError, match=rf"{run}/images/.*: {NO_SPACE}{full_fs}"):
        storage.write_many([(storage.join(run, "images", f"{i}.png"), big) for i in range(4)])
    src = full_fs.parent / "ckpt"
    src.mkdir()
    (src / "model.safetensors").write_bytes(big)
    with pytest.raises(StorageError, match=rf"{run}/epoch-0001/model.safetensors: {NO_SPACE}{full_fs}"):
        storage.copy_tree(str(src), storage.join(run, "epoch-0001"))
    bundle = str(full_fs / "bundle")
    with pytest.raises(StorageError, match=rf"{bundle}/model.safetensors: {NO_SPACE}"):
        tiny_bundle(bundle)
    with pytest.raises(BundleError):
        load_bundle(bundle)


def _noise_dataset(root, n: int = 160) -> str:
    """``n`` PNGs of noise (their float32 tensors do not compress) in two classes, and a manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        c = "ab"[i % 2]
        (root / c).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / c / f"{i}.png"), rng.integers(0, 256, (64, 64), dtype=np.uint8))
        rows.append({"path": f"{c}/{i}.png", "label": c})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root / "manifest.csv")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_preprocess_on_a_full_disk_names_the_shard_and_caches_nothing(engine, full_fs, tmp_path, capsys, request):
    """`medxfer preprocess` with each engine: the shard being written and the file system are named (a
    Ray task's StorageError reaches the driver with its text), exit 1 like every storage failure, and
    no dataset.json: the next run rebuilds instead of reading a partial cache."""
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    manifest = _noise_dataset(tmp_path / "ds")
    job = tmp_path / "job.yaml"
    job.write_text(f"data:\n  manifest: {manifest}\n  engine: {engine}\npreprocess:\n  size: 64\n  channels: 1\n"
                   f"storage:\n  root: {full_fs}\n")
    assert main(["preprocess", "--config", str(job)]) == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("medxfer: ")]  # Ray Data may log its own line
    assert line.startswith(f"medxfer: error: {full_fs}/cache/") and ".parquet: " + NO_SPACE + str(full_fs) in line, err
    assert "unexpected error" not in err and "Errno" not in err and "Traceback" not in err, err
    assert not list(full_fs.rglob("dataset.json")) and not list(full_fs.rglob("*.parquet"))
