"""``medxfer evaluate``: a bundle's quality on a split, with intervals, an operating point and plots.

The order of work, and why:

1. The data goes through **the bundle's preprocessing spec** (``cfg.preprocess`` is replaced
   by it, and the class list by the bundle's, before ``prepare``), so the numbers describe
   the model as it will be used, not as some other config would feed it.
2. Inference runs as Ray Data ``map_batches`` over an actor pool of model replicas (the
   same :class:`medxfer.predict.BundlePredictor` batch prediction uses; validation and the
   evaluated split share one pipeline) — or, for small sets (``evaluate.engine: auto``,
   at most ``local_max_images``), in this process, where actor start-up would cost more
   than the inference itself. See :func:`score`.
3. The **operating point** is chosen on *validation* (``evaluate.operating_point``) and
   then applied, unchanged, to the evaluated split: a threshold tuned on the test set would
   overstate what a clinician will see.
4. Metrics with seeded bootstrap intervals (:mod:`medxfer.metrics`), PNG plots
   (:mod:`medxfer.plots`), ``report.json`` and ``report.md`` go to ``--out`` (default: the
   ``report/`` folder beside the bundle).
5. The bundle is never written: the operating point lives in the report (and in the registry
   version registered with it), so no later evaluation can silently change what an earlier
   one decided. ``medxfer predict --report`` (or ``--registry-version``) applies it.

The positive class of a multiclass model is the one its card names (``data.positive_class``
at training, ``import folder --positive-class``, or the last class by default);
``evaluate.positive_class`` overrides it for one evaluation. The report and the CLI say which
class was positive and why.

``--compare A B`` scores both bundles on the same split (each through its own spec) and
reports the paired-bootstrap AUROC difference with its interval.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math

import numpy as np

from medxfer import metrics as M
from medxfer import plots, storage
from medxfer.config import JobConfig
from medxfer.errors import ConfigError, DataError
from medxfer.registry import json_safe

log = logging.getLogger("medxfer.evaluate")

REPORT_KIND = "medxfer-evaluation/1"


# ----------------------------------------------------------------------------- data and scores


def evaluation_config(cfg: JobConfig, bundle) -> JobConfig:
    """``cfg`` with the bundle's preprocessing spec, task and class order (what the model expects)."""
    data = cfg.data.model_copy(update={"task": bundle.task, "classes": list(bundle.classes)})
    return cfg.model_copy(update={"preprocess": bundle.spec, "data": data})


def _tag(batch: dict, part: str) -> dict:
    batch["part"] = np.full(len(batch["path"]), part, dtype=object)
    return batch


def choose_engine(ecfg, prepared, splits: list[str]) -> str:
    """'local' or 'ray' for ``evaluate.engine`` (see its description for the 'auto' rule)."""
    if ecfg.engine != "auto":
        return ecfg.engine
    try:
        n = sum(int(prepared.card["counts"][s]["total"]) for s in set(splits))
    except (KeyError, TypeError):
        return "ray"
    return "local" if n <= ecfg.local_max_images else "ray"


def score(bundle, prepared, splits: list[str], ecfg) -> dict[str, dict]:
    """Scores of ``bundle`` on ``splits``: in-process for small sets, a Ray Data actor pool otherwise.

    Why both: an actor pool pays process start-up, a torch import and a bundle load per
    replica (seconds, tens of seconds on a busy node) before the first image, which
    dominates a few thousand 28-224 px images that one process scores in well under that;
    a large holdout or a GPU cluster is what the pool is for. Both paths call the same
    ``medxfer.inference.predict_arrays`` on the same cached tensors, so scores are identical
    (the tests hold them equal).
    """
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


def score_splits_local(bundle, prepared, splits: list[str], batch_size: int = 256) -> dict[str, dict]:
    """In-process scoring from the cache (``prepared.numpy``); same output as :func:`score_splits`."""
    import torch

    from medxfer.inference import predict_arrays

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = bundle.build_model(device)
    width = 1 if bundle.task == "ordinal" else len(bundle.classes)
    out = {}
    for s in dict.fromkeys(splits):
        X, y = prepared.numpy(s)
        if len(X) == 0:
            raise DataError(f"{prepared.uri}: the {s!r} split is empty; evaluation needs it")
        scores = predict_arrays(model, X, bundle.task, batch_size, device).reshape(len(X), width)
        out[s] = _sorted_by_path(prepared.paths(s), y, scores)
    return out


def score_splits(bundle_uri: str, prepared, splits: list[str], batch_size: int = 256) -> dict[str, dict]:
    """Run the bundle over ``splits`` of ``prepared`` with a Ray Data actor pool.

    Returns ``{split: {"path": (N,) str, "label": (N,...) , "scores": (N,K)}}``, rows sorted by
    path so two bundles' scores line up.
    """
    from medxfer.predict import BundlePredictor, actor_pool
    from medxfer.runtime import init_ray

    init_ray()
    ds = None
    for s in dict.fromkeys(splits):
        part = prepared.dataset(s).select_columns(["image", "label", "path"]).map_batches(
            _tag, fn_kwargs={"part": s}, batch_format="numpy", num_cpus=0.25)
        ds = part if ds is None else ds.union(part)
    compute, num_gpus = actor_pool()
    ds = ds.map_batches(
        BundlePredictor,
        fn_constructor_kwargs={"bundle_uri": bundle_uri, "batch_size": batch_size},
        batch_size=batch_size,
        batch_format="numpy",
        compute=compute,
        num_gpus=num_gpus,
    )
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
            raise DataError(f"{prepared.uri}: the {s!r} split is empty; evaluation needs it")
        out[s] = _sorted_by_path(np.concatenate(parts["path"]), np.concatenate(parts["label"]),
                                 np.concatenate(parts["scores"]))
    return out


def holdout_fingerprint(paths: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the (path, label) pairs: two reports are comparable only when this matches."""
    h = hashlib.sha256()
    lab = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=-1.0)
    for p, lab_row in zip(paths, lab, strict=True):
        h.update(str(p).encode())
        h.update(np.atleast_1d(lab_row).tobytes())
    return h.hexdigest()


def positive_class(bundle, ecfg) -> tuple[int, str]:
    """``(index, reason)`` of the positive class: ``evaluate.positive_class``, else the card's."""
    from medxfer.card import POSITIVE_SOURCES

    classes = list(bundle.classes)
    name = ecfg.positive_class
    if name is not None:
        if name not in classes:
            raise ConfigError([f"evaluate.positive_class: {name!r} is not one of the bundle's classes {classes}"])
        return classes.index(name), "named for this evaluation (evaluate.positive_class)"
    return classes.index(bundle.positive_class), POSITIVE_SOURCES[bundle.card["positive_class_source"]]


# ----------------------------------------------------------------------------- report


def build_report(bundle, scored: dict[str, dict], split: str, ecfg, prepared=None) -> dict:
    """Metrics, operating point and calibration for one bundle's scores (pure; no I/O)."""
    task, classes = bundle.task, list(bundle.classes)
    s = scored[split]
    rep: dict = {
        "kind": REPORT_KIND,
        "bundle": bundle.uri,
        "bundle_id": bundle.id,
        "weights_sha256": bundle.card["weights_sha256"],
        "card_sha256": bundle.card_sha256,
        "model": bundle.card.get("name"),
        "task": task,
        "classes": classes,
        "split": split,
        "data": {"fingerprint": getattr(prepared, "key", None), "uri": getattr(prepared, "uri", None)},
        "holdout": {"split": split, "n": int(len(s["path"])), "fingerprint": holdout_fingerprint(s["path"], s["label"])},
        "bootstrap": {"resamples": ecfg.bootstrap, "seed": ecfg.seed, "level": 0.95, "method": "percentile"},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if task == "multiclass":
        pos, why = positive_class(bundle, ecfg)
        v = scored["val"]
        op = M.choose_operating_point(v["label"].astype(int) == pos, v["scores"][:, pos], ecfg.operating_point)
        y = s["label"].astype(int)
        body = M.classification_report(y, s["scores"], classes, pos, op.threshold, ecfg.bootstrap, ecfg.seed)
        sens, spec = M._sens_spec(y == pos, s["scores"][:, pos], op.threshold)
        rep["positive_class"] = classes[pos]
        rep["positive_class_reason"] = why
        rep["operating_point"] = {
            **op.to_dict(),
            "positive_class": classes[pos],
            "chosen_on": "val",
            "val": {"sensitivity": op.sensitivity, "specificity": op.specificity, "n": int(len(v["path"]))},
            split: {"sensitivity": sens, "specificity": spec},
        }
        del rep["operating_point"]["sensitivity"], rep["operating_point"]["specificity"]
    elif task == "multilabel":
        body = M.multilabel_report(s["label"], s["scores"], classes, ecfg.bootstrap, ecfg.seed)
    elif task == "ordinal":
        body = M.ordinal_report(s["label"], s["scores"][:, 0], classes, ecfg.bootstrap, ecfg.seed)
    else:
        raise ConfigError([f"bundle task {task!r}: expected multiclass, multilabel or ordinal"])
    rep.update(body)
    return rep


def _plots(rep: dict, scored: dict, out: str) -> dict[str, str]:
    """Write the PNGs for a report; returns {kind: file name} (relative to ``out``)."""
    split, classes, task = rep["split"], rep["classes"], rep["task"]
    s = scored[split]
    files: dict[str, str] = {}
    name = rep.get("model") or "model"
    if task == "multiclass":
        pos = classes.index(rep["positive_class"])
        y = s["label"].astype(int)
        if len(classes) == 2:
            curves = {f"{classes[pos]} vs rest": (y == pos, s["scores"][:, pos])}
        else:
            curves = {c: (y == i, s["scores"][:, i]) for i, c in enumerate(classes)}
        op = rep["operating_point"]
        files["roc"] = "roc.png"
        storage.write_bytes(storage.join(out, "roc.png"), plots.roc_png(
            curves, f"{name}: ROC on {split} (n={len(y)})",
            (op[split]["sensitivity"], op[split]["specificity"],
             f"operating point t={op['threshold']:.3f} ({op['rule']})")))
        files["calibration"] = "calibration.png"
        storage.write_bytes(storage.join(out, "calibration.png"),
                            plots.reliability_png(rep["calibration"], f"{name}: reliability on {split}"))
    elif task == "multilabel":
        y = np.nan_to_num(s["label"], nan=0.0) > 0.5
        known = ~np.isnan(np.asarray(s["label"], dtype=float))
        curves = {c: (y[known[:, j], j], s["scores"][known[:, j], j]) for j, c in enumerate(classes)}
        files["roc"] = "roc.png"
        storage.write_bytes(storage.join(out, "roc.png"), plots.roc_png(curves, f"{name}: ROC per finding on {split}"))
    if "confusion_matrix" in rep:
        files["confusion"] = "confusion.png"
        cm = rep["confusion_matrix"]
        storage.write_bytes(storage.join(out, "confusion.png"),
                            plots.confusion_png(cm["matrix"], cm["labels"], f"{name}: confusion on {split}"))
    return files


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def report_markdown(rep: dict) -> str:
    """A human-readable report; embeds the PNGs that sit beside it."""
    lines = [
        f"# Evaluation of {rep.get('model') or 'model'} on the {rep['split']} split",
        "",
        f"- bundle: `{rep['bundle']}` (id `{rep['bundle_id']}`)",
        f"- task: {rep['task']}; classes: {', '.join(rep['classes'])}",
        f"- images: {rep['holdout']['n']}" + (
            f" (per class: {', '.join(f'{c} {n}' for c, n in zip(rep['classes'], rep['class_counts'], strict=True))})"
            if "class_counts" in rep else ""),
        f"- data: `{rep['data'].get('uri')}`; holdout fingerprint `{rep['holdout']['fingerprint'][:16]}`",
        f"- intervals: 95% percentile bootstrap, {rep['bootstrap']['resamples']} resamples, seed {rep['bootstrap']['seed']}",
        "",
    ]
    op = rep.get("operating_point")
    if op:
        sp = rep["split"]
        lines += [
            "## Operating point",
            "",
            f"Positive class: **{op['positive_class']}**, {rep.get('positive_class_reason', '')}.",
            "",
            f"A case is called **{op['positive_class']}** when P({op['positive_class']}) >= **{op['threshold']:.4f}**. "
            f"The threshold was chosen on the validation split (n={op['val']['n']}) by the rule `{op['rule']}`"
            + ("" if op.get("target_met", True) else " (**the target could not be met on validation**)")
            + f", where it gave sensitivity {_fmt(op['val']['sensitivity'])} and specificity "
            f"{_fmt(op['val']['specificity'])}. Applied unchanged to the {sp} split it achieves sensitivity "
            f"**{_fmt(op[sp]['sensitivity'])}** and specificity **{_fmt(op[sp]['specificity'])}**.",
            "",
        ]
    lines += ["## Metrics", "", "| metric | value | 95% CI |", "|---|---|---|"]
    for k, m in rep["metrics"].items():
        lo, hi = m.get("ci", [None, None])
        lines.append(f"| {k} | {_fmt(m.get('value'))} | {_fmt(lo)} - {_fmt(hi)} |")
    lines.append("")
    if "per_class" in rep:
        lines += ["## Per class", "", "| class | AUROC (one-vs-rest) | recall | precision |", "|---|---|---|---|"]
        for c in rep["classes"]:
            pc = rep["per_class"]
            lines.append(f"| {c} | {_fmt(pc['auroc'].get(c))} | {_fmt(pc['recall'].get(c))} | "
                         f"{_fmt(pc['precision'].get(c))} |")
        lines.append("")
    if "per_finding" in rep:
        lines += ["## Per finding", "", "| finding | AUROC | labelled | positive |", "|---|---|---|---|"]
        for c, v in rep["per_finding"].items():
            lines.append(f"| {c} | {_fmt(v['auroc'])} | {v['n_known']} | {v['n_positive']} |")
        lines.append("")
    if "confusion_matrix" in rep:
        cm = rep["confusion_matrix"]
        lines += ["## Confusion matrix (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(cm["labels"]) + " |", "|---" * (len(cm["labels"]) + 1) + "|"]
        for lab, row in zip(cm["labels"], cm["matrix"], strict=True):
            lines.append(f"| **{lab}** | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    titles = {"roc": "ROC curve", "calibration": "Calibration (reliability diagram)", "confusion": "Confusion matrix"}
    if rep.get("plots"):
        lines += ["## Plots", ""]
        for kind, fname in rep["plots"].items():
            lines += [f"### {titles.get(kind, kind)}", "", f"![{titles.get(kind, kind)}]({fname})", ""]
    if "calibration" in rep:
        lines += [f"Calibration uses the {rep['calibration']['kind']}; Brier score and ECE are in the table.", ""]
    return "\n".join(lines)


def default_out(bundle_uri: str) -> str:
    return storage.join(storage.parent(storage.normalize(bundle_uri)), "report")


def _in_registry(uri: str) -> bool:
    u = storage.normalize(uri).replace("\\", "/")
    return "/registry/" in u and "/versions/" in u


def write_report(rep: dict, scored: dict, out: str) -> str:
    rep["plots"] = _plots(rep, scored, out)
    report_uri = storage.join(out, "report.json")
    storage.write_json(report_uri, json_safe(rep))
    storage.write_text(storage.join(out, "report.md"), report_markdown(rep))
    return report_uri


# ----------------------------------------------------------------------------- entry points


def _prepare_for(bundle, cfg: JobConfig):
    from medxfer.data.cache import prepare

    return prepare(evaluation_config(cfg, bundle))


def evaluate_bundle(bundle_uri: str, cfg: JobConfig, split: str = "test", out: str | None = None) -> dict:
    """Evaluate ``bundle_uri`` on ``split`` of ``cfg``'s data; write the report (never the bundle); return it."""
    from medxfer.bundle import load_bundle

    if out is None and _in_registry(bundle_uri):
        raise ConfigError([f"{bundle_uri}: registry versions are immutable; give --out for the report"])
    M.parse_rule(cfg.evaluate.operating_point)  # fail before any data work
    bundle = load_bundle(bundle_uri)
    ecfg = cfg.evaluate
    prepared = _prepare_for(bundle, cfg)
    splits = ["val", split] if bundle.task == "multiclass" else [split]
    scored = score(bundle, prepared, splits, ecfg)
    rep = build_report(bundle, scored, split, ecfg, prepared)
    out = out or default_out(bundle_uri)
    report_uri = write_report(rep, scored, out)
    rep["report_uri"] = report_uri
    log.info("%s on %s: %s; report %s", bundle.id, split,
             ", ".join(f"{k} {_fmt(m['value'])}" for k, m in list(rep["metrics"].items())[:4]), report_uri)
    return rep


def compare_bundles(a_uri: str, b_uri: str, cfg: JobConfig, split: str = "test", out: str | None = None) -> dict:
    """Both bundles on the same images; AUROC (or MAE) difference A - B with a paired bootstrap CI."""
    from medxfer.bundle import load_bundle

    ecfg = cfg.evaluate
    M.parse_rule(ecfg.operating_point)
    bundles = [load_bundle(a_uri), load_bundle(b_uri)]
    if bundles[0].task != bundles[1].task or bundles[0].classes != bundles[1].classes:
        raise ConfigError([f"--compare: {a_uri} and {b_uri} differ in task or classes; they cannot be compared"])
    if ecfg.positive_class is None and bundles[0].positive_class != bundles[1].positive_class:
        raise ConfigError([f"--compare: the cards name different positive classes ({bundles[0].positive_class!r} "
                           f"and {bundles[1].positive_class!r}); name one with --set evaluate.positive_class=..."])
    reps, scores = [], []
    for b in bundles:
        prepared = _prepare_for(b, cfg)
        splits = ["val", split] if b.task == "multiclass" else [split]
        sc = score(b, prepared, splits, ecfg)
        reps.append(build_report(b, sc, split, ecfg, prepared))
        scores.append(sc)
    sa, sb = scores[0][split], scores[1][split]
    common, ia, ib = np.intersect1d(sa["path"], sb["path"], return_indices=True)
    if len(common) == 0:
        raise DataError(f"--compare: the two bundles' {split} splits share no images")
    y = sa["label"][ia]
    task, classes = bundles[0].task, bundles[0].classes
    if task == "multiclass":
        pos, _ = positive_class(bundles[0], ecfg)
        stat_a = M.auroc_stat(y, sa["scores"][ia], pos)
        stat_b = M.auroc_stat(y, sb["scores"][ib], pos)
        metric = "auroc"
    elif task == "multilabel":
        known = ~np.isnan(np.asarray(y, dtype=float))
        yb = np.nan_to_num(y, nan=0.0) > 0.5
        stat_a = M.macro_auroc_stat(yb, sa["scores"][ia], known)
        stat_b = M.macro_auroc_stat(yb, sb["scores"][ib], known)
        metric = "auroc"
    else:
        stat_a = M.weighted_mean_stat(np.abs(sa["scores"][ia, 0] - y))
        stat_b = M.weighted_mean_stat(np.abs(sb["scores"][ib, 0] - y))
        metric = "mae"
    diff = M.paired_difference(stat_a, stat_b, len(common), ecfg.bootstrap, ecfg.seed)
    out = out or storage.join(default_out(a_uri), "compare")
    result = {
        "kind": "medxfer-comparison/1",
        "split": split,
        "n_common": int(len(common)),
        "metric": metric,
        "a": {"bundle": a_uri, "bundle_id": bundles[0].id, "metrics": reps[0]["metrics"],
              "operating_point": reps[0].get("operating_point")},
        "b": {"bundle": b_uri, "bundle_id": bundles[1].id, "metrics": reps[1]["metrics"],
              "operating_point": reps[1].get("operating_point")},
        "difference": diff,
    }
    if task == "multiclass" and len(classes) == 2:
        result["plots"] = {"roc": "roc_compare.png"}
        storage.write_bytes(storage.join(out, "roc_compare.png"), plots.roc_png(
            {f"A {bundles[0].id}": (y.astype(int) == pos, sa["scores"][ia, pos]),
             f"B {bundles[1].id}": (y.astype(int) == pos, sb["scores"][ib, pos])},
            f"A vs B on {split} (n={len(common)})"))
    storage.write_json(storage.join(out, "compare.json"), json_safe(result))
    storage.write_text(storage.join(out, "compare.md"), compare_markdown(result))
    result["out"] = out
    return result


def compare_markdown(r: dict) -> str:
    d = r["difference"]
    p = d["p_value"]
    p_txt = f"< {1 / d['n_boot']:.2g}" if p == 0 and d["n_boot"] else f"= {_fmt(p, 3)}"
    lines = [
        f"# A vs B on the {r['split']} split ({r['n_common']} images scored by both)",
        "",
        f"- A: `{r['a']['bundle']}` ({r['a']['bundle_id']})",
        f"- B: `{r['b']['bundle']}` ({r['b']['bundle_id']})",
        "",
        f"**{r['metric']} A - B = {_fmt(d['difference'], 4)}** (95% CI {_fmt(d['ci'][0], 4)} to "
        f"{_fmt(d['ci'][1], 4)}, paired bootstrap of {d['n_boot']} resamples; p {p_txt}).",
        "",
        "| metric | A | B |",
        "|---|---|---|",
    ]
    for k, m in r["a"]["metrics"].items():
        mb = r["b"]["metrics"].get(k, {})
        lines.append(f"| {k} | {_fmt(m['value'])} [{_fmt(m['ci'][0])}, {_fmt(m['ci'][1])}] | "
                     f"{_fmt(mb.get('value'))} [{_fmt((mb.get('ci') or [None])[0])}, "
                     f"{_fmt((mb.get('ci') or [None, None])[1])}] |")
    if r.get("plots"):
        lines += ["", "![ROC of A and B](roc_compare.png)"]
    return "\n".join(lines) + "\n"


def resolve_config(data: str | None, overrides: list[str] | None, bundle_uri: str | None) -> JobConfig:
    """The job config for an evaluation from ``--data``: a job config (YAML), a manifest, or
    (no --data) the training config stored in the bundle's card."""
    from medxfer.config_io import deep_merge, load_config, parse_overrides, validate_dict

    if data and data.lower().endswith((".yaml", ".yml")):
        return load_config(data, overrides)
    if data:
        cfg = load_config(None, overrides)
        cfg.data.manifest = data
        return cfg
    if not bundle_uri:
        raise ConfigError(["evaluate: give --data (a manifest or job config) or a bundle whose card has a config"])
    from medxfer.bundle import load_bundle

    card_cfg = load_bundle(bundle_uri).card.get("config")
    if not card_cfg:
        raise ConfigError([f"{bundle_uri}: the card holds no training config; give --data"])
    return validate_dict(deep_merge(card_cfg, parse_overrides(overrides)), f"{bundle_uri} card config")
