"""What each Ray Train worker runs, for every stage: take the data, prepare the model, loop, report.

Kept as short as Ray Train's own examples: the data (:mod:`medxfer.train.rankdata`), the stage's
trainee and the epoch driver (:mod:`medxfer.train.engine`) are plain modules; this function only
wires them to Ray Train. The trainee arrives in the config as the stage gave it to the launcher
(``StageInputs.trainee``: a class, which Ray pickles by reference), so the engine names no stage.
It runs the same way in a worker group and in Ray Train's local mode (``scaling.num_workers: 0``,
or an experiment's trial, which returns the best weights instead of writing checkpoints).
"""

from __future__ import annotations

import functools

import torch

from medxfer.config import JobConfig
from medxfer.train.engine import TraineeFactory
from medxfer.train.plan import RunPlan


def train_func(config: dict) -> dict | None:
    import ray.train
    import ray.train.torch

    from medxfer.runtime import quiet_ray_logs
    from medxfer.train.engine import run_epochs
    from medxfer.train.rankdata import RankData
    from medxfer.train.session import RaySession

    quiet_ray_logs()
    cfg = JobConfig.model_validate(config["cfg"])  # re-validated on the worker
    plan: RunPlan = config["plan"]
    session = RaySession(plan.stage, plan.scored, cfg.train.early_stopping.metric, config.get("control"),
                         config.get("checkpoints"))
    device = ray.train.torch.get_device()
    if plan.use_gpu and device.type == "cpu" and torch.cuda.is_available():
        # Local mode (scaling.num_workers: 0) has no Ray resources to assign a GPU from, and Ray then
        # answers "cpu": the run uses the visible GPU its plan chose.
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type != "cuda":
        torch.set_num_threads(max(1, int(plan.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)
    data = RankData(plan, session.rank, session.world, cfg.train.seed, cfg.evaluate.batch_size)
    make_trainee: TraineeFactory = config["trainee"]
    wrap = functools.partial(ray.train.torch.prepare_model, move_to_device=device)  # DDP when world > 1
    trainee = make_trainee(cfg, plan, data, device, wrap, session)
    outcome = run_epochs(trainee, session, cfg.train, plan.scored, plan.persist)
    if plan.persist:
        return None
    return {"weights": outcome.weights, "history": outcome.state.history, "best_epoch": outcome.state.best_epoch,
            "stopped": outcome.stopped}
