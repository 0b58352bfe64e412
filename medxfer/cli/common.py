"""Argument helpers shared by the command areas."""

from __future__ import annotations

import argparse


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config FILE`` and repeatable ``--set section.key=value``: how every stage command takes its job."""
    p.add_argument("--config", "-c", required=required, help="Job config YAML (local path or s3:// URI).")
    add_set(p, help="Override a config value (YAML scalar); repeatable, e.g. --set train.lr=3e-4.")


def add_set(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--set", dest="set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)
