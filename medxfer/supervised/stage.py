"""``source-train`` and ``finetune``: what is particular to supervised runs, around the one launcher.

The launcher (:mod:`medxfer.train.launch`) runs every stage; this module hands it the supervised
stages' inputs — the plan (:mod:`medxfer.supervised.planning`), the classifier trainee
(:mod:`medxfer.supervised.classifier_trainee`), the bundle and its card
(:mod:`medxfer.supervised.classifier_card`) — and adds their checks: the source bundle is verified
before any worker starts, the validation split must not be empty. An experiment's trial runs the
same trainee through :func:`trial_weights`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from medxfer.config import JobConfig
from medxfer.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medxfer.data.cache import PreparedData
    from medxfer.lifecycle.bundle import Bundle
    from medxfer.train.launch import StageInputs
    from medxfer.train.plan import RunPlan

log = logging.getLogger("medxfer.train")

STAGES = ("source", "finetune")


def check_source(cfg: JobConfig) -> Bundle | None:
    """Load and verify the source bundle named by ``model.init`` (None for scratch/imagenet)."""
    init = cfg.model.init
    if init in ("scratch", "imagenet"):
        return None
    from medxfer.lifecycle.bundle import load_bundle

    b = load_bundle(init)
    if b.card.backbone != cfg.model.backbone:
        raise ConfigError([
            f"model.backbone: {cfg.model.backbone!r}, but the source bundle {init} holds a "
            f"{b.card.backbone!r}; set model.backbone: {b.card.backbone}"
        ])
    return b


def supervised_inputs(cfg: JobConfig, stage: str, prepared: PreparedData, use_gpu: bool,
                      source: Bundle | None = None) -> StageInputs:
    """Source training and fine-tuning on one prepared dataset."""
    from medxfer.lifecycle.card_builder import bundle_writer
    from medxfer.supervised.classifier_card import resolve_positive_class, supervised_card
    from medxfer.supervised.classifier_trainee import SupervisedTrainee
    from medxfer.supervised.planning import plan_training
    from medxfer.train.launch import StageInputs, worker_memory
    from medxfer.train.plan import streamed

    n_train, n_val = prepared.rows("train"), prepared.rows("val")
    if n_val == 0:
        raise DataError(f"{prepared.uri}: the validation split is empty; add a split column with 'val' rows "
                        "or set data.split_fractions")
    plan = plan_training(cfg, stage, prepared, n_train, use_gpu, worker_memory=worker_memory(cfg, use_gpu),
                         n_val=n_val)
    if plan.data.mode == "stream":
        from medxfer.data.cache.stream import list_pieces

        plan = streamed(plan, list_pieces([prepared], "train"), list_pieces([prepared], "val"))
    positive = resolve_positive_class(cfg, prepared.task, list(prepared.classes))
    return StageInputs(
        plan=plan, describe=f"on {n_train} train / {n_val} val images", trainee=SupervisedTrainee,
        write_bundle=bundle_writer(lambda best, state: supervised_card(cfg, stage, prepared, plan, source, positive,
                                                                       best)),
        data_fingerprint=prepared.key,
        result_extra={"train_images": n_train, "val_images": n_val},
    )


def run_training(cfg: JobConfig, stage: str = "source", prepared: PreparedData | None = None) -> dict:
    """Train (or resume) the source-train or finetune run ``cfg.name``; returns its result.json.

    ``prepared``: an already prepared dataset (``medxfer.data.cache.prepare(cfg)``), when the
    caller has one (retraining reuses it); prepared here otherwise.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    from medxfer.train.launch import launch

    def inputs(use_gpu: bool) -> StageInputs:
        source = check_source(cfg)
        if stage == "finetune" and cfg.model.init == "scratch":
            log.warning("fine-tuning %s from scratch: no source weights (set model.init or --source)", cfg.name)
        data = prepared
        if data is None:
            from medxfer.data.cache import prepare

            data = prepare(cfg)
        return supervised_inputs(cfg, stage, data, use_gpu, source)

    return launch(cfg, stage, inputs)


def trial_weights(cfg: JobConfig, plan: RunPlan) -> dict:
    """An experiment's trial (planned by :func:`medxfer.supervised.planning.plan_trial`): the classifier
    trainee in Ray Train's local mode, nothing written; returns ``weights`` (the best epoch's),
    ``history``, ``best_epoch``, ``stopped`` (:func:`medxfer.train.launch.run_trial_weights`)."""
    from medxfer.supervised.classifier_trainee import SupervisedTrainee
    from medxfer.train.launch import run_trial_weights

    return run_trial_weights(cfg, plan, SupervisedTrainee)
