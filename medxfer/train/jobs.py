"""``source-train`` and ``finetune``: one TorchTrainer per run, then the bundle and result.json.

The driver's job is small: prepare the data (the cache is built on a miss), check the
source bundle before any worker starts, size the workers, hand Ray Train the shards and
the config, and after ``fit()`` turn the best checkpoint into a model bundle.

Resume is Ray Train V2's own: the run's folder is ``<root>/runs/<name>`` (``storage_path``
+ ``name``); when it already holds a checkpoint manager snapshot, ``fit()`` restores it and
workers find the latest checkpoint in ``ray.train.get_checkpoint()``. So re-running the same
command continues a stopped run, and ``FailureConfig(max_failures)`` replaces dead workers
from the last checkpoint within a run.
"""

from __future__ import annotations

import logging
import math
import time

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError, DataError, MedxferError

log = logging.getLogger("medxfer.train")

SNAPSHOT = "checkpoint_manager_snapshot.json"
VALID_METRICS = ("val_auroc", "val_acc", "val_loss", "val_mae", "train_loss")
STAGES = ("source", "finetune")
MATERIALIZE_MAX_BYTES = 2 * 1024**3  # per split, float32 tensors


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


def plan_run(cfg: JobConfig, prepared, n_train: int, use_gpu: bool) -> dict:
    """Everything the workers need besides the config, computed once on the driver (pure)."""
    from medxfer.models import stem_for_size
    from medxfer.train.losses import resolve_class_weights

    if cfg.train.early_stopping.metric not in VALID_METRICS:
        raise ConfigError([f"train.early_stopping.metric: unknown metric {cfg.train.early_stopping.metric!r}; "
                           f"valid: {', '.join(VALID_METRICS)}"])
    world, bs = cfg.scaling.num_workers, cfg.train.batch_size
    rows = n_train // world
    if rows < 1:
        raise DataError(f"{n_train} training images for {world} workers; lower scaling.num_workers")
    counts = list(prepared.class_counts("train")) if prepared.task == "multiclass" else None
    if counts is not None and cfg.train.loss in ("weighted_ce", "focal"):
        resolve_class_weights(cfg.train.class_weights, counts, prepared.num_outputs)  # validates early
    drop_last = rows >= bs  # a last batch of 1 breaks batch norm; equal shards keep step counts equal
    return {
        "task": prepared.task,
        "num_outputs": int(prepared.num_outputs),
        "num_grades": len(prepared.classes),
        "in_chans": int(prepared.spec.channels),
        "stem": stem_for_size(prepared.spec.size, cfg.model.stem),
        "class_counts": counts,
        "rows_per_worker": rows,
        "drop_last": drop_last,
        "steps_per_epoch": max(1, rows // bs if drop_last else math.ceil(rows / bs)),
        "use_gpu": use_gpu,
        "cpus_per_worker": cfg.scaling.cpus_per_worker,
    }


def run_config(cfg: JobConfig, runs_uri: str, scored: bool = True):
    """``RunConfig`` for ``<root>/runs/<name>``: the same name resumes; S3 through pyarrow.

    ``scored``: keep the best checkpoints by the early-stopping metric (training); without a
    validation metric (self-supervised pretraining) keep the latest ones.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    if storage.is_remote(runs_uri):
        fs, path = storage.pyarrow_fs(runs_uri)
    else:
        storage.makedirs(runs_uri)
        fs, path = None, runs_uri
    keep = cfg.train.num_checkpoints_to_keep
    return RunConfig(
        name=cfg.name,
        storage_path=path,
        storage_filesystem=fs,
        failure_config=FailureConfig(max_failures=cfg.failure.max_failures),
        checkpoint_config=CheckpointConfig(
            num_to_keep=keep,
            checkpoint_score_attribute="score",  # = the early-stopping metric, NaN mapped to the worst
            checkpoint_score_order=cfg.train.early_stopping.mode,
        ) if scored else CheckpointConfig(num_to_keep=keep),
    )


def scaling_config(cfg: JobConfig):
    from ray.train import ScalingConfig

    from medxfer.runtime import cluster_cpus, cluster_gpus

    sc = cfg.scaling
    use_gpu = cluster_gpus() > 0 if sc.use_gpu == "auto" else bool(sc.use_gpu)
    res = {"CPU": sc.cpus_per_worker}
    if use_gpu:
        res["GPU"] = sc.gpus_per_worker
    if sc.num_workers * sc.cpus_per_worker >= cluster_cpus():
        log.warning("workers take all %.0f CPUs; Ray Data may starve (lower scaling.cpus_per_worker)",
                    cluster_cpus())
    return ScalingConfig(num_workers=sc.num_workers, use_gpu=use_gpu, resources_per_worker=res), use_gpu


def _count(prepared, split: str, ds) -> int:
    """Rows in a split from the cache card (after label_fraction), without running the pipeline."""
    try:
        kept = prepared.kept_rows(split)
        return len(kept) if kept is not None else int(prepared.card["counts"][split]["total"])
    except (AttributeError, KeyError, TypeError):
        return ds.count()


def _maybe_materialize(ds, rows: int, prepared):
    """Hold a small split in the object store, so epochs do not re-read and re-decode the cache.

    Every epoch re-executes a streaming dataset (and every worker reads the whole validation
    set); for MedMNIST-sized splits that start-up costs more than the epoch itself. Splits over
    MATERIALIZE_MAX_BYTES stay streaming from the cache.
    """
    shape = getattr(prepared, "image_shape", None) or (prepared.spec.channels, prepared.spec.size, prepared.spec.size)
    if rows * math.prod(shape) * 4 <= MATERIALIZE_MAX_BYTES:
        return ds.materialize()
    return ds


def _read_checkpoint(checkpoint):
    from medxfer.train.checkpoint import read_state, read_weights

    with checkpoint.as_directory() as d:
        return read_weights(d), read_state(d)


def fit_or_explain(trainer, run_uri: str):
    """``trainer.fit()``, with a failure turned into a message naming the run and the cause.

    Ray wraps a worker's exception in its own error whose first line says only that workers
    failed; the cause (often a storage path) is in the last line. Our own errors pass through.
    """
    try:
        return trainer.fit()
    except Exception as e:  # noqa: BLE001 - re-raised as a named error
        from medxfer.cli import _find_medxfer_error

        ours = _find_medxfer_error(e)
        if ours is not None:
            raise ours from None
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        cause = lines[-1] if lines else type(e).__name__
        raise MedxferError(
            f"{run_uri}: training failed: {cause[:400]}. Checkpoints already written under {run_uri} are "
            "kept; fix the cause and re-run the same command (same name) to resume"
        ) from None


def run_training(cfg: JobConfig, stage: str = "source", prepared=None) -> dict:
    """Train (or resume) the run ``cfg.name``; write its bundle, config.yaml and result.json.

    ``prepared``: an already prepared dataset (``medxfer.data.cache.prepare(cfg)``), when the
    caller has one (experiments reuse it across runs); prepared here otherwise.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    from medxfer.bundle import save_bundle
    from medxfer.card import build_card, resolve_positive_class
    from medxfer.config_io import dump_yaml
    from medxfer.models.registry import check_imagenet
    from medxfer.runs import check_run
    from medxfer.runtime import init_ray
    from medxfer.train.worker import train_func

    t0 = time.time()
    layout = storage.Layout(cfg.storage.root)
    run_uri = layout.run(cfg.name)
    done = check_run(cfg, run_uri)
    if done is not None:
        return done
    check_imagenet(cfg)
    init_ray()
    source = check_source(cfg)
    if stage == "finetune" and cfg.model.init == "scratch":
        log.warning("fine-tuning %s from scratch: no source weights (set model.init or --source)", cfg.name)
    if prepared is None:
        from medxfer.data.cache import prepare

        prepared = prepare(cfg)
    train_ds = prepared.dataset("train").select_columns(["image", "label"])
    val_ds = prepared.dataset("val").select_columns(["image", "label", "path"])
    n_train, n_val = _count(prepared, "train", train_ds), _count(prepared, "val", val_ds)
    train_ds, val_ds = _maybe_materialize(train_ds, n_train, prepared), _maybe_materialize(val_ds, n_val, prepared)
    if n_val == 0:
        raise DataError(f"{prepared.uri}: the validation split is empty; add a split column with 'val' rows "
                        "or set data.split_fractions")
    scaling, use_gpu = scaling_config(cfg)
    plan = plan_run(cfg, prepared, n_train, use_gpu)
    positive = resolve_positive_class(cfg, prepared.task, list(prepared.classes))
    resumed = storage.exists(storage.join(run_uri, SNAPSHOT))
    storage.write_text(storage.join(run_uri, "config.yaml"), dump_yaml(cfg))
    log.info("%s %s: %s on %d train / %d val images, %d worker(s)%s, %s", "resuming" if resumed else "starting",
             stage, cfg.model.backbone, n_train, n_val, cfg.scaling.num_workers, " with GPUs" if use_gpu else "",
             run_uri)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan},
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # val: every rank reads all, keeps its hash part
        scaling_config=scaling,
        run_config=run_config(cfg, layout.runs()),
    )
    t_fit = time.time()
    result = fit_or_explain(trainer, run_uri)
    best_ckpt = result.get_best_checkpoint("score", cfg.train.early_stopping.mode) or result.checkpoint
    if best_ckpt is None:
        raise DataError(f"{run_uri}: training reported no checkpoint")
    weights, best_state = _read_checkpoint(best_ckpt)
    _, last_state = _read_checkpoint(result.checkpoint) if result.checkpoint else (None, best_state)
    best_metrics = best_state.history[-1] if best_state.history else {}
    card = build_card(cfg, stage, task=prepared.task, classes=list(prepared.classes), plan=plan,
                      spec=prepared.spec, data_fingerprint=prepared.key, source=source, positive=positive,
                      data_uri=getattr(prepared, "uri", None),
                      metrics={"val": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
                               "epoch": best_metrics.get("epoch")})
    bundle_uri = storage.join(run_uri, "bundle")
    card = save_bundle(bundle_uri, weights, card)
    # Metrics reported without a checkpoint are not kept by Ray: everything below comes from the
    # checkpointed history; this invocation's epochs are those finished after fit() started.
    history = last_state.history
    this_run = [h for h in history if h.get("time", 0) >= t_fit]
    epoch = last_state.epoch
    es = cfg.train.early_stopping
    if epoch >= cfg.train.epochs:
        status = "complete"
    elif es.patience and last_state.bad_epochs >= es.patience:
        status = "early_stopped"
    else:
        status = "max_epochs_this_run"
    out = {
        "name": cfg.name,
        "stage": stage,
        "status": status,
        "epoch": epoch,
        "epochs_total": cfg.train.epochs,
        "epochs_run": len(this_run),
        "resumed": resumed,
        "resumed_from_epoch": (this_run[0]["epoch"] - 1 if this_run else epoch) if resumed else None,
        "best": {"epoch": best_state.best_epoch, "metric": cfg.train.early_stopping.metric, **best_metrics},
        "final": history[-1] if history else {},
        "wall_time_s": round(time.time() - t0, 2),
        "images_per_s": (sum(h["images_per_s"] for h in this_run) / len(this_run)) if this_run else None,
        "train_images": n_train,
        "val_images": n_val,
        "num_workers": cfg.scaling.num_workers,
        "use_gpu": use_gpu,
        "bundle": bundle_uri,
        "bundle_id": card["id"],
        "data_fingerprint": prepared.key,
        "lineage": card["lineage"],
        "history": history,
    }
    storage.write_json(storage.join(run_uri, "result.json"), out)
    log.info("%s: %s after epoch %d/%d; best %s %.4f (epoch %s); bundle %s", cfg.name, out["status"], epoch,
             cfg.train.epochs, cfg.train.early_stopping.metric, best_metrics.get(cfg.train.early_stopping.metric,
                                                                                 float("nan")),
             best_state.best_epoch, bundle_uri)
    return out


def _state(result: dict) -> str:
    return f"already {result['status']}, nothing to do" if result.get("already_complete") else result["status"]


def cmd_source_train(args) -> int:
    from medxfer.config_io import load_config

    out = run_training(load_config(args.config, args.set), "source")
    print(f"{out['name']}: {_state(out)} (epoch {out['epoch']}/{out['epochs_total']}); bundle {out['bundle']}")
    return 0


def cmd_finetune(args) -> int:
    from medxfer.config_io import load_config

    cfg = load_config(args.config, args.set)
    if getattr(args, "source", None):
        cfg.model.init = args.source
    out = run_training(cfg, "finetune")
    print(f"{out['name']}: {_state(out)} (epoch {out['epoch']}/{out['epochs_total']}); bundle {out['bundle']}"
          f"; source {out['lineage'].get('source_bundle_id', cfg.model.init)}")
    return 0
