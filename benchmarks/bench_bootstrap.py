"""Bootstrap intervals: scipy.stats.bootstrap (what medxfer uses) against a hand-written weighted bootstrap.

The question this answers: is hand-written resampling code needed for speed? The baseline is the
vectorised weighted bootstrap medxfer used before (every statistic rewritten for a matrix of
per-example resample counts, all resamples in a few matrix products); it is kept here, and only
here, as the baseline. The candidates are medxfer's ``metrics.bootstrap.intervals`` on the metric
registry's statistics: ``scipy.stats.bootstrap``, paired, with the percentile and with the BCa method.

A realistic evaluation: a binary test set (BreastMNIST's test split has 156 images; 5,000 is the
most ``evaluate.engine: auto`` scores in-process; larger sets show how BCa's leave-one-out pass
grows), 1000 resamples, AUROC plus the seven binary metrics at a threshold. Each method runs
``--repeats`` times and the fastest run counts (the machine is shared; the fastest run is the
least disturbed). The percentile intervals of the two implementations are also compared: both draw
the same resamples from the same seed, so they must agree.

    .venv/bin/python benchmarks/bench_bootstrap.py [--sizes 156 2000 5000 20000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import record  # noqa: E402
from medxfer.metrics import METRICS  # noqa: E402
from medxfer.metrics.bootstrap import Resampling, intervals  # noqa: E402
from medxfer.metrics.views import binary_columns  # noqa: E402

BINARY = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy")


# ----------------------------------------------------------------------------- the hand-written baseline


def _counts(n: int, n_boot: int, seed: int):
    """Count matrices (b, n) of seeded resamples, in chunks of about 2M elements."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 2_000_000 // n))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _weighted_auroc(W, y, score):
    order = np.argsort(score, kind="mergesort")
    s, pos, Ws = score[order], y[order], W[:, order]
    new_group = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], len(s)] - 1
    neg_cum0 = np.hstack([np.zeros((W.shape[0], 1)), np.cumsum(Ws * ~pos, axis=1)])
    below = neg_cum0[:, starts[gid]]
    tied = neg_cum0[:, ends[gid] + 1] - below
    return _div((Ws * pos * (below + 0.5 * tied)).sum(1), (Ws * pos).sum(1) * (Ws * ~pos).sum(1))


def _weighted_binary(W, y, pred):
    tp, fp, tn, fn = W @ (y & pred), W @ (~y & pred), W @ (~y & ~pred), W @ (y & ~pred)
    sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
    return {"sensitivity": sens, "specificity": spec, "ppv": _div(tp, tp + fp), "npv": _div(tn, tn + fn),
            "f1": _div(2 * tp, 2 * tp + fp + fn), "accuracy": _div(tp + tn, tp + fp + tn + fn),
            "balanced_accuracy": (sens + spec) / 2}


def hand_written(y, score, pred, n_boot: int, seed: int) -> dict:
    values: dict[str, list] = {k: [] for k in ("auroc", *BINARY)}
    for W in _counts(len(y), n_boot, seed):
        values["auroc"].append(_weighted_auroc(W, y, score))
        for k, v in _weighted_binary(W, y, pred).items():
            values[k].append(v)
    out = {}
    for k, parts in values.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        out[k] = [float(x) for x in np.quantile(v, [0.025, 0.975])]
    return out


# ----------------------------------------------------------------------------- medxfer (scipy)


def with_scipy(y, score, pred, n_boot: int, seed: int, bca_max_n: int) -> dict:
    stats = {"auroc": (METRICS["auroc"].statistic, binary_columns(y, score))}
    stats.update({k: (METRICS[k].statistic, (y, pred)) for k in BINARY})
    return {k: v["ci"] for k, v in intervals(stats, Resampling(n_boot, seed, bca_max_n=bca_max_n)).items()}


# ----------------------------------------------------------------------------- the benchmark


def test_set(n: int, seed: int = 0):
    """Binary scores like a fine-tuned model's: a quarter positives, AUROC about 0.9, float32 precision."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.27
    score = (1 / (1 + np.exp(-(rng.normal(size=n) * 1.2 + 1.09 * (2 * y - 1))))).astype(np.float32)
    return y, score.astype(np.float64), score >= 0.5


def fastest(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), result


def one_size(n: int, resamples: int, repeats: int, seed: int) -> dict:
    """Every method on one test set of ``n`` images: fastest and median seconds, and the AUROC interval."""
    y, score, pred = test_set(n, seed)
    runs = {
        "hand_written_percentile": partial(hand_written, y, score, pred, resamples, seed),
        "scipy_percentile": partial(with_scipy, y, score, pred, resamples, seed, 0),
        "scipy_bca": partial(with_scipy, y, score, pred, resamples, seed, n),
    }
    row: dict = {"images": n, "positives": int(y.sum()), "auroc": METRICS["auroc"].point(y, score)}
    cis = {}
    for name, fn in runs.items():
        times = 1 if name == "scipy_bca" and n > 5000 else repeats
        best, median, cis[name] = fastest(fn, times)
        row[name] = {"seconds_fastest": round(best, 3), "seconds_median": round(median, 3), "runs": times,
                     "auroc_ci": [round(c, 4) for c in cis[name]["auroc"]]}
    row["percentile_cis_max_abs_difference"] = max(
        abs(a - b) for k in cis["scipy_percentile"]
        for a, b in zip(cis["scipy_percentile"][k], cis["hand_written_percentile"][k], strict=True))
    base = row["hand_written_percentile"]["seconds_fastest"]
    row["scipy_percentile_over_hand_written"] = round(row["scipy_percentile"]["seconds_fastest"] / base, 2)
    row["scipy_bca_over_hand_written"] = round(row["scipy_bca"]["seconds_fastest"] / base, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[156, 2000, 5000, 20000])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(one_size(n, args.resamples, args.repeats, args.seed))
        print(rows[-1], flush=True)
    record("bootstrap", {
        "what": (f"95% bootstrap intervals of AUROC and 7 binary metrics, {args.resamples} paired resamples, "
                 "binary test sets of the sizes below (a quarter positives)"),
        "resamples": args.resamples,
        "sizes": rows,
    })


if __name__ == "__main__":
    main()
