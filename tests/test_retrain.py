"""Scheduled retraining: promote a better model, refuse a worse one, one run per tick, one run at a time."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from evalutil import breast_job, breast_manifest, tiny_bundle

from medxfer import storage
from medxfer.cli import main
from medxfer.config_io import dump_yaml
from medxfer.errors import ConfigError
from medxfer.registry import Registry
from medxfer.retrain import RunLock, parse_tick, run_name_for, run_retrain


def test_tick_names_and_lock(tmp_path):
    t = parse_tick("2026-11-25T02:17:45Z")
    assert run_name_for("nightly", t) == "nightly-20261125T02"
    assert run_name_for("n", parse_tick("2026-11-25T03:59:00+01:00")) == "n-20261125T02"
    with pytest.raises(ConfigError, match="ISO"):
        parse_tick("yesterday")
    uri = str(tmp_path / "locks")
    a, b = RunLock(uri, 3600, "a"), RunLock(uri, 3600, "b")
    assert a.acquire()[0]
    ok, holder = b.acquire()
    assert not ok and holder["run"] == "a"
    a.release()
    assert b.acquire()[0]
    # A crashed holder (expired lease) is taken over by the next tick.
    dead = RunLock(str(tmp_path / "l2"), 60, "dead")
    assert dead.acquire()[0]
    rec = storage.read_json(str(tmp_path / "l2" / "l00000001.json"))
    rec["expires_epoch"] = 0
    storage.write_json(str(tmp_path / "l2" / "l00000001.json"), rec)
    assert RunLock(str(tmp_path / "l2"), 60, "next").acquire()[0]
    # Racing ticks: exactly one gets the lock.
    uri3 = str(tmp_path / "l3")
    barrier = threading.Barrier(6)

    def take(i):
        barrier.wait()
        return RunLock(uri3, 3600, f"r{i}").acquire()[0]

    with ThreadPoolExecutor(6) as ex:
        assert sum(ex.map(take, range(6))) == 1


@pytest.fixture(scope="module")
def store(s3_server) -> str:
    bucket = f"medxfer-retrain-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


def test_retrain_promotes_better_refuses_worse(ray_cluster, store, test_data, tmp_path):
    manifest = breast_manifest(test_data, tmp_path / "breast")
    reg = Registry(store, "breast")
    weak = str(tmp_path / "weak")
    tiny_bundle(weak, classes=("0", "1"), size=28, seed=0)  # an untrained network as the champion
    weak_v = reg.register(weak, None, note="untrained")
    reg.promote(weak_v)

    # Sensitivity is noisy between unrelated models on 42 positives; the rule itself is unit-tested
    # in test_registry, so this run checks the margin on AUROC only.
    cfg = breast_job(store, manifest, name="nightly", promotion={"no_sensitivity_drop": False})
    rec = run_retrain(cfg, "2026-11-25T02:17:00Z")
    assert rec["run"] == "nightly-20261125T02"
    assert rec["promoted"] and rec["status"] == "promoted", rec["reason"]
    assert rec["champion_before"]["version"] == weak_v
    assert rec["champion_after"] == rec["challenger"]["version"] == reg.champion()["version"]
    better = rec["challenger"]["version"]
    assert rec["challenger"]["metrics"]["auroc"]["value"] > rec["champion_before"]["metrics"]["auroc"]["value"]
    run_uri = storage.Layout(store).run("nightly-20261125T02")
    assert storage.read_json(storage.join(run_uri, "decision.json"))["status"] == "promoted"
    assert storage.exists(storage.join(reg.uri, "decisions", "nightly-20261125T02.json"))

    # The same tick again (a retried CronJob): the recorded decision, no second training.
    again = run_retrain(cfg, "2026-11-25T02:45:00Z")
    assert again["repeated_tick"] and again["challenger"]["version"] == better
    assert len(reg.list_versions()) == 2

    # Another tick while a run holds the lock: exits cleanly, does nothing.
    other = RunLock(storage.join(storage.Layout(store).root, "locks", "retrain-breast"), 3600, "manual")
    assert other.acquire()[0]
    skipped = run_retrain(cfg, "2026-11-26T02:00:00Z")
    assert skipped["status"] == "skipped" and "manual" in skipped["reason"]
    assert not storage.exists(storage.join(storage.Layout(store).run("nightly-20261126T02"), "decision.json"))
    other.release()

    # A worse challenger (barely trained) is refused; the champion stays; the data cache is reused.
    worse = breast_job(store, manifest, name="nightly", train={"epochs": 1, "lr": 1e-7})
    rec2 = run_retrain(worse, "2026-11-26T02:00:00Z")
    assert rec2["status"] == "not-promoted" and not rec2["promoted"], rec2["reason"]
    assert "auroc" in rec2["reason"]
    assert reg.champion()["version"] == better and rec2["champion_after"] == better
    assert rec2["data"]["cache_hit"]

    # The CLI: exit 0 when not promoting too (a repeated tick here, so no training).
    f = tmp_path / "job.yaml"
    f.write_text(dump_yaml(worse))
    assert main(["retrain", "--config", str(f), "--tick", "2026-11-26T02:30:00Z"]) == 0
