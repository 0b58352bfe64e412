"""Handlers for the training commands: ``source-train``, ``finetune``, ``pretrain``, ``experiment``."""

from __future__ import annotations

import json
import sys

from medxfer.config_io import load_config


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
    from medxfer.train.jobs import run_training

    out = run_training(load_config(args.config, args.set), "source")
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}")
    return exit_code(out)


def cmd_finetune(args) -> int:
    from medxfer.train.jobs import run_training

    cfg = load_config(args.config, args.set)
    if getattr(args, "source", None):
        cfg.model.init = args.source
    out = run_training(cfg, "finetune")
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}"
          f"; source {out['lineage'].get('source_bundle_id', cfg.model.init)}")
    return exit_code(out)


def cmd_pretrain(args) -> int:
    from medxfer.ssl.jobs import run_pretrain

    out = run_pretrain(load_config(args.config, args.set))
    state = f"already {out['status']}, nothing to do" if out.get("already_complete") else out["status"]
    print(f"{out['name']}: {state} ({out['method']}, epoch {out['epoch']}/{out['epochs_total']}, "
          f"{out['train_images']} images from {len(out['sources'])} source(s)); bundle {out['bundle']}")
    return exit_code(out)


def cmd_label_efficiency(args) -> int:
    from medxfer.experiments import run_label_efficiency

    res = run_label_efficiency(load_config(args.config, args.set), args.out)
    print(f"label efficiency: {len(res['trials'])} trials in {res['wall_time_s']:.0f}s; {res['out']}")
    json.dumps(res["summary"])  # fail here, not later, if anything is not serialisable
    return 0
