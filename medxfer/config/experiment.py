"""``medxfer experiment label-efficiency``: arms x label fractions x seeds (``experiment``)."""

from __future__ import annotations

from pydantic import (
    Field,
    field_validator,
)

from medxfer.config.base import Seed, _Section


class ExperimentArm(_Section):
    """One arm of an experiment: a name and the config overrides that make it (as ``--set``)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.+-]{1,64}$", description="Arm name in tables and plots.")
    set: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict,
        description="Overrides applied to this job config, e.g. {model.init: scratch, train.freeze: backbone}.",
    )

class ExperimentSection(_Section):
    """``medxfer experiment label-efficiency``: arms x label fractions x seeds."""

    fractions: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0],
        description="Fractions of the target's training labels (stratified, seeded subsamples).",
    )
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], description="Seeds: subsample and training.")
    arms: list[ExperimentArm] = Field(
        default_factory=lambda: [ExperimentArm(name="scratch", set={"model.init": "scratch"})],
        description="What is compared; the arm named 'scratch' is the baseline for differences.",
    )
    parallel: int | None = Field(
        None, ge=1, description="Trials run at once as Ray tasks (default: the cluster's CPUs)."
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs (and torch threads) per trial.")

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, v: list[float]) -> list[float]:
        if not v or any(not (0 < f <= 1) for f in v):
            raise ValueError(f"fractions must be in (0, 1], got {v}")
        return sorted(set(v))

    @field_validator("arms")
    @classmethod
    def _arm_names_unique(cls, v: list[ExperimentArm]) -> list[ExperimentArm]:
        names = [a.name for a in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"arms with distinct names (each names a row of the results); {', '.join(repeated)} "
                             "repeats")
        return v
