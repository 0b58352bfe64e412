"""Metrics a clinician can trust: one registry, scikit-learn point values, paired bootstrap intervals.

Where things are, and why:

- :mod:`~medxfer.metrics.registry`: every metric once (name, direction, the inputs it reads, a
  scikit-learn point function and a vectorised bootstrap statistic). Validation, reports,
  comparisons, experiments, early stopping and promotion all look metrics up here, so there is
  one AUROC. A new metric is one entry there plus its test.
- :mod:`~medxfer.metrics.views`: a task's labels and scores as those inputs (the AUROC columns).
- :mod:`~medxfer.metrics.bootstrap`: intervals from ``scipy.stats.bootstrap`` (paired, BCa where
  it applies); why the library and not hand-written resampling is said there.
- :mod:`~medxfer.metrics.calibration`: reliability bins (scikit-learn) and the calibration error.
- :mod:`~medxfer.metrics.operating_point`: the threshold rule, chosen on validation.
- :mod:`~medxfer.metrics.reports`: the metrics of a multiclass, multilabel or ordinal evaluation.

Everything here is a pure function of arrays: no Ray, no storage, no torch. This package and its
registry import only numpy (the job config validates against them); scikit-learn and scipy load
when something is computed.
"""

from medxfer.metrics.registry import EPOCH_METRICS, METRICS, Metric, metrics_for

__all__ = ["EPOCH_METRICS", "METRICS", "Metric", "metrics_for"]
