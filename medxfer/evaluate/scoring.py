"""A bundle's scores on the splits of a prepared dataset: in this process, or on a Ray Data actor pool.

Why both: an actor pool pays process start-up, a torch import and a bundle load per replica
(seconds, tens of seconds on a busy node) before the first image, which dominates a few thousand
28-224 px images that one process scores in well under that; a large holdout or a GPU cluster is
what the pool is for (``evaluate.engine``). Both paths call the same
``medxfer.lifecycle.inference.predict_arrays`` on the same cached tensors, so the scores are identical (the
tests hold them equal). Rows come back sorted by path, so two bundles' scores line up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from medxfer.errors import DataError

if TYPE_CHECKING:
    from medxfer.data.cache import PreparedData

log = logging.getLogger("medxfer.evaluate")


def choose_engine(ecfg, prepared: PreparedData, splits: list[str]) -> str:
    """'local' or 'ray' for ``evaluate.engine`` (see its description for the 'auto' rule)."""
    if ecfg.engine != "auto":
        return ecfg.engine
    try:
        n = sum(prepared.cached_rows(s) for s in set(splits))
    except (KeyError, TypeError):
        return "ray"
    return "local" if n <= ecfg.local_max_images else "ray"


def score(bundle, prepared, splits: list[str], ecfg) -> dict[str, dict]:
    """Scores of ``bundle`` on ``splits``: ``{split: {"path": (N,), "label": (N, ...), "scores": (N, K)}}``."""
    engine = choose_engine(ecfg, prepared, splits)
    log.info("scoring %s with the %s engine", "+".join(dict.fromkeys(splits)), engine)
    if engine == "local":
        return score_splits_local(bundle, prepared, splits, ecfg.batch_size)
    return score_splits(bundle.uri, prepared, splits, ecfg.batch_size)


def _sorted_by_path(path, label, scores) -> dict:
    path = np.asarray(path).astype(str)
    order = np.argsort(path, kind="stable")
    return {"path": path[order], "label": np.asarray(label)[order],
            "scores": np.asarray(scores, dtype=np.float64)[order]}


def _empty(prepared, split: str) -> DataError:
    return DataError(f"{prepared.uri}: the {split!r} split is empty; evaluation needs it")


def score_splits_local(bundle, prepared, splits: list[str], batch_size: int = 256) -> dict[str, dict]:
    """In-process scoring from the cache (``prepared.numpy``); same output as :func:`score_splits`."""
    import torch

    from medxfer.lifecycle.inference import predict_arrays

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = bundle.build_model(device)
    width = 1 if bundle.task == "ordinal" else len(bundle.classes)
    out = {}
    for s in dict.fromkeys(splits):
        X, y = prepared.numpy(s)
        if len(X) == 0:
            raise _empty(prepared, s)
        scores = predict_arrays(model, X, bundle.task, batch_size, device).reshape(len(X), width)
        out[s] = _sorted_by_path(prepared.paths(s), y, scores)
    return out


def _tag(batch: dict, part: str) -> dict:
    batch["part"] = np.full(len(batch["path"]), part, dtype=object)
    return batch


def score_splits(bundle_uri: str, prepared, splits: list[str], batch_size: int = 256) -> dict[str, dict]:
    """Run the bundle over ``splits`` of ``prepared`` with a Ray Data actor pool (one pipeline for all splits)."""
    from medxfer.data.cache.blocks import TASK_RETRIES, map_batches_bounded
    from medxfer.lifecycle.predict import map_bundle
    from medxfer.runtime import init_ray

    init_ray()
    ds = None
    for s in dict.fromkeys(splits):
        part = map_batches_bounded(prepared.dataset(s).select_columns(["image", "label", "path"]), _tag,
                                   fn_kwargs={"part": s}, batch_format="numpy", num_cpus=0.25, max_retries=TASK_RETRIES)
        ds = part if ds is None else ds.union(part)
    ds = map_bundle(ds, bundle_uri, batch_size)
    acc: dict[str, dict[str, list]] = {s: {"path": [], "label": [], "scores": []} for s in splits}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for s in acc:
            m = batch["part"] == s
            if m.any():
                acc[s]["path"].append(np.asarray(batch["path"])[m].astype(str))
                acc[s]["label"].append(np.asarray(batch["label"])[m])
                acc[s]["scores"].append(np.asarray(batch["scores"])[m])
    out = {}
    for s, parts in acc.items():
        if not parts["path"]:
            raise _empty(prepared, s)
        out[s] = _sorted_by_path(*(np.concatenate(parts[key]) for key in ("path", "label", "scores")))
    return out
