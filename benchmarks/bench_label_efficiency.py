"""Benchmark 5: label efficiency — does a source model pay when target labels are scarce?

Target: BreastMNIST (ultrasound, 546 training images). Sources, all built here by medxfer:
- ``transfer``: a ResNet-18 trained supervised on PneumoniaMNIST (chest X-ray);
- ``ssl``: a ResNet-18 pretrained self-supervised (SimSiam) on PneumoniaMNIST + BreastMNIST
  *training* images, labels ignored (never val/test);
- ``supervised+ssl``: the supervised source started from the SSL weights.
Arms fine-tune from these (full fine-tuning, linear probing, LP-FT with L2-SP) and from
scratch, at several label fractions and seeds, with selection on validation only.

Runs ``medxfer experiment label-efficiency`` (the same code users run) and copies the table,
trials and plot into ``benchmarks/results/``.

    .venv/bin/python benchmarks/bench_label_efficiency.py [--fractions ...] [--seeds ...] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, RESULTS, finished, record, test_data_dir  # noqa: E402
from medxfer.config import JobConfig  # noqa: E402


def base(work: Path, size: int) -> dict:
    return {
        "preprocess": {"channels": 1, "size": size},
        "model": {"backbone": "resnet18"},
        "storage": {"root": str(work)},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
    }


# Arms whose starting point is the supervised source (directly or through supervised+ssl).
SOURCE_ARMS = ("transfer", "linear_probe", "transfer_lpft_l2sp", "transfer_reinit", "transfer_ema", "supervised+ssl")


def against_default_source(this: dict, default: dict) -> dict:
    """This run's source arms minus the default source's, trial for trial (same arm, fraction, seed).

    Both experiments' trials carry their test scores, so each difference gets the paired bootstrap
    of the table. The arms that do not start from the supervised source (scratch, ssl) are checked
    to be the same trials to the bit: then the difference is the source's alone.
    """
    from medxfer.experiments.label_efficiency import paired_difference_vs

    def cells(trials: list[dict]) -> dict:
        out: dict = {}
        for t in trials:
            out.setdefault((t["arm"], t["fraction"]), []).append(t)
        return {k: sorted(v, key=lambda t: t["seed"]) for k, v in out.items()}

    a, b = cells(this["trials"]), cells(default["trials"])
    diffs = {}
    for (arm, fraction), trials in sorted(a.items()):
        if arm in SOURCE_ARMS and (arm, fraction) in b:
            d = paired_difference_vs(trials, b[(arm, fraction)])
            base = {t["seed"]: t["test_auroc"] for t in b[(arm, fraction)]}
            diffs[f"{arm}@{fraction:g}"] = {
                **(d or {}), "default_test_auroc_mean": sum(base.values()) / len(base),
                "per_seed": [round(t["test_auroc"] - base[t["seed"]], 4) for t in trials if t["seed"] in base]}
    same = [k for k, v in a.items() if k[0] not in SOURCE_ARMS and k in b
            and [t["test_auroc"] for t in v] == [t["test_auroc"] for t in b[k]]]
    others = [k for k in a if k[0] not in SOURCE_ARMS and k in b]
    return {"differences": diffs, "other_arms_identical": f"{len(same)} of {len(others)} cells"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--source-epochs", type=int, default=6)
    ap.add_argument("--ssl-epochs", type=int, default=15)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--arms", nargs="+",
                    default=["scratch", "transfer", "linear_probe", "transfer_lpft_l2sp", "ssl", "supervised+ssl"])
    ap.add_argument("--tag", default=None,
                    help="Suffix of the result files (e.g. _recipes); _sourceN when --source-epochs N is not "
                         "the default.")
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "label-efficiency"))
    args = ap.parse_args()

    from medxfer.data.importers import import_medmnist
    from medxfer.experiments.label_efficiency import run_label_efficiency
    from medxfer.runtime import init_ray
    from medxfer.runtime.allocator import tune_this_process
    from medxfer.ssl.pretrain import run_pretrain
    from medxfer.supervised.stage import run_training

    work = Path(args.work)
    # A source trained longer than the default is its own run: reusing the default run's name would
    # continue that run (train.epochs may grow) and rewrite the bundle earlier tables were measured
    # from. Its results get their own files.
    default_source_epochs = ap.get_default("source_epochs")
    source_suffix = "" if args.source_epochs == default_source_epochs else f"-e{args.source_epochs}"
    if args.tag is None:
        args.tag = "" if not source_suffix else f"_source{args.source_epochs}"
    # Runs trained in this process get the allocator setting the medxfer command runs
    # with (medxfer.runtime.allocator); set before Ray starts its threads.
    tune_this_process()
    init_ray()
    manifests = {}
    # The target at its native size when the shared data has it (BreastMNIST 64x64); PneumoniaMNIST
    # exists at 28x28 only here, so a 64 px source sees its images upsampled.
    target_file = "breastmnist_64" if args.size == 64 else "breastmnist"
    for name, file in (("pneumoniamnist", "pneumoniamnist"), ("breastmnist", target_file)):
        ds = work / "datasets" / file
        if not (ds / "manifest.csv").exists():
            # Class indices, as the recorded tables were measured with: the work folder's kept trials stay valid.
            import_medmnist(test_data_dir() / "medmnist" / f"{file}.npz", str(ds), file, label_names="index")
        manifests[name] = str(ds / "manifest.csv")
    b = base(work, args.size)
    need = set(args.arms)
    bundles = {}
    if need & (set(SOURCE_ARMS) - {"supervised+ssl"}):  # the arms that start from the supervised source itself
        src = JobConfig.model_validate({**b, "name": f"le-source-{args.size}{source_suffix}",
                                        "data": {"manifest": manifests["pneumoniamnist"]},
                                        "train": {"epochs": args.source_epochs, "batch_size": 64, "lr": 1e-3}})
        bundles["transfer"] = finished(run_training(src, "source"))["bundle"]
    if need & {"ssl", "supervised+ssl"}:
        ssl = JobConfig.model_validate({**b, "name": f"le-ssl-{args.size}",
                                        "data": {"manifest": manifests["pneumoniamnist"],
                                                 "extra_manifests": [manifests["breastmnist"]]},
                                        "pretrain": {"method": "simsiam"},
                                        "train": {"epochs": args.ssl_epochs, "batch_size": 128, "lr": 0.05,
                                                  "optimizer": "sgd", "weight_decay": 1e-4}})
        bundles["ssl"] = finished(run_pretrain(ssl))["bundle"]
    if "supervised+ssl" in need:
        sup = JobConfig.model_validate({**b, "name": f"le-source-from-ssl-{args.size}{source_suffix}",
                                        "data": {"manifest": manifests["pneumoniamnist"]},
                                        "model": {"backbone": "resnet18", "init": bundles["ssl"]},
                                        "train": {"epochs": args.source_epochs, "batch_size": 64, "lr": 1e-3}})
        bundles["supervised+ssl"] = finished(run_training(sup, "finetune"))["bundle"]

    arm_sets = {
        "scratch": {"model.init": "scratch"},
        "transfer": {"model.init": bundles.get("transfer")},
        "linear_probe": {"model.init": bundles.get("transfer"), "train.freeze": "backbone", "train.lr": 0.01},
        "transfer_lpft_l2sp": {"model.init": bundles.get("transfer"), "train.head_warmup_epochs": 3,
                               "train.l2sp": 0.01, "train.backbone_lr_mult": 0.3},
        "transfer_reinit": {"model.init": bundles.get("transfer"), "train.reinit_last_stage": True},
        # Recipes the field uses on small data, each from scratch (and with the source model).
        "ema": {"model.init": "scratch", "train.ema_decay": 0.998},
        "mixup": {"model.init": "scratch", "train.mixup_alpha": 0.2},
        "cutmix": {"model.init": "scratch", "train.cutmix_alpha": 1.0},
        "ema_mixup": {"model.init": "scratch", "train.ema_decay": 0.998, "train.mixup_alpha": 0.2},
        "transfer_ema": {"model.init": bundles.get("transfer"), "train.ema_decay": 0.998},
        "ssl": {"model.init": bundles.get("ssl")},
        "supervised+ssl": {"model.init": bundles.get("supervised+ssl")},
    }
    cfg = JobConfig.model_validate({
        **b,
        "name": f"label-efficiency-{args.size}{args.tag}",
        "data": {"manifest": manifests["breastmnist"], "positive_class": "0"},  # malignant
        "train": {"epochs": args.epochs, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 1},
        "experiment": {"fractions": args.fractions, "seeds": args.seeds,
                       "arms": [{"name": a, "set": arm_sets[a]} for a in args.arms]},
    })
    res = run_label_efficiency(cfg)
    out = Path(res["out"])
    compared = None
    if source_suffix:  # the default source's experiment, when it ran in this --work folder
        default_out = Path(out.parent.parent / f"label-efficiency-{args.size}" / out.name / "label_efficiency.json")
        if default_out.exists():
            compared = against_default_source(res, json.loads(default_out.read_text()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "label_efficiency.png", RESULTS / f"label_efficiency{args.tag}.png")
    (RESULTS / f"label_efficiency{args.tag}.md").write_text((out / "table.md").read_text())
    record(f"label_efficiency{args.tag}", {
        "what": f"BreastMNIST {args.size}px, ResNet-18, {args.epochs} epochs per trial, best epoch on val; "
                "test AUROC",
        "source_epochs": args.source_epochs,
        "sources": {k: json.loads(Path(v, "bundle.json").read_text()).get("lineage") for k, v in bundles.items()},
        "summary": res["summary"],
        "trials": [{k: v for k, v in t.items() if k not in ("test_scores", "test_labels")} for t in res["trials"]],
        "wall_time_s": res["wall_time_s"],
        **({"source_minus_default_source": {"default_source_epochs": default_source_epochs, **compared}}
           if compared else {}),
    }, work=work)


if __name__ == "__main__":
    main()
