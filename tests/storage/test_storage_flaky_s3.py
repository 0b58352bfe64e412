"""S3 that fails on the driver side (500/503, reset connections, an outage, a lost reply to a conditional
create): medxfer completes through retries or names the URI and the endpoint.

Real parts: the moto S3 server behind a fault-injecting proxy (``fault_proxy.py``); ``flaky_s3`` points
``AWS_ENDPOINT_URL`` at the proxy in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_proxy import matcher

from medxfer import storage
from medxfer.errors import StorageError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_flaky_s3_import_registry_and_storage_complete_through_retries(flaky_s3, s3_root, test_data, tmp_path):
    from evalutil import report, tiny_bundle

    from medxfer.config import DataConfig, PromotionSection
    from medxfer.data.importers import import_medmnist
    from medxfer.data.manifest import load_manifest
    from medxfer.lifecycle.model_registry import Registry

    flaky_s3.configure(rate=0.15)
    # Import: 780 PNGs + import.json + manifest.csv, each PUT through the proxy.
    out = storage.join(s3_root, "datasets", "breast")
    summary = import_medmnist(test_data / "medmnist" / "breastmnist.npz", out, "breastmnist")
    assert summary["images"] == 780
    df = load_manifest(storage.join(out, "manifest.csv"), DataConfig())  # HEADs every file, also flaky
    assert len(df) == 780 and set(df["split"]) == {"train", "val", "test"}
    assert len([f for f in storage.list_files(out) if f.endswith(".png")]) == 780
    # Registry: register (verified copy) and promote, twice.
    reg = Registry(s3_root, "breast")
    bundles = []
    for i in range(2):
        tiny_bundle(str(tmp_path / f"b{i}"), seed=i)
        bundles.append(str(tmp_path / f"b{i}"))
    v1 = reg.register(bundles[0], report(0.80, 0.9))
    assert reg.try_promote(v1, PromotionSection())["promoted"]
    v2 = reg.register(bundles[1], report(0.90, 0.9))
    assert reg.try_promote(v2, PromotionSection())["promoted"]
    assert reg.champion()["version"] == v2 and [v["version"] for v in reg.list_versions()] == [v1, v2]
    assert storage.read_json(storage.join(reg.uri, "champion.json"))["version"] == v2
    # Plain JSON round trips.
    for i in range(20):
        storage.write_json(storage.join(s3_root, "misc", f"{i}.json"), {"i": i})
    assert [storage.read_json(storage.join(s3_root, "misc", f"{i}.json"))["i"] for i in range(20)] == list(range(20))
    c = flaky_s3.counts
    assert c["faults"] >= 50 and c["fault_500"] and c["fault_503"] and c["fault_reset"], c


def test_s3_outage_error_names_the_uri_and_the_endpoint(flaky_s3, s3_root, monkeypatch):
    uri = storage.join(s3_root, "x.json")
    storage.write_json(uri, {"ok": True})
    monkeypatch.setattr("medxfer.storage.s3.DEFAULT_RETRIES", 1)  # keep the backoff short
    flaky_s3.configure(rate=1.0)
    for fault in ("500", "503", "reset"):
        flaky_s3.configure(faults=(fault,))
        for call in (lambda: storage.read_json(uri), lambda: storage.write_json(uri, {"ok": False}),
                     lambda: storage.exists(uri)):
            with pytest.raises(StorageError) as ei:
                call()
            msg = str(ei.value)
            assert msg.startswith(uri) and flaky_s3.url in msg, msg
    flaky_s3.configure(rate=0.0)
    assert storage.read_json(uri) == {"ok": True}  # the failed write never half-happened


def test_lost_reply_to_a_conditional_create_is_still_a_win(flaky_s3, s3_root):
    """A PUT If-None-Match that S3 applied but whose reply was lost (connection reset): the retry gets
    412. The caller did create the object; if it is told it lost, a retrain lock is held by nobody for
    promotion.lock_ttl_s (every tick skips), and a promotion that happened is reported as not made."""
    from medxfer.lifecycle.lease import RunLock

    flaky_s3.configure(rate=1.0, faults=("reset",), after=True, match=matcher({"PUT"}, r"/locks/"), limit=1)
    lock = RunLock(storage.join(s3_root, "locks", "retrain-m"), 3600, "tick-1")
    ok, holder = lock.acquire()
    assert flaky_s3.counts["fault_reset"] == 1
    assert ok, f"lost reply made the lock's own creator skip: holder {holder}"
