"""What each stage's pod runs: the command, reading a config that is in jobs/."""

from __future__ import annotations

import re

import pytest
from k8sutil import JOBS, all_objects, commands

from medxfer.config.loading import load_config, validate_dict
from medxfer.errors import ConfigError
from medxfer.k8s.names import CONFIG_DIR
from medxfer.k8s.stages import entrypoint, stage_from_path


def test_entrypoints_name_configs_in_jobs():
    mounted = re.compile(re.escape(CONFIG_DIR) + r"/([A-Za-z0-9._-]+)")
    seen = 0
    for name, obj in all_objects():
        for cmd in commands(obj):
            for config in mounted.findall(cmd):
                seen += 1
                assert (JOBS / config).is_file(), f"{name}: {cmd!r} reads {config}, which is not in jobs/"
                assert load_config(str(JOBS / config))
            if "medxfer" in cmd:
                assert " --config " in cmd or " --data " in cmd or "medxfer predict" in cmd, f"{name}: {cmd}"
    assert seen > 10


def test_stage_entrypoints():
    ev = load_config(str(JOBS / "evaluate.yaml"))
    assert entrypoint(ev, "evaluate", "evaluate.yaml") == (
        "medxfer evaluate --bundle s3://medxfer-data/runs/finetune-breast-resnet18/bundle "
        "--data /etc/medxfer/jobs/evaluate.yaml")
    pr = load_config(str(JOBS / "predict.yaml"))
    cmd = entrypoint(pr, "predict", "predict.yaml", ["predict.batch_size=256"])
    # the shipped job predicts with the registry's champion, whose operating point decides
    assert cmd.startswith("medxfer predict --registry-version breast-ultrasound:champion --root s3://medxfer-data ")
    assert "--input s3://medxfer-data/incoming/manifest.csv" in cmd and "--set" not in cmd
    run_bundle = entrypoint(pr.model_copy(update={"predict": pr.predict.model_copy(update={"registry_version": None})}),
                            "predict", "predict.yaml")
    assert run_bundle.startswith("medxfer predict --bundle s3://medxfer-data/runs/finetune-breast-resnet18/bundle ")
    with pytest.raises(ConfigError, match="predict.registry_version"):
        validate_dict({"predict": {"registry_version": "../x"}})
    rt = entrypoint(load_config(str(JOBS / "retrain.yaml")), "retrain", "retrain.yaml")
    assert rt.endswith('--tick-from-job "$MEDXFER_JOB_NAME"')


def test_stage_from_path():
    assert stage_from_path("jobs/source-train.yaml") == "source-train"
    assert stage_from_path("s3://b/finetune-chest.yaml") == "finetune"
    with pytest.raises(ConfigError, match="--stage"):
        stage_from_path("jobs/nightly.yaml")
