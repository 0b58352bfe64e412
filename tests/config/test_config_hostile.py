"""Hostile configs: every field refuses a wrong type and an out-of-range value, every bad field is reported at
once, YAML alias bombs are refused quickly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from configutil import branches, leaves, nest

from medxfer.config import JobConfig
from medxfer.config.loading import load_config, validate_dict
from medxfer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _wrong_type(schema: dict, prop: dict):
    """A value no branch of the field accepts: a mapping, or a list where mappings are allowed."""
    if any(b.get("type") == "object" for b in branches(schema, prop)):
        return [1, 2]
    return {"oops": 1}


def _out_of_range(schema: dict, prop: dict):
    """A value of the right kind that a bound, an enum or a pattern refuses (None: no such bound)."""
    for b in branches(schema, prop):
        if "enum" in b or "const" in b:
            return "no-such-choice"
        if "exclusiveMinimum" in b:
            return b["exclusiveMinimum"]
        if "minimum" in b:
            return b["minimum"] - 1
        if "exclusiveMaximum" in b:
            return b["exclusiveMaximum"]
        if "maximum" in b:
            return b["maximum"] + 1
        if "pattern" in b:
            return "../not a valid name!"
        if b.get("type") == "array" and b.get("minItems") and b.get("maxItems") == b["minItems"]:
            return [0.5] * (b["minItems"] + 1)  # fixed-length tuples
    return None


# Bounds enforced by validators rather than the schema: (path, bad value).
_VALIDATED = [
    (("data", "split_fractions"), [0.5, 0.5, 0.5]),
    (("train", "freeze"), "partial:0"),
    (("preprocess", "std"), [0.0]),
    (("preprocess", "mean"), [0.1, 0.2]),
    (("experiment", "fractions"), [0.0, 1.5]),
]


def _cases():
    schema = JobConfig.model_json_schema()
    wrong, bad = {}, {}
    for path, prop in leaves(schema):
        wrong[path] = _wrong_type(schema, prop)
        v = _out_of_range(schema, prop)
        if v is not None:
            bad[path] = v
    bad.update(dict(_VALIDATED))
    return wrong, bad


def _count_fields(model) -> int:
    from pydantic import BaseModel

    n = 0
    for f in model.model_fields.values():
        sub = f.annotation
        n += _count_fields(sub) if isinstance(sub, type) and issubclass(sub, BaseModel) else 1
    return n


def test_every_config_field_refuses_a_wrong_type_and_an_out_of_range_value():
    wrong, bad = _cases()
    assert len(wrong) == _count_fields(JobConfig) and len(bad) >= 60, (len(wrong), len(bad))  # all walked
    for cases in (wrong, bad):
        for path, value in cases.items():
            dotted = ".".join(path)
            with pytest.raises(ConfigError) as ei:
                validate_dict(nest(path, value), "job.yaml")
            lines = ei.value.problems
            parent = ".".join(path[:-1])
            # Cross-field validators report at the section and name the field in the text.
            assert any(line.startswith(f"job.yaml: {dotted}")
                       or (line.startswith(f"job.yaml: {parent}: ") and path[-1] in line) for line in lines), (
                dotted, value, lines)
    # Whole sections of the wrong type, and an unknown key in each section.
    for section in JobConfig.model_fields:
        if section == "name":
            continue
        with pytest.raises(ConfigError, match=rf"job.yaml: {section}: expected"):
            validate_dict({section: 5}, "job.yaml")
        with pytest.raises(ConfigError, match=rf"job.yaml: {section}.bogus_key: unknown key"):
            validate_dict({section: {"bogus_key": 1}}, "job.yaml")


def test_cli_reports_every_bad_field_at_once_without_a_traceback(tmp_path):
    wrong, bad = _cases()
    for label, cases in (("wrong", wrong), ("range", bad)):
        doc: dict = {}
        for path, value in cases.items():
            cur = doc
            for p in path[:-1]:
                cur = cur.setdefault(p, {})
            cur[path[-1]] = value
        f = tmp_path / f"{label}.yaml"
        f.write_text(yaml.safe_dump(doc))
        r = subprocess.run([sys.executable, "-m", "medxfer", "config", "validate", str(f)],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Traceback" not in r.stderr + r.stdout
        # preprocess.mean/std are checked against channels after the fields pass, i.e. in a second round.
        later = {("preprocess", "std"), ("preprocess", "mean")}
        missing = [".".join(p) for p in cases if p not in later and f"{f}: {'.'.join(p)}" not in r.stderr]
        assert not missing, (label, missing, r.stderr[-2000:])


def test_yaml_anchors_work_and_an_alias_bomb_is_refused_quickly(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("name: &n night-run\nmodel:\n  name: *n\ntrain: &t {epochs: 3}\n")
    cfg = load_config(str(f))
    assert cfg.model.name == "night-run" and cfg.train.epochs == 3
    # "Billion laughs": 9 levels of 9 aliases = 387 million strings if expanded.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        p, c = chr(96 + i), chr(97 + i)
        lines.append(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]")
    doc = "bombs:\n" + "\n".join("  " + line for line in lines) + "\ndata:\n  classes: *i\n"
    f.write_text(doc)
    with pytest.raises(ConfigError) as ei:  # refused without expanding it; how fast: benchmarks/bench_data_plane.py
        load_config(str(f))
    text = str(ei.value)
    assert "bombs: unknown key" in text and "data.classes.0: expected a valid string; found a nested list" in text
