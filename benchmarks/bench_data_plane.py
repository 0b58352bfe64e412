"""Benchmark 7: the data plane's guards and readers, timed (the tests check only what they do).

- ``load_manifest`` on a 100,000-row CSV with patient IDs (paths resolved, a patient-grouped
  split made, every check but file existence);
- a PNG whose header claims 50000x50000 refused by ``decode`` (median of repeats): no pixel
  buffer is ever allocated, so this stays in milliseconds whatever the claimed size;
- ``import medmnist`` of BreastMNIST (780 PNGs + manifest) to S3, and reading those 780 files
  back with ``storage.read_many`` (the one reader of the cache and of ``predict``) against
  ``storage.read_bytes`` one file at a time. S3 is moto's server on loopback, so the times are
  the clients' own cost, not a real network's latency, which favours threads further.

    .venv/bin/python benchmarks/bench_data_plane.py [--rows 100000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import record, test_data_dir  # noqa: E402


def manifest_seconds(folder: Path, rows: int) -> float:
    from medxfer.config import DataConfig
    from medxfer.data.manifest import load_manifest

    df = pd.DataFrame({"path": [f"img/{i % 100}/{i}.png" for i in range(rows)],
                       "label": np.where(np.arange(rows) % 3 == 0, "pneumonia", "normal"),
                       "patient_id": [f"p{i // 3}" for i in range(rows)]})
    df.to_csv(folder / "manifest.csv", index=False)
    t0 = time.perf_counter()
    out = load_manifest(str(folder / "manifest.csv"), DataConfig(), check_files=False)
    elapsed = time.perf_counter() - t0
    assert len(out) == rows
    return elapsed


def _png_bomb(side: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100_000)) + chunk(
        b"IEND", b"")


def bomb_ms(repeats: int) -> float:
    from medxfer.data.decode import decode
    from medxfer.errors import ImageDecodeError

    bomb, times = _png_bomb(50000), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            decode(bomb, "bomb.png")
        except ImageDecodeError:
            times.append(time.perf_counter() - t0)
    assert len(times) == repeats, "the bomb was decoded"
    return statistics.median(times) * 1000


def s3_numbers() -> dict:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    try:
        from medxfer import storage
        from medxfer.data.importers import import_medmnist

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        storage.s3_client().create_bucket(Bucket=bucket)
        out = f"s3://{bucket}/datasets/breast"
        t0 = time.perf_counter()
        import_medmnist(test_data_dir() / "medmnist" / "breastmnist.npz", out, "breastmnist")
        t_import = time.perf_counter() - t0
        files = [f for f in storage.list_files(out) if f.endswith(".png")]
        t0 = time.perf_counter()
        blobs = storage.read_many(files)
        t_many = time.perf_counter() - t0
        t0 = time.perf_counter()
        one = [storage.read_bytes(f) for f in files]
        t_one = time.perf_counter() - t0
        assert blobs == one
    finally:
        server.stop()
    return {
        "import_medmnist_780_pngs_seconds": round(t_import, 2),
        "read_many_images_per_s": round(len(files) / t_many, 1),
        "read_bytes_one_at_a_time_images_per_s": round(len(files) / t_one, 1),
        "read_many_speedup": round(t_one / t_many, 2),
        "images": len(files),
    }


def alias_bomb_ms(folder: Path) -> float:
    """A job config holding a "billion laughs" alias bomb: milliseconds until it is refused."""
    from medxfer.config.loading import load_config
    from medxfer.errors import ConfigError

    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        p, c = chr(96 + i), chr(97 + i)
        lines.append(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]")
    path = folder / "bomb.yaml"
    path.write_text("bombs:\n" + "\n".join("  " + line for line in lines) + "\ndata:\n  classes: *i\n")
    t0 = time.perf_counter()
    try:
        load_config(str(path))
    except ConfigError:
        return (time.perf_counter() - t0) * 1000
    raise AssertionError("the alias bomb was accepted")


def oversized_card_ms(folder: Path) -> float:
    """A bundle whose card claims 200,000,000 outputs (hash made consistent): milliseconds until refused."""
    import json

    import torch

    from medxfer.config import PreprocessConfig
    from medxfer.errors import BundleError
    from medxfer.lifecycle.bundle import CARD, load_bundle, save_bundle
    from medxfer.lifecycle.card import card_digest
    from medxfer.models import create_model

    uri = folder / "bundle"
    torch.manual_seed(0)
    save_bundle(str(uri), create_model("smallcnn", 2, 1).state_dict(), {
        "task": "multiclass", "classes": ["a", "b"], "backbone": "smallcnn", "in_chans": 1, "num_outputs": 2,
        "stem": "standard", "preprocess": PreprocessConfig(size=28, channels=1).model_dump(mode="json")})
    card = json.loads((uri / CARD).read_text())
    card["num_outputs"] = 200_000_000
    card["card_sha256"] = card_digest(card)
    (uri / CARD).write_text(json.dumps(card))
    t0 = time.perf_counter()
    try:
        load_bundle(str(uri))
    except BundleError:
        return (time.perf_counter() - t0) * 1000
    raise AssertionError("the oversized card was accepted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest_s = manifest_seconds(Path(tmp), args.rows)
        alias_ms, card_ms = alias_bomb_ms(Path(tmp)), oversized_card_ms(Path(tmp))
    record("data_plane", {
        "what": "manifest checks, header-first refusal of a decompression bomb, S3 import and the many-file reader",
        "load_manifest_rows": args.rows,
        "load_manifest_seconds": round(manifest_s, 2),
        "bomb_refused_median_ms": round(bomb_ms(args.repeats), 2),
        "config_alias_bomb_refused_ms": round(alias_ms, 1),
        "bundle_card_with_200M_outputs_refused_ms": round(card_ms, 1),
        "s3_moto_loopback": s3_numbers(),
    })


if __name__ == "__main__":
    main()
