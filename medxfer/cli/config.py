"""Handlers for ``medxfer config ...``: validate, schema, show."""

from __future__ import annotations

import json
import sys

from medxfer.config_io import dump_yaml, json_schema, load_config
from medxfer.errors import ConfigError


def config_validate(args) -> int:
    try:
        cfg = load_config(args.file, args.set)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    print(f"{args.file}: valid (run name {cfg.name!r})")
    return 0


def config_schema(args) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def config_show(args) -> int:
    print(dump_yaml(load_config(args.file, args.set)), end="")
    return 0
