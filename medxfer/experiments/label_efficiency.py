"""``medxfer experiment label-efficiency``: does transfer pay when labels are scarce?

Arms (scratch, transfer, linear probe, self-supervised, ...) x label fractions x seeds. Each
trial fine-tunes on a seeded, stratified fraction of the target's training labels, picks its
best epoch on the (never subsampled) validation split, and is scored once on the test split.

A trial *is* a fine-tune run with overrides: its job config is the base config plus the arm's
``set``, the fraction and the seed; the supervised stage plans it
(:func:`medxfer.supervised.planning.plan_trial`) and runs it with the same ``train_func`` and
trainee as ``medxfer finetune`` — in Ray Train's local mode (one process, nothing written), as a Ray task, so trials run side
by side without paying a worker group's start-up each. With the same settings and seed a trial
and ``medxfer finetune`` take the same steps and end with the same weights (a test holds them
equal), so a recipe measured here is the recipe ``finetune`` runs. Every trial reads the one
preprocessed cache; ``label_fraction`` is applied as it is read.

Each trial is written (``<out>/trials/<trial>.json``) as it finishes, under a key of its config,
data and source weights: run again after a crash or a stop, the experiment keeps the trials that
measured the same thing and runs only the rest.

The table reports the mean and spread per cell and the difference to the arm named
``scratch``, whatever the answer is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time

import numpy as np

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.config.loading import deep_merge, nest_dotted, validate_dict
from medxfer.errors import StorageError
from medxfer.evaluate import plots
from medxfer.lifecycle.csv_out import rows_to_csv

log = logging.getLogger("medxfer.experiments.label_efficiency")


def trial_config(cfg: JobConfig, arm, fraction: float, seed: int) -> JobConfig:
    """The job config of one trial: the base config, the arm's overrides, fraction and seed."""
    d = deep_merge(cfg.model_dump(mode="json"), nest_dotted(arm.set))
    d["data"]["label_fraction"] = fraction
    d["data"]["label_seed"] = seed
    d["train"]["seed"] = seed
    arm_slug = re.sub(r"[^A-Za-z0-9._-]+", "-", arm.name)  # e.g. "supervised+ssl" -> "supervised-ssl"
    d["name"] = f"{cfg.name}-{arm_slug}-f{fraction:g}-s{seed}"[:128]
    return validate_dict(d, f"experiment arm {arm.name!r}")


def test_auroc(task: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC on the test split, over the columns validation uses (binary: the last class; else one-vs-rest)."""
    from medxfer.metrics import METRICS
    from medxfer.metrics.views import ranking

    return METRICS["auroc"].point(*ranking(task, scores, labels))


def run_trial(cfg_json: dict, plan) -> dict:
    """One trial: the fine-tune run of ``cfg_json`` in Ray Train's local mode (this process, nothing
    written), its best epoch by validation, then one score on the test split."""
    import torch

    from medxfer.data.cache import PreparedData
    from medxfer.lifecycle.inference import predict_arrays
    from medxfer.models import create_model
    from medxfer.supervised.stage import trial_weights

    t0 = time.perf_counter()
    cfg = JobConfig.model_validate(cfg_json)
    out = trial_weights(cfg, plan)
    model = create_model(cfg.model.backbone, plan.num_outputs, plan.in_chans, cfg.model.dropout, stem=plan.stem)
    model.load_state_dict(out["weights"])
    torch.set_num_threads(max(1, int(plan.cpus_per_worker)))
    Xte, yte = PreparedData.open(plan.data.caches[0]).numpy("test")
    metric = cfg.train.early_stopping.metric
    best = next((h for h in out["history"] if h["epoch"] == out["best_epoch"]), {})
    scores = predict_arrays(model, Xte, plan.task)
    flipped = predict_arrays(model, Xte, plan.task, tta=True)
    return {
        "best_epoch": out["best_epoch"],
        metric: best.get(metric),
        "test_auroc": test_auroc(plan.task, scores, yte),
        "test_auroc_flip_tta": test_auroc(plan.task, flipped, yte),
        "train_images": plan.train_rows,
        "seconds": round(time.perf_counter() - t0, 1),
        # Positive-class test scores of a binary task, for paired comparisons between arms.
        "test_scores": scores[:, -1].round(6).tolist() if plan.task == "multiclass" and plan.num_outputs == 2 else None,
        "test_labels": yte.tolist() if plan.task == "multiclass" and plan.num_outputs == 2 else None,
    }


def _binary_test_scores(trials: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(truth, scores)``, one row per trial, for the registry's AUROC, which averages its rows: the
    seed mean. None when a trial carries no binary test scores."""
    if not trials or any(t.get("test_scores") is None for t in trials):
        return None
    truth = np.tile(np.asarray(trials[0]["test_labels"]) == 1, (len(trials), 1)).astype(np.float64)
    return truth, np.array([t["test_scores"] for t in trials], dtype=np.float64)


def auroc_interval(trials: list[dict], n_boot: int = 1000, seed: int = 0) -> list[float] | None:
    """The 95% bootstrap interval of the seed-averaged test AUROC of one cell (the test images resampled,
    all seeds at once), or None when the trials carry no binary test scores."""
    from medxfer.metrics import METRICS
    from medxfer.metrics.bootstrap import Resampling, intervals

    inputs = _binary_test_scores(trials)
    if inputs is None:
        return None
    return intervals({"auroc": (METRICS["auroc"].statistic, inputs)}, Resampling(n_boot, seed))["auroc"]["ci"]


def paired_difference_vs(trials: list[dict], baseline: list[dict], n_boot: int = 1000, seed: int = 0) -> dict | None:
    """The seed-averaged test AUROC difference of two arms at one fraction, with a paired bootstrap CI.

    Trials are matched by seed; every resample of the test images is applied to all of them at
    once, so the interval is that of the test set's sampling for these trained models (the spread
    over seeds is reported beside it). None when the trials carry no binary test scores.
    """
    from medxfer.metrics import METRICS
    from medxfer.metrics.bootstrap import Resampling, paired_difference

    by_seed = {t.get("seed"): t for t in baseline}
    pairs = [(t, by_seed[t.get("seed")]) for t in trials if t.get("seed") in by_seed]
    a = _binary_test_scores([t for t, _ in pairs])
    b = _binary_test_scores([t for _, t in pairs])
    if a is None or b is None:
        return None
    # One AUROC row per seed: the registry's AUROC averages its rows, so this is the seed mean.
    d = paired_difference(METRICS["auroc"], (a[0], a[1]), (a[0], b[1]), Resampling(n_boot, seed))
    return {"difference": d["difference"], "ci": d["ci"], "p_value": d["p_value"], "seeds": len(pairs)}


def summarize(trials: list[dict], baseline: str = "scratch") -> list[dict]:
    """Per (arm, fraction): mean, std, min, max of test AUROC and the difference to the baseline arm;
    when the trials carry test scores, the interval of the mean and the difference's paired interval."""
    cells: dict[tuple[str, float], list[float]] = {}
    groups: dict[tuple[str, float], list[dict]] = {}
    for t in trials:
        cells.setdefault((t["arm"], t["fraction"]), []).append(t["test_auroc"])
        groups.setdefault((t["arm"], t["fraction"]), []).append(t)
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
            "test_auroc_ci": auroc_interval(groups[(arm, frac)]),
            "train_images": int(np.median([t.get("train_images") or 0 for t in groups[(arm, frac)]])),
            "diff_vs_scratch": (mean - base[frac]) if frac in base and arm != baseline else None,
            "paired_vs_scratch": (paired_difference_vs(groups[(arm, frac)], groups[(baseline, frac)])
                                  if frac in base and arm != baseline else None),
        })
    return rows


def verdict(ci, arm: str = "transfer", baseline: str = "scratch") -> str:
    """What a paired 95% interval of ``arm`` - ``baseline`` says, in the words every medxfer summary uses."""
    lo, hi = ci
    if lo > 0:
        return f"{arm} helped"
    if hi < 0:
        return f"{arm} hurt"
    return f"no significant difference between {arm} and {baseline}"


def reading(row: dict, baseline: str = "scratch") -> str | None:
    """One sentence for one summary row: 'at 10% of the labels (55 training images, 5 seeds), transfer
    is +0.045 AUROC over scratch (95% CI +0.003 to +0.090): transfer helped' — whatever the answer.
    None for the baseline's own row, or without a paired interval."""
    pc = row.get("paired_vs_scratch")
    if not pc or not all(np.isfinite(pc["ci"])):
        return None
    lo, hi = pc["ci"]
    seeds = f"{pc['seeds']} seed" + ("s" if pc["seeds"] != 1 else "")
    images = f"{row['train_images']} training images, " if row.get("train_images") else ""
    return (f"at {row['fraction']:.0%} of the labels ({images}{seeds}), {row['arm']} is {pc['difference']:+.3f} "
            f"AUROC over {baseline} (95% CI {lo:+.3f} to {hi:+.3f}): {verdict(pc['ci'], row['arm'], baseline)}")


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
            d, pc = r["diff_vs_scratch"], r.get("paired_vs_scratch")
            ci = f" [{pc['ci'][0]:+.3f}, {pc['ci'][1]:+.3f}]" if pc and all(np.isfinite(pc["ci"])) else ""
            parts.append(f"{r['test_auroc_mean']:.3f} ± {r['test_auroc_std']:.3f}"
                         + (f" ({d:+.3f}{ci})" if d is not None else ""))
        lines.append(f"| {a} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def run_label_efficiency(cfg: JobConfig, out: str | None = None) -> dict:
    """Run every trial of ``cfg.experiment`` and write table (md, csv), trials (json) and plot (png)."""
    import ray

    from medxfer.data.cache import prepare
    from medxfer.runtime import cluster_cpus, init_ray, require_shared_storage
    from medxfer.supervised.planning import plan_trial
    from medxfer.supervised.stage import check_source

    ex = cfg.experiment
    init_ray()
    require_shared_storage([cfg.storage.root], cfg.storage.shared)  # trials read the cache on any node
    t0 = time.time()
    out = out or storage.join(storage.Layout(cfg.storage.root).run(cfg.name), "label-efficiency")

    # Build and check every trial before the first one runs: a bad arm fails in seconds, not after
    # an hour of trials. A trial is the fine-tune run of its config on one worker in one process;
    # every (fraction, seed) shares the one cache (label_fraction is applied when it is read).
    # Every trial's result by (arm, fraction, seed), kept or new; reported in plan order.
    planned, prepared, results = [], None, {}
    for f in ex.fractions:
        for s in ex.seeds:
            for arm in ex.arms:
                tcfg = trial_config(cfg, arm, f, s)
                tcfg = tcfg.model_copy(update={"scaling": tcfg.scaling.model_copy(
                    update={"num_workers": 1, "cpus_per_worker": ex.cpus_per_trial})})
                source = check_source(tcfg)
                prepared = prepare(tcfg)
                meta = {"arm": arm.name, "fraction": f, "seed": s, "init": tcfg.model.init,
                        "freeze": tcfg.train.freeze,
                        "trial_key": trial_key(tcfg, prepared.key, source.card.weights_sha256 if source else None,
                                               prepared.kept_rows("train"))}
                results[(arm.name, f, s)] = _kept_trial(out, tcfg.name, meta["trial_key"])
                if results[(arm.name, f, s)] is not None:
                    continue
                plan = plan_trial(tcfg, prepared)
                planned.append((meta, tcfg, plan))
    parallel = ex.parallel or max(1, int(cluster_cpus() // ex.cpus_per_trial))
    remote = ray.remote(num_cpus=ex.cpus_per_trial)(run_trial)
    pending, metas = [], {}
    log.info("label efficiency: %d arms x %d fractions x %d seeds = %d trials (%d kept from an earlier run of "
             "this experiment), %d at a time", len(ex.arms), len(ex.fractions), len(ex.seeds),
             len(results), len(results) - len(planned), parallel)
    for meta, tcfg, plan in planned:
        while len(pending) >= parallel:
            done, pending = ray.wait(pending, num_returns=1)
            _collect(done[0], metas, results, out)
        ref = remote.remote(tcfg.model_dump(mode="json"), plan)
        metas[ref] = (meta, tcfg.name)
        pending.append(ref)
    for ref in pending:
        _collect(ref, metas, results, out)
    trials = list(results.values())

    rows = summarize(trials)
    title = (f"{cfg.name}: {cfg.model.backbone} {cfg.preprocess.size}px, {cfg.train.epochs} epochs, "
             f"{len(ex.seeds)} seeds")
    md = table_markdown(rows, title)
    storage.write_text(storage.join(out, "table.md"), md)
    storage.write_text(storage.join(out, "table.csv"), _csv(rows))
    storage.write_bytes(storage.join(out, "label_efficiency.png"), plots.label_efficiency_png(rows, title))
    result = {"kind": "medxfer-label-efficiency/1", "config": cfg.model_dump(mode="json"), "trials": trials,
              "summary": rows, "wall_time_s": round(time.time() - t0, 1), "data_fingerprint": prepared.key,
              "out": out}
    storage.write_json(storage.join(out, "label_efficiency.json"), result)
    return {**result, "table": md}


def trial_key(tcfg: JobConfig, data_key: str, source_weights_sha256: str | None,
              kept_rows: np.ndarray | None = None) -> str:
    """What a trial's result depends on: its config, the data it reads, the source weights.

    The data enters by its cache key and by the training rows the label fraction keeps (None:
    all): the subset is drawn when the cache is read, so a change in how it is drawn must not
    let a trial measured on other images pass as kept.

    The source enters by its weights, not its URI: a source retrained in place (the same run name,
    more epochs) is another starting point, and its trials must run again. The ``experiment``
    block is left out (the trial's arm, fraction and seed are already applied to its config), so
    adding an arm or a seed to an experiment keeps the trials it has.
    """
    rows = None if kept_rows is None else hashlib.sha256(np.asarray(kept_rows, dtype="<i8").tobytes()).hexdigest()
    what = {"config": tcfg.model_dump(mode="json", exclude={"experiment"}), "data": data_key,
            "source": source_weights_sha256, "train_rows": rows}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _trial_uri(out: str, name: str) -> str:
    return storage.join(out, "trials", f"{name}.json")


def _kept_trial(out: str, name: str, key: str) -> dict | None:
    """A finished trial of an earlier, interrupted run of this experiment, if it measured the same thing.

    Each trial is written as it finishes, so a stopped or crashed experiment loses at most the
    trials it was running. One written under other settings, data or source is run again.
    """
    try:
        t = storage.read_json(_trial_uri(out, name))
    except storage.NotFound:
        return None
    except StorageError as e:
        log.warning("%s: cannot read this finished trial (%s); it runs again", _trial_uri(out, name), e)
        return None
    return t if isinstance(t, dict) and t.get("trial_key") == key else None


def _collect(ref, metas: dict, results: dict, out: str) -> None:
    """A finished trial: written at once (so a later crash does not lose it), then recorded."""
    import ray

    res = ray.get(ref)
    m, name = metas.pop(ref)
    trial = {**m, **res}
    storage.write_json(_trial_uri(out, name), trial)
    results[(m["arm"], m["fraction"], m["seed"])] = trial
    log.info("trial %s f=%g seed=%d: test AUROC %.3f (best epoch %d, %.0fs)", m["arm"], m["fraction"], m["seed"],
             res["test_auroc"], res["best_epoch"], res["seconds"])


def _csv(rows: list[dict]) -> str:
    flat = []
    for r in rows:
        r = dict(r)
        pc = r.pop("paired_vs_scratch", None) or {}
        ci = pc.get("ci") or [None, None]
        mean_ci = r.pop("test_auroc_ci", None) or [None, None]
        flat.append({**r, "test_auroc_ci_low": mean_ci[0], "test_auroc_ci_high": mean_ci[1],
                     "diff_ci_low": ci[0], "diff_ci_high": ci[1], "diff_p_value": pc.get("p_value")})
    header = list(flat[0].keys()) if flat else ["arm"]
    return rows_to_csv(header, ([r.get(k) for k in header] for r in flat))  # arm names may start with '-' or '+'
