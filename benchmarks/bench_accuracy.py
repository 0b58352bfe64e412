"""Benchmark 4: medxfer's test-set numbers next to the published MedMNIST v2 table, and transfer vs scratch.

Runs the real path — import, cache, ``run_training`` (Ray Train), ``evaluate_bundle`` — over several
seeds and reports mean and spread of test AUROC and accuracy:

- PneumoniaMNIST and BreastMNIST at 28x28 from scratch, beside the published rows (MedMNIST v2,
  Yang et al. 2023: ResNet-18 (28) and Google AutoML Vision);
- BreastMNIST at 64x64 (the shared file holds the official 64 px images) from scratch and
  fine-tuned from a PneumoniaMNIST source model trained at 64 px (its 28 px images upsampled: no
  64 px PneumoniaMNIST is available offline), with the transfer - scratch AUROC difference per seed
  (``evaluate --compare``'s paired bootstrap) and averaged over seeds (one paired bootstrap over
  the test images applied to every seed's pair at once).

Accuracy is at the argmax (the operating point medxfer also reports is chosen on val).

    .venv/bin/python benchmarks/bench_accuracy.py [--seeds 0 1 2] [--target-epochs 40] [--set train.ema_decay=0.998 --tag _64_ema]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, finished, record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402

PUBLISHED = {
    "pneumoniamnist": {"ResNet-18 (28)": {"auroc": 0.944, "accuracy": 0.854},
                       "Google AutoML Vision": {"auroc": 0.991, "accuracy": 0.946}},
    "breastmnist": {"ResNet-18 (28)": {"auroc": 0.901, "accuracy": 0.863},
                    "Google AutoML Vision": {"auroc": 0.919, "accuracy": 0.861}},
}
# pneumonia; malignant. The datasets keep MedMNIST's class indices (--label-names index): the work folder's
# imports, caches and runs stay those the recorded results were measured on.
POSITIVE = {"pneumoniamnist": "1", "breastmnist": "0"}


def job(work: Path, manifest: str, name: str, dataset: str, size: int, epochs: int, seed: int,
        init: str = "scratch", extra: dict | None = None, workers: int = 1) -> JobConfig:
    from medxfer.config.loading import deep_merge, validate_dict

    cpus = os.cpu_count() or 1
    base = {
        "name": name,
        "data": {"manifest": manifest, "positive_class": POSITIVE[dataset]},
        "preprocess": {"channels": 1, "size": size},
        "model": {"backbone": "resnet18", "init": init},
        "train": {"epochs": epochs, "batch_size": 64 if dataset == "pneumoniamnist" else 32, "lr": 1e-3,
                  "seed": seed, "warmup_epochs": 1},
        "scaling": {"num_workers": workers, "cpus_per_worker": cpus},
        "storage": {"root": str(work)},
        "evaluate": {"bootstrap": 1000, "seed": seed},
    }
    return validate_dict(deep_merge(base, extra or {}), name)


def test_scores(bundle_uri: str, cfg: JobConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive-class test scores of a bundle on its run's cached test split, in cache order: plain,
    and with the test-time flip (each image's score averaged with its mirror's); then the labels."""
    from medxfer.data.cache import prepare
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.lifecycle.inference import predict_arrays

    b = load_bundle(bundle_uri)
    X, y = prepare(cfg).numpy("test")
    pos = b.classes.index(b.card.positive_class)
    model = b.build_model()
    return (predict_arrays(model, X, b.task)[:, pos], predict_arrays(model, X, b.task, tta=True)[:, pos],
            (y == pos).astype(int))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--source-epochs", type=int, default=6,
                    help="Epochs of the PneumoniaMNIST source model (and of PneumoniaMNIST at 28 px). Another value "
                         "than the default trains its own source and names its transfer runs with --tag, so they "
                         "are compared with the default source's runs.")
    ap.add_argument("--target-epochs", type=int, default=40)
    ap.add_argument("--small-target-epochs", type=int, default=20, help="BreastMNIST 28 px")
    ap.add_argument("--sets", nargs="+", default=["pneumoniamnist:28", "breastmnist:28", "breastmnist:64"])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="Recipe overrides for the BreastMNIST runs, e.g. train.ema_decay=0.998.")
    ap.add_argument("--tag", default="", help="Suffix of the result file (e.g. _64: accuracy_64.json).")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "accuracy"))
    ap.add_argument("--workers", type=int, default=1,
                    help="Ray Train workers per run; 0 trains in this process (the same weights, sooner on one machine).")
    args = ap.parse_args()
    if args.overrides and args.source_epochs != ap.get_default("source_epochs"):
        # Its difference to the default recipe would mix two changes (the recipe and the source)
        # under a heading that names only the recipe.
        ap.error("--set and a non-default --source-epochs change two things at once; measure one per run")

    from medxfer.config.loading import parse_overrides
    from medxfer.data.importers import import_medmnist
    from medxfer.evaluate import compare_bundles, evaluate_bundle
    from medxfer.experiments.label_efficiency import paired_difference_vs
    from medxfer.metrics import METRICS
    from medxfer.runtime import init_ray
    from medxfer.runtime.allocator import tune_this_process
    from medxfer.supervised.stage import run_training

    work = Path(args.work)
    # Runs trained in this process (--workers 0) get the allocator setting the medxfer command runs
    # with (medxfer.runtime.allocator); set before Ray starts its threads.
    tune_this_process()
    init_ray()
    recipe = parse_overrides(args.overrides)
    # A recipe's runs get their own names: a run name promises one set of settings (medxfer.train.runs),
    # and the source model is shared between recipes. A longer or shorter source gets its own
    # source run and its own transfer runs; the scratch runs do not depend on it and are shared.
    default_source_epochs = ap.get_default("source_epochs")
    other_source = args.source_epochs != default_source_epochs
    tag = args.tag.replace("_", "-")

    def suffix_of(arm: str) -> str:
        return tag if args.overrides or (other_source and arm == "transfer") else ""

    def source_bundle(epochs: int) -> str:
        name = "acc-source-pneumoniamnist-64" + ("" if epochs == default_source_epochs else f"-e{epochs}")
        return finished(run_training(job(work, manifest("pneumoniamnist", 64), name, "pneumoniamnist", 64, epochs,
                                         0, workers=args.workers), "source"))["bundle"]
    manifests = {}

    def manifest(name: str, size: int) -> str:
        file = name if size == 28 or name == "pneumoniamnist" else f"{name}_{size}"
        if file not in manifests:
            ds = work / "datasets" / file
            if not (ds / "manifest.csv").exists():
                import_medmnist(test_data_dir() / "medmnist" / f"{file}.npz", str(ds), file, label_names="index")
            manifests[file] = str(ds / "manifest.csv")
        return manifests[file]

    def summary(rows: list[dict]) -> dict:
        au = np.array([r["test_auroc"] for r in rows])
        ac = np.array([r["test_accuracy"] for r in rows])
        return {"test_auroc_mean": float(au.mean()), "test_auroc_std": float(au.std(ddof=1)) if len(au) > 1 else 0.0,
                "test_accuracy_mean": float(ac.mean()),
                "test_accuracy_std": float(ac.std(ddof=1)) if len(ac) > 1 else 0.0}

    def one(cfg: JobConfig) -> dict:
        res = finished(run_training(cfg, "finetune" if cfg.model.init != "scratch" else "source"))
        rep = evaluate_bundle(res["bundle"], cfg, "test")
        m = rep["metrics"]
        row = {"seed": cfg.train.seed, "test_auroc": m["auroc"]["value"], "test_auroc_ci": m["auroc"]["ci"],
               "test_accuracy": rep.get("accuracy_argmax", m["accuracy"]["value"]),
               "best_epoch": res["best"]["epoch"], "train_s": res["wall_time_s"], "bundle": res["bundle"]}
        print(f"{cfg.name}: AUROC {row['test_auroc']:.3f} ACC {row['test_accuracy']:.3f}", flush=True)
        return row

    results = {}
    for item in args.sets:
        name, size = item.split(":")
        size = int(size)
        is_target = name == "breastmnist"
        epochs = args.source_epochs if not is_target else (args.target_epochs if size == 64 else args.small_target_epochs)
        extra = recipe if is_target else {}
        arms = {"scratch": "scratch"}
        if is_target and size == 64:
            arms["transfer"] = source_bundle(args.source_epochs)
        entry = {"epochs": epochs, "recipe": args.overrides, "published": PUBLISHED.get(name) if size == 28 else None,
                 **({"source_epochs": args.source_epochs} if "transfer" in arms else {}),
                 **({"default_source_epochs": default_source_epochs} if "transfer" in arms and other_source else {})}
        for arm, init in arms.items():
            rows = [one(job(work, manifest(name, size), f"acc-{name}-{size}-{arm}-s{s}{suffix_of(arm)}", name, size,
                            epochs, s, init, extra, args.workers)) for s in args.seeds]
            entry[arm] = {"seeds": rows, **summary(rows)}
        def scores(arm: str, row: dict, run_suffix: str, overrides: dict, name=name, size=size, epochs=epochs,
                   arms=arms) -> tuple[dict, dict]:
            """The bundle's test scores as paired-comparison trials: plain, and with the test-time flip."""
            cfg = job(work, manifest(name, size), f"acc-{name}-{size}-{arm}-s{row['seed']}{run_suffix}", name, size,
                      epochs, row["seed"], arms[arm], overrides)
            plain, flipped, y = test_scores(row["bundle"], cfg)
            return tuple({"seed": row["seed"], "test_scores": s.tolist(), "test_labels": y.tolist()}
                         for s in (plain, flipped))

        scored = {arm: [scores(arm, r, suffix_of(arm), extra) for r in entry[arm]["seeds"]] for arm in arms}
        trials = {arm: [plain for plain, _ in pairs] for arm, pairs in scored.items()}
        # Test-time flip costs no training: the same bundles, each test image scored with its mirror.
        entry["flip_tta"] = {}
        for arm in arms:
            flipped = [f for _, f in scored[arm]]
            entry["flip_tta"][arm] = {
                "test_auroc_mean": float(np.mean([METRICS["auroc"].point(np.asarray([t["test_labels"]]),
                                                                         np.asarray([t["test_scores"]]))
                                                  for t in flipped])),
                "minus_plain": paired_difference_vs(flipped, trials[arm])}
        if "transfer" in arms:
            pairs = []
            for t, b in zip(entry["transfer"]["seeds"], entry["scratch"]["seeds"], strict=True):
                cfg = job(work, manifest(name, size), f"acc-{name}-{size}-scratch-s{b['seed']}{suffix_of('scratch')}",
                          name, size, epochs, b["seed"], "scratch", extra)
                c = compare_bundles(t["bundle"], b["bundle"], cfg, "test")
                pairs.append({"seed": b["seed"], "difference": c["difference"]["difference"],
                              "ci": c["difference"]["ci"], "p_value": c["difference"]["p_value"]})
            entry["transfer_minus_scratch"] = {"per_seed": pairs,
                                               "mean_over_seeds": paired_difference_vs(trials["transfer"],
                                                                                        trials["scratch"])}
        if is_target and (args.overrides or "transfer" in arms and other_source):
            # The recipe (or source) against the default, seed for seed on the same test images:
            # the default's runs (no suffix) are reported if finished, trained otherwise.
            entry["recipe_minus_default"] = {}
            default_init = {**arms, **({"transfer": source_bundle(default_source_epochs)} if other_source else {})}
            for arm, init in default_init.items():
                if not suffix_of(arm):
                    continue  # the same runs as the default's
                base = [one(job(work, manifest(name, size), f"acc-{name}-{size}-{arm}-s{s}", name, size, epochs, s,
                                init, workers=args.workers)) for s in args.seeds]
                base_trials = [scores(arm, r, "", {})[0] for r in base]
                entry["recipe_minus_default"][arm] = {
                    "default_test_auroc_mean": float(np.mean([r["test_auroc"] for r in base])),
                    "per_seed": [{"seed": a["seed"], "difference": a["test_auroc"] - b["test_auroc"]}
                                 for a, b in zip(entry[arm]["seeds"], base, strict=True)],
                    "mean_over_seeds": paired_difference_vs(trials[arm], base_trials)}
        results[f"{name}_{size}"] = entry
    # The BreastMNIST runs of a recipe that sets scaling.num_workers=0 train in one process (the
    # same weights as one worker: Ray Train's local mode runs the same train_func), only sooner.
    in_process = args.workers == 0 or recipe.get("scaling", {}).get("num_workers") == 0
    where = "in one process, Ray Train's local mode" if in_process else "Ray Train, 1 worker"
    record(f"accuracy{args.tag}", {
        "what": f"ResNet-18 via medxfer ({where}), AdamW, warm-up + cosine, best epoch on val; test split. "
                "BreastMNIST 64 px: from scratch and from a PneumoniaMNIST source at 64 px (upsampled 28 px images).",
        "results": results,
    }, work=work)


if __name__ == "__main__":
    main()
