"""The label-efficiency experiment: pure pieces without Ray, then a tiny real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evalutil import breast_job, breast_manifest, tiny_bundle

from medxfer.config import ExperimentArm
from medxfer.experiments.label_efficiency import (
    run_label_efficiency,
    summarize,
    table_markdown,
    trial_config,
)


def test_trial_config_applies_arm_fraction_and_seed(tmp_path):
    cfg = breast_job(str(tmp_path), "m.csv")
    arm = ExperimentArm(name="probe", set={"train.freeze": "backbone", "train.lr": 0.01})
    t = trial_config(cfg, arm, 0.25, 2)
    assert (t.train.freeze, t.train.lr, t.train.seed) == ("backbone", 0.01, 2)
    assert (t.data.label_fraction, t.data.label_seed) == (0.25, 2)
    assert t.name.endswith("-probe-f0.25-s2")
    assert cfg.train.freeze == "none"  # the base config is untouched
    # Arm names may hold characters a run name may not ("supervised+ssl").
    assert trial_config(cfg, ExperimentArm(name="supervised+ssl"), 1.0, 0).name.endswith("-supervised-ssl-f1-s0")


def test_trial_config_names_the_arm_in_errors(tmp_path):
    from medxfer.errors import ConfigError

    cfg = breast_job(str(tmp_path), "m.csv")
    with pytest.raises(ConfigError, match="experiment arm 'bad'.*train.lrr: unknown key"):
        trial_config(cfg, ExperimentArm(name="bad", set={"train.lrr": 1}), 1.0, 0)


def test_summarize_means_spreads_and_difference_to_scratch():
    trials = [
        {"arm": "scratch", "fraction": 0.1, "test_auroc": 0.6},
        {"arm": "scratch", "fraction": 0.1, "test_auroc": 0.7},
        {"arm": "transfer", "fraction": 0.1, "test_auroc": 0.8},
        {"arm": "transfer", "fraction": 0.1, "test_auroc": 0.9},
    ]
    rows = {r["arm"]: r for r in summarize(trials)}
    assert rows["scratch"]["test_auroc_mean"] == pytest.approx(0.65)
    assert rows["scratch"]["diff_vs_scratch"] is None
    assert rows["transfer"]["diff_vs_scratch"] == pytest.approx(0.2)
    assert rows["transfer"]["test_auroc_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    md = table_markdown(list(rows.values()), "t")
    assert "| transfer | 0.850 ± 0.071 (+0.200) |" in md


@pytest.mark.slow
@pytest.mark.ray
def test_label_efficiency_runs_arms_fractions_seeds(ray_cluster, test_data, tmp_path):
    manifest = breast_manifest(test_data, tmp_path / "breast")
    source = str(tmp_path / "source-bundle")
    tiny_bundle(source)
    cfg = breast_job(str(tmp_path / "root"), manifest, name="le", train={"epochs": 2},
                     experiment={"fractions": [0.25, 1.0], "seeds": [0, 1],
                                 "arms": [{"name": "scratch", "set": {"model.init": "scratch"}},
                                          {"name": "probe", "set": {"model.init": source,
                                                                    "train.freeze": "backbone"}}]})
    res = run_label_efficiency(cfg, out=str(tmp_path / "out"))
    trials = res["trials"]
    assert len(trials) == 2 * 2 * 2
    by = {(t["arm"], t["fraction"], t["seed"]): t for t in trials}
    # The subsample really is a fraction of the 546 training images, stratified and seeded.
    assert by[("scratch", 1.0, 0)]["train_images"] == 546
    assert 120 <= by[("scratch", 0.25, 0)]["train_images"] <= 150
    assert all(0.0 <= t["test_auroc"] <= 1.0 and 1 <= t["best_epoch"] <= 2 for t in trials)
    # Different seeds give different models.
    assert by[("scratch", 1.0, 0)]["test_auroc"] != by[("scratch", 1.0, 1)]["test_auroc"]
    out = tmp_path / "out"
    saved = json.loads((out / "label_efficiency.json").read_text())
    assert len(saved["summary"]) == 4
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert "| probe |" in (out / "table.md").read_text()

    # Each trial was written as it finished; the same experiment again keeps them all and runs none.
    files = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.json")}
    assert len(files) == 8
    again = run_label_efficiency(cfg, out=str(out))
    assert [t["test_auroc"] for t in again["trials"]] == [t["test_auroc"] for t in trials]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.json")} == files
    # A lost trial and one written under other settings run again; the rest are kept.
    lost, stale = "le-scratch-f0.25-s0.json", "le-probe-f1-s1.json"
    (out / "trials" / lost).unlink()
    t = json.loads((out / "trials" / stale).read_text())
    (out / "trials" / stale).write_text(json.dumps({**t, "trial_key": "written-under-other-settings"}))
    run_label_efficiency(cfg, out=str(out))
    now = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.json")}
    assert {n for n in now if now[n] != files.get(n)} == {lost, stale}


def test_a_trial_key_changes_with_what_the_trial_measures(tmp_path):
    """Kept trials are matched by config, data, the labelled training rows and source weights: the
    source enters by its weights, so a source retrained under the same URI sends its trials to run
    again; another way of drawing the label subset sends them too."""
    from medxfer.experiments.label_efficiency import trial_key

    cfg = breast_job(str(tmp_path), "m.csv")
    arm = ExperimentArm(name="scratch", set={"model.init": "scratch"})
    base = trial_key(trial_config(cfg, arm, 0.25, 0), "data1", None)
    assert base == trial_key(trial_config(cfg, arm, 0.25, 0), "data1", None)
    assert len({base, trial_key(trial_config(cfg, arm, 0.25, 1), "data1", None),
                trial_key(trial_config(cfg, arm, 0.5, 0), "data1", None),
                trial_key(trial_config(cfg, ExperimentArm(name="scratch", set={"train.lr": 0.01}), 0.25, 0),
                          "data1", None),
                trial_key(trial_config(cfg, arm, 0.25, 0), "data2", None),
                trial_key(trial_config(cfg, arm, 0.25, 0), "data1", "weights-a"),
                trial_key(trial_config(cfg, arm, 0.25, 0), "data1", "weights-b"),
                trial_key(trial_config(cfg, arm, 0.25, 0), "data1", None, np.array([0, 2, 5])),
                trial_key(trial_config(cfg, arm, 0.25, 0), "data1", None, np.array([0, 2, 6]))}) == 9
    # One more arm or seed in the experiment leaves the trials it already has as they were.
    grown = cfg.model_copy(update={"experiment": cfg.experiment.model_copy(update={"seeds": [0, 1, 2, 3]})})
    assert trial_key(trial_config(grown, arm, 0.25, 0), "data1", None) == base


@pytest.mark.slow
@pytest.mark.ray
def test_a_trial_and_finetune_with_the_same_settings_end_with_the_same_weights(ray_cluster, test_data, tmp_path):
    """One engine: the experiment's trial (Ray Train local mode, in one process) and the finetune
    command's run (a Ray Train worker group) take the same steps, so their best weights are equal."""
    import torch

    from medxfer.data.cache import prepare
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.supervised.planning import plan_trial
    from medxfer.supervised.stage import run_training, trial_weights

    manifest = breast_manifest(test_data, tmp_path / "breast")
    cfg = breast_job(str(tmp_path / "root"), manifest, name="same", data={"label_fraction": 0.5},
                     train={"epochs": 3, "batch_size": 32, "augment": True, "seed": 3, "warmup_epochs": 1})
    result = run_training(cfg, "finetune")
    prepared = prepare(cfg)
    trial = trial_weights(cfg, plan_trial(cfg, prepared))
    bundle = load_bundle(result["bundle"]).state_dict
    assert trial["best_epoch"] == result["best"]["epoch"]
    assert [h["val_auroc"] for h in trial["history"]] == [h["val_auroc"] for h in result["history"]]
    assert bundle.keys() == trial["weights"].keys()
    assert all(torch.equal(bundle[k], trial["weights"][k]) for k in bundle)


def test_paired_difference_between_arms_uses_the_same_test_resamples():
    from medxfer.experiments.label_efficiency import paired_difference_vs

    rng = np.random.default_rng(0)
    y = (rng.random(150) < 0.3).astype(int)
    noise = [rng.random(150) for _ in range(3)]
    good = [{"seed": s, "test_labels": y.tolist(), "test_scores": (0.6 * y + 0.4 * n).tolist()}
            for s, n in enumerate(noise)]
    base = [{"seed": s, "test_labels": y.tolist(), "test_scores": n.tolist()} for s, n in enumerate(noise)]
    d = paired_difference_vs(good, base, n_boot=300)
    assert d["seeds"] == 3 and d["difference"] > 0.3 and d["ci"][0] > 0.2 and d["p_value"] < 0.01
    same = paired_difference_vs(base, base, n_boot=300)
    assert same["difference"] == 0.0 and same["ci"] == [0.0, 0.0]
    assert paired_difference_vs([{"seed": 0, "test_scores": None}], base) is None


def test_summary_rows_carry_intervals_and_read_as_one_sentence():
    from medxfer.evaluate.plots import label_efficiency_png
    from medxfer.experiments.label_efficiency import reading, summarize, test_auroc

    rng = np.random.default_rng(1)
    y = (rng.random(156) < 0.3).astype(int)
    trials = []
    for s in range(3):
        noise = rng.random(156)
        for arm, signal in (("scratch", 0.1), ("transfer", 0.6), ("same", 0.1)):
            trials.append({"arm": arm, "fraction": 0.1, "seed": s, "train_images": 55, "test_labels": y.tolist(),
                           "test_scores": (signal * y + noise).tolist()})
    for t in trials:
        t["test_auroc"] = test_auroc("multiclass", np.stack([1 - np.array(t["test_scores"]),
                                                             np.array(t["test_scores"])], 1), y)
    rows = {r["arm"]: r for r in summarize(trials)}
    for r in rows.values():  # the interval of the seed-mean AUROC (test images resampled) holds the mean
        assert r["test_auroc_ci"][0] < r["test_auroc_mean"] < r["test_auroc_ci"][1] and r["train_images"] == 55
    line = reading(rows["transfer"])
    d = rows["transfer"]["paired_vs_scratch"]
    assert line == (f"at 10% of the labels (55 training images, 3 seeds), transfer is {d['difference']:+.3f} AUROC "
                    f"over scratch (95% CI {d['ci'][0]:+.3f} to {d['ci'][1]:+.3f}): transfer helped")
    assert d["ci"][0] > 0
    assert reading(rows["same"]).endswith("no significant difference between same and scratch")
    assert reading(rows["scratch"]) is None  # the baseline is not compared with itself
    assert label_efficiency_png(list(rows.values()), "t")[:4] == b"\x89PNG"
    # Trials without test scores (older results) still plot, with the spread over seeds.
    bare = [{k: v for k, v in t.items() if k not in ("test_scores", "test_labels")} for t in trials]
    rows = summarize(bare)
    assert all(r["test_auroc_ci"] is None and r["paired_vs_scratch"] is None for r in rows)
    assert label_efficiency_png(rows, "t")[:4] == b"\x89PNG" and reading(rows[0]) is None
