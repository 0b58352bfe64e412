"""A run's checkpoint records, without Ray: medxfer's own (runs in the command's process), Ray Train's
snapshot as it writes it, which one a run resumes from, and pruning that never leaves a record naming a
deleted folder. Local folders and the S3 protocol (moto's server on loopback)."""

from __future__ import annotations

import json
import os

import pytest

from medxfer import storage
from medxfer.errors import StorageError
from medxfer.train import resume


def _checkpoint(folder, epoch: int) -> str:
    """A checkpoint folder as ``save_checkpoint`` lays it out (contents are not read here)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(os.urandom(64))
    with open(os.path.join(folder, "state.json"), "w") as f:
        json.dump({"epoch": epoch}, f)
    return str(folder)


def _ray_snapshot(run: str, name: str, epoch: int) -> None:
    """Ray Train 2.60's snapshot, trimmed to the fields it always writes."""
    result = {"version": 0, "checkpoint_dir_name": name, "metrics": {"epoch": epoch, "val_auroc": 0.8}}
    storage.write_json(storage.join(run, resume.SNAPSHOT), {
        "ray_version": "2.60.0", "checkpoint_results": [result], "latest_checkpoint_result": result})


def test_publish_keeps_the_newest_and_records_them_in_order(tmp_path):
    run = str(tmp_path / "run")
    for epoch in (1, 2, 3):
        resume.publish(_checkpoint(tmp_path / f"w{epoch}", epoch), run, epoch, keep=2)
    assert sorted(p for p in os.listdir(run) if p.startswith("epoch-")) == ["epoch-0002", "epoch-0003"]
    assert storage.read_json(os.path.join(run, resume.RECORD))["checkpoints"] == [
        {"name": "epoch-0002", "epoch": 2}, {"name": "epoch-0003", "epoch": 3}]
    found = resume.latest(run)
    assert (found.uri, found.epoch, found.ray) == (os.path.join(run, "epoch-0003"), 3, False)
    assert resume.has_checkpoints(run)


def test_a_new_run_has_nothing_to_resume(tmp_path):
    assert resume.latest(str(tmp_path / "run")) is None
    assert not resume.has_checkpoints(str(tmp_path / "run"))


def test_the_newest_checkpoint_of_either_record_wins(tmp_path):
    """A run that changed mode between invocations resumes from whichever record is ahead."""
    run = str(tmp_path / "run")
    resume.publish(_checkpoint(tmp_path / "w", 4), run, 4, keep=1)
    _checkpoint(os.path.join(run, "epoch-0006"), 6)
    _ray_snapshot(run, "epoch-0006", 6)
    assert (resume.latest(run).epoch, resume.latest(run).ray) == (6, True)
    resume.publish(_checkpoint(tmp_path / "w9", 9), run, 9, keep=1)
    assert (resume.latest(run).epoch, resume.latest(run).ray) == (9, False)
    assert os.path.isdir(os.path.join(run, "epoch-0006"))  # Ray Train's checkpoints are Ray's to prune


def test_an_unreadable_ray_snapshot_is_reported_and_skipped(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / resume.SNAPSHOT).write_text("{not json")
    with caplog.at_level("WARNING", logger="medxfer.train"):
        assert resume.latest(str(run)) is None
    assert "cannot read Ray Train's checkpoint record" in caplog.text


def test_a_checkpoint_without_its_state_is_refused_with_the_way_out(tmp_path):
    run = str(tmp_path / "run")
    resume.publish(_checkpoint(tmp_path / "w", 2), run, 2, keep=1)
    os.remove(os.path.join(run, "epoch-0002", "state.json"))
    with pytest.raises(StorageError, match=r"epoch-0002: this checkpoint is missing or incomplete.*checkpoints\.json"):
        with resume.local_copy(resume.latest(run).uri):
            pass


def test_checkpoints_on_s3_are_published_pruned_and_read_back(s3_root, tmp_path):
    run = f"{s3_root}/runs/r"
    for epoch in (1, 2):
        resume.publish(_checkpoint(tmp_path / f"w{epoch}", epoch), run, epoch, keep=1)
    assert not storage.exists(f"{run}/epoch-0001")
    found = resume.latest(run)
    assert found.uri == f"{run}/epoch-0002"
    with resume.local_copy(found.uri) as d:
        assert json.load(open(os.path.join(d, "state.json"))) == {"epoch": 2}
        assert sorted(os.listdir(d)) == ["model.safetensors", "state.json"]


@pytest.mark.parametrize("latest_result", [
    {"checkpoint_dir_name": "epoch-0006", "metrics": {"epoch": "six"}},
    {"checkpoint_dir_name": "epoch-0006", "metrics": {"epoch": 5.5}},
    {"checkpoint_dir_name": ["epoch-0006"], "metrics": {"epoch": 6}},
    {"checkpoint_dir_name": "../other-run/epoch-0006", "metrics": {"epoch": 6}},
    {"checkpoint_dir_name": "..", "metrics": {"epoch": 6}},
])
def test_a_ray_snapshot_in_a_format_medxfer_does_not_know_is_reported_and_passed_over(tmp_path, caplog, latest_result):
    """Ray Train's snapshot is Ray's format: what does not read as a folder of this run and a whole
    epoch is passed over, and the run resumes from medxfer's own record."""
    run = str(tmp_path / "run")
    resume.publish(_checkpoint(tmp_path / "w", 3), run, 3, keep=1)
    storage.write_json(storage.join(run, resume.SNAPSHOT), {"latest_checkpoint_result": latest_result})
    with caplog.at_level("WARNING", logger="medxfer.train"):
        found = resume.latest(run)
    assert (found.epoch, found.ray) == (3, False)
    assert "cannot read Ray Train's checkpoint record" in caplog.text


def test_a_ray_snapshot_that_names_a_whole_epoch_as_a_float_is_read(tmp_path):
    run = str(tmp_path / "run")
    _ray_snapshot(run, "epoch-0006", 6)
    snap = storage.read_json(storage.join(run, resume.SNAPSHOT))
    snap["latest_checkpoint_result"]["metrics"]["epoch"] = 6.0
    storage.write_json(storage.join(run, resume.SNAPSHOT), snap)
    assert (resume.latest(run).epoch, resume.latest(run).ray) == (6, True)


@pytest.mark.parametrize("record", [{"checkpoints": [{"name": "epoch-0003"}]},
                                    {"checkpoints": [{"name": "epoch-0003", "epoch": "3"}]},
                                    {"checkpoints": [{"name": "../elsewhere", "epoch": 3}]},
                                    {"checkpoints": "epoch-0003"},
                                    ["epoch-0003"],
                                    b'{"checkpoints": [{"name": "epoch-0003", "ep',  # truncated
                                    b"\xff\xfe not text"])
def test_a_damaged_medxfer_record_is_refused_with_the_way_out(tmp_path, record):
    run = str(tmp_path / "run")
    resume.publish(_checkpoint(tmp_path / "w", 3), run, 3, keep=1)
    if isinstance(record, bytes):
        storage.write_bytes(storage.join(run, resume.RECORD), record)
    else:
        storage.write_json(storage.join(run, resume.RECORD), record)
    with pytest.raises(StorageError, match=r"checkpoints\.json: this checkpoint record is damaged.*new name"):
        resume.latest(run)


def test_a_ray_snapshot_whose_epoch_is_not_a_whole_number_is_passed_over(tmp_path):
    run = str(tmp_path / "run")
    for epoch in (float("inf"), float("nan"), -1, True):
        storage.write_json(storage.join(run, resume.SNAPSHOT),
                           {"latest_checkpoint_result": {"checkpoint_dir_name": "epoch-0001", "metrics": {"epoch": epoch}}})
        assert resume.latest(run) is None
