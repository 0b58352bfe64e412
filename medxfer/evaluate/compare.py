"""``medxfer evaluate --compare A B``: two models on the same images, and a paired interval of the difference.

Each bundle is scored through its own preprocessing spec and reported as ``evaluate`` would; the
difference of the headline metric (AUROC, or MAE for an ordinal grade) is bootstrapped on the same
resamples of the images both scored, which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

import numpy as np

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError, DataError
from medxfer.evaluate import plots
from medxfer.evaluate.inputs import positive_class, prepare_for, scored_splits
from medxfer.evaluate.markdown import compare_markdown
from medxfer.evaluate.report import build_report, default_out, resampling
from medxfer.evaluate.scoring import score
from medxfer.lifecycle.model_registry import json_safe
from medxfer.metrics import METRICS
from medxfer.metrics.bootstrap import paired_difference
from medxfer.metrics.views import defined_columns, one_vs_rest


def _check_comparable(bundles, a_uri: str, b_uri: str, ecfg) -> None:
    if bundles[0].task != bundles[1].task or bundles[0].classes != bundles[1].classes:
        raise ConfigError([f"--compare: {a_uri} and {b_uri} differ in task or classes; they cannot be compared"])
    if ecfg.positive_class is None and bundles[0].positive_class != bundles[1].positive_class:
        raise ConfigError([f"--compare: the cards name different positive classes ({bundles[0].positive_class!r} "
                           f"and {bundles[1].positive_class!r}); name one with --set evaluate.positive_class=..."])


def _headline_inputs(task: str, y: np.ndarray, scores: np.ndarray, pos: int | None) -> tuple[str, tuple]:
    """The headline metric of a task and the inputs it reads from one model's scores."""
    if task == "multiclass":
        return "auroc", one_vs_rest(y, scores, pos)
    if task == "multilabel":
        truth = np.where(np.isnan(np.asarray(y, dtype=float)), np.nan, np.asarray(y, dtype=float) > 0.5)
        return "auroc", defined_columns(truth.T, scores.T)
    return "mae", (np.asarray(y, dtype=np.float64), scores[:, 0])


def compare_bundles(a_uri: str, b_uri: str, cfg: JobConfig, split: str = "test", out: str | None = None) -> dict:
    """Both bundles on the same images; AUROC (or MAE) difference A - B with a paired bootstrap CI."""
    from medxfer.lifecycle.bundle import load_bundle

    ecfg = cfg.evaluate
    bundles = [load_bundle(a_uri), load_bundle(b_uri)]
    _check_comparable(bundles, a_uri, b_uri, ecfg)
    reps, scores = [], []
    for b in bundles:
        prepared = prepare_for(b, cfg)
        sc = score(b, prepared, scored_splits(b, split), ecfg)
        reps.append(build_report(b, sc, split, ecfg, prepared))
        scores.append(sc)
    sa, sb = scores[0][split], scores[1][split]
    common, ia, ib = np.intersect1d(sa["path"], sb["path"], return_indices=True)
    if len(common) == 0:
        raise DataError(f"--compare: the two bundles' {split} splits share no images")
    y = sa["label"][ia]
    task, classes = bundles[0].task, bundles[0].classes
    pos = positive_class(bundles[0], ecfg)[0] if task == "multiclass" else None
    metric, inputs_a = _headline_inputs(task, y, sa["scores"][ia], pos)
    inputs_b = _headline_inputs(task, y, sb["scores"][ib], pos)[1]
    diff = paired_difference(METRICS[metric], inputs_a, inputs_b, resampling(ecfg))
    out = out or storage.join(default_out(a_uri), "compare")
    result = {
        "kind": "medxfer-comparison/1",
        "split": split,
        "n_common": int(len(common)),
        "metric": metric,
        "seed": ecfg.seed,
        "a": {"bundle": a_uri, "bundle_id": bundles[0].id, "metrics": reps[0]["metrics"],
              "operating_point": reps[0].get("operating_point")},
        "b": {"bundle": b_uri, "bundle_id": bundles[1].id, "metrics": reps[1]["metrics"],
              "operating_point": reps[1].get("operating_point")},
        "difference": diff,
    }
    if task == "multiclass" and len(classes) == 2:
        result["plots"] = {"roc": "roc_compare.png"}
        truth = y.astype(int) == pos
        storage.write_bytes(storage.join(out, "roc_compare.png"), plots.roc_png(
            {f"A {bundles[0].id}": (truth, sa["scores"][ia, pos]), f"B {bundles[1].id}": (truth, sb["scores"][ib, pos])},
            f"A vs B on {split} (n={len(common)})"))
    storage.write_json(storage.join(out, "compare.json"), json_safe(result))
    storage.write_text(storage.join(out, "compare.md"), compare_markdown(result))
    result["out"] = out
    return result
