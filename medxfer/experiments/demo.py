"""``medxfer demo``: every stage, end to end, on a laptop, in a few minutes — and the question it is for:
how many labels does a source model save?

import (named classes) → preprocess (cached) → source-train on PneumoniaMNIST (chest X-ray) →
fine-tune on all of BreastMNIST (ultrasound) from that source, and the same from scratch →
evaluate both on the test split and compare them → the same two recipes on 10 % of the training
labels, 5 seeds (``medxfer experiment label-efficiency`` trials, Ray tasks) → register and
promote the all-label models through the gate → a table, one reading per label fraction, and a
plot of test AUROC against the label fraction.

It runs the same functions the CLI commands and Kubernetes jobs run; only the configs are
built here instead of read from YAML (each is still dumped to its run folder). The answer to
"did transfer help?" is printed for each fraction whatever it is. What five minutes on two CPUs
cannot give is the benchmark's answer: a source trained 6 epochs, 30 epochs per fine-tune (the
budget validation chose, README table 5e), 25 % of the labels as well. The demo answers for its
own run: one all-label seed, 5 low-label seeds of 12 epochs.

Data: MedMNIST files from ``--data-dir`` / ``MEDXFER_DATA_DIR``, else the official files
downloaded with their MD5 checked; offline, synthetic phantoms, labelled SYNTHETIC everywhere.
Re-running with the same ``--root`` reuses finished runs, kept trials and the preprocessed cache.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import DataError

log = logging.getLogger("medxfer.experiments.demo")

SOURCE, TARGET = "pneumoniamnist", "breastmnist"
LOW_FRACTION = 0.1  # 55 of BreastMNIST's 546 training images


def find_data(data_dir: str | None, root: str) -> tuple[dict[str, Path], str]:
    """Paths of the two .npz files and where they came from ('files', 'download' or 'SYNTHETIC')."""
    if data_dir:
        d = Path(data_dir)
        paths = {n: d / f"{n}.npz" for n in (SOURCE, TARGET)}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise DataError(f"--data-dir {d}: missing {', '.join(missing)}; put the MedMNIST files there "
                            "(pneumoniamnist.npz, breastmnist.npz) or leave --data-dir out to download them")
        return paths, "files"
    from medxfer.data import medmnist

    try:
        return {n: medmnist.download(n, 28) for n in (SOURCE, TARGET)}, "download"
    except DataError as e:
        log.warning("%s", e)
        log.warning("running on SYNTHETIC phantom images instead: every number below is about phantoms, "
                    "not patients")
    from medxfer.data.phantom import make_npz

    folder = Path(storage.normalize(root)) / "synthetic"
    return {SOURCE: make_npz(folder / f"{SOURCE}.npz", "source"),
            TARGET: make_npz(folder / f"{TARGET}.npz", "target", seed=1)}, "SYNTHETIC"


def demo_configs(root: str, fast: bool) -> dict[str, JobConfig]:
    """The demo's runs: source, transfer and scratch fine-tunes on every label, and the low-label experiment.

    No ``data.positive_class``: the import recorded each set's finding (pneumonia, malignant) in
    ``import.json``, and training takes it from there.
    """
    layout = storage.Layout(root)
    suffix = "-fast" if fast else ""
    common = {
        "preprocess": {"channels": 1, "size": 28},
        "storage": {"root": layout.root},
        "evaluate": {"bootstrap": 500 if fast else 1000},
        # Every run trains in this process (Ray Train's local mode, scaling.num_workers 0) on one thread.
        # On a busy 2-core machine here, one PneumoniaMNIST epoch took 27 s this way, 48 s on 2 Ray Train
        # workers (their start-up included) and 140 s on 2 threads, which wait on each other for a core.
        "scaling": {"num_workers": 0, "cpus_per_worker": 1},
    }
    source = JobConfig.model_validate({
        **common,
        "name": "demo-source" + suffix,
        # --fast: one epoch, but of every training image: a quarter of them (9 steps per worker)
        # learned nothing reliably with 2 workers (test AUROC 0.66-0.78 by which quarter was drawn here; an
        # interval from 0.36 in CI).
        "data": {"manifest": storage.join(layout.dataset(SOURCE), "manifest.csv")},
        "model": {"backbone": "resnet18", "name": "pneumonia-demo"},
        # The label-efficiency benchmark's source recipe (README, table 5), in 2 epochs instead of 6.
        "train": {"epochs": 1 if fast else 2, "batch_size": 64, "lr": 1e-3},
    })
    # The fine-tune recipe of the label-efficiency benchmark's 12-epoch tables (README, 5 and 5d), at
    # every fraction: the largest of its budgets that fits the demo's time.
    target = {
        **common,
        "data": {"manifest": storage.join(layout.dataset(TARGET), "manifest.csv")},
        "train": {"epochs": 3 if fast else 12, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1},
    }
    bundle = storage.join(layout.run(source.name), "bundle")
    transfer = JobConfig.model_validate({
        **target, "name": "demo-transfer" + suffix,
        "model": {"backbone": "resnet18", "init": bundle, "name": "breast-demo"},
    })
    scratch = JobConfig.model_validate({
        **target, "name": "demo-scratch" + suffix,
        "model": {"backbone": "resnet18", "init": "scratch", "name": "breast-demo"},
    })
    # The same two recipes on LOW_FRACTION of the labels, as `medxfer experiment label-efficiency`
    # trials (this process's Ray, one CPU each, two at a time); seeded, stratified subsets.
    low_labels = JobConfig.model_validate({
        **target, "name": "demo-label-efficiency" + suffix,
        "model": {"backbone": "resnet18", "name": "breast-demo"},
        "experiment": {"fractions": [LOW_FRACTION], "seeds": [0, 1] if fast else [0, 1, 2, 3, 4],
                       "arms": [{"name": "scratch", "set": {"model.init": "scratch"}},
                                {"name": "transfer", "set": {"model.init": bundle}}],
                       "cpus_per_trial": 1},
    })
    return {"source": source, "transfer": transfer, "scratch": scratch, "low_labels": low_labels}


def _fmt_metric(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = (m.get("ci") or [None, None])[:2]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.3f}{ci}"


def all_label_rows(results: dict, comparison: dict) -> list[dict]:
    """The all-label fine-tunes as rows of the label-efficiency summary (one seed each), so one table
    and one plot hold both fractions: test AUROC with its interval from each report, and the paired
    difference from the comparison of the two models on the same test images."""
    d = comparison["difference"]
    rows = []
    for arm in ("scratch", "transfer"):
        auroc = results[arm]["report"]["metrics"]["auroc"]
        rows.append({
            "arm": arm, "fraction": 1.0, "n_seeds": 1, "test_auroc_mean": auroc["value"], "test_auroc_std": 0.0,
            "test_auroc_min": auroc["value"], "test_auroc_max": auroc["value"], "test_auroc_ci": auroc["ci"],
            "train_images": results[arm]["train"].get("train_images"),
            "diff_vs_scratch": d["difference"] if arm == "transfer" else None,
            "paired_vs_scratch": ({"difference": d["difference"], "ci": d["ci"], "p_value": d.get("p_value"),
                                   "seeds": 1} if arm == "transfer" else None),
        })
    return rows


def run_demo(data_dir: str | None, root: str, fast: bool = False) -> dict:
    from medxfer.data.importers import import_medmnist
    from medxfer.evaluate import compare_bundles, evaluate_bundle
    from medxfer.evaluate.plots import label_efficiency_png
    from medxfer.experiments.label_efficiency import reading, run_label_efficiency
    from medxfer.lifecycle.model_registry import Registry
    from medxfer.runtime import init_ray
    from medxfer.supervised.stage import run_training

    t0 = time.time()
    root = storage.normalize(root)
    layout = storage.Layout(root)
    files, origin = find_data(data_dir, root)
    tag = " [SYNTHETIC phantoms, not medical data]" if origin == "SYNTHETIC" else ""
    log.info("demo: data from %s%s; storage %s", origin, tag, root)
    for name, npz in files.items():
        manifest = storage.join(layout.dataset(name), "manifest.csv")
        if not storage.exists(manifest):
            summary = import_medmnist(npz, layout.dataset(name), name=name)
            log.info("imported %s: %d images %s, classes %s (positive: %s)", name, summary["images"],
                     summary["splits"], ", ".join(summary["classes"]), summary["positive_class"])
    init_ray()
    cfgs = demo_configs(root, fast)
    rows, results = [], {}
    for key in ("source", "transfer", "scratch"):
        cfg = cfgs[key]
        res = run_training(cfg, "source" if key == "source" else "finetune")
        rep = evaluate_bundle(res["bundle"], cfg, "test")
        results[key] = {"train": res, "report": rep}
        rows.append({
            "run": cfg.name,
            "dataset": SOURCE if key == "source" else TARGET,
            "labels": "100%",
            "init": "scratch" if key != "transfer" else f"{cfgs['source'].name} bundle",
            "positive_class": rep.get("positive_class"),
            "test_auroc": rep["metrics"].get("auroc"),
            "test_accuracy": rep["metrics"].get("accuracy"),
            "train_s": res["wall_time_s"],
            "report": rep.get("report_uri"),
        })
    cmp = compare_bundles(results["transfer"]["train"]["bundle"], results["scratch"]["train"]["bundle"],
                          cfgs["transfer"], "test", out=storage.join(root, "compare"))
    low = run_label_efficiency(cfgs["low_labels"], out=storage.join(root, "label-efficiency"))
    by_fraction = sorted(low["summary"] + all_label_rows(results, cmp), key=lambda r: (r["fraction"], r["arm"]))
    plot = storage.join(root, "label_efficiency.png")
    positive = results["transfer"]["report"].get("positive_class")
    title = (f"{TARGET}{tag}: transfer from a {SOURCE} source vs scratch; positive class {positive}\n"
             f"{LOW_FRACTION:.0%}: mean of {len(cfgs['low_labels'].experiment.seeds)} seeds x "
             f"{cfgs['low_labels'].train.epochs} epochs; 100%: one seed x {cfgs['transfer'].train.epochs} epochs")
    storage.write_bytes(plot, label_efficiency_png(by_fraction, title))
    # Promotion: the transfer model is proposed first (becomes champion on an empty registry),
    # then the scratch model must beat it by the configured margin to replace it.
    reg = Registry(root, "breast-demo")
    decisions = []
    for key in ("transfer", "scratch"):
        version = reg.register(results[key]["train"]["bundle"], results[key]["report"], note=f"demo {key}")
        decision = reg.try_promote(version, cfgs[key].promotion)
        decisions.append({"candidate": key, "version": version, **decision})
    summary = {
        "data": origin,
        "fast": fast,
        "rows": rows,
        "positive_class": positive,
        "classes": results["transfer"]["report"].get("classes"),
        "by_fraction": by_fraction,
        "readings": [line for line in map(reading, by_fraction) if line],
        "low_label_trials": {"seeds": cfgs["low_labels"].experiment.seeds, "epochs": cfgs["low_labels"].train.epochs,
                             "out": low["out"], "wall_time_s": low["wall_time_s"]},
        "all_label_epochs": cfgs["transfer"].train.epochs,
        "plot": plot,
        "promotion": decisions,
        "champion": reg.champion(),
        "wall_time_s": round(time.time() - t0, 1),
        "root": root,
    }
    storage.write_json(storage.join(root, "demo.json"), summary)
    print_table(summary, tag)
    return summary


def print_table(summary: dict, tag: str = "") -> None:
    rows = summary["rows"]
    print()
    print(f"medxfer demo{tag} — test split, 95% bootstrap CIs; accuracy at the operating point chosen on val")
    header = (f"{'run':<22} {'dataset':<15} {'positive class':<15} {'init':<24} {'AUROC [95% CI]':<22} "
              f"{'accuracy@op [95% CI]':<22} {'train s':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['run']:<22} {r['dataset']:<15} {r['positive_class'] or '-':<15} {r['init']:<24} "
              f"{_fmt_metric(r['test_auroc']):<22} {_fmt_metric(r['test_accuracy']):<22} {r['train_s']:>7.1f}")
    low = summary["low_label_trials"]
    print()
    print(f"{TARGET} test AUROC by label fraction (positive class {summary['positive_class']}; "
          f"{LOW_FRACTION:.0%}: mean of {len(low['seeds'])} seeds of {low['epochs']} epochs; 100%: the models above, "
          f"{summary['all_label_epochs']} epochs)")
    header = (f"{'labels':<7} {'images':>6} {'seeds':>5}  {'transfer [95% CI]':<22} {'scratch [95% CI]':<22} "
              f"{'transfer - scratch [95% CI]':<28}")
    print(header)
    print("-" * len(header))
    cells = {(r["arm"], r["fraction"]): r for r in summary["by_fraction"]}
    for f in sorted({r["fraction"] for r in summary["by_fraction"]}):
        t, s = cells.get(("transfer", f)), cells.get(("scratch", f))
        if not (t and s):
            continue
        pc = t.get("paired_vs_scratch") or {}
        diff = (f"{pc['difference']:+.3f} [{pc['ci'][0]:+.3f}, {pc['ci'][1]:+.3f}]" if pc else
                f"{t['diff_vs_scratch']:+.3f}")
        print(f"{f:<7.0%} {t.get('train_images') or '':>6} {t['n_seeds']:>5}  {_fmt_mean(t):<22} {_fmt_mean(s):<22} "
              f"{diff:<28}")
    print()
    for line in summary["readings"]:
        print(line)
    print(f"plot: {summary['plot']}")
    print()
    for dec in summary["promotion"]:
        print(f"registry: {dec['candidate']} -> {dec['version']}: "
              f"{'PROMOTED' if dec['promoted'] else 'not promoted'} ({dec['reason']})")
    champ = summary.get("champion") or {}
    print(f"champion of breast-demo: {champ.get('version')}")
    print(f"reports: {', '.join(r['report'] for r in rows if r.get('report'))}")
    print(f"summary: {storage.join(summary['root'], 'demo.json')}  ({summary['wall_time_s']:.0f} s in all)")


def _fmt_mean(row: dict) -> str:
    """A cell's (seed-mean) test AUROC with its interval, as in the run table."""
    return _fmt_metric({"value": row["test_auroc_mean"], "ci": row.get("test_auroc_ci")})
