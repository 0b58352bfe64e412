"""Argument helpers shared by the command areas."""

from __future__ import annotations

import argparse
import unicodedata


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config FILE`` and repeatable ``--set section.key=value``: how every stage command takes its job."""
    p.add_argument("--config", "-c", required=required, help="Job config YAML (local path or s3:// URI).")
    add_set(p, help="Override a config value (YAML scalar); repeatable, e.g. --set train.lr=3e-4.")


def add_set(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--set", dest="set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: control characters other than newline and tab, which a file
    name or a manifest may carry (an escape sequence that recolours or clears the screen, a carriage
    return that overwrites the line), are shown as ``\\xNN`` escapes instead of being obeyed."""
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) != "Cc" else repr(ch)[1:-1] for ch in text)


class PrintableFormatter:
    """Wraps a ``logging.Formatter``: every log line goes out through :func:`printable`."""

    def __init__(self, inner):
        self.inner = inner

    def format(self, record) -> str:
        return printable(self.inner.format(record))

    def __getattr__(self, name):
        return getattr(self.inner, name)
