"""How a model is judged and used: evaluation, promotion, prediction (``evaluate``, ``promotion``, ``predict``)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from medxfer.config.base import OperatingRule, RegisteredMetric, Seed, _Section
from medxfer.metrics.bootstrap import BCA_MAX_N
from medxfer.metrics.operating_point import RULE_FORMS
from medxfer.metrics.registry import METRICS

#: The most bootstrap resamples a config may ask for: each resample's statistics are kept (scipy
#: returns the whole distribution) and the time grows with resamples x images, so 1e12 ran for minutes
#: and took GBs. 100,000 is 100 times the default: on 624 images it took 10 s and 250 MB here, and the
#: AUROC interval's ends moved by less than 0.002 from 1,000 resamples to 100,000.
MAX_RESAMPLES = 100_000


class EvaluateSection(_Section):
    split: Literal["train", "val", "test"] = Field("test", description="Split to report on.")
    operating_point: OperatingRule = Field(
        "youden",
        description=f"Threshold rule chosen on validation: {RULE_FORMS} (a fixed threshold).",
    )
    positive_class: str | None = Field(
        None,
        description="Evaluate with this class as positive instead of the one in the model card "
        "(data.positive_class at training); the report says which was used and why.",
    )
    bootstrap: int = Field(
        1000, ge=0, le=MAX_RESAMPLES,
        description=f"Bootstrap resamples for the confidence intervals (at most {MAX_RESAMPLES:,}: every "
        "resample's statistics are held in memory and the time grows with resamples x images).",
    )
    seed: Seed = Field(0, description="Bootstrap seed.")
    bca_max_images: int = Field(BCA_MAX_N, ge=0, description="BCa intervals up to this many images, percentile above "
                                "(BCa's leave-one-out pass grows with the square of the images; 0: always percentile).")
    batch_size: int = Field(256, ge=1, description="Inference batch size.")
    engine: Literal["auto", "ray", "local"] = Field(
        "auto",
        description="Where inference runs: 'ray' (Ray Data actor pool of model replicas, GPU when "
        "present), 'local' (in the driver process), or 'auto': local when the evaluated images "
        "number at most local_max_images (actor start-up would dominate), Ray otherwise.",
    )
    local_max_images: int = Field(
        5000, ge=0, description="With engine=auto, the most images scored in-process."
    )

class PromotionSection(_Section):
    """When a challenger replaces the champion."""

    metric: RegisteredMetric = Field("auroc", description="Headline metric compared on the holdout, in its "
                                     "registered direction: " + ", ".join(METRICS) + ".")
    margin: float = Field(0.005, ge=0, description="Challenger must beat the champion by this much.")
    no_sensitivity_drop: bool = Field(
        True, description="Also refuse a challenger whose sensitivity at the operating point is lower."
    )
    lock_ttl_s: int = Field(
        900,
        ge=60,
        le=7 * 86_400,  # a week: past it a crashed run's lock outlives any schedule (and timers overflow)
        description="medxfer retrain: the run lock's lease, renewed every third of it while the run works; "
        "a lease not renewed for this long belongs to a crashed run and is taken over (a retry of the same "
        "tick waits for it).",
    )
    tick_minutes: int = Field(
        1,
        ge=1,
        le=1440,
        description="medxfer retrain: how long one tick is. A tick's time (from the scheduler's Job name with "
        "--tick-from-job, from --tick, else now) is floored to a multiple of this many minutes since 1970 (UTC) "
        "and names its run <name>-YYYYmmddTHHMM: the same tick resumes the same run, the next one starts a new "
        "run. 1 (the default): every scheduled or hand-started tick is its own run, whatever the schedule; "
        "e.g. 60: ticks within one UTC hour share a run.",
    )


class PredictSection(_Section):
    """Batch prediction as a Kubernetes job (``medxfer k8s render --stage predict``)."""

    batch_size: int = Field(64, ge=1, description="Images per inference batch.")
    registry_version: str | None = Field(
        None,
        pattern=r"^(champion|v\d{4,})$",
        description="Predict with this version of registry model model.name (champion, or e.g. v0003): its "
        "bundle and its operating point decide. Unset: the bundle of run `name`, scores without a decision.",
    )
    fail_on_bad: bool = Field(False, description="Stop on the first undecodable file.")
