"""``medxfer demo``: every stage, end to end, on a laptop, in a few minutes.

import → preprocess (cached) → source-train on PneumoniaMNIST (chest X-ray) → fine-tune on
BreastMNIST (ultrasound) from that source → the same fine-tune from scratch → evaluate both
on the test split → register and promote through the gate → a comparison table.

It runs the same functions the CLI commands and Kubernetes jobs run; only the configs are
built here instead of read from YAML (each is still dumped to its run folder). The answer to
"did transfer help?" is printed whatever it is.

Data: MedMNIST files from ``--data-dir`` / ``MEDXFER_DATA_DIR``, else the official files
downloaded with their MD5 checked; offline, synthetic phantoms, labelled SYNTHETIC everywhere.
Re-running with the same ``--root`` reuses finished runs and the preprocessed cache.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.errors import DataError

log = logging.getLogger("medxfer.demo")

SOURCE, TARGET = "pneumoniamnist", "breastmnist"


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
    """The three runs of the demo: source, transfer fine-tune, scratch fine-tune."""
    layout = storage.Layout(root)
    common = {
        "preprocess": {"channels": 1, "size": 28},
        "storage": {"root": layout.root},
        # 2 data-parallel workers taking half a CPU each leaves Ray Data a CPU on a 2-core laptop.
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "evaluate": {"bootstrap": 500 if fast else 1000},
    }
    source = JobConfig.model_validate({
        **common,
        "name": "demo-source" + ("-fast" if fast else ""),
        # --fast: one epoch, but of every training image: a quarter of them (9 steps per worker)
        # learned nothing reliably (test AUROC 0.66-0.78 by which quarter was drawn here; an
        # interval from 0.36 in CI).
        "data": {"manifest": storage.join(layout.dataset(SOURCE), "manifest.csv"), "positive_class": "1"},  # pneumonia
        "model": {"backbone": "resnet18", "name": "pneumonia-demo"},
        "train": {"epochs": 1 if fast else 4, "batch_size": 64, "lr": 2e-3, "warmup_epochs": 0.5},
    })
    target = {
        **common,
        "data": {"manifest": storage.join(layout.dataset(TARGET), "manifest.csv"), "positive_class": "0"},  # malignant
        "train": {"epochs": 3 if fast else 15, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1},
    }
    bundle = storage.join(layout.run(source.name), "bundle")
    transfer = JobConfig.model_validate({
        **target, "name": "demo-transfer" + ("-fast" if fast else ""),
        "model": {"backbone": "resnet18", "init": bundle, "name": "breast-demo"},
    })
    scratch = JobConfig.model_validate({
        **target, "name": "demo-scratch" + ("-fast" if fast else ""),
        "model": {"backbone": "resnet18", "init": "scratch", "name": "breast-demo"},
    })
    return {"source": source, "transfer": transfer, "scratch": scratch}


def _fmt_metric(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = (m.get("ci") or [None, None])[:2]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.3f}{ci}"


def run_demo(data_dir: str | None, root: str, fast: bool = False) -> dict:
    from medxfer.data.importers import import_medmnist
    from medxfer.evaluate import compare_bundles, evaluate_bundle
    from medxfer.registry import Registry
    from medxfer.runtime import init_ray
    from medxfer.train.jobs import run_training

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
            log.info("imported %s: %d images %s", name, summary["images"], summary["splits"])
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
            "init": "scratch" if key != "transfer" else f"{cfgs['source'].name} bundle",
            "test_auroc": rep["metrics"].get("auroc"),
            "test_accuracy": rep["metrics"].get("accuracy"),
            "train_s": res["wall_time_s"],
            "report": rep.get("report_uri"),
        })
    cmp = compare_bundles(results["transfer"]["train"]["bundle"], results["scratch"]["train"]["bundle"],
                          cfgs["transfer"], "test", out=storage.join(root, "compare"))
    # Promotion: the transfer model is proposed first (becomes champion on an empty registry),
    # then the scratch model must beat it by the configured margin to replace it.
    reg = Registry(root, "breast-demo")
    decisions = []
    for key in ("transfer", "scratch"):
        version = reg.register(results[key]["train"]["bundle"], results[key]["report"], note=f"demo {key}")
        decision = reg.try_promote(version, cfgs[key].promotion)
        decisions.append({"candidate": key, "version": version, **decision})
    champion = reg.champion()
    d = cmp["difference"]
    helped = d["ci"][0] > 0
    hurt = d["ci"][1] < 0
    verdict = ("transfer helped" if helped else "transfer hurt" if hurt else
               "no significant difference between transfer and scratch")
    summary = {
        "data": origin,
        "fast": fast,
        "rows": rows,
        "transfer_minus_scratch_auroc": {"difference": d["difference"], "ci": d["ci"], "p_value": d.get("p_value")},
        "verdict": verdict,
        "promotion": decisions,
        "champion": champion,
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
    header = f"{'run':<22} {'dataset':<15} {'init':<24} {'AUROC [95% CI]':<24} {'accuracy@op [95% CI]':<24} {'train s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['run']:<22} {r['dataset']:<15} {r['init']:<24} {_fmt_metric(r['test_auroc']):<24} "
              f"{_fmt_metric(r['test_accuracy']):<24} {r['train_s']:>8.1f}")
    d = summary["transfer_minus_scratch_auroc"]
    print()
    print(f"transfer - scratch AUROC on {TARGET} test: {d['difference']:+.3f} "
          f"(95% CI {d['ci'][0]:+.3f} to {d['ci'][1]:+.3f}): {summary['verdict']}")
    for dec in summary["promotion"]:
        print(f"registry: {dec['candidate']} -> {dec['version']}: "
              f"{'PROMOTED' if dec['promoted'] else 'not promoted'} ({dec['reason']})")
    champ = summary.get("champion") or {}
    print(f"champion of breast-demo: {champ.get('version')}")
    print(f"reports: {', '.join(r['report'] for r in rows if r.get('report'))}")
    print(f"summary: {storage.join(summary['root'], 'demo.json')}  ({summary['wall_time_s']:.0f} s in all)")
