"""The whole job: one section of each kind, and the rules that span sections."""

from __future__ import annotations

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
)

from medxfer.config.base import NAME_PATTERN, _Section
from medxfer.config.data import DataConfig, PreprocessConfig
from medxfer.config.evaluate import EvaluateSection, PredictSection, PromotionSection
from medxfer.config.experiment import ExperimentSection
from medxfer.config.model import ModelConfig
from medxfer.config.run import FailureSection, ScalingSection, StorageSection
from medxfer.config.train import PretrainConfig, TrainConfig
from medxfer.metrics.registry import EPOCH_METRICS, metrics_for
from medxfer.metrics.views import task_kinds


class JobConfig(_Section):
    """A medxfer job. Every section has laptop-friendly defaults."""

    name: str = Field(
        "medxfer-run",
        pattern=NAME_PATTERN,
        description="Run name: runs/<name>/ in storage. The same name resumes the same run.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    failure: FailureSection = Field(default_factory=FailureSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    promotion: PromotionSection = Field(default_factory=PromotionSection)
    predict: PredictSection = Field(default_factory=PredictSection)
    experiment: ExperimentSection = Field(default_factory=ExperimentSection)

    @field_validator("train")
    @classmethod
    def _mixing_needs_classes(cls, v: TrainConfig, info: ValidationInfo) -> TrainConfig:
        task = info.data["data"].task if "data" in info.data else "multiclass"
        if (v.mixup_alpha or v.cutmix_alpha) and task != "multiclass":
            raise ValueError(f"mixup_alpha and cutmix_alpha 0: mixing blends one-hot class targets, which a "
                             f"{task} task (data.task) does not have")
        reported = epoch_metrics_of(task)
        if v.early_stopping.metric not in reported:
            raise ValueError(f"early_stopping.metric: a {task} task (data.task) does not report "
                             f"{v.early_stopping.metric}; choose one of {', '.join(reported)}")
        return v


def epoch_metrics_of(task: str) -> list[str]:
    """The epoch metrics validation reports for ``task`` (what early stopping can pick by)."""
    registered = [m.epoch for m in metrics_for(task_kinds(task)) if m.epoch]
    return registered + [k for k in EPOCH_METRICS if k not in registered and k.endswith("_loss")]
