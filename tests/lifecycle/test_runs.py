"""medxfer.train.runs: a run name keeps the model it was trained as."""

from __future__ import annotations

import pytest

from medxfer.config import TrainConfig


def test_reused_run_name_with_other_model_is_refused(tmp_path):
    from medxfer.config import JobConfig
    from medxfer.config.loading import dump_yaml
    from medxfer.errors import ConfigError
    from medxfer.train.resume import SNAPSHOT
    from medxfer.train.runs import check_run

    cfg = JobConfig.model_validate({"name": "r", "model": {"backbone": "smallcnn"}})
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    other = JobConfig.model_validate(
        {"name": "r", "model": {"backbone": "resnet18"}, "preprocess": {"size": 32}}
    )
    assert (
        check_run(other, str(tmp_path)) is None
    )  # nothing trained yet (no checkpoint): the run starts afresh
    (tmp_path / SNAPSHOT).write_text("{}")
    resume = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_epochs_this_run": 3})})
    assert check_run(resume, str(tmp_path)) is None  # same model, another stopping point: resumes
    with pytest.raises(
        ConfigError, match=r"model\.backbone: 'smallcnn' -> 'resnet18'; preprocess\.size: 64 -> 32"
    ):
        check_run(other, str(tmp_path))
    assert (
        check_run(cfg.model_copy(update={"train": TrainConfig(epochs=99)}), str(tmp_path)) is None
    )  # continues
    with pytest.raises(
        ConfigError, match=r"train\.epochs: 10 -> 5.*new name"
    ):  # fewer than it was trained for
        check_run(cfg.model_copy(update={"train": TrainConfig(epochs=5)}), str(tmp_path))
