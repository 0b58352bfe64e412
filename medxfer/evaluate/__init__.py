"""``medxfer evaluate``: a bundle's quality on a split, with intervals, an operating point and plots.

The order of work, and why:

1. The data goes through the bundle's own preprocessing spec and class order
   (:mod:`~medxfer.evaluate.inputs`), so the numbers describe the model as it will be used.
2. Inference runs in this process for small sets and on a Ray Data actor pool for large ones
   (:mod:`~medxfer.evaluate.scoring`); both give the same scores.
3. The operating point is chosen on validation and applied unchanged to the evaluated split;
   metrics come with seeded, paired bootstrap intervals (:mod:`~medxfer.evaluate.report`,
   built on :mod:`medxfer.metrics`).
4. ``report.json``, ``report.md`` and PNG plots go to ``--out`` (default: the ``report/`` folder
   beside the bundle; :mod:`~medxfer.evaluate.markdown`). The bundle is never written.

``--compare A B`` scores both bundles on the same split and reports the paired-bootstrap
difference of the headline metric (:mod:`~medxfer.evaluate.compare`).
"""

from medxfer.evaluate.compare import compare_bundles
from medxfer.evaluate.inputs import resolve_config
from medxfer.evaluate.markdown import fmt
from medxfer.evaluate.report import build_report, evaluate_bundle, write_report

__all__ = ["build_report", "compare_bundles", "evaluate_bundle", "fmt", "resolve_config", "write_report"]
