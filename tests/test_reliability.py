"""Reliability and security (issue 8): faults a night-time cluster really has, hostile configs, leaks.

Real parts only: the moto S3 server behind a fault-injecting proxy (``fault_proxy.py``), the
session's local Ray cluster, real BreastMNIST images and real DICOM files.

Where the proxy sits. ``flaky_s3`` points ``AWS_ENDPOINT_URL`` at the proxy *in this process*,
so everything the driver does — imports, the registry, storage calls, the driver side of
``prepare`` — goes through it. Workers of the session Ray cluster got the direct endpoint at
cluster start; the one test that needs Ray Data workers behind the proxy runs ``prepare`` in a
Ray task whose ``runtime_env`` carries the proxy's endpoint (tasks started inside inherit it).

Hostile images and manifests are covered by ``test_data_decode.py`` / ``test_data_manifest.py``
/ ``test_data_cache.py`` (see the behaviour table in the README); this file adds what they do not.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_proxy
import numpy as np
import pandas as pd
import pytest
import yaml
from configutil import branches, leaves, nest
from fault_proxy import matcher
from trainutil import in_background, wait_for

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.config.loading import load_config, validate_dict
from medxfer.errors import BundleError, ConfigError, MedxferError, StorageError

REPO = Path(__file__).resolve().parents[1]
flaky_s3 = fault_proxy.flaky_s3  # the fixture, used by name below


# ============================================================================ configs


def _wrong_type(schema: dict, prop: dict):
    """A value no branch of the field accepts: a mapping, or a list where mappings are allowed."""
    if any(b.get("type") == "object" for b in branches(schema, prop)):
        return [1, 2]
    return {"oops": 1}


def _out_of_range(schema: dict, prop: dict):
    """A value of the right kind that a bound, an enum or a pattern refuses (None: no such bound)."""
    for b in branches(schema, prop):
        if "enum" in b or "const" in b:
            return "no-such-choice"
        if "exclusiveMinimum" in b:
            return b["exclusiveMinimum"]
        if "minimum" in b:
            return b["minimum"] - 1
        if "exclusiveMaximum" in b:
            return b["exclusiveMaximum"]
        if "maximum" in b:
            return b["maximum"] + 1
        if "pattern" in b:
            return "../not a valid name!"
        if b.get("type") == "array" and b.get("minItems") and b.get("maxItems") == b["minItems"]:
            return [0.5] * (b["minItems"] + 1)  # fixed-length tuples
    return None


# Bounds enforced by validators rather than the schema: (path, bad value).
_VALIDATED = [
    (("data", "split_fractions"), [0.5, 0.5, 0.5]),
    (("train", "freeze"), "partial:0"),
    (("preprocess", "std"), [0.0]),
    (("preprocess", "mean"), [0.1, 0.2]),
    (("experiment", "fractions"), [0.0, 1.5]),
]


def _cases():
    schema = JobConfig.model_json_schema()
    wrong, bad = {}, {}
    for path, prop in leaves(schema):
        wrong[path] = _wrong_type(schema, prop)
        v = _out_of_range(schema, prop)
        if v is not None:
            bad[path] = v
    bad.update(dict(_VALIDATED))
    return wrong, bad


def _count_fields(model) -> int:
    from pydantic import BaseModel

    n = 0
    for f in model.model_fields.values():
        sub = f.annotation
        n += _count_fields(sub) if isinstance(sub, type) and issubclass(sub, BaseModel) else 1
    return n


def test_every_config_field_refuses_a_wrong_type_and_an_out_of_range_value():
    wrong, bad = _cases()
    assert len(wrong) == _count_fields(JobConfig) and len(bad) >= 60, (len(wrong), len(bad))  # all walked
    for cases in (wrong, bad):
        for path, value in cases.items():
            dotted = ".".join(path)
            with pytest.raises(ConfigError) as ei:
                validate_dict(nest(path, value), "job.yaml")
            lines = ei.value.problems
            parent = ".".join(path[:-1])
            # Cross-field validators report at the section and name the field in the text.
            assert any(line.startswith(f"job.yaml: {dotted}")
                       or (line.startswith(f"job.yaml: {parent}: ") and path[-1] in line) for line in lines), (
                dotted, value, lines)
    # Whole sections of the wrong type, and an unknown key in each section.
    for section in JobConfig.model_fields:
        if section == "name":
            continue
        with pytest.raises(ConfigError, match=rf"job.yaml: {section}: expected"):
            validate_dict({section: 5}, "job.yaml")
        with pytest.raises(ConfigError, match=rf"job.yaml: {section}.bogus_key: unknown key"):
            validate_dict({section: {"bogus_key": 1}}, "job.yaml")


def test_cli_reports_every_bad_field_at_once_without_a_traceback(tmp_path):
    wrong, bad = _cases()
    for label, cases in (("wrong", wrong), ("range", bad)):
        doc: dict = {}
        for path, value in cases.items():
            cur = doc
            for p in path[:-1]:
                cur = cur.setdefault(p, {})
            cur[path[-1]] = value
        f = tmp_path / f"{label}.yaml"
        f.write_text(yaml.safe_dump(doc))
        r = subprocess.run([sys.executable, "-m", "medxfer", "config", "validate", str(f)],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Traceback" not in r.stderr + r.stdout
        # preprocess.mean/std are checked against channels after the fields pass, i.e. in a second round.
        later = {("preprocess", "std"), ("preprocess", "mean")}
        missing = [".".join(p) for p in cases if p not in later and f"{f}: {'.'.join(p)}" not in r.stderr]
        assert not missing, (label, missing, r.stderr[-2000:])


def test_yaml_anchors_work_and_an_alias_bomb_is_refused_quickly(tmp_path):
    f = tmp_path / "anchors.yaml"
    f.write_text("name: &n night-run\nmodel:\n  name: *n\ntrain: &t {epochs: 3}\n")
    cfg = load_config(str(f))
    assert cfg.model.name == "night-run" and cfg.train.epochs == 3
    # "Billion laughs": 9 levels of 9 aliases = 387 million strings if expanded.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        p, c = chr(96 + i), chr(97 + i)
        lines.append(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]")
    doc = "bombs:\n" + "\n".join("  " + line for line in lines) + "\ndata:\n  classes: *i\n"
    f.write_text(doc)
    with pytest.raises(ConfigError) as ei:  # refused without expanding it; how fast: benchmarks/bench_data_plane.py
        load_config(str(f))
    text = str(ei.value)
    assert "bombs: unknown key" in text and "data.classes.0: expected a valid string; found a nested list" in text


# ============================================================================ hostile input the data tests leave out


def test_random_bytes_under_image_names_16bit_tiff_and_unknown_transfer_syntax(test_data):
    import cv2
    import pydicom

    from medxfer.data.decode import decode
    from medxfer.errors import ImageDecodeError

    junk = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for name in ("x.png", "x.jpg", "x.tif", "x.dcm", "x"):
        with pytest.raises(ImageDecodeError) as ei:
            decode(junk, name)
        assert ei.value.path == name and ei.value.reason
    g16 = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 50 % 65536).astype(np.uint16)
    ok, tif = cv2.imencode(".tiff", g16)
    assert ok
    d = decode(tif.tobytes(), "g16.tif")
    assert d.bits == 16 and d.pixels.shape == (30, 40) and d.pixels.min() == 0.0 and d.pixels.max() == 1.0
    ds = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    # Patch the file meta to a transfer syntax UID no decoder knows (same length, so offsets hold).
    odd = buf.getvalue().replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.9.9.9\0", 1)
    assert odd != buf.getvalue()
    with pytest.raises(ImageDecodeError, match=r"transfer syntax is not one pydicom knows \(its value is not shown") as e:
        decode(odd, "odd.dcm")
    assert "99999" not in str(e.value)  # an unregistered UID is text from the file: never quoted


def test_manifest_without_header_and_with_spaces_and_unicode_in_paths(tmp_path):
    from medxfer.config import DataConfig
    from medxfer.data.manifest import load_manifest
    from medxfer.errors import DataError

    rows = []
    for i in range(8):
        rel = f"Bilder ü/{'a' if i % 2 else 'b'} {i} – 画像.png"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"png")
        rows.append({"path": rel, "label": "a" if i % 2 else "b", "split": "train" if i < 6 else "val"})
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "m.csv", index=False)
    out = load_manifest(str(tmp_path / "m.csv"), DataConfig())
    assert out["path"].tolist() == [str(tmp_path / r["path"]) for r in rows]
    df.to_csv(tmp_path / "noheader.csv", index=False, header=False)
    with pytest.raises(DataError, match="missing required column"):
        load_manifest(str(tmp_path / "noheader.csv"), DataConfig())


# ============================================================================ bundles and checkpoints


class _Payload:
    """Unpickling this creates a file: proof that something was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_disguised_as_weights_is_refused_and_never_run(tmp_path):
    import hashlib

    import torch
    from evalutil import tiny_bundle

    from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle
    from medxfer.lifecycle.card import card_digest
    from medxfer.train.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(str(marker)))
    # 1) A bundle whose weights file is a pickle, with a card that vouches for it (sha matches).
    b = tmp_path / "bundle"
    tiny_bundle(str(b))
    (b / WEIGHTS).write_bytes(evil)
    card = json.loads((b / CARD).read_text())
    card["weights_sha256"] = hashlib.sha256(evil).hexdigest()
    card["card_sha256"] = card_digest(card)  # the card vouches for the payload, hash and all
    (b / CARD).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(str(b))
    # 2) Tampered weights with the original card: refused by the hash, with the fix named.
    tiny_bundle(str(tmp_path / "b2"))
    raw = bytearray((tmp_path / "b2" / WEIGHTS).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "b2" / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="re-copy the bundle"):
        load_bundle(str(tmp_path / "b2"))
    # 3) A training checkpoint whose optimizer state is a pickle payload: torch refuses it.
    from medxfer.models import create_model
    from medxfer.train.checkpoint import TrainState, save_checkpoint

    model = create_model("smallcnn", 2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = tmp_path / "ckpt"
    save_checkpoint(str(ck), model, opt, None, TrainState(epoch=1))
    torch.save(_Payload(str(marker)), ck / "optim.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(str(ck), model, opt, None)
    assert not marker.exists()


# ============================================================================ retrain lock


def test_second_tick_while_one_runs_exits_cleanly_and_touches_nothing(tmp_path, capsys):
    """The lock is taken before any work: a tick of another hour changes nothing while one runs.

    (A retry of the *same* tick waits for the earlier attempt's lease instead: test_retrain.)"""
    from medxfer.cli import main
    from medxfer.config.loading import dump_yaml
    from medxfer.lifecycle.lease import RunLock
    from medxfer.lifecycle.retrain import run_retrain

    root = tmp_path / "store"
    cfg = validate_dict({"name": "nightly", "model": {"name": "breast"}, "storage": {"root": str(root)},
                         "data": {"manifest": str(tmp_path / "nowhere.csv")}})
    lock_uri = storage.join(str(root), "locks", "retrain-breast")
    first = RunLock(lock_uri, 3600, "nightly-20261125T02")
    assert first.acquire()[0]
    before = {p: Path(p).read_bytes() for p in storage.list_files(str(root))}
    for tick in ("2026-11-25T03:00:00Z", "2026-11-25T03:30:00Z"):
        rec = run_retrain(cfg, tick)
        assert rec["status"] == "skipped" and not rec["promoted"]
        assert "nightly-20261125T02" in rec["reason"] and "does nothing" in rec["reason"]
    f = tmp_path / "job.yaml"
    f.write_text(dump_yaml(cfg))
    capsys.readouterr()
    assert main(["retrain", "--config", str(f), "--tick", "2026-11-25T04:00:00Z"]) == 0
    assert "skipped" in capsys.readouterr().out
    # Nothing written: no run folder, the first tick's lock exactly as it was.
    assert {p: Path(p).read_bytes() for p in storage.list_files(str(root))} == before
    assert first.holder()["run"] == "nightly-20261125T02"
    first.release()
    # A tick that fails (here: the manifest does not exist) releases the lock for the next one.
    with pytest.raises(MedxferError, match="nowhere.csv: not found"):
        run_retrain(cfg, "2026-11-25T05:00:00Z")
    assert RunLock(lock_uri, 3600, "probe").holder() is None


@pytest.mark.parametrize("damage", [b"{not json", b'{"run": "x", "owner": "y"}', b'{"expires_epoch": "soon"}'])
def test_damaged_retrain_lock_is_reported_and_taken_over_after_its_ttl(tmp_path, capsys, damage):
    """A lock object that is not JSON or lacks its expiry (a crash mid-write on a store without atomic PUT,
    a hand edit) is named in the skip message, counts as held for one TTL from when it was first seen, and
    is then taken over, instead of failing every later tick."""
    from medxfer.cli import main
    from medxfer.config.loading import dump_yaml
    from medxfer.lifecycle.lease import RunLock
    from medxfer.lifecycle.retrain import run_retrain

    root = tmp_path / "store"
    cfg = validate_dict({"name": "nightly", "model": {"name": "breast"}, "storage": {"root": str(root)},
                         "data": {"manifest": str(tmp_path / "nowhere.csv")}})
    lock_dir = root / "locks" / "retrain-breast"
    lock_dir.mkdir(parents=True)
    (lock_dir / "l00000001.json").write_bytes(damage)
    rec = run_retrain(cfg, "2026-11-25T02:00:00Z")
    assert rec["status"] == "skipped" and "l00000001.json" in rec["reason"] and "damaged" in rec["reason"]
    f = tmp_path / "job.yaml"
    f.write_text(dump_yaml(cfg))
    capsys.readouterr()
    assert main(["retrain", "--config", str(f), "--tick", "2026-11-25T03:00:00Z"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (lock_dir / "l00000001.json").read_bytes() == damage  # reported, not rewritten
    # One TTL after it was first seen, the next contender takes the lock over.
    short = RunLock(str(lock_dir), 0.5, "next")
    assert not short.acquire()[0]
    time.sleep(0.6)
    ok, record = short.acquire()
    assert ok and record["number"] == 2
    short.release()


def test_offline_imagenet_init_is_refused_before_ray_starts(tmp_path):
    """model.init: imagenet with an empty torch cache and no network: exit 2 with the fix, from the driver,
    before data preparation and before Ray starts (not three failed worker groups later)."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "ft", "data": {"manifest": str(tmp_path / "manifest.csv")},
                                   "model": {"backbone": "resnet18", "init": "imagenet"},
                                   "storage": {"root": str(tmp_path / "store")}}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.lower().endswith("_proxy")}
    env.update(TORCH_HOME=str(tmp_path / "torch"), https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    code = ("import sys, ray; from medxfer.cli import main; rc = main(sys.argv[1:]); "
            "print('ray initialized:', ray.is_initialized()); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "finetune", "--config", str(job)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "ImageNet weights of resnet18" in p.stderr and str(tmp_path / "torch") in p.stderr
    assert "model.init: scratch" in p.stderr and "Traceback" not in p.stderr
    assert "ray initialized: False" in p.stdout
    assert not (tmp_path / "store").exists()  # no run folder, no cache


# ============================================================================ disk errors


def test_unwritable_storage_paths_are_named(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    (root / "runs").write_text("a regular file where the runs folder should be\n")
    uri = storage.join(str(root), "runs", "r1", "result.json")
    with pytest.raises(StorageError, match=r"runs/r1/result\.json: could not write: Not a directory"):
        storage.write_json(uri, {"a": 1})
    with pytest.raises(StorageError, match=r"runs/r1: could not create the folder"):
        storage.makedirs(storage.join(str(root), "runs", "r1"))
    with pytest.raises(StorageError, match="could not create"):
        storage.put_if_absent(storage.join(str(root), "runs", "lock.json"), b"{}")
    assert (root / "runs").read_text().startswith("a regular file")  # nothing clobbered


# ============================================================================ flaky S3 (driver side)


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


# ============================================================================ Ray: shared small dataset


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below ``pid`` (from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = cmd.get(c, "")
            todo.append(c)
    return out


def _train_workers() -> list[int]:
    """Ray Train worker processes of *this* session's cluster (never another engineer's)."""
    return sorted(p for p, c in _descendants(os.getpid()).items() if c.startswith("ray::RayTrainWorker"))


def _latest_epoch(run) -> int:
    """The newest epoch whose checkpoint Ray Train has registered in run folder ``run`` (0: none yet)."""
    try:
        snap = storage.read_json(storage.join(str(run), "checkpoint_manager_snapshot.json"))
        return int((snap.get("latest_checkpoint_result") or {}).get("metrics", {}).get("epoch", 0))
    except (MedxferError, ValueError, AttributeError):
        return 0


_wait = wait_for


@pytest.fixture(scope="module")
def small_breast(test_data, tmp_path_factory) -> str:
    """A seeded, stratified slice of BreastMNIST (real images; 160 train / 48 val / 24 test) as PNG files."""
    from medxfer.data.importers import import_medmnist

    folder = tmp_path_factory.mktemp("breast")
    import_medmnist(test_data / "medmnist" / "breastmnist.npz", str(folder), "breastmnist")
    df = pd.read_csv(folder / "manifest.csv")
    parts = []
    for split, n in (("train", 160), ("val", 48), ("test", 24)):
        sub = df[df["split"] == split]
        for label in sorted(sub["label"].unique()):
            g = sub[sub["label"] == label]
            parts.append(g.sample(max(2, round(len(g) * n / len(sub))), random_state=0))
    pd.concat(parts).to_csv(folder / "small.csv", index=False)
    return str(folder / "small.csv")


def _job(root: str, manifest: str, name: str, **train) -> dict:
    return {
        "name": name,
        "data": {"manifest": manifest},
        "preprocess": {"size": 28},
        "model": {"backbone": "smallcnn", "name": "breast"},
        # A checkpoint every epoch: these tests kill processes between epochs and count what is redone.
        "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0, "augment": False,
                  "checkpoint": {"every_epochs": 1}, **train},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "use_gpu": False},
        "failure": {"max_failures": 2},
        "storage": {"root": root},
    }


# ============================================================================ Ray: worker loss, full disk


@pytest.mark.ray
@pytest.mark.slow
def test_worker_killed_mid_run_then_unwritable_checkpoint(ray_cluster, small_breast, tmp_path):
    """(1) SIGKILL one Ray Train worker after epoch 1's checkpoint is registered: FailureConfig restarts
    the group from that checkpoint; at most the epoch in progress is redone; the bundle verifies.
    (2) The same run continued while its next checkpoint cannot be written: a clear failure, and the
    last good checkpoint and bundle stay loadable."""
    from medxfer.lifecycle.bundle import load_bundle
    from medxfer.supervised.stage import run_training
    from medxfer.train.checkpoint import read_state, read_weights

    root = tmp_path / "store"
    cfg = validate_dict(_job(str(root), small_breast, "wk", epochs=4))
    run_dir = root / "runs" / "wk"
    th, box = in_background(lambda: run_training(cfg, "source"))
    done_at_kill = _wait(lambda: _latest_epoch(run_dir) or ("err" in box and -1), 600, "epoch 1's checkpoint")
    assert done_at_kill > 0, box.get("err")
    victims = _train_workers()
    assert len(victims) == 2, victims
    os.kill(victims[-1], signal.SIGKILL)
    th.join(600)
    assert "err" not in box, box.get("err")
    out = box["out"]
    assert done_at_kill < 4, "training finished before the kill; the test proved nothing"
    assert out["status"] == "complete" and out["epoch"] == 4
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]  # no epoch lost or duplicated
    state = read_state(str(run_dir / "epoch-0004"))
    assert len(state.run_start_epochs) == 2, state.run_start_epochs  # the worker group really restarted
    # ... and the command recorded it: when, why, from which epoch (result.json's "restarts").
    assert out["resumed"] and len(out["restarts"]) == 1 and out["restarts"][0]["reason"], out["restarts"]
    assert out["restarts"][0]["resumed_from_epoch"] == state.run_start_epochs[-1]
    restart_epoch = state.run_start_epochs[-1]
    # Epochs redone = (epoch in progress at the kill) - (epoch restarted from) <= 1.
    assert done_at_kill <= restart_epoch <= 4 and (done_at_kill + 1) - restart_epoch <= 1
    assert np.isfinite(out["final"]["val_loss"]) and out["final"]["train_loss"] < out["history"][0]["train_loss"]
    bundle = load_bundle(out["bundle"])
    assert bundle.card.metrics["epoch"] == out["best"]["epoch"]
    good_sha = bundle.card.weights_sha256

    # (2) Continue the run to epoch 5 with the epoch-5 checkpoint folder blocked by a regular file.
    (run_dir / "epoch-0005").write_text("not a folder\n")
    more = validate_dict(_job(str(root), small_breast, "wk", epochs=5) | {"failure": {"max_failures": 0}})
    with pytest.raises(MedxferError) as ei:
        run_training(more, "source")
    msg = str(ei.value)
    # One message naming the run, the blocked path, and how to resume — not Ray's "workers failed".
    assert "epoch-0005" in msg and "training failed" in msg and "re-run the same command" in msg, msg[-2000:]
    box["disk_error"] = (type(ei.value).__name__, isinstance(ei.value, MedxferError), msg.strip().splitlines()[-1])
    print("checkpoint write failure surfaces as:", box["disk_error"])
    assert _latest_epoch(run_dir) == 4
    assert read_state(str(run_dir / "epoch-0004")).epoch == 4 and read_weights(str(run_dir / "epoch-0004"))
    assert load_bundle(out["bundle"]).card.weights_sha256 == good_sha


# ============================================================================ Ray: driver killed


def _cluster_env(**extra) -> dict:
    import ray

    env = dict(os.environ)
    env.update(RAY_ADDRESS=ray.get_runtime_context().gcs_address, PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_driver_killed_rerun_resumes_and_no_credentials_are_written(ray_cluster, flaky_s3, s3_root, small_breast,
                                                                   tmp_path):
    """``medxfer source-train`` as its own process (a job driver on the session cluster, storage on S3
    behind the fault proxy at 5%), SIGKILLed after epoch 1's checkpoint; the same command again resumes.
    The job's Ray workers get the proxy's endpoint through the job's runtime_env (medxfer.runtime), so
    preprocessing, checkpoints, the bundle and result.json all go through the faults. The driver's
    environment holds a marker secret: it must appear in no object the job wrote, in none of its output,
    and never cross the wire."""
    from medxfer.lifecycle.bundle import CARD, WEIGHTS, load_bundle

    secret = "MARKER-SECRET-8c1f9e0a"
    flaky_s3.record = secret.encode()
    flaky_s3.configure(rate=0.05)
    job = tmp_path / "job.yaml"
    spec = _job(s3_root, small_breast, "dk", epochs=3)
    spec["scaling"]["num_workers"] = 1  # the driver is what dies here; one worker keeps the test cheap
    job.write_text(yaml.safe_dump(spec))
    run = storage.Layout(s3_root).run("dk")
    env = _cluster_env(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID="MARKER-KEYID")
    cmd = [sys.executable, "-m", "medxfer", "source-train", "--config", str(job)]
    log1 = tmp_path / "first.log"
    with open(log1, "wb") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        killed_after = _wait(lambda: _latest_epoch(run) or (p.poll() is not None and -1), 600, "epoch 1", step=0.5)
        assert killed_after > 0, log1.read_text()[-3000:]
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(60)
    assert killed_after < 3, "the run finished before the kill; the test proved nothing"
    assert not storage.exists(storage.join(run, "result.json"))
    # The killed driver's job is cleaned up by Ray: its workers go away (no two writers on one run).
    _wait(lambda: not _train_workers(), 120, "the killed job's workers to exit", step=1)

    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = storage.read_json(storage.join(run, "result.json"))
    assert res["resumed"] and res["status"] == "complete" and res["epoch"] == 3
    assert res["resumed_from_epoch"] >= killed_after and [h["epoch"] for h in res["history"]] == [1, 2, 3]
    b = load_bundle(res["bundle"])
    assert sorted(storage.list_dir(res["bundle"])) == sorted([CARD, WEIGHTS])
    assert b.card.run == "dk" and b.card.metrics["epoch"] == res["best"]["epoch"]
    assert flaky_s3.counts["faults"] >= 5, flaky_s3.counts  # the job really went through the faults

    # Credentials: in no object under the storage root, in neither invocation's output, never sent.
    flaky_s3.configure(rate=0.0)
    objects = storage.list_files(s3_root)
    assert len(objects) > 10
    assert not [o for o in objects if secret.encode() in storage.read_bytes(o)]
    assert secret not in log1.read_text(errors="replace") + r.stdout + r.stderr
    assert "MARKER-KEYID" not in storage.read_text(storage.join(run, "config.yaml")) + b.card.model_dump_json()
    assert flaky_s3.marker_seen == 0


@pytest.mark.ray
def test_secret_is_not_in_ray_session_logs(ray_cluster):
    import ray

    @ray.remote
    def pid():
        return os.getpid()

    ray.get(pid.remote())
    session = Path(ray._private.worker._global_node.get_session_dir_path())  # noqa: SLF001 - no public API
    needle = f'"AWS_SECRET_ACCESS_KEY": "{os.environ["AWS_SECRET_ACCESS_KEY"]}"'.encode()
    leaks = [str(f) for f in (session / "logs").rglob("*") if f.is_file() and needle in f.read_bytes()]
    assert not leaks, leaks


# ============================================================================ Ray: S3 faults inside workers


@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.slow
def test_flaky_s3_preprocess_in_ray_data_workers_skips_nothing(ray_cluster, flaky_s3, s3_root, small_breast):
    """``prepare`` on S3 images, run in a Ray task whose runtime_env points every Ray Data worker at
    the proxy: 10% of GETs, HEADs and PUTs fail; pyarrow's and boto3's retries absorb them, and no
    image is lost (a read error that outlived the retries would be counted as a bad file)."""
    import ray

    from medxfer.data.importers import write_many

    src = Path(small_breast).parent
    df = pd.read_csv(small_breast)
    out = storage.join(s3_root, "datasets", "breast")
    write_many([(storage.join(out, p), (src / p).read_bytes()) for p in df["path"]])
    storage.write_text(storage.join(out, "manifest.csv"), df.to_csv(index=False))
    n = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
    cfg = validate_dict({"name": "flaky", "data": {"manifest": storage.join(out, "manifest.csv"), "engine": "ray"},
                         "preprocess": {"size": 28}, "storage": {"root": s3_root}})
    flaky_s3.configure(rate=0.10, faults=("500", "503", "reset"), match=matcher({"GET", "PUT", "HEAD"}))

    @ray.remote(num_cpus=0.25)
    def run_prepare(cfg_json: str) -> dict:
        from medxfer.data.cache import prepare

        return prepare(JobConfig.model_validate_json(cfg_json)).card

    card = ray.get(run_prepare.options(runtime_env={"env_vars": {"AWS_ENDPOINT_URL": flaky_s3.url}})
                   .remote(cfg.model_dump_json()), timeout=600)
    counts = dict(flaky_s3.counts)
    assert counts.get("faults", 0) >= 20, counts  # the workers really went through the proxy
    assert card["bad_files"]["count"] == 0, card["bad_files"]["files"][:5]
    assert card["input_rows"] == len(df) and {s: card["counts"][s]["total"] for s in n} == n


# ============================================================================ no patient data in cards or logs


@pytest.mark.ray
def test_preprocess_of_dicoms_prints_and_stores_no_header_values(ray_cluster, test_data, tmp_path):
    import pydicom

    planted = {"PatientName": "ZZSECRET^PATIENT", "PatientID": "PID-55501234", "PatientBirthDate": "19010203",
               "InstitutionName": "ZZ-HOSPITAL-NAME", "AccessionNumber": "ACC99887766"}
    ds = pydicom.dcmread(test_data / "images" / "dicom" / "CT_small.dcm")
    for k, v in planted.items():
        setattr(ds, k, v)
    folder = tmp_path / "dicoms"
    folder.mkdir()
    rows = []
    for i in range(12):
        d = copy.deepcopy(ds)
        arr = d.pixel_array.copy()
        arr[:8, :8] = i * 50  # images differ a little
        d.PixelData = arr.tobytes()
        d.save_as(folder / f"img{i}.dcm", enforce_file_format=True)
        rows.append({"path": f"img{i}.dcm", "label": "a" if i % 2 else "b",
                     "split": "train" if i < 8 else ("val" if i < 10 else "test")})
    broken = copy.deepcopy(ds)
    del broken.PixelData
    broken.save_as(folder / "nopixels.dcm", enforce_file_format=True)
    rows.append({"path": "nopixels.dcm", "label": "a", "split": "train"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    root = tmp_path / "store"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"data": {"manifest": str(folder / "manifest.csv"), "max_bad_fraction": 0.2,
                                            "engine": "ray"},
                                   "preprocess": {"size": 32}, "storage": {"root": str(root)}}))
    r = subprocess.run([sys.executable, "-m", "medxfer", "-v", "preprocess", "--config", str(job)],
                       capture_output=True, text=True, env=_cluster_env(), cwd=tmp_path, timeout=600)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert "preprocessed 13 images" in r.stdout and "1 bad file(s) skipped" in r.stdout
    card_file = next(root.glob("cache/*/dataset.json"))
    card = json.loads(card_file.read_text())
    assert card["bad_files"]["count"] == 1 and "no pixel data" in card["bad_files"]["files"][0]["reason"]
    assert card["image_stats"]["formats"] == {"dicom": 12}
    for value in planted.values():
        for variant in {value, value.replace("^", " ")}:
            assert variant not in text, variant
            hits = [str(f) for f in root.rglob("*") if f.is_file() and variant.encode() in f.read_bytes()]
            assert not hits, (variant, hits)
