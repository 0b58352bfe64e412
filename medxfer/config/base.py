"""What every config section shares: unknown keys refused, names checked, metric names and rules checked."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
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

#: A seed every library a run hands it to accepts: numpy's ``RandomState``/``np.random.seed`` take
#: 0 <= seed < 2**32 (torch and ``default_rng`` take more, so this is the common range).
Seed = Annotated[int, Field(ge=0, lt=2**32)]

#: The largest whole number a run can pass on: numpy, torch and Ray take counts and sizes as C
#: 64-bit integers and raise OverflowError mid-run beyond it.
INT64_MAX = 2**63 - 1


def _too_big(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) > INT64_MAX
    if isinstance(v, (list, tuple)):
        return any(_too_big(x) for x in v)
    if isinstance(v, dict):
        return any(_too_big(x) for x in v.values())
    return False


class _Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment.

    Numbers a run could not use are refused here, for every field at once, so ``config validate``
    catches them: no float may be infinite or NaN (``.inf`` as a learning rate or a std; ``.nan``
    passes every ``>``/``<`` bound), and no whole number may exceed 64 bits.
    """

    # Class names like "0"/"1" come from YAML and --set as numbers: accept them as strings.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True,
                              allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_in_64_bits(cls, v):
        if _too_big(v):
            raise ValueError(f"a whole number of at most {INT64_MAX} (2**63 - 1) in size")
        return v
