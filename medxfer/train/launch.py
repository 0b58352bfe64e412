"""The one launcher: source-train, finetune and pretrain runs, and an experiment's trials.

A run is: check its folder (:mod:`medxfer.train.runs`), let the stage prepare its data and plan it,
hand ``train_func`` to Ray Train's ``TorchTrainer``, then have the stage write the final checkpoint's
weights as a model bundle, and write ``result.json``. What differs between stages arrives as
:class:`StageInputs` — the plan (with the pieces its workers stream, when the data is too large for
their memory), the trainee each worker builds, how the bundle and its card are written — made by
the stage (``medxfer.supervised.stage.supervised_inputs``, ``medxfer.ssl.pretrain.pretrain_inputs``).
The engine itself names no stage.

With ``scaling.num_workers: 0`` the run trains in this process (Ray Train's local mode): no Ray
cluster, worker group or control actor to start, which on one machine is most of a short
fine-tune's fixed cost. Ray starts only if the data must stream or be preprocessed by Ray Data.

Resume: the run's folder is ``<root>/runs/<name>`` (``storage_path`` + ``name``). A worker group
resumes through Ray Train V2's own snapshot (``fit()`` restores it; workers find the checkpoint
in ``ray.train.get_checkpoint()``); a run in this process keeps its own record
(:mod:`medxfer.train.resume`), and a run that changed mode resumes from the newest of the two.
A trial (:func:`run_trial_weights`) is the same ``train_func`` in local mode with nothing written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import DataError, MedxferError
from medxfer.train.plan import RunPlan

if TYPE_CHECKING:
    from medxfer.train.checkpoint import TrainState
    from medxfer.train.engine import TraineeFactory

log = logging.getLogger("medxfer.train")


@dataclass(frozen=True)
class WrittenBundle:
    """The bundle a stage wrote at the end of its run, as the run's ``result.json`` records it."""

    id: str
    lineage: dict  # the card's lineage, as JSON


@dataclass
class StageInputs:
    """What a stage contributes to a run besides the config."""

    plan: RunPlan
    describe: str  # "on 546 train / 78 val images" for the start line
    #: Builds the stage's trainee on each worker: (cfg, plan, data, device, wrap, session) -> Trainee. A class
    #: defined at a module's top level, so that Ray pickles it by reference (workers import its module).
    trainee: TraineeFactory
    #: (bundle folder URI, the exported weights the final checkpoint holds, the best epoch's metrics, state):
    #: writes the model bundle with its card.
    write_bundle: Callable[[str, dict, dict, TrainState], WrittenBundle]
    data_fingerprint: str = ""
    result_extra: dict = field(default_factory=dict)


def worker_memory(cfg: JobConfig, use_gpu: bool) -> float | None:
    """Bytes one worker of this run can count on (:func:`medxfer.runtime.worker_memory`)."""
    from medxfer.runtime import worker_memory as memory

    return memory(cfg.scaling, use_gpu)


def scaling_config(cfg: JobConfig):
    """Ray Train's ``ScalingConfig`` and whether workers use GPUs (``num_workers: 0``: this process)."""
    from ray.train import ScalingConfig

    sc = cfg.scaling
    if sc.num_workers == 0:
        import torch

        return ScalingConfig(num_workers=0), (torch.cuda.is_available() if sc.use_gpu == "auto" else bool(sc.use_gpu))
    from medxfer.runtime import cluster_gpus

    use_gpu = cluster_gpus() > 0 if sc.use_gpu == "auto" else bool(sc.use_gpu)
    res = {"CPU": sc.cpus_per_worker}
    if use_gpu:
        res["GPU"] = sc.gpus_per_worker
    return ScalingConfig(num_workers=sc.num_workers, use_gpu=use_gpu, resources_per_worker=res), use_gpu


def run_config(cfg: JobConfig, runs_uri: str, board=None):
    """``RunConfig`` for ``<root>/runs/<name>``: the same name resumes; S3 through pyarrow. ``board``: the run's
    control actor, told of the controller's state changes (:mod:`medxfer.train.events`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    from medxfer.train.events import controller_callbacks

    path, fs = storage.ray_storage(runs_uri)
    return RunConfig(
        name=cfg.name, storage_path=path, storage_filesystem=fs,
        callbacks=controller_callbacks(board) if board is not None else None,
        failure_config=FailureConfig(max_failures=cfg.failure.max_failures),
        # Newest first: each checkpoint carries the best weights so far (see medxfer.train.checkpoint).
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoint.keep),
    )


def watch(cfg: JobConfig, scaling, run_uri: str):
    """The watchdog's view of the run: how long a silence may last, what the workers ask for, the nodes now."""
    import ray

    from medxfer.train.control import Watch
    from medxfer.train.watchdog import observe

    job_id = ray.get_runtime_context().get_job_id()
    return Watch(cfg.failure.watchdog_s, scaling.num_workers, dict(scaling.resources_per_worker or {}), run_uri,
                 job_id, observe(job_id).nodes)


def fit_or_explain(trainer, run_uri: str):
    """``trainer.fit()``, with a failure turned into a message naming the run and the cause.

    Ray wraps a worker's exception in its own error whose first line says only that workers
    failed; the cause (often a storage path) is in the last line. Our own errors pass through.
    """
    from medxfer.errors import find_medxfer_error

    try:
        return trainer.fit()
    except Exception as e:  # noqa: BLE001 - re-raised as a named error
        ours = find_medxfer_error(e)
        if ours is not None:
            raise ours from None
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        cause = lines[-1] if lines else type(e).__name__
        raise MedxferError(
            f"{run_uri}: training failed: {cause[:400]}. Checkpoints already written under {run_uri} are "
            "kept; fix the cause and re-run the same command (same name) to resume"
        ) from None


def _status(state, cfg: JobConfig, stopped: str | None) -> str:
    if state.epoch >= cfg.train.epochs:
        return "complete"
    patience = cfg.train.early_stopping.patience
    if patience and state.bad_epochs >= patience:
        return "early_stopped"
    if stopped and stopped.startswith("signal"):
        return "stopped"
    return "max_epochs_this_run"


def _import_training() -> None:
    import ray.train.torch  # noqa: F401 - imports torch
    import safetensors.torch  # noqa: F401

    import medxfer.train.worker  # noqa: F401


def launch(cfg: JobConfig, stage: str, make_inputs: Callable[[bool], StageInputs]) -> dict:
    """Train (or resume) the run ``cfg.name``; write its bundle, config.yaml and result.json.

    Before any work the run folder is checked (:func:`medxfer.train.runs.check_run`): a run made with
    other settings is refused, a finished one is reported and nothing is written again.
    ``make_inputs(use_gpu)`` prepares the data and plans the run (called once Ray is up).
    """
    from medxfer.runtime import init_ray, quiet_ray_logs, require_placeable, require_shared_storage
    from medxfer.train import resume
    from medxfer.train.runs import check_run

    t0 = time.time()
    layout = storage.Layout(cfg.storage.root)
    run_uri = layout.run(cfg.name)
    done = check_run(cfg, run_uri)
    if done is not None:
        return done
    if cfg.model.init == "imagenet":  # fetched, or refused with a clear message, before Ray starts
        from medxfer.models.factory import check_imagenet

        check_imagenet(cfg)
    in_process = cfg.scaling.num_workers == 0
    if in_process:
        quiet_ray_logs()
        _import_training()
    else:
        # Ray takes ~5 s to come up, much of it waiting on its processes: PyTorch and Ray Train are
        # imported meanwhile (on a thread: Ray itself must start from the main thread).
        preload = threading.Thread(target=_import_training, name="medxfer-imports", daemon=True)
        preload.start()
        init_ray()
        preload.join()
        require_shared_storage([layout.root], cfg.storage.shared)  # checkpoints are written on any node

    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from medxfer.config.loading import dump_yaml
    from medxfer.train.checkpoint import read_best_weights, read_state
    from medxfer.train.control import Monitor
    from medxfer.train.worker import train_func

    found = resume.latest(run_uri)
    # Ray Train restores its own checkpoints; any other (written in the other mode) is handed over.
    checkpoints = resume.RunCheckpoints(run_uri, cfg.train.checkpoint.keep, writes=in_process,
                                        handed=found.uri if found is not None and (in_process or not found.ray) else None)
    scaling, use_gpu = scaling_config(cfg)
    if not in_process:
        require_placeable(cfg.scaling, use_gpu)
    # The actor starts while the data is prepared.
    monitor = Monitor(cfg.name, in_process=in_process, watch=None if in_process else watch(cfg, scaling, run_uri))
    inputs = make_inputs(use_gpu)
    plan = inputs.plan
    storage.write_text(storage.join(run_uri, "config.yaml"), dump_yaml(cfg))
    log.info("%s %s: %s %s, %s%s, data %s; %s", "resuming" if found else "starting", stage,
             cfg.model.backbone, inputs.describe,
             "in this process" if in_process else f"{cfg.scaling.num_workers} worker(s)", " with GPUs" if use_gpu else "",
             "in memory" if plan.data.mode == "memory" else "streamed", run_uri)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan, "control": monitor.channel(),
                           "checkpoints": checkpoints, "trainee": inputs.trainee},
        scaling_config=scaling,
        run_config=RunConfig(name=cfg.name) if in_process else run_config(cfg, layout.runs(), monitor.actor),
    )
    t_fit = time.time()
    result = monitor.run(lambda: fit_or_explain(trainer, run_uri))
    final = None if result.checkpoint else resume.latest(run_uri)  # local mode reports none to Ray
    if result.checkpoint is None and final is None:
        raise DataError(f"{run_uri}: training reported no checkpoint")
    with result.checkpoint.as_directory() if result.checkpoint else resume.local_copy(final.uri) as d:
        state, weights = read_state(d), read_best_weights(d)
    best_metrics = next((h for h in state.history if h.get("epoch") == state.best_epoch), None) if plan.scored else None
    best_metrics = best_metrics or (state.history[-1] if state.history else {})
    bundle = inputs.write_bundle(storage.join(run_uri, "bundle"), weights, best_metrics, state)
    this_run = [h for h in state.history if h.get("time", 0) >= t_fit]
    status = _status(state, cfg, (result.metrics or {}).get("stopped") if this_run else None)
    metric = cfg.train.early_stopping.metric
    out = {
        "name": cfg.name,
        "stage": stage,
        "status": status,
        "epoch": state.epoch,
        "epochs_total": cfg.train.epochs,
        "epochs_run": len(this_run),
        # Resumed: from an earlier command's checkpoint, or after a restart of the worker group in this one.
        "resumed": found is not None or bool(monitor.restarts),
        "resumed_from_epoch": (state.epoch - len(this_run)) if found is not None
        else (monitor.restarts[0].resumed_from_epoch if monitor.restarts else None),
        "restarts": [r.record() for r in monitor.restarts],
        "best": {"epoch": state.best_epoch, "metric": metric, **best_metrics} if plan.scored else None,
        "final": state.history[-1] if state.history else {},
        "wall_time_s": round(time.time() - t0, 2),
        "images_per_s": (sum(h["images_per_s"] for h in this_run) / len(this_run)) if this_run else None,
        **inputs.result_extra,
        "num_workers": cfg.scaling.num_workers,
        "use_gpu": use_gpu,
        "data_mode": plan.data.mode,
        "stopped_by": monitor.signal,
        "bundle": storage.join(run_uri, "bundle"),
        "bundle_id": bundle.id,
        "data_fingerprint": inputs.data_fingerprint,
        "lineage": bundle.lineage,
        "history": state.history,
    }
    storage.write_json(storage.join(run_uri, "result.json"), out)
    shown = f"best {metric} {best_metrics.get(metric, float('nan')):.4f} (epoch {state.best_epoch})" if plan.scored \
        else f"loss {out['final'].get('loss', float('nan')):.4f}"
    out["summary"] = f"{status} (epoch {state.epoch}/{cfg.train.epochs}); {shown}"
    log.debug("%s: %s; bundle %s", cfg.name, out["summary"], out["bundle"])
    return out


def run_trial_weights(cfg: JobConfig, plan: RunPlan, trainee: TraineeFactory) -> dict:
    """Run ``train_func`` with ``trainee`` in Ray Train's local mode (this process, nothing written); returns
    its outcome: ``weights`` (the best epoch's), ``history``, ``best_epoch``, ``stopped``."""
    import tempfile

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from medxfer.train.worker import train_func

    with tempfile.TemporaryDirectory() as tmp:
        trainer = TorchTrainer(
            train_func, train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan, "trainee": trainee},
            scaling_config=ScalingConfig(num_workers=0), run_config=RunConfig(name=cfg.name, storage_path=tmp))
        return trainer.fit().return_value
