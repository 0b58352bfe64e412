"""The stages a pod can run, how long each may take, and the command each runs.

Why the command is rendered, not written by hand: ``--set`` overrides given to the renderer
size the pods, so they must also reach the job, or the job would run other values than the
ones its worker group was sized for.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from medxfer.config import JobConfig
from medxfer.errors import ConfigError
from medxfer.k8s.names import CONFIG_DIR
from medxfer.k8s.schedule import JOB_NAME_ENV

#: Stage -> how long one attempt may run (RayJob activeDeadlineSeconds).
STAGE_DEADLINE_S = {
    "source-train": 48 * 3600,
    "pretrain": 72 * 3600,
    "finetune": 12 * 3600,
    "retrain": 12 * 3600,
    "evaluate": 2 * 3600,
    "predict": 6 * 3600,
}
STAGES = tuple(STAGE_DEADLINE_S)


def stage_from_path(path: str) -> str:
    """The stage a config file runs, from its name: ``jobs/finetune.yaml`` -> ``finetune``."""
    stem = PurePosixPath(str(path).rstrip("/")).name.rsplit(".", 1)[0]
    for stage in sorted(STAGES, key=len, reverse=True):
        if stem == stage or stem.startswith(stage + "-") or stem.startswith(stage + "_"):
            return stage
    raise ConfigError([f"{path}: cannot tell the stage from the file name; pass --stage ({', '.join(STAGES)})"])


def entrypoint(cfg: JobConfig, stage: str, config_file: str, overrides: list[str] | None = None) -> str:
    """The command the Ray job runs, reading the config from the mounted ConfigMap.

    ``--set`` overrides given to the renderer travel into the command, so the job runs with
    exactly the values the worker group was sized for. A retrain names its run after the
    tick its scheduler gave it: the pod's Job name, which the submitter's shell expands.
    """
    cfg_path = f"{CONFIG_DIR}/{config_file}"
    sets = " ".join(f"--set {shlex.quote(s)}" for s in overrides or [])
    root = cfg.storage.root.rstrip("/")
    bundle = f"{root}/runs/{cfg.name}/bundle"
    if stage == "evaluate":
        cmd = f"medxfer evaluate --bundle {shlex.quote(bundle)} --data {cfg_path}"
    elif stage == "predict":
        if not cfg.data.manifest:
            raise ConfigError([f"{config_file}: data.manifest: the predict stage needs the images to score"])
        if cfg.predict.registry_version:  # the promoted model and its operating point decide
            source = (f"--registry-version {shlex.quote(f'{cfg.model.name}:{cfg.predict.registry_version}')} "
                      f"--root {shlex.quote(root)}")
        else:
            source = f"--bundle {shlex.quote(bundle)}"
        cmd = (f"medxfer predict {source} --input {shlex.quote(cfg.data.manifest)} "
               f"--output {shlex.quote(f'{root}/predictions/{cfg.name}')} --batch-size {cfg.predict.batch_size}")
        if cfg.predict.fail_on_bad:
            cmd += " --fail-on-bad"
        sets = ""  # predict takes no config; the overrides are already in the values above
    else:
        cmd = f"medxfer {stage} --config {cfg_path}"
    if sets:
        cmd += " " + sets
    if stage == "retrain":
        cmd += f' --tick-from-job "${JOB_NAME_ENV}"'
    return cmd
