"""medxfer/cli: every command has help, is bound to a handler in its own area module, and the library
never imports the CLI (a new command is one entry in ``medxfer/cli/<area>_commands.py``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from medxfer.cli import AREAS, build_parser

PACKAGE = Path(__file__).resolve().parents[2] / "medxfer"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medxfer", *args], capture_output=True, text=True)


def _commands(parser):
    """(path, sub-parser) of every leaf command, e.g. ('registry promote', parser)."""
    for action in parser._actions:
        if getattr(action, "choices", None) and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                children = list(_commands(sub))
                yield from ((f"{name} {p}", s) for p, s in children) if children else [(name, sub)]


def test_every_subcommand_has_help():
    parser = build_parser()
    r = _cli("--help")
    assert r.returncode == 0 and "finetune" in r.stdout
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        r = _cli(name, "--help")
        assert r.returncode == 0, (name, r.stderr)


def test_every_command_is_bound_to_a_handler_in_its_area_module():
    commands = dict(_commands(build_parser()))
    assert {"finetune", "config validate", "registry promote", "k8s render", "predict"} <= set(commands)
    for path, sub in commands.items():
        handler = sub.get_default("handler")
        assert callable(handler), f"medxfer {path}: no handler"
        assert handler.__module__ in {f"medxfer.cli.{a}_commands" for a in AREAS}, (path, handler.__module__)


def test_no_library_module_imports_the_cli():
    offenders = []
    for f in PACKAGE.rglob("*.py"):
        if "cli" in f.relative_to(PACKAGE).parts or f.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{f.relative_to(PACKAGE)}: {n}" for n in names if n.startswith("medxfer.cli")]
    assert not offenders, offenders
