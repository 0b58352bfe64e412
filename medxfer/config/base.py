"""What every config section shares: unknown keys refused, names checked, metric names and rules checked."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

from medxfer.metrics.operating_point import parse_rule
from medxfer.metrics.registry import EPOCH_METRICS, METRICS

# Run, model and registry names become folder names (runs/<name>/, registry/<model>/): one pattern
# for all of them, checked wherever a name enters, so none can climb out of its folder.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

def _one_of(names: Collection[str]) -> Callable[[str], str]:
    def check(v: str) -> str:
        if v not in names:
            raise ValueError(f"one of {', '.join(names)}")
        return v

    return check

def _rule(v: str) -> str:
    parse_rule(v)  # a ValueError names the forms expected
    return v

# Checked against the metric registry (medxfer.metrics) with the config, so `config validate` catches them.
EpochMetric = Annotated[str, AfterValidator(_one_of(EPOCH_METRICS))]

RegisteredMetric = Annotated[str, AfterValidator(_one_of(METRICS))]

OperatingRule = Annotated[str, AfterValidator(_rule)]

class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    # Class names like "0"/"1" come from YAML and --set as numbers: accept them as strings.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
