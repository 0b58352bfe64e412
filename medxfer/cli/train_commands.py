"""Handlers for the training commands: ``source-train``, ``finetune``, ``pretrain``, ``experiment``."""

from __future__ import annotations

import argparse
import json
import sys

from medxfer.cli.arguments import add_config_args
from medxfer.config.loading import load_config


def add_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("source-train", help="Train a source model (Ray Train).")
    add_config_args(c)
    c.set_defaults(handler=cmd_source_train)

    c = sub.add_parser("finetune", help="Fine-tune a source model on a target dataset (Ray Train).")
    add_config_args(c)
    c.add_argument("--source", help="Source model bundle URI (overrides model.init).")
    c.set_defaults(handler=cmd_finetune)

    c = sub.add_parser("pretrain", help="Self-supervised pretraining of a backbone (Ray Train).")
    add_config_args(c)
    c.set_defaults(handler=cmd_pretrain)

    p = sub.add_parser("experiment", help="Experiments: label efficiency.")
    esub = p.add_subparsers(dest="experiment_command", metavar="NAME", required=True)
    c = esub.add_parser("label-efficiency", help="Fine-tune at several label fractions, source vs scratch.")
    add_config_args(c)
    c.add_argument("--out", help="Folder for the table and plot (default: runs/<name>/).")
    c.set_defaults(handler=cmd_label_efficiency)


def result_line(out: dict) -> str:
    """How a run ended, for the command's last line."""
    if out.get("already_complete"):
        return f"already {out['status']}, nothing to do (epoch {out['epoch']}/{out['epochs_total']})"
    return out.get("summary") or f"{out['status']} (epoch {out['epoch']}/{out['epochs_total']})"


def exit_code(out: dict) -> int:
    """0, or the shell's code for the signal that stopped the run (it resumes with the same command)."""
    if out.get("status") != "stopped":
        return 0
    print(f"{out['name']}: stopped by {out.get('stopped_by')} after epoch {out['epoch']}/{out['epochs_total']} with a "
          "checkpoint; run the same command to resume", file=sys.stderr)
    return 130 if out.get("stopped_by") == "SIGINT" else 143


def cmd_source_train(args) -> int:
    from medxfer.supervised.stage import run_training

    out = run_training(load_config(args.config, args.set), "source")
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}")
    return exit_code(out)


def cmd_finetune(args) -> int:
    from medxfer.supervised.stage import run_training

    cfg = load_config(args.config, args.set)
    if getattr(args, "source", None):
        cfg.model.init = args.source
    out = run_training(cfg, "finetune")
    source = out["lineage"].get("source_bundle_id") or cfg.model.init  # the id of the bundle it started from
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}; "
          + ("trained from scratch" if source == "scratch" else f"source {source}"))
    return exit_code(out)


def cmd_pretrain(args) -> int:
    from medxfer.ssl.pretrain import run_pretrain

    out = run_pretrain(load_config(args.config, args.set))
    state = f"already {out['status']}, nothing to do" if out.get("already_complete") else out["status"]
    print(f"{out['name']}: {state} ({out['method']}, epoch {out['epoch']}/{out['epochs_total']}, "
          f"{out['train_images']} images from {len(out['sources'])} source(s)); bundle {out['bundle']}")
    return exit_code(out)


def cmd_label_efficiency(args) -> int:
    from medxfer.experiments.label_efficiency import run_label_efficiency

    res = run_label_efficiency(load_config(args.config, args.set), args.out)
    print(res["table"])
    print(f"label efficiency: {len(res['trials'])} trials in {res['wall_time_s']:.0f}s; {res['out']}")
    json.dumps(res["summary"])  # fail here, not later, if anything is not serialisable
    return 0
