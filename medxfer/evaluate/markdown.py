"""How an evaluation reads to a person: ``report.md``, ``compare.md`` and the PNG plots beside them.

Every interval is shown with how it was drawn (method, resamples, seed), since a 95% CI from 50
resamples, or a percentile interval where BCa did not apply, means something else than the default.
"""

from __future__ import annotations

import math

import numpy as np

from medxfer import storage
from medxfer.evaluate import plots


def fmt(x, digits: int = 3) -> str:
    """A number for people: ``n/a`` for missing or undefined values."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _write_png(out: str, name: str, png: bytes) -> str:
    storage.write_bytes(storage.join(out, name), png)
    return name


def write_plots(rep: dict, scored: dict, out: str) -> dict[str, str]:
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
        marker = (op[split]["sensitivity"], op[split]["specificity"],
                  f"operating point t={op['threshold']:.3f} ({op['rule']})")
        files["roc"] = _write_png(out, "roc.png", plots.roc_png(curves, f"{name}: ROC on {split} (n={len(y)})", marker))
        files["calibration"] = _write_png(out, "calibration.png", plots.reliability_png(
            rep["calibration"], f"{name}: reliability on {split}"))
    elif task == "multilabel":
        y = np.nan_to_num(s["label"], nan=0.0) > 0.5
        known = ~np.isnan(np.asarray(s["label"], dtype=float))
        curves = {c: (y[known[:, j], j], s["scores"][known[:, j], j]) for j, c in enumerate(classes)}
        files["roc"] = _write_png(out, "roc.png", plots.roc_png(curves, f"{name}: ROC per finding on {split}"))
    if "confusion_matrix" in rep:
        cm = rep["confusion_matrix"]
        files["confusion"] = _write_png(out, "confusion.png", plots.confusion_png(
            cm["matrix"], cm["labels"], f"{name}: confusion on {split}"))
    return files


def intervals_line(boot: dict) -> str:
    """What a report's intervals are: level, method, resamples, seed."""
    level = f"{boot.get('level', 0.95):.0%}"
    method = boot.get("method", "percentile")
    fallback = "; a metric undefined on some resamples gets the percentile interval of the others" \
        if method == "BCa" else ""
    return (f"{level} {method} bootstrap intervals, paired (every metric on the same resamples), "
            f"{boot['resamples']} resamples, seed {boot['seed']}{fallback}")


def _metrics_table(metrics: dict) -> list[str]:
    lines = ["| metric | value | 95% CI | interval |", "|---|---|---|---|"]
    for k, m in metrics.items():
        lo, hi = m.get("ci", [None, None])
        how = f"{m.get('method', '')}, {m.get('n_valid', '')} resamples" if "n_valid" in m else ""
        lines.append(f"| {k} | {fmt(m.get('value'))} | {fmt(lo)} - {fmt(hi)} | {how} |")
    return lines + [""]


def _operating_point_section(rep: dict) -> list[str]:
    op, sp = rep["operating_point"], rep["split"]
    return [
        "## Operating point",
        "",
        f"Positive class: **{op['positive_class']}**, {rep.get('positive_class_reason', '')}.",
        "",
        f"A case is called **{op['positive_class']}** when P({op['positive_class']}) >= **{op['threshold']:.4f}**. "
        f"The threshold was chosen on the validation split (n={op['val']['n']}) by the rule `{op['rule']}`"
        + ("" if op.get("target_met", True) else " (**the target could not be met on validation**)")
        + f", where it gave sensitivity {fmt(op['val']['sensitivity'])} and specificity "
        f"{fmt(op['val']['specificity'])}. Applied unchanged to the {sp} split it achieves sensitivity "
        f"**{fmt(op[sp]['sensitivity'])}** and specificity **{fmt(op[sp]['specificity'])}**.",
        "",
    ]


def _breakdowns(rep: dict) -> list[str]:
    lines: list[str] = []
    if "per_class" in rep:
        pc = rep["per_class"]
        lines += ["## Per class", "", "| class | AUROC (one-vs-rest) | recall | precision |", "|---|---|---|---|"]
        lines += [f"| {c} | {fmt(pc['auroc'].get(c))} | {fmt(pc['recall'].get(c))} | {fmt(pc['precision'].get(c))} |"
                  for c in rep["classes"]] + [""]
    if "per_finding" in rep:
        lines += ["## Per finding", "", "| finding | AUROC | labelled | positive |", "|---|---|---|---|"]
        lines += [f"| {c} | {fmt(v['auroc'])} | {v['n_known']} | {v['n_positive']} |"
                  for c, v in rep["per_finding"].items()] + [""]
    if "confusion_matrix" in rep:
        cm = rep["confusion_matrix"]
        lines += ["## Confusion matrix (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(cm["labels"]) + " |", "|---" * (len(cm["labels"]) + 1) + "|"]
        lines += [f"| **{lab}** | " + " | ".join(str(v) for v in row) + " |"
                  for lab, row in zip(cm["labels"], cm["matrix"], strict=True)] + [""]
    return lines


def report_markdown(rep: dict) -> str:
    """A human-readable report; embeds the PNGs that sit beside it."""
    counts = (f" (per class: {', '.join(f'{c} {n}' for c, n in zip(rep['classes'], rep['class_counts'], strict=True))})"
              if "class_counts" in rep else "")
    lines = [
        f"# Evaluation of {rep.get('model') or 'model'} on the {rep['split']} split",
        "",
        f"- bundle: `{rep['bundle']}` (id `{rep['bundle_id']}`)",
        f"- task: {rep['task']}; classes: {', '.join(rep['classes'])}",
        f"- images: {rep['holdout']['n']}{counts}",
        f"- data: `{rep['data'].get('uri')}`; holdout fingerprint `{rep['holdout']['fingerprint'][:16]}`",
        f"- intervals: {intervals_line(rep['bootstrap'])}",
        "",
    ]
    if rep.get("operating_point"):
        lines += _operating_point_section(rep)
    lines += ["## Metrics", "", *_metrics_table(rep["metrics"]), *_breakdowns(rep)]
    titles = {"roc": "ROC curve", "calibration": "Calibration (reliability diagram)", "confusion": "Confusion matrix"}
    if rep.get("plots"):
        lines += ["## Plots", ""]
        for kind, fname in rep["plots"].items():
            lines += [f"### {titles.get(kind, kind)}", "", f"![{titles.get(kind, kind)}]({fname})", ""]
    if "calibration" in rep:
        lines += [f"Calibration uses the {rep['calibration']['kind']}; Brier score and ECE are in the table.", ""]
    return "\n".join(lines)


def _with_ci(m: dict) -> str:
    ci = m.get("ci") or [None, None]
    return f"{fmt(m.get('value'))} [{fmt(ci[0])}, {fmt(ci[1])}]"


def compare_markdown(r: dict) -> str:
    """The comparison of two bundles on the same images: the paired difference first, then each one's metrics."""
    d = r["difference"]
    p = d["p_value"]
    p_txt = f"< {1 / d['n_boot']:.2g}" if p == 0 and d["n_boot"] else f"= {fmt(p, 3)}"
    lines = [
        f"# A vs B on the {r['split']} split ({r['n_common']} images scored by both)",
        "",
        f"- A: `{r['a']['bundle']}` ({r['a']['bundle_id']})",
        f"- B: `{r['b']['bundle']}` ({r['b']['bundle_id']})",
        "",
        f"**{r['metric']} A - B = {fmt(d['difference'], 4)}** (95% CI {fmt(d['ci'][0], 4)} to "
        f"{fmt(d['ci'][1], 4)}, {d.get('method', 'percentile')} paired bootstrap of {d['n_boot']} resamples, "
        f"seed {r.get('seed', 0)}; p {p_txt}).",
        "",
        "| metric | A | B |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {_with_ci(m)} | {_with_ci(r['b']['metrics'].get(k, {}))} |" for k, m in r["a"]["metrics"].items()]
    if r.get("plots"):
        lines += ["", "![ROC of A and B](roc_compare.png)"]
    return "\n".join(lines) + "\n"
