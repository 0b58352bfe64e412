"""benchmarks/results: every results file names its machine and records relative paths only
(a result describes the run, not the folders of the machine it ran on)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_results_record_the_machine_and_no_absolute_paths():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for f in files:
        result = json.loads(f.read_text())
        assert result.get("machine", {}).get("cpus"), f"{f.name}: no machine description"
        absolute = [s for s in _strings(result) if s.startswith("/") and " " not in s]
        assert not absolute, f"{f.name}: absolute paths {absolute[:3]}"


def test_results_paths_stay_inside_the_checkout_or_the_work_folder():
    """A path that climbs out of the repository (``../wt15/...``) names someone's machine."""
    for f in sorted(RESULTS.glob("*.json")):
        climbing = [s for s in _strings(json.loads(f.read_text())) if s.startswith("../")]
        assert not climbing, f"{f.name}: paths outside the checkout {climbing[:3]}"


def test_record_writes_paths_under_the_work_folder_as_work(tmp_path):
    import sys

    sys.path.insert(0, str(RESULTS.parents[1]))
    from benchmarks.common import REPO, relative_paths

    work = tmp_path / "accuracy"
    got = relative_paths({"bundle": str(work / "runs" / "a" / "bundle"), "inside": str(REPO / "jobs" / "x.yaml"),
                          "text": "a sentence, not a path"}, work)
    assert got == {"bundle": "<work>/runs/a/bundle", "inside": "jobs/x.yaml", "text": "a sentence, not a path"}


def test_a_benchmark_stops_on_a_run_that_did_not_finish():
    """A run stopped by a signal still writes a bundle (its best epoch so far): a benchmark must not
    go on to measure it as a full run (this happened once: a SIGTERMed 5-of-30-epoch source was
    handed to the fine-tunes)."""
    import pytest

    from benchmarks.common import finished

    for status in ("complete", "early_stopped"):
        assert finished({"status": status, "bundle": "b"})["bundle"] == "b"
    for status in ("stopped", "max_epochs_this_run"):
        with pytest.raises(SystemExit, match=r"src: .* after epoch 5/30; .*again to resume"):
            finished({"name": "src", "status": status, "epoch": 5, "epochs_total": 30})
