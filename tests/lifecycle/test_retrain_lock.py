"""The retrain lock: a second tick while one runs touches nothing; a damaged lock is reported and taken
over after its TTL.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medxfer import storage
from medxfer.config.loading import validate_dict
from medxfer.errors import MedxferError

REPO = Path(__file__).resolve().parents[2]


def test_second_tick_while_one_runs_exits_cleanly_and_touches_nothing(tmp_path, capsys):
    """The lock is taken before any work: a tick of another hour changes nothing while one runs.

    (A retry of the *same* tick waits for the earlier attempt's lease instead: test_retrain.)"""
    from medxfer.cli import main
    from medxfer.config.loading import dump_yaml
    from medxfer.lifecycle.lease import RunLock
    from medxfer.lifecycle.retrain import run_retrain

    root = tmp_path / "store"
    cfg = validate_dict({"name": "nightly", "model": {"name": "breast"}, "storage": {"root": str(root)},
                         "data": {"manifest": str(tmp_path / "nowhere.csv")}})
    lock_uri = storage.join(str(root), "locks", "retrain-breast")
    first = RunLock(lock_uri, 3600, "nightly-20261125T02")
    assert first.acquire()[0]
    before = {p: Path(p).read_bytes() for p in storage.list_files(str(root))}
    for tick in ("2026-11-25T03:00:00Z", "2026-11-25T03:30:00Z"):
        rec = run_retrain(cfg, tick)
        assert rec["status"] == "skipped" and not rec["promoted"]
        assert "nightly-20261125T02" in rec["reason"] and "does nothing" in rec["reason"]
    f = tmp_path / "job.yaml"
    f.write_text(dump_yaml(cfg))
    capsys.readouterr()
    assert main(["retrain", "--config", str(f), "--tick", "2026-11-25T04:00:00Z"]) == 0
    assert "skipped" in capsys.readouterr().out
    # Nothing written: no run folder, the first tick's lock exactly as it was.
    assert {p: Path(p).read_bytes() for p in storage.list_files(str(root))} == before
    assert first.holder()["run"] == "nightly-20261125T02"
    first.release()
    # A tick that fails (here: the manifest does not exist) releases the lock for the next one.
    with pytest.raises(MedxferError, match="nowhere.csv: not found"):
        run_retrain(cfg, "2026-11-25T05:00:00Z")
    assert RunLock(lock_uri, 3600, "probe").holder() is None


@pytest.mark.parametrize("damage", [b"{not json", b'{"run": "x", "owner": "y"}', b'{"expires_epoch": "soon"}'])
def test_damaged_retrain_lock_is_reported_and_taken_over_after_its_ttl(tmp_path, capsys, damage):
    """A lock object that is not JSON or lacks its expiry (a crash mid-write on a store without atomic PUT,
    a hand edit) is named in the skip message, counts as held for one TTL from when it was first seen, and
    is then taken over, instead of failing every later tick."""
    from medxfer.cli import main
    from medxfer.config.loading import dump_yaml
    from medxfer.lifecycle.lease import RunLock
    from medxfer.lifecycle.retrain import run_retrain

    root = tmp_path / "store"
    cfg = validate_dict({"name": "nightly", "model": {"name": "breast"}, "storage": {"root": str(root)},
                         "data": {"manifest": str(tmp_path / "nowhere.csv")}})
    lock_dir = root / "locks" / "retrain-breast"
    lock_dir.mkdir(parents=True)
    (lock_dir / "l00000001.json").write_bytes(damage)
    rec = run_retrain(cfg, "2026-11-25T02:00:00Z")
    assert rec["status"] == "skipped" and "l00000001.json" in rec["reason"] and "damaged" in rec["reason"]
    f = tmp_path / "job.yaml"
    f.write_text(dump_yaml(cfg))
    capsys.readouterr()
    assert main(["retrain", "--config", str(f), "--tick", "2026-11-25T03:00:00Z"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (lock_dir / "l00000001.json").read_bytes() == damage  # reported, not rewritten
    # One TTL after it was first seen, the next contender takes the lock over.
    short = RunLock(str(lock_dir), 0.5, "next")
    assert not short.acquire()[0]
    time.sleep(0.6)
    ok, record = short.acquire()
    assert ok and record["number"] == 2
    short.release()
