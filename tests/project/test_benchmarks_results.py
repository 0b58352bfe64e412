"""benchmarks/results: every results file names its machine and records relative paths only
(a result describes the run, not the folders of the machine it ran on)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


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


def test_the_label_budget_is_chosen_on_validation_never_on_test():
    """Benchmark 5's budget per arm and fraction: the best mean validation AUROC wins even where
    another budget scores better on test; a tie goes to the shorter budget; budgets that ran
    other seeds are refused, since their means would compare other draws."""
    import pytest

    from benchmarks.label_budget import choose_budgets

    def t(arm, seed, val, test):
        return {"arm": arm, "fraction": 0.1, "seed": seed, "val_auroc": val, "test_auroc": test}

    by_budget = {12: [t("scratch", 0, 0.70, 0.90), t("scratch", 1, 0.72, 0.90), t("transfer", 0, 0.8, 0.7),
                      t("transfer", 1, 0.8, 0.7)],
                 30: [t("scratch", 0, 0.80, 0.60), t("scratch", 1, 0.78, 0.62), t("transfer", 0, 0.8, 0.9),
                      t("transfer", 1, 0.8, 0.9)]}
    chosen, choices = choose_budgets(by_budget)
    assert choices["scratch@0.1"]["epochs"] == 30  # better on validation, worse on test
    assert choices["transfer@0.1"]["epochs"] == 12  # a tie on validation: the shorter budget
    assert choices["scratch@0.1"]["test_auroc_mean"] == {12: 0.9, 30: pytest.approx(0.61)}
    assert sorted((c["arm"], c["seed"], c["epochs"]) for c in chosen) == [
        ("scratch", 0, 30), ("scratch", 1, 30), ("transfer", 0, 12), ("transfer", 1, 12)]
    by_budget[30] = by_budget[30][:1] + by_budget[30][2:]
    with pytest.raises(ValueError, match="scratch at 0.1: the budgets ran different seeds"):
        choose_budgets(by_budget)


def _summarize():
    import sys

    sys.path.insert(0, str(RESULTS.parents[1]))
    from benchmarks import summarize

    return summarize


def test_benchmarks_readme_is_what_summarize_renders():
    """benchmarks/README.md is written by summarize.py from results/ and notes/, never pasted: a results
    file re-measured, a table changed or a note edited without ``--write`` leaves the page behind."""
    summarize = _summarize()
    assert summarize.README.read_text() == summarize.render(), (
        "benchmarks/README.md differs from what benchmarks/summarize.py renders from benchmarks/results/ and "
        "benchmarks/notes/: run .venv/bin/python benchmarks/summarize.py --write")


def test_every_note_was_written_for_the_results_it_reads():
    """A note's numbers are a person's reading of one run: when that run is measured again, the note
    must be read again (and its first line updated) before the page can be written."""
    assert not _summarize().stale_notes()


def test_drift_and_stale_notes_are_caught(tmp_path, monkeypatch, capsys):
    """The checks above can fail: a results file measured again makes --check exit 1, naming the page
    and the note written for the earlier run; --write brings the page back, the note stays flagged."""
    import shutil

    summarize = _summarize()
    results, notes = tmp_path / "results", tmp_path / "notes"
    shutil.copytree(summarize.RESULTS, results)
    shutil.copytree(summarize.NOTES, notes)
    readme = tmp_path / "benchmarks" / "README.md"
    readme.parent.mkdir()
    for name, value in (("RESULTS", results), ("NOTES", notes), ("README", readme)):
        monkeypatch.setattr(summarize, name, value)
    assert summarize.main(["--write"]) == 0 and summarize.main(["--check"]) == 0
    capsys.readouterr()

    cache = json.loads((results / "cache.json").read_text())
    cache["miss_seconds"], cache["date"] = 9.9, "2027-01-01T00:00:00+00:00"
    (results / "cache.json").write_text(json.dumps(cache))
    assert summarize.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "benchmarks/README.md differs" in err and "benchmarks/notes/cache.md: written for cache.json" in err
    assert summarize.main(["--write"]) == 0 and "| 9.9 |" in readme.read_text()
    assert summarize.main(["--check"]) == 1 and "cache.md" in capsys.readouterr().err

    first, _, rest = (notes / "cache.md").read_text().partition("\n")
    (notes / "cache.md").write_text(first.replace("2026-11-29T13:07:32+00:00", cache["date"]) + "\n" + rest)
    summarize.main(["--write"])
    assert [p for p in summarize.stale_notes() if "cache.md" in p] == []
