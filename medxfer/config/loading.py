"""Load, override, validate and dump job configs, with errors a person can act on.

A config error is reported as one line per problem — file, field path, what was expected,
what was found — and an unknown key comes with the nearest valid key, because the usual
mistake in a YAML job file is a typo, and a traceback would hide it.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medxfer.config import JobConfig
from medxfer.errors import ConfigError


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at the parent of ``loc`` (the place an unknown key was found)."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        # Unwrap Optional / unions to the pydantic model inside, if any.
        candidates = getattr(ann, "__args__", (ann,))
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return []
        cur = nxt
    return list(getattr(cur, "model_fields", {}).keys())


def describe_error(err: dict, source: str, root: type[BaseModel] = JobConfig) -> str:
    """One line for one pydantic error: source, field path, what was expected, what was found."""
    loc = tuple(err.get("loc", ()))
    path = ".".join(str(p) for p in loc) or "<root>"
    found = err.get("input")
    # Bounded: YAML aliases can nest 9^9 items, and dumping those would hang the error message.
    nested = isinstance(found, (list, tuple)) and any(isinstance(x, (list, tuple, dict)) for x in found)
    found_s = "a mapping" if isinstance(found, dict) else "a nested list" if nested else json.dumps(found, default=str)
    if len(found_s) > 60:
        found_s = found_s[:57] + "..."
    if err.get("type") == "extra_forbidden":
        valid = _field_names(root, loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?" if close else (
            f"valid keys here: {', '.join(valid)}"
        )
        return f"{source}: {path}: unknown key; {hint}"
    msg = str(err.get("msg", "a valid value"))
    for prefix, becomes in (("Input should be ", ""), ("Value error, ", ""), ("Assertion failed, ", ""),
                            ("String should have ", "a string with "), ("String should match ", "a string matching ")):
        if msg.startswith(prefix):
            msg = becomes + msg[len(prefix):]
            break
    return f"{source}: {path}: expected {msg}; found {found_s}"


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ``["train.lr=0.01", "name=x"]`` into a nested dict; values are YAML scalars."""
    flat: dict = {}
    names: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError([f"--set {item}: expected section.key=value"])
        key, raw = item.split("=", 1)
        try:
            value = safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        flat[key] = value
        names[key] = f"--set {item}"
    return nest_dotted(flat, names)


def nest_dotted(flat: dict, names: dict[str, str] | None = None) -> dict:
    """``{"train.lr": 1, "name": "x"}`` -> ``{"train": {"lr": 1}, "name": "x"}``: how ``--set`` and an
    experiment arm's ``set`` address the config tree. ``names``: how each key is named in errors."""
    out: dict = {}
    for key, value in flat.items():
        name = (names or {}).get(key, key)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError([f"{name}: empty key"])
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError([f"{name}: {p} is set both as a value and a section"])
        cur[parts[-1]] = value
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


#: Deepest nesting of lists and mappings a job config may have (its own tree is 4 levels deep).
#: PyYAML builds nodes recursively, so 100,000 nested brackets would end in a RecursionError.
MAX_YAML_DEPTH = 50


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document nested deeper than :data:`MAX_YAML_DEPTH` while it
    composes the nodes — before recursion, not after."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels (a job config needs 4)",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_load(text: str):
    """``yaml.safe_load`` with a bound on nesting depth (a YAMLError beyond it)."""
    loader = _DepthLimitedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_text(text: str, source: str) -> dict:
    """Parse YAML safely (no tags, no object construction, bounded nesting) into a mapping."""
    try:
        data = safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: <root>: expected a mapping of sections; found {type(data).__name__}"])
    return data


def validate_dict(data: dict, source: str = "<config>") -> JobConfig:
    try:
        return JobConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError([describe_error(err, source) for err in e.errors()]) from None


def load_config(path: str | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Load a job config from a local path or storage URI (or defaults), then apply ``--set``."""
    data: dict = {}
    source = "<defaults>"
    if path:
        source = str(path)
        text = _read_text(path)
        data = read_yaml_text(text, source)
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
        source = f"{source} (with --set)"
    return validate_dict(data, source)


def _read_text(path: str) -> str:
    from medxfer import storage

    try:
        raw = storage.read_bytes(path)
    except storage.NotFound:
        raise ConfigError([f"{path}: file not found; check the path (relative to {Path.cwd()})"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a UTF-8 text file"]) from None


def dump_yaml(cfg: JobConfig) -> str:
    """The effective config as YAML (all defaults filled in), as stored in runs and bundles."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict:
    return JobConfig.model_json_schema()
