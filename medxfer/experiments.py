"""``medxfer experiment label-efficiency``: does transfer pay when labels are scarce?

Arms (scratch, transfer, linear probe, self-supervised, ...) x label fractions x seeds. Each
trial fine-tunes on a seeded, stratified fraction of the target's training labels, picks its
best epoch on the (never subsampled) validation split, and is scored once on the test split.

Why trials are Ray tasks running the worker loop in-process rather than one TorchTrainer
each: a trial on a few hundred 28x28 images trains in seconds, while starting a Ray Train
worker group costs about as much; at 5 fractions x 3 seeds x several arms the experiment
would be mostly start-up. The trials run the same plain functions as the Ray Train worker
(`init_model`, `train_epoch`, `evaluate_epoch`, the same losses, optimiser and schedule), so
a recipe measured here is the recipe `medxfer finetune` runs. Data comes from the same
preprocessed cache, read once and shared through Ray's object store.

The table reports the mean and spread per cell and the difference to the arm named
``scratch``, whatever the answer is.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import logging
import math
import re
import time

import numpy as np

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.config_io import deep_merge, validate_dict
from medxfer.errors import ConfigError

log = logging.getLogger("medxfer.experiments")


def nest_dotted(flat: dict) -> dict:
    """``{"train.lr": 1}`` -> ``{"train": {"lr": 1}}``."""
    out: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return out


def trial_config(cfg: JobConfig, arm, fraction: float, seed: int) -> JobConfig:
    """The job config of one trial: the base config, the arm's overrides, fraction and seed."""
    d = deep_merge(cfg.model_dump(mode="json"), nest_dotted(arm.set))
    d["data"]["label_fraction"] = fraction
    d["data"]["label_seed"] = seed
    d["train"]["seed"] = seed
    arm_slug = re.sub(r"[^A-Za-z0-9._-]+", "-", arm.name)  # e.g. "supervised+ssl" -> "supervised-ssl"
    d["name"] = f"{cfg.name}-{arm_slug}-f{fraction:g}-s{seed}"[:128]
    return validate_dict(d, f"experiment arm {arm.name!r}")


def numpy_batches(X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                  drop_last: bool):
    """Shuffled (when ``rng``) mini-batches of in-memory arrays, as the Ray Data iterator yields them."""
    order = rng.permutation(len(X)) if rng is not None else np.arange(len(X))
    stop = len(X) - (len(X) % batch_size if drop_last and len(X) >= batch_size else 0)
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield {"image": X[idx], "label": y[idx]}


def test_auroc(task: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC on the test split: positive-class AUROC for binary, macro one-vs-rest otherwise."""
    from medxfer.train.valmetrics import macro_auroc

    k = scores.shape[1] if scores.ndim == 2 else 1
    return float(macro_auroc(task, scores, labels, k))


def run_trial(cfg_json: dict, plan: dict, data: dict, threads: int = 1) -> dict:
    """Fine-tune one trial in this process; best epoch by validation, then one test score."""
    import torch

    from medxfer.inference import predict_arrays
    from medxfer.train.augment import random_affine_flip
    from medxfer.train.loop import StepSettings, evaluate_epoch, train_epoch
    from medxfer.train.losses import build_loss
    from medxfer.train.optim import build_optimizer, build_scheduler, l2sp_reference, set_frozen_norm_eval
    from medxfer.train.worker import init_model

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, threads))
    cfg = JobConfig.model_validate(cfg_json)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    Xtr, ytr = data["train"]
    Xva, yva = data["val"]
    Xte, yte = data["test"]
    bs = min(tc.batch_size, len(Xtr))
    drop_last = len(Xtr) >= bs and len(Xtr) % bs == 1  # a last batch of 1 breaks batch norm
    steps = max(1, len(Xtr) // bs if drop_last else math.ceil(len(Xtr) / bs))
    model, _ = init_model(cfg, plan)
    ref = l2sp_reference(model) if tc.l2sp > 0 and cfg.model.init != "scratch" else None
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc, steps)
    task, k = plan["task"], plan["num_outputs"]
    counts = np.bincount(ytr.astype(int), minlength=k).tolist() if task == "multiclass" else None
    loss_fn = build_loss(task, tc, counts, k)
    val_loss_fn = build_loss(task, tc, train=False)
    settings = StepSettings(grad_clip=tc.grad_clip, l2sp_reference=ref, l2sp_alpha=tc.l2sp)
    es = tc.early_stopping
    sign = 1.0 if es.mode == "max" else -1.0
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    for epoch in range(tc.epochs):
        model.train()
        set_frozen_norm_eval(model, backbone_too=epoch < tc.head_warmup_epochs)
        gen = torch.Generator().manual_seed(tc.seed * 100_003 + epoch * 101)
        settings.augment = functools.partial(random_affine_flip, generator=gen, hflip=tc.hflip) if tc.augment else None
        rng = np.random.default_rng(tc.seed * 7919 + epoch)
        train_epoch(model, numpy_batches(Xtr, ytr, bs, rng, drop_last), loss_fn, optimizer, scheduler, settings)
        va = evaluate_epoch(model, numpy_batches(Xva, yva, 256, None, False), task, val_loss_fn, k, settings,
                            None, plan["num_grades"])
        score = va.get(es.metric, float("nan"))
        score = sign * score if score == score else -math.inf
        if score > best:
            best, best_epoch, bad = score, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if es.patience and bad >= es.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    scores = predict_arrays(model, Xte, task)
    return {
        "best_epoch": best_epoch,
        "val_" + es.metric.removeprefix("val_"): sign * best if best > -math.inf else None,
        "test_auroc": test_auroc(task, scores, yte),
        "train_images": int(len(Xtr)),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarize(trials: list[dict], baseline: str = "scratch") -> list[dict]:
    """Per (arm, fraction): mean, std, min, max of test AUROC and the difference to the baseline arm."""
    cells: dict[tuple[str, float], list[float]] = {}
    for t in trials:
        cells.setdefault((t["arm"], t["fraction"]), []).append(t["test_auroc"])
    base = {f: float(np.mean(v)) for (a, f), v in cells.items() if a == baseline}
    rows = []
    for (arm, frac), vals in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        v = np.asarray(vals, dtype=float)
        mean = float(np.nanmean(v))
        rows.append({
            "arm": arm,
            "fraction": frac,
            "n_seeds": int(len(v)),
            "test_auroc_mean": mean,
            "test_auroc_std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0,
            "test_auroc_min": float(np.nanmin(v)),
            "test_auroc_max": float(np.nanmax(v)),
            "diff_vs_scratch": (mean - base[frac]) if frac in base and arm != baseline else None,
        })
    return rows


def table_markdown(rows: list[dict], title: str) -> str:
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (a != "scratch", a))
    fracs = sorted({r["fraction"] for r in rows})
    cell = {(r["arm"], r["fraction"]): r for r in rows}
    lines = [f"### {title}", "", "Test AUROC, mean ± std over seeds (difference to scratch).", "",
             "| arm | " + " | ".join(f"{f:.0%} labels" for f in fracs) + " |",
             "|---|" + "---|" * len(fracs)]
    for a in arms:
        parts = []
        for f in fracs:
            r = cell.get((a, f))
            if r is None:
                parts.append("")
                continue
            d = r["diff_vs_scratch"]
            parts.append(f"{r['test_auroc_mean']:.3f} ± {r['test_auroc_std']:.3f}"
                         + (f" ({d:+.3f})" if d is not None else ""))
        lines.append(f"| {a} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def plot_png(rows: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for arm in sorted({r["arm"] for r in rows}, key=lambda a: (a != "scratch", a)):
        rs = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fraction"])
        x = [r["fraction"] for r in rs]
        m = np.array([r["test_auroc_mean"] for r in rs])
        s = np.array([r["test_auroc_std"] for r in rs])
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=arm, linestyle="--" if arm == "scratch" else "-")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["fraction"] for r in rows}))
    ax.set_xticklabels([f"{f:.0%}" for f in sorted({r["fraction"] for r in rows})])
    ax.set_xlabel("fraction of target training labels")
    ax.set_ylabel("test AUROC (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def run_label_efficiency(cfg: JobConfig, out: str | None = None) -> dict:
    """Run every trial of ``cfg.experiment`` and write table (md, csv), trials (json) and plot (png)."""
    import ray

    from medxfer.data.cache import prepare
    from medxfer.runtime import cluster_cpus, init_ray
    from medxfer.train.jobs import check_source, plan_run

    ex = cfg.experiment
    names = [a.name for a in ex.arms]
    if len(set(names)) != len(names):
        raise ConfigError([f"experiment.arms: arm names must be unique, got {names}"])
    init_ray()
    t0 = time.time()
    out = out or storage.join(storage.Layout(cfg.storage.root).run(cfg.name), "label-efficiency")

    # Read the cached, preprocessed data once per (fraction, seed); val/test are shared by all.
    first = trial_config(cfg, ex.arms[0], 1.0, ex.seeds[0])
    prepared = prepare(first)
    val, test = prepared.numpy("val"), prepared.numpy("test")
    refs: dict[tuple[float, int], object] = {}
    n_train: dict[tuple[float, int], int] = {}
    for f in ex.fractions:
        for s in ex.seeds:
            train = prepare(trial_config(cfg, ex.arms[0], f, s)).numpy("train")
            n_train[(f, s)] = len(train[0])
            refs[(f, s)] = ray.put({"train": train, "val": val, "test": test})

    parallel = ex.parallel or max(1, int(cluster_cpus() // ex.cpus_per_trial))
    remote = ray.remote(num_cpus=ex.cpus_per_trial)(run_trial)
    pending, meta, trials = [], {}, []
    jobs = [(arm, f, s) for f in ex.fractions for s in ex.seeds for arm in ex.arms]
    log.info("label efficiency: %d arms x %d fractions x %d seeds = %d trials, %d at a time",
             len(ex.arms), len(ex.fractions), len(ex.seeds), len(jobs), parallel)
    # Build and check every trial before the first one runs: a bad arm fails in seconds, not
    # after an hour of trials.
    planned = []
    for arm, f, s in jobs:
        tcfg = trial_config(cfg, arm, f, s)
        check_source(tcfg)
        # Single-process trials: plan as for one worker (the loop sizes its own batches).
        tcfg = tcfg.model_copy(update={"scaling": tcfg.scaling.model_copy(update={"num_workers": 1})})
        planned.append((arm, f, s, tcfg, plan_run(tcfg, prepared, n_train[(f, s)], use_gpu=False)))
    for arm, f, s, tcfg, plan in planned:
        while len(pending) >= parallel:
            done, pending = ray.wait(pending, num_returns=1)
            _collect(done[0], meta, trials)
        ref = remote.remote(tcfg.model_dump(mode="json"), plan, refs[(f, s)], max(1, int(ex.cpus_per_trial)))
        meta[ref] = {"arm": arm.name, "fraction": f, "seed": s, "init": tcfg.model.init,
                     "freeze": tcfg.train.freeze}
        pending.append(ref)
    for ref in pending:
        _collect(ref, meta, trials)

    rows = summarize(trials)
    title = (f"{cfg.name}: {cfg.model.backbone} {cfg.preprocess.size}px, {cfg.train.epochs} epochs, "
             f"{len(ex.seeds)} seeds")
    md = table_markdown(rows, title)
    storage.write_text(storage.join(out, "table.md"), md)
    storage.write_text(storage.join(out, "table.csv"), _csv(rows))
    storage.write_bytes(storage.join(out, "label_efficiency.png"), plot_png(rows, title))
    result = {"kind": "medxfer-label-efficiency/1", "config": cfg.model_dump(mode="json"), "trials": trials,
              "summary": rows, "wall_time_s": round(time.time() - t0, 1), "data_fingerprint": prepared.key,
              "out": out}
    storage.write_json(storage.join(out, "label_efficiency.json"), result)
    print(md)
    return result


def _collect(ref, meta: dict, trials: list) -> None:
    import ray

    res = ray.get(ref)
    m = meta.pop(ref)
    trials.append({**m, **res})
    log.info("trial %s f=%g seed=%d: test AUROC %.3f (best epoch %d, %.0fs)", m["arm"], m["fraction"], m["seed"],
             res["test_auroc"], res["best_epoch"], res["seconds"])


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["arm"])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def cmd_label_efficiency(args) -> int:
    from medxfer.config_io import load_config

    res = run_label_efficiency(load_config(args.config, args.set), args.out)
    print(f"label efficiency: {len(res['trials'])} trials in {res['wall_time_s']:.0f}s; {res['out']}")
    json.dumps(res["summary"])  # fail here, not later, if anything is not serialisable
    return 0
