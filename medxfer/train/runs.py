"""Is this the same run? The one check the launcher makes for every stage (source-train, finetune,
pretrain) before any work.

Why in the engine: the run folder is the engine's — its checkpoint records
(:mod:`medxfer.train.resume`), ``config.yaml`` and ``result.json`` are written by the launcher, and
only the bundle's file name is read from what a stage writes there — so no stage needs to be asked.

A run name is a promise: ``runs/<name>/`` holds the weights of exactly the settings in its
``config.yaml``. Re-running a name therefore has three outcomes, and only three:

- the run has no state yet (no checkpoint, result or bundle): it starts;
- the settings that shape the model are the same: an unfinished run resumes, a finished one
  is reported "already complete" and nothing in its folder is written again;
- any of them differs: refused (exit 2) naming each field, old and new value, and the way
  out — a new ``name``. Resuming would mix two trainings, and "completing" a finished run
  would rewrite its config and bundle to settings its weights were never trained with.

Which settings shape the model: every field of :data:`SHAPING_SECTIONS` (the data and its
split, the preprocessing spec, the network and its init, the optimisation and schedule,
and pretraining), except :data:`NOT_SHAPING`, which only decide how one invocation runs.
``scaling``, ``failure``, ``storage``, ``evaluate``, ``promotion``, ``predict`` and
``experiment`` decide where and how a run executes or is judged, not what it learns.
:data:`GROW_ONLY` fields may grow: a larger ``train.epochs`` continues a run (finished or
not) to the new total, and its config and bundle then describe that longer training; a
smaller one is refused, since the weights were trained for longer than it says.
"""

from __future__ import annotations

import logging
from typing import Any

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError

log = logging.getLogger("medxfer.train.runs")

SHAPING_SECTIONS = ("data", "preprocess", "model", "train", "pretrain")
NOT_SHAPING = frozenset({"train.max_epochs_this_run", "train.checkpoint.every_minutes", "train.checkpoint.every_epochs",
                         "train.checkpoint.keep", "data.engine", "data.local_max_images",
                         "data.in_memory_max_bytes"})
GROW_ONLY = frozenset({"train.epochs"})
FINISHED = ("complete", "early_stopped")


def _flatten(d: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}"))
    return out


def shaping_fields(cfg: JobConfig) -> dict[str, Any]:
    """``{dotted field: value}`` of every setting that shapes the model."""
    dump = cfg.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for section in SHAPING_SECTIONS:
        flat.update(_flatten(dump[section], section))
    return {k: v for k, v in flat.items() if k not in NOT_SHAPING}


def differences(before: JobConfig, now: JobConfig) -> list[str]:
    """``"field: old -> new"`` for every shaping field that differs."""
    a, b = shaping_fields(before), shaping_fields(now)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not (k in GROW_ONLY and b.get(k) > a.get(k))]


def has_state(run_uri: str) -> bool:
    """Whether the run folder holds anything trained (a checkpoint record, a result or a bundle)."""
    from medxfer.train.resume import has_checkpoints

    return has_checkpoints(run_uri) or any(storage.exists(storage.join(run_uri, p))
                                           for p in ("result.json", "bundle/bundle.json"))


def stored_config(run_uri: str) -> JobConfig | None:
    """The config the run was started with (``config.yaml``), or None for a new run."""
    from medxfer.config.loading import read_yaml_text, validate_dict

    uri = storage.join(run_uri, "config.yaml")
    if not storage.exists(uri):
        return None
    try:
        return validate_dict(read_yaml_text(storage.read_text(uri), uri), uri)
    except ConfigError as e:
        raise ConfigError([f"{uri}: this run's stored config cannot be read by this medxfer ({e.problems[0]}); "
                           "give this run a new name"]) from None


def finished_result(run_uri: str, epochs: int) -> dict | None:
    """The stored result of a run that finished with its bundle (and, when complete, ``epochs`` epochs), else None."""
    res_uri = storage.join(run_uri, "result.json")
    if not (storage.exists(res_uri) and storage.exists(storage.join(run_uri, "bundle", "bundle.json"))):
        return None
    res = storage.read_json(res_uri)
    if res.get("status") == "complete" and int(res.get("epoch", 0)) < epochs:
        return None  # train.epochs grew: the run continues
    return res if res.get("status") in FINISHED else None


def check_run(cfg: JobConfig, run_uri: str) -> dict | None:
    """Before any work: None to start or resume; the stored result when the run already finished.

    Raises ConfigError (exit 2) when ``run_uri`` holds a run trained with other settings.
    """
    if not has_state(run_uri):
        return None
    before = stored_config(run_uri)
    if before is not None:
        changed = differences(before, cfg)
        if changed:
            raise ConfigError([
                f"name: run {cfg.name!r} at {run_uri} was trained with other settings: {'; '.join(changed)}. "
                "Nothing was changed; give this run a new name (name: ...) to train with these settings, or "
                "restore them to resume or reuse the run"
            ])
    done = finished_result(run_uri, cfg.train.epochs)
    if done is None:
        return None
    log.info("%s: already complete (%s at epoch %s); bundle %s — nothing to do", cfg.name, done.get("status"),
             done.get("epoch"), done.get("bundle"))
    return {**done, "epochs_run": 0, "already_complete": True}
