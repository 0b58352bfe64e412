"""Handlers for ``medxfer config ...``: validate, schema, show."""

from __future__ import annotations

import argparse
import json
import sys

from medxfer.cli.arguments import add_set
from medxfer.config.loading import dump_yaml, json_schema, load_config
from medxfer.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="Validate, show or describe job configs.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("validate", help="Check a job config; exit 2 with one line per problem.")
    c.add_argument("file")
    add_set(c)
    c.set_defaults(handler=config_validate)
    c = csub.add_parser("schema", help="Print the JSON schema of job configs (for editors).")
    c.set_defaults(handler=config_schema)
    c = csub.add_parser("show", help="Print the effective config with defaults filled in.")
    c.add_argument("file", nargs="?")
    add_set(c)
    c.set_defaults(handler=config_show)


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
