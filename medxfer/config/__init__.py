"""The job config: one pydantic tree that every medxfer command reads.

Why one tree: a run folder, a model bundle and a Kubernetes ConfigMap all carry the same
YAML, so a result can always be traced back to exactly the settings that produced it.
Every model forbids unknown keys, so a typo fails loudly instead of silently falling back
to a default (see ``medxfer.config.loading`` for the loader and the error messages).

One module per group of sections (``data``, ``model``, ``train``, ``run``, ``evaluate``,
``experiment``), ``base`` for what they share and ``job`` for the whole tree and the rules that
span sections; a new config rule is a pydantic validator in the section it concerns, so
``medxfer config validate`` catches it. Everything is importable from here.
"""

from medxfer.config.base import NAME_PATTERN, EpochMetric, OperatingRule, RegisteredMetric, Seed
from medxfer.config.data import DataConfig, PreprocessConfig
from medxfer.config.evaluate import EvaluateSection, PredictSection, PromotionSection
from medxfer.config.experiment import ExperimentArm, ExperimentSection
from medxfer.config.job import JobConfig
from medxfer.config.model import Backbone, ModelConfig
from medxfer.config.run import FailureSection, ScalingSection, StorageSection
from medxfer.config.train import CheckpointSection, EarlyStoppingConfig, PretrainConfig, TrainConfig
from medxfer.metrics.registry import EPOCH_METRICS
from medxfer.models.backbones import WITHOUT_IMAGENET_WEIGHTS

__all__ = [
    "EPOCH_METRICS", "NAME_PATTERN", "WITHOUT_IMAGENET_WEIGHTS", "Backbone", "CheckpointSection", "DataConfig",
    "EarlyStoppingConfig", "EpochMetric", "EvaluateSection", "ExperimentArm", "ExperimentSection", "FailureSection",
    "JobConfig", "ModelConfig", "OperatingRule", "PredictSection", "PreprocessConfig", "PretrainConfig",
    "PromotionSection", "RegisteredMetric", "ScalingSection", "Seed", "StorageSection", "TrainConfig",
]
