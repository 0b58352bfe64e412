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
