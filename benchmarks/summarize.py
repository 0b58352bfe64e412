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


def _allocator_row(r: dict, ratio_key: str) -> list[str]:
    """The plain loop again with medxfer's allocator setting, when the run measured it."""
    v = r.get("baseline_with_medxfer_allocator")
    return [f"| the same loop with medxfer's allocator setting | {v['images_per_s']:.1f} | {v[ratio_key]:.2f} |"] if v else []


def preprocess() -> str:
    out = []
    for tag in ("", "_2400"):
        r = _load(f"preprocess_throughput{tag}")
        if not r:
            continue
        rows = [f"| single-process OpenCV loop (baseline) | {r['baseline']['images_per_s']:.1f} | 1.00 |"]
        rows += _allocator_row(r, "ratio_to_baseline")
        for c, v in r["ray_data"].items():
            rows.append(f"| Ray Data pipeline, {c} CPU(s) | {v['pipeline_images_per_s']:.1f} | "
                        f"{v['ratio_to_baseline']:.2f} |")
        for c, v in (r.get("local_engine") or {}).items():
            rows.append(f"| in-process engine (`data.engine: local`), {c} threads | {v['pipeline_images_per_s']:.1f} | "
                        f"{v['ratio_to_baseline']:.2f} |")
        s = r.get("scaling_1_to_n_cpus")
        rounds = r.get("rounds") or []
        n = max((int(c) for c in r["ray_data"]), default=1)
        per_round = (f" Images/s are medians; each ratio is the median of the rounds' ratios to their own baseline. "
                     f"Ray Data on {n} CPUs, round by round: "
                     + ", ".join(f"{x[f'ray_data_{n}_ratio']:.2f}x" for x in rounds) + "." if rounds else "")
        out += ([] if out else ["### 1. Preprocessing throughput", ""]) + [
            r["what"] + ".", "", "| pipeline | images/s | ratio |", "|---|---|---|", *rows, "",
            (f"Scaling from 1 CPU to all: {s}x." if s else "") + per_round, machine_line(r), ""]
    return "\n".join(out)


def overhead() -> str:
    r = _load("train_overhead")
    if not r:
        return ""
    rows = [f"| plain PyTorch loop (baseline) | {r['baseline']['images_per_s']:.1f} | 1.00 |"]
    rows += _allocator_row(r, "ratio_to_plain")
    for w, v in r["ray_train"].items():
        if w == "0":
            rows.append(f"| medxfer in the command's process (`num_workers: 0`), {v['cpus_per_worker']:g} threads | "
                        f"{v['images_per_s']:.1f} | {v['ratio_to_plain']:.2f} |")
            continue
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
                      *([f"| hit + read the train split into memory (what training does below 2 GiB) | "
                         f"{r['hit_then_read_train_split_into_memory_seconds']:.2f} |"]
                        if "hit_then_read_train_split_into_memory_seconds" in r else []),
                      f"| hit + open the train split as a Ray Dataset (larger splits) | "
                      f"{r['hit_then_open_train_split_seconds']:.1f} |",
                      "", f"Miss / hit: {r['ratio_miss_over_hit']:.0f}x.", machine_line(r), ""])


ACCURACY_HEADINGS = {
    "": "### 4. Accuracy against the published MedMNIST v2 table",
    "_64": "### 4b. Accuracy at 64 px: transfer vs scratch",
    "_64_ema": "### 4c. Accuracy at 64 px with a moving average of the weights (EMA)",
    "_64_mixup": "### 4d. Accuracy at 64 px with mixup",
    "_64_cutmix": "### 4e. Accuracy at 64 px with CutMix",
    "_64_source20": "### 4f. Accuracy at 64 px from a longer-trained source",
    "_64_source30": "### 4g. Accuracy at 64 px from a 30-epoch source (the shipped source job's length)",
}


def accuracy() -> str:
    out = []
    for tag, heading in ACCURACY_HEADINGS.items():
        r = _load(f"accuracy{tag}")
        if not r:
            continue
        recipes = sorted({o for v in r["results"].values() for o in v.get("recipe") or []})
        lines = [heading, "", r["what"].rstrip(".") + "." + (f" Recipe: `{' '.join(recipes)}`." if recipes else ""),
                 "", "| dataset | model | test AUROC | test ACC |", "|---|---|---|---|"]
        for key, v in r["results"].items():
            name, size = key.rsplit("_", 1)
            arms = {a: v[a] for a in ("scratch", "transfer") if a in v} or {"scratch": v}
            for arm, a in arms.items():
                init = "from scratch" if arm == "scratch" else "fine-tuned from PneumoniaMNIST" + (
                    f" ({v['source_epochs']} source epochs)" if "default_source_epochs" in v else "")
                lines.append(f"| {name} {size}px | medxfer ResNet-18 {init}, {v['epochs']} epochs ({len(a['seeds'])} "
                             f"seeds, mean ± std) | {a['test_auroc_mean']:.3f} ± {a['test_auroc_std']:.3f} | "
                             f"{a['test_accuracy_mean']:.3f} ± {a['test_accuracy_std']:.3f} |")
            for model, p in (v.get("published") or {}).items():
                lines.append(f"| {name} 28px | published: {model} | {p['auroc']:.3f} | {p['accuracy']:.3f} |")
            d = (v.get("transfer_minus_scratch") or {}).get("mean_over_seeds")
            if d:
                lines.append("")
                lines.append(f"Transfer - scratch test AUROC, {name} {size}px, mean over seeds: "
                             f"{d['difference']:+.3f} (paired bootstrap 95% CI {d['ci'][0]:+.3f} to {d['ci'][1]:+.3f}).")
            for arm, f in (v.get("flip_tta") or {}).items():
                m = f.get("minus_plain")
                if m:
                    lines += ["", f"Test-time flip, {arm} (the same bundles, each test image scored with its mirror): "
                              f"test AUROC {f['test_auroc_mean']:.3f}, {m['difference']:+.3f} against no flip "
                              f"(paired bootstrap 95% CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f})."]
            changed = ("This recipe - the default recipe" if recipes else
                       f"The {v.get('source_epochs')}-epoch source - the {v.get('default_source_epochs')}-epoch source")
            for arm, vs in (v.get("recipe_minus_default") or {}).items():
                m = vs.get("mean_over_seeds")
                if m:
                    lines += ["", f"{changed}, {arm}, same seeds, test AUROC: {m['difference']:+.3f} "
                              f"(paired bootstrap 95% CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f}; default "
                              f"{vs['default_test_auroc_mean']:.3f}; per seed "
                              f"{', '.join(format(p['difference'], '+.3f') for p in vs['per_seed'])})."]
        out += [*lines, "", machine_line(r), ""]
    return "\n".join(out)


def label_efficiency() -> str:
    out = []
    # Every label-efficiency run that kept its table (the default run first): a new --tag needs no
    # change here.
    tags = sorted(p.stem.removeprefix("label_efficiency") for p in RESULTS.glob("label_efficiency*.json"))
    for tag in tags:
        r = _load(f"label_efficiency{tag}")
        md = RESULTS / f"label_efficiency{tag}.md"
        if r and md.exists():
            out += [md.read_text().strip(), "", r["what"] + ".", *_against_default_source(r), machine_line(r), ""]
    return "\n".join(out)


def _against_default_source(r: dict) -> list[str]:
    """Lines for a run whose source trained longer (or shorter) than the default: each source arm
    minus the default source's, trial for trial."""
    c = r.get("source_minus_default_source")
    if not c:
        return []
    lines = ["", f"The {r.get('source_epochs')}-epoch source - the {c['default_source_epochs']}-epoch source, same "
             f"trials (arm, fraction, seed), test AUROC (paired bootstrap 95% CI; per seed). The arms that do not "
             f"start from it reproduced the earlier run's trials exactly in {c['other_arms_identical']}.", "",
             "| arm | labels | difference | 95% CI | per seed |", "|---|---|---|---|---|"]
    for key, d in c["differences"].items():
        arm, fraction = key.rsplit("@", 1)
        lines.append(f"| {arm} | {float(fraction):.0%} | {d['difference']:+.3f} | {d['ci'][0]:+.3f} to "
                     f"{d['ci'][1]:+.3f} | {', '.join(format(x, '+.3f') for x in d['per_seed'])} |")
    return [*lines, ""]


def parity() -> str:
    r = _load("parity")
    if not r:
        return ""
    sides = (("medxfer", "1 worker"), ("in_process", "in this process"))
    rows = []
    for s in r["seeds"]:
        p = s["plain"]
        rows.append(f"| {s['seed']} | plain script | {p['wall_s']:.0f} | 1.00 | {p['train_images_per_s']:.0f} | 1.00 | "
                    f"{p['test_auroc']:.3f} | |")
        for key, label in sides:
            m = s[key]
            rows.append(f"| {s['seed']} | medxfer finetune, {label} | {m['wall_s']:.0f} | {m['wall_ratio']:.2f} | "
                        f"{m['train_images_per_s']:.0f} | {m['images_per_s_ratio']:.2f} | {m['test_auroc']:.3f} | "
                        f"{m['output_lines']} |")
    ip = r["in_process"]
    return "\n".join([
        "### 0. Parity with a plain PyTorch script", "", r["what"] + ".", "",
        "| seed | process | wall s | wall ratio | training img/s | img/s ratio | test AUROC | lines printed |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Mean over seeds, against the plain script: one Ray Train worker (the default) {r['wall_ratio']:.2f}x wall "
        f"time, {r['images_per_s_ratio']:.2f}x training img/s, test AUROC {r['auroc_difference']:+.3f}; in this process "
        f"(`scaling.num_workers: 0`) {ip['wall_ratio']:.2f}x wall time, {ip['images_per_s_ratio']:.2f}x img/s, test "
        f"AUROC {ip['auroc_difference']:+.3f}. Test AUROC means: plain {r['plain_test_auroc_mean']:.3f}, 1 worker "
        f"{r['medxfer_test_auroc_mean']:.3f}, in this process {ip['test_auroc_mean']:.3f}.", machine_line(r), ""])


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


def _gib(d: dict) -> str:
    return " / ".join(f"{v:.1f}" for v in d.values())


def scale() -> str:
    r = _load("scale")
    if not r:
        return ""
    rows = []
    for s in r["sizes"]:
        p, e = s["preprocess"], s["streamed_epoch"]
        rows.append(f"| {s['images']:,} | {p['seconds']:.0f} | {p['images_per_s']:.0f} | {_gib(p['peak_memory_gib'])} | "
                    f"{e['epoch_seconds']:.0f} | {e['train_images_per_s']:.1f} | {_gib(e['peak_memory_gib'])} | "
                    f"{max(e['object_store_peak_mib'].values()):.0f} |")
    out = ["### 9. The cluster path at scale", "", r["what"] + ".", "",
           "| images | preprocess s | img/s | peak GiB per node (head / node 2) | streamed epoch s | train img/s | "
           "peak GiB per node | object store peak MiB |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    for q in r.get("ratio") or []:
        pairs = ", ".join(f"{x:.2f}" for x in q["per_pair_ratio"])
        out += [f"Streamed against in memory, {q['workers']} worker(s) of 1 CPU ({q['images']:,} images, "
                f"{len(q['per_pair_ratio'])} alternated pairs): {q['streamed_over_in_memory_img_s']:.2f}x the in-memory "
                f"img/s (pairs: {pairs}); peak memory of the process tree {q['streamed_peak_total_gib']:.1f} GiB "
                f"streamed, {q['in_memory_peak_total_gib']:.1f} GiB in memory, against a default in-memory limit of "
                f"{q['default_in_memory_limit_gib']:.1f} GiB; a worker's reader {q['reader']['cpu_ms_per_image']:.2f} ms "
                f"CPU per image, {100 * q['reader_core_fraction_at_trainer_pace']:.1f} % of a core at the trainer's "
                f"pace.", ""]
    out += [f"Load average {r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after: {r['note']}.",
            machine_line(r), ""]
    return "\n".join(out)


if __name__ == "__main__":
    print("\n".join(x for x in (parity(), preprocess(), overhead(), cache(), accuracy(), label_efficiency(), bootstrap(),
                              scale()) if x))
