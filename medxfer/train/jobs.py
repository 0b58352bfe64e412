"""``source-train`` and ``finetune``: what is particular to supervised runs, around the one launcher.

The launcher (:mod:`medxfer.train.launch`) runs every stage; this module adds the supervised
stages' checks — the source bundle is verified before any worker starts, a reused run name
must mean the same model and data — and their model card.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError

log = logging.getLogger("medxfer.train")

STAGES = ("source", "finetune")


def check_source(cfg: JobConfig):
    """Load and verify the source bundle named by ``model.init`` (None for scratch/imagenet)."""
    init = cfg.model.init
    if init in ("scratch", "imagenet"):
        return None
    from medxfer.bundle import load_bundle

    b = load_bundle(init)
    if b.card["backbone"] != cfg.model.backbone:
        raise ConfigError([
            f"model.backbone: {cfg.model.backbone!r}, but the source bundle {init} holds a "
            f"{b.card['backbone']!r}; set model.backbone: {b.card['backbone']}"
        ])
    return b


def check_same_run(cfg: JobConfig, run_uri: str) -> None:
    """Refuse to resume a run folder that holds a different model or data (a reused run name)."""
    import yaml

    cfg_uri = storage.join(run_uri, "config.yaml")
    if not storage.exists(cfg_uri):
        return
    prev = yaml.safe_load(storage.read_text(cfg_uri)) or {}
    now = cfg.model_dump(mode="json")
    changed = [
        f"{section}.{key}"
        for section, keys in (("model", ("backbone", "init", "stem")), ("data", ("manifest", "task", "classes")),
                              ("preprocess", tuple(now["preprocess"])))
        for key in keys
        if (prev.get(section) or {}).get(key, now[section][key]) != now[section][key]
    ]
    if changed:
        raise ConfigError([
            f"name: run {cfg.name!r} already exists at {run_uri} with different {', '.join(changed)}; "
            "resuming would mix two runs — choose a new name, or delete that folder to start over"
        ])


def build_card(cfg: JobConfig, stage: str, prepared, plan, source, best_metrics: dict) -> dict:
    lineage = {"init": cfg.model.init, "stage": stage}
    if source is not None:
        lineage.update(
            source_uri=cfg.model.init,
            source_bundle_id=source.id,
            source_weights_sha256=source.card["weights_sha256"],
            source_data_fingerprint=source.card.get("data_fingerprint"),
            source_lineage=source.card.get("lineage"),
        )
    spec = prepared.spec
    return {
        "name": cfg.model.name,
        "run": cfg.name,
        "task": prepared.task,
        "classes": list(prepared.classes),
        "backbone": cfg.model.backbone,
        "stem": plan.stem,
        "in_chans": plan.in_chans,
        "num_outputs": plan.num_outputs,
        "dropout": cfg.model.dropout,
        "preprocess": spec.model_dump(mode="json"),
        "input": {"shape": [spec.channels, spec.size, spec.size], "dtype": "float32",
                  "note": "output of medxfer.data.preprocess.preprocess_bytes with this spec"},
        "lineage": lineage,
        "data_fingerprint": prepared.key,
        "data_uri": getattr(prepared, "uri", None),
        "metrics": {"val": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
                    "epoch": best_metrics.get("epoch")},
        "config": cfg.model_dump(mode="json"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_training(cfg: JobConfig, stage: str = "source", prepared=None) -> dict:
    """Train (or resume) the source-train or finetune run ``cfg.name``; returns its result.json.

    ``prepared``: an already prepared dataset (``medxfer.data.cache.prepare(cfg)``), when the
    caller has one (retraining reuses it); prepared here otherwise.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    from medxfer.train.launch import launch, supervised_inputs

    def inputs(use_gpu: bool):
        source = check_source(cfg)
        if stage == "finetune" and cfg.model.init == "scratch":
            log.warning("fine-tuning %s from scratch: no source weights (set model.init or --source)", cfg.name)
        data = prepared
        if data is None:
            from medxfer.data.cache import prepare

            data = prepare(cfg)
        return supervised_inputs(cfg, stage, data, use_gpu, source)

    return launch(cfg, stage, inputs, check_same_run)


def result_line(out: dict) -> str:
    """How a run ended, for the command's last line (a finished run's stored result has no summary)."""
    return out.get("summary") or f"{out['status']} (epoch {out['epoch']}/{out['epochs_total']})"


def exit_code(out: dict) -> int:
    """0, or the shell's code for the signal that stopped the run (it resumes with the same command)."""
    if out.get("status") != "stopped":
        return 0
    print(f"{out['name']}: stopped by {out.get('stopped_by')} after epoch {out['epoch']}/{out['epochs_total']} with a "
          "checkpoint; run the same command to resume", file=sys.stderr)
    return 130 if out.get("stopped_by") == "SIGINT" else 143


def cmd_source_train(args) -> int:
    from medxfer.config_io import load_config

    out = run_training(load_config(args.config, args.set), "source")
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}")
    return exit_code(out)


def cmd_finetune(args) -> int:
    from medxfer.config_io import load_config

    cfg = load_config(args.config, args.set)
    if getattr(args, "source", None):
        cfg.model.init = args.source
    out = run_training(cfg, "finetune")
    print(f"{out['name']}: {result_line(out)}; bundle {out['bundle']}"
          f"; source {out['lineage'].get('source_bundle_id', cfg.model.init)}")
    return exit_code(out)
