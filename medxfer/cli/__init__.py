"""The ``medxfer`` command: the argument parser and the one place errors become messages.

Thin on purpose: each area of commands is one module, ``medxfer/cli/<area>_commands.py``, holding both its
sub-parsers (``add_parsers``) and their handlers, bound by reference; a handler calls one
library function and prints its result, importing the library lazily so ``medxfer --help``
stays fast. A new command is one entry in its area's module. No library module imports from here. Expected failures (:class:`medxfer.errors.MedxferError`)
print one message and exit with its code; nothing ends in a bare traceback unless
``MEDXFER_DEBUG=1`` asks for it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from medxfer import __version__
from medxfer.cli.arguments import PrintableFormatter, printable
from medxfer.errors import find_medxfer_error
from medxfer.runtime.allocator import tune_this_process

AREAS = ("config", "data", "train", "models", "registry", "deploy")  # medxfer/cli/<area>_commands.py


def build_parser() -> argparse.ArgumentParser:
    """The command tree: each area module adds its commands, each bound to its handler."""
    parser = argparse.ArgumentParser(
        prog="medxfer",
        description="Transfer learning for medical image classification on Ray and Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"medxfer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="More log output.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        importlib.import_module(f"medxfer.cli.{area}_commands").add_parsers(sub)
    return parser


def _printable_streams() -> None:
    """Printing never fails on a character the terminal cannot show: a file name with bytes that are
    not UTF-8 (Python's surrogate escapes), or any non-ASCII name under a Latin-1 or C locale, is
    written with backslash escapes instead of raising UnicodeEncodeError mid-command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to print to
                pass


def main(argv: list[str] | None = None) -> int:
    tune_this_process()  # before any thread starts: see medxfer.runtime.allocator
    _printable_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:  # names in log lines are data, not terminal commands
        if not isinstance(handler.formatter, PrintableFormatter):
            handler.setFormatter(PrintableFormatter(handler.formatter or logging.Formatter()))
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        rc = args.handler(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        print("medxfer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place errors become messages
        if os.environ.get("MEDXFER_DEBUG"):
            raise
        ours = find_medxfer_error(e)
        if ours is not None:
            print(f"medxfer: error: {printable(str(ours))}", file=sys.stderr)
            return ours.exit_code
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"medxfer: unexpected error ({type(e).__name__}): {first}\n"
            "  re-run with MEDXFER_DEBUG=1 for the full traceback, and please report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
