"""Render benchmarks/results/*.json as the markdown tables in the README's Results section.

    .venv/bin/python benchmarks/summarize.py > /tmp/results.md
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def machine_line(r: dict) -> str:
    m = r["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"*Machine: {m['cpus']} CPUs ({m.get('cpu_model')}){gpu}; torch {m.get('torch')}, ray {m.get('ray')}; "
            f"{r['date']}.*")


def preprocess() -> str:
    r = _load("preprocess_throughput")
    if not r:
        return ""
    rows = [f"| single-process OpenCV loop (baseline) | {r['baseline']['images_per_s']:.1f} | 1.00 |"]
    for c, v in r["ray_data"].items():
        rows.append(f"| Ray Data pipeline, {c} CPU(s) | {v['pipeline_images_per_s']:.1f} | {v['ratio_to_baseline']:.2f} |")
    s = r.get("scaling_1_to_n_cpus")
    return "\n".join([
        "### 1. Preprocessing throughput", "", r["what"] + ".", "",
        "| pipeline | images/s | ratio |", "|---|---|---|", *rows, "",
        f"Scaling from 1 CPU to all: {s}x." if s else "", machine_line(r), ""])


def overhead() -> str:
    r = _load("train_overhead")
    if not r:
        return ""
    rows = [f"| plain PyTorch loop (baseline) | {r['baseline']['images_per_s']:.1f} | 1.00 |"]
    for w, v in r["ray_train"].items():
        rows.append(f"| medxfer on Ray Train, {w} worker(s) x {v['cpus_per_worker']:g} CPU | "
                    f"{v['images_per_s']:.1f} | {v['ratio_to_plain']:.2f} |")
    return "\n".join(["### 2. Training overhead", "", r["what"] + ".", "",
                      "| loop | train images/s | ratio |", "|---|---|---|", *rows, "", machine_line(r), ""])


def cache() -> str:
    r = _load("cache")
    if not r:
        return ""
    return "\n".join(["### 3. Cache", "", r["what"] + ".", "",
                      "| data stage | seconds |", "|---|---|",
                      f"| cache miss (decode, CLAHE, resize, write Parquet) | {r['miss_seconds']:.1f} |",
                      f"| cache hit (read the card) | {r['hit_seconds']:.2f} |",
                      f"| hit + open the train split as a Ray Dataset | {r['hit_then_open_train_split_seconds']:.1f} |",
                      "", f"Miss / hit: {r['ratio_miss_over_hit']:.0f}x.", machine_line(r), ""])


def accuracy() -> str:
    r = _load("accuracy")
    if not r:
        return ""
    lines = ["### 4. Accuracy against the published MedMNIST v2 table", "", r["what"] + ".", "",
             "| dataset | model | test AUROC | test ACC |", "|---|---|---|---|"]
    for key, v in r["results"].items():
        name, size = key.rsplit("_", 1)
        n = len(v["seeds"])
        lines.append(f"| {name} {size}px | medxfer ResNet-18, {v['epochs']} epochs ({n} seeds, mean ± std) | "
                     f"{v['test_auroc_mean']:.3f} ± {v['test_auroc_std']:.3f} | "
                     f"{v['test_accuracy_mean']:.3f} ± {v['test_accuracy_std']:.3f} |")
        if size == "28":
            for model, p in (v.get("published") or {}).items():
                lines.append(f"| {name} 28px | published: {model} | {p['auroc']:.3f} | {p['accuracy']:.3f} |")
    return "\n".join([*lines, "", machine_line(r), ""])


def label_efficiency() -> str:
    out = []
    for tag in ("", "_recipes"):
        r = _load(f"label_efficiency{tag}")
        md = RESULTS / f"label_efficiency{tag}.md"
        if r and md.exists():
            out += [md.read_text().strip(), "", r["what"] + ".", machine_line(r), ""]
    return "\n".join(out)


def _ci(run: dict) -> str:
    return f"[{run['auroc_ci'][0]:.3f}, {run['auroc_ci'][1]:.3f}]"


def bootstrap() -> str:
    r = _load("bootstrap")
    if not r:
        return ""
    rows = [f"| {s['images']:,} | {s['hand_written_percentile']['seconds_fastest']:.2f} | "
            f"{s['scipy_percentile']['seconds_fastest']:.2f} ({s['scipy_percentile_over_hand_written']:.2f}x) | "
            f"{s['scipy_bca']['seconds_fastest']:.2f} ({s['scipy_bca_over_hand_written']:.2f}x) | "
            f"{s['percentile_cis_max_abs_difference']:.0e} | {_ci(s['scipy_percentile'])} | {_ci(s['scipy_bca'])} |"
            for s in r["sizes"]]
    return "\n".join(["### 7. Bootstrap intervals", "", r["what"] + "; seconds, fastest of the runs.", "",
                      "| test images | hand-written weighted, percentile | scipy, percentile | scipy, BCa | "
                      "percentile CIs differ by | AUROC CI, percentile | AUROC CI, BCa |", "|---|---|---|---|---|---|---|",
                      *rows, "", machine_line(r), ""])


if __name__ == "__main__":
    print("\n".join(x for x in (preprocess(), overhead(), cache(), accuracy(), label_efficiency(), bootstrap())
                    if x))
