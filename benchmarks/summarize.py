"""Render benchmarks/results/*.json, with the notes that read them, as benchmarks/README.md.

    .venv/bin/python benchmarks/summarize.py            # print the page
    .venv/bin/python benchmarks/summarize.py --write    # write benchmarks/README.md
    .venv/bin/python benchmarks/summarize.py --check    # exit 1 when it or a note is behind the results

The tables come from the results files; the prose that reads them from ``notes/<section>.md``,
Markdown written by a person after looking at the tables. A note's first line names the results
files (and the date of their run) it was written for, so re-running a benchmark flags the note to
read again (``--check``, and tests/project/test_benchmarks_results.py) instead of leaving stale numbers in
prose beside fresh tables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NOTES = HERE / "notes"
README = HERE / "README.md"


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
        out += ([] if out else ["## 1. Preprocessing throughput", ""]) + [
            r["what"] + ".", "", "| pipeline | images/s | ratio |", "|---|---|---|", *rows, "",
            (f"Scaling from 1 CPU to all: {s}x." if s else "") + per_round, machine_line(r), ""]
    return "\n".join(out)


def against() -> str:
    """The decode workers' cost: this code's preprocessing against the revision before them, side by side."""
    out = []
    for tag in ("", "_small"):
        r = _load(f"preprocess_against{tag}")
        if not r:
            continue
        rows = [f"| {'in-process engine' if e == 'local' else 'Ray Data'}, {v['cpus']} CPUs | {v['ref_images_per_s']:.0f} | "
                f"{v['images_per_s']:.0f} | {v['ratio']:.2f} | {v.get('ref_cpu_ms_per_image', float('nan')):.3f} | "
                f"{v.get('cpu_ms_per_image', float('nan')):.3f} | {v.get('cpu_ratio', float('nan')):.2f} |"
                for e, v in r["engines"].items()]
        per_round = "; ".join(f"{e} " + ", ".join(f"{x[f'{e}_ratio']:.2f}" for x in r["rounds"]) for e in r["engines"])
        out += ([] if out else ["### 1b. The cost of decoding in budgeted workers", ""]) + [
            r["what"] + ".", "", f"| engine | {r['against']} images/s | this code images/s | ratio | {r['against']} CPU ms "
            "per image | this code CPU ms per image | CPU ratio |", "|---|---|---|---|---|---|---|",
            *rows, "", f"Images/s ratios round by round: {per_round}.", machine_line(r), ""]
    return "\n".join(out)


def hostile() -> str:
    r = _load("hostile_memory")
    if not r:
        return ""
    rows = []
    for engine, v in r["engines"].items():
        rows.append(f"| {'in-process' if engine == 'local' else 'Ray'} | {v['clean']['peak_mib']:,} | "
                    f"{v['hostile']['peak_mib']:,} | {v['peak_ratio']:.2f} | {v['clean']['seconds']:.0f} | "
                    f"{v['hostile']['seconds']:.0f} |")
    budget = r["limits"]["max_decode_bytes"] // 2**20
    return "\n".join(["## 9. Hostile input: peak memory", "", r["what"] + ".", "",
                      "| engine | clean peak MiB | hostile peak MiB | ratio | clean s | hostile s |",
                      "|---|---|---|---|---|---|", *rows, "",
                      f"Peak: the whole process tree of the command (a memory cgroup: the command, the decode workers "
                      f"and, with Ray, every Ray process; page cache included), the highest of the rounds; seconds: the "
                      f"median. Each decode worker may use {budget} MiB above its own size (`data.max_decode_bytes`); "
                      f"the hostile run's seconds include the {r['limits']['decode_timeout_s']} s the time-bomb file "
                      f"is given.", machine_line(r), ""])


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
    return "\n".join(["## 2. Training overhead", "", r["what"] + ".", "",
                      "| loop | train images/s | ratio |", "|---|---|---|", *rows, "", machine_line(r), ""])


def cache() -> str:
    r = _load("cache")
    if not r:
        return ""
    return "\n".join(["## 3. Cache", "", r["what"] + ".", "",
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
    "": "## 4. Accuracy against the published MedMNIST v2 table",
    "_64": "## 4b. Accuracy at 64 px: transfer vs scratch",
    "_64_ema": "## 4c. Accuracy at 64 px with a moving average of the weights (EMA)",
    "_64_mixup": "## 4d. Accuracy at 64 px with mixup",
    "_64_cutmix": "## 4e. Accuracy at 64 px with CutMix",
    "_64_source20": "## 4f. Accuracy at 64 px from a longer-trained source",
    "_64_source30": "## 4g. Accuracy at 64 px from a 30-epoch source (the shipped source job's length)",
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


#: The label-efficiency runs in reading order, each with its table number (None: read with the one
#: before). A run kept under a new ``--tag`` and not listed here is shown after these, unnumbered.
LABEL_EFFICIENCY = ((None, ""), ("5b", "_source20"), ("5c", "_30ep"), ("5d", "_30ep_5seeds"),
                    (None, "_20ep_5seeds"), (None, "_12ep_5seeds"), ("5e", "_budget"))


def label_efficiency_tags() -> list[tuple[str | None, str]]:
    """Every label-efficiency run that kept its table, listed ones first, as (number, tag)."""
    kept = {p.stem.removeprefix("label_efficiency") for p in RESULTS.glob("label_efficiency*.json")}
    listed = [(n, t) for n, t in LABEL_EFFICIENCY if t in kept]
    return listed + [(None, t) for t in sorted(kept - {t for _, t in LABEL_EFFICIENCY})]


def label_efficiency(tag: str, number: str | None) -> str:
    """One run's table as the experiment wrote it (``label_efficiency<tag>.md``), under a numbered heading."""
    r = _load(f"label_efficiency{tag}")
    md = RESULTS / f"label_efficiency{tag}.md"
    if not (r and md.exists()):
        return ""
    title, _, table = md.read_text().strip().partition("\n")
    title = title.lstrip("#").strip()
    heading = "### " + (f"{number}. {title}" if number else title)
    return "\n".join([heading, table.rstrip(), "", r["what"] + ".", *_against_default_source(r), machine_line(r), ""])


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
        "## 0. Parity with a plain PyTorch script", "", r["what"] + ".", "",
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
    return "\n".join(["## 7. Bootstrap intervals", "", r["what"] + "; seconds, fastest of the runs.", "",
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
    out = ["## 10. The cluster path at scale", "", r["what"] + ".", "",
           "| images | preprocess s | img/s | peak GiB per node (head / node 2) | streamed epoch s | train img/s | "
           "peak GiB per node | object store peak MiB |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    if r.get("summary"):
        out += ["Per image (linear growth keeps these flat):", "",
                "| images | preprocess ms/image | epoch ms per training image | peak GiB, whole tree |", "|---|---|---|---|",
                *(f"| {x['images']:,} | {x['preprocess_ms_per_image']:.2f} | {x['epoch_ms_per_train_image']:.2f} | "
                  f"{x['peak_memory_total_gib']:.2f} |" for x in r["summary"]), ""]
    for q in r.get("ratio") or []:
        pairs = ", ".join(f"{x:.2f}" for x in q["per_pair_ratio"])
        out += [f"Streamed against in memory, {q['workers']} worker(s) of 1 CPU ({q['images']:,} images, "
                f"{len(q['per_pair_ratio'])} alternated pairs): {q['streamed_over_in_memory_img_s']:.2f}x the in-memory "
                f"img/s (pairs: {pairs}); peak memory of the process tree {q['streamed_peak_total_gib']:.1f} GiB "
                f"streamed, {q['in_memory_peak_total_gib']:.1f} GiB in memory, against a default in-memory limit of "
                f"{q['default_in_memory_limit_gib']:.1f} GiB; a worker's reader {q['reader']['cpu_ms_per_image']:.2f} ms "
                f"CPU per image, {100 * q['reader_core_fraction_at_trainer_pace']:.1f} % of a core at the trainer's "
                f"pace.", ""]
    cap = r.get("capacity") or {}
    if cap.get("sources"):
        a = cap["assumptions"]
        out += [f"Capacity for real sources (hours; preprocessing at {cap['preprocess_ms_per_image_per_cpu_full_resolution']:.0f} "
                f"ms of CPU per full-resolution image, from benchmark 1's measured "
                f"{cap['preprocess_ms_per_image_per_cpu_1mp_measured']:.1f} ms per 1 MP image scaled by pixels; "
                f"{a['cpus_per_preprocess_node']} CPUs per preprocessing node; a GPU at an assumed, not measured, "
                f"{a['gpu_train_images_per_s']} img/s; {a['epochs_per_night']} epochs a night in a "
                f"{a['window_hours']} h window):", "",
                "| source | images | preprocess CPU h | preprocess h on 1 / 2 / 4 / 8 nodes | epoch h on 1 / 2 / 4 / 8 GPUs | "
                "smallest nightly fit (nodes, GPUs) | reader cores per GPU worker |", "|---|---|---|---|---|---|---|"]
        for name, c in cap["sources"].items():
            fit = c["smallest_fit_nodes_gpus"]
            out.append(f"| {name} | {c['images']:,} | {c['preprocess_cpu_hours']} | "
                       f"{' / '.join(str(v) for v in c['preprocess_hours_on_nodes'].values())} | "
                       f"{' / '.join(str(v) for v in c['epoch_hours_on_gpus'].values())} | "
                       f"{f'{fit[0]}, {fit[1]}' if fit else 'none'} | {c['reader_cores_per_gpu_worker']} |")
        out.append("")
    out += [f"Load average {r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after: {r['note']}.",
            machine_line(r), ""]
    return "\n".join(out)


def sections() -> list[tuple[str | None, Callable[[], str]]]:
    """The page in reading order, as (note name, render function): each section's tables, then its
    note (``notes/<name>.md``) when there is one."""
    return [
        ("parity", parity),
        ("preprocess", preprocess),
        ("decode_workers", against),
        ("train_overhead", overhead),
        ("cache", cache),
        ("accuracy", accuracy),
        (None, lambda: "## 5. Label efficiency\n"),
        *((f"label_efficiency{tag}", partial(label_efficiency, tag, number)) for number, tag in label_efficiency_tags()),
        ("bootstrap", bootstrap),
        ("hostile_memory", hostile),
        ("scale", scale),
        # A new benchmark: its render function above, its line here, its note in notes/ and its
        # reproduce row in notes/intro.md.
    ]


HEADER = ("# Benchmark results\n\n<!-- Generated by benchmarks/summarize.py from benchmarks/results/*.json and "
          "benchmarks/notes/*.md; do not edit here: edit those, then run "
          "`.venv/bin/python benchmarks/summarize.py --write`. tests/project/test_benchmarks_results.py fails when this "
          "file differs from what they render. -->\n")


def note(name: str | None) -> str:
    """``notes/<name>.md`` without its first line (which names the results it was written for), or ""."""
    p = NOTES / f"{name}.md"
    if name is None or not p.exists():
        return ""
    return p.read_text().partition("\n")[2].strip() + "\n"


NOTE_HEADER = re.compile(r"^<!-- written for: (.*) -->$")


def note_results(name: str) -> dict[str, str]:
    """The results files a note was written for, with the date of the run it describes (its first line,
    ``<!-- written for: parity.json 2026-11-30T00:15:53+00:00, ... -->``)."""
    first = (NOTES / f"{name}.md").read_text().partition("\n")[0]
    m = NOTE_HEADER.match(first)
    if not m:
        raise ValueError(f"notes/{name}.md: its first line must be <!-- written for: <file>.json <date>, ... -->")
    return dict(item.strip().split(" ", 1) for item in m.group(1).split(","))


def stale_notes() -> list[str]:
    """Notes whose numbers may no longer be the results': a results file re-measured (or gone) since the
    note was written. Each must be read again against the new tables and its first line updated."""
    problems = []
    for p in sorted(NOTES.glob("*.md")):
        for file, date in note_results(p.stem).items():
            r = json.loads((RESULTS / file).read_text()) if (RESULTS / file).exists() else None
            if r is None:
                problems.append(f"benchmarks/notes/{p.name}: written for {file}, which is gone")
            elif r["date"] != date:
                problems.append(f"benchmarks/notes/{p.name}: written for {file} of {date}; the results are now of "
                                f"{r['date']}: check the note's numbers against the new table, then update its first line")
    return problems


def render() -> str:
    """The whole of benchmarks/README.md."""
    parts = [HEADER, note("intro")]
    for name, section in sections():
        parts += [x for x in (section(), note(name)) if x]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts if p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help=f"write {README.relative_to(README.parents[1])}")
    what.add_argument("--check", action="store_true",
                      help="exit 1 when the written page or a note is behind the results")
    args = ap.parse_args(argv)
    page = render()
    if args.write:
        README.write_text(page)
        for problem in stale_notes():
            print(f"warning: {problem}", file=sys.stderr)
        return 0
    if args.check:
        problems = stale_notes()
        if not README.exists() or README.read_text() != page:
            problems.append(f"{README.relative_to(README.parents[1])} differs from what benchmarks/summarize.py "
                            "renders: run .venv/bin/python benchmarks/summarize.py --write")
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
