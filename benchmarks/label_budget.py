"""Benchmark 5 with the training budget chosen on validation: how many epochs each arm gets.

Tables 5 and 5c showed that the number of epochs per trial decides at which label fraction
transfer beats scratch (12 epochs: at 10 %; 30 epochs: at 25 %). Reading the budget off those
tables would be choosing it on the test set. Here every (arm, fraction) takes the budget with the
highest mean *validation* AUROC over its seeds, the choice a user can make without a test set,
and the table reports that budget's test AUROC, with the paired-bootstrap difference to scratch
(whose budget is chosen the same way).

It reads the experiments ``bench_label_efficiency.py`` ran, one per budget with the same
fractions, seeds and arms, from that benchmark's ``--work`` folder; it trains nothing:

    for e in 12 20 30; do .venv/bin/python benchmarks/bench_label_efficiency.py --fractions 0.1 0.25 \\
        --seeds 0 1 2 3 4 --epochs $e --arms scratch transfer ssl supervised+ssl --tag _${e}ep_5seeds; done
    .venv/bin/python benchmarks/label_budget.py --tags _12ep_5seeds _20ep_5seeds _30ep_5seeds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, RESULTS, record  # noqa: E402


def choose_budgets(by_budget: dict[int, list[dict]]) -> tuple[list[dict], dict]:
    """The trials of each (arm, fraction) at the budget with the best mean validation AUROC.

    ``by_budget`` maps epochs per trial to that experiment's trials. A cell must have the same
    seeds at every budget (else the means compare different draws); a tie goes to the shorter
    budget. Returns the chosen trials (each with its ``epochs``) and, per cell, the choice with
    every budget's validation and test means, so a reader sees what choosing on validation cost.
    """
    cells: dict[tuple[str, float], dict[int, list[dict]]] = {}
    for epochs, trials in by_budget.items():
        for t in trials:
            cells.setdefault((t["arm"], t["fraction"]), {}).setdefault(epochs, []).append(t)
    chosen, choices = [], {}
    for (arm, fraction), budgets in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seeds = {e: sorted(t["seed"] for t in ts) for e, ts in budgets.items()}
        if len(budgets) != len(by_budget) or len({tuple(s) for s in seeds.values()}) != 1:
            raise ValueError(f"{arm} at {fraction:g}: the budgets ran different seeds {seeds}; run every "
                             "budget with the same --seeds")
        val = {e: float(np.mean([t["val_auroc"] for t in ts])) for e, ts in budgets.items()}
        test = {e: float(np.mean([t["test_auroc"] for t in ts])) for e, ts in budgets.items()}
        best = min(val, key=lambda e: (-val[e], e))
        chosen += [{**t, "epochs": best} for t in budgets[best]]
        choices[f"{arm}@{fraction:g}"] = {"epochs": best, "val_auroc_mean": val, "test_auroc_mean": test}
    return chosen, choices


def choices_markdown(choices: dict) -> str:
    budgets = sorted({int(e) for c in choices.values() for e in c["val_auroc_mean"]})
    lines = ["| arm | labels | chosen | " + " | ".join(f"{e} ep: val / test" for e in budgets) + " |",
             "|---|---|---|" + "---|" * len(budgets)]
    for key, c in choices.items():
        arm, fraction = key.rsplit("@", 1)
        lines.append(f"| {arm} | {float(fraction):.0%} | {c['epochs']} | " + " | ".join(
            f"{c['val_auroc_mean'][e]:.3f} / {c['test_auroc_mean'][e]:.3f}" for e in budgets) + " |")
    return "\n".join(lines)


def main() -> None:
    from medxfer.experiments.label_efficiency import summarize, table_markdown

    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", nargs="+", required=True, help="the --tag of each budget's experiment")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "label-efficiency"))
    args = ap.parse_args()
    work = Path(args.work)

    by_budget, seeds = {}, None
    for tag in args.tags:
        res = work / "runs" / f"label-efficiency-{args.size}{tag}" / "label-efficiency" / "label_efficiency.json"
        if not res.exists():
            sys.exit(f"{res}: no finished experiment; run bench_label_efficiency.py --tag {tag} first")
        r = json.loads(res.read_text())
        epochs = int(r["config"]["train"]["epochs"])
        if epochs in by_budget:
            sys.exit(f"two experiments with {epochs} epochs per trial ({tag}); give one per budget")
        by_budget[epochs] = r["trials"]
        seeds = r["config"]["experiment"]["seeds"]
    chosen, choices = choose_budgets(by_budget)
    rows = summarize(chosen)
    title = (f"label-efficiency-{args.size}, budget chosen on validation from {sorted(by_budget)} epochs, "
             f"{len(seeds)} seeds")
    md = "\n".join([table_markdown(rows, title).strip(), "",
                    "Each cell's budget: mean validation / test AUROC over seeds at each budget.", "",
                    choices_markdown(choices)])
    (RESULTS / "label_efficiency_budget.md").write_text(md + "\n")
    record("label_efficiency_budget", {
        "what": f"BreastMNIST {args.size}px, ResNet-18, epochs per trial chosen per arm and fraction by mean "
                "validation AUROC, best epoch on val; test AUROC",
        "experiments": args.tags,
        "choices": choices,
        "summary": rows,
    }, work=work)
    print(md)


if __name__ == "__main__":
    main()
