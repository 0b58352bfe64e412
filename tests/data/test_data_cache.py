"""The content-keyed cache end to end (``medxfer.data.cache``): Ray Data over a real S3 protocol, a
second run that hits, tensors equal to the pure function's, label fractions served from one cache."""

from __future__ import annotations

import numpy as np
import pytest

from medxfer import storage
from medxfer.cli import main
from medxfer.config.loading import load_config
from medxfer.data.cache import CACHE_VERSION, prepare
from medxfer.data.preprocess import preprocess_bytes
from medxfer.storage.s3 import split_s3

pytestmark = [pytest.mark.ray]


def _objects(prefix: str) -> dict[str, str]:
    """key -> ETag+LastModified of every object under an s3:// prefix (detects any rewrite)."""
    bucket, key = split_s3(prefix)
    out = {}
    for page in storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for o in page.get("Contents", []):
            out[o["Key"]] = f"{o['ETag']}@{o['LastModified'].isoformat()}"
    return out


@pytest.mark.slow
@pytest.mark.s3
def test_s3_pipeline_matches_pure_function_and_second_run_hits(test_data, s3_root, ray_cluster, tmp_path, capsys):
    ds_uri = storage.join(s3_root, "datasets", "breast")
    assert main(["import", "medmnist", "--npz", str(test_data / "medmnist/breastmnist.npz"), "--out", ds_uri]) == 0
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: cache-test\ndata:\n  manifest: {ds_uri}/manifest.csv\n  engine: ray\n"
        "preprocess:\n  size: 32\n  clahe: true\n  dtype: float16\n"
        f"storage:\n  root: {s3_root}\n"
    )
    capsys.readouterr()
    # 1) the CLI, end to end against the S3 endpoint in AWS_ENDPOINT_URL: a miss that decodes
    assert main(["preprocess", "--config", str(job)]) == 0
    out = capsys.readouterr().out
    assert "preprocessed 780 images" in out and "(train 546, val 78, test 156)" in out
    cfg = load_config(str(job))
    cache_root = storage.join(s3_root, "cache")
    before = _objects(cache_root)
    assert any(k.endswith("dataset.json") for k in before)

    # 2) the same config again: a hit, nothing decoded, nothing rewritten
    p = prepare(cfg)
    assert p.hit is True
    assert _objects(cache_root) == before
    assert p.card["counts"]["train"]["total"] == 546 and p.card["bad_files"]["count"] == 0
    assert p.classes == ["malignant", "normal_or_benign"] and p.num_outputs == 2 and p.spec.channels == 1  # 'auto': gray images
    assert p.spec == cfg.preprocess.model_copy(update={"channels": 1}) and p.card["version"] == CACHE_VERSION == 3
    assert p.uri.startswith("s3://") and p.card["image_stats"]["height"]["max"] == 28
    assert main(["preprocess", "--config", str(job)]) == 0
    assert "cache hit" in capsys.readouterr().out

    # 3) the cached tensors are exactly what the pure function makes from the same S3 bytes
    for split, n in (("train", 546), ("val", 78), ("test", 156)):
        X, y = p.numpy(split)
        paths = p.paths(split)
        assert X.shape == (n, 1, 32, 32) and X.dtype == np.float32 and y.dtype == np.int64 and len(paths) == n
        for i in range(0, n, 1 if split != "train" else 7):
            ref = preprocess_bytes(storage.read_bytes(paths[i]), p.spec, paths[i]).astype(np.float32)
            assert np.array_equal(X[i], ref), paths[i]
        assert y.tolist() == [int(storage.basename(storage.parent(q))) for q in paths]

    # 4) label_fraction is applied when reading: same key, fewer training rows, val untouched;
    #    the Ray Dataset view serves exactly the subsampled rows with the cached tensors.
    cfg_lf = load_config(str(job), ["data.label_fraction=0.1"])
    q = prepare(cfg_lf)
    assert q.hit and q.key == p.key
    counts, full = q.class_counts("train"), p.class_counts("train")
    assert all(abs(c - round(f * 0.1)) <= 1 for c, f in zip(counts, full, strict=True))
    assert q.class_counts("val") == p.class_counts("val")
    Xq, yq = q.numpy("train")
    assert len(Xq) == sum(counts) == len(yq)
    rows = q.dataset("train").take_all()
    by_path = {path: i for i, path in enumerate(q.paths("train"))}
    assert sorted(r["path"] for r in rows) == sorted(by_path)
    for r in rows:
        i = by_path[r["path"]]
        assert r["image"].shape == (1, 32, 32) and r["image"].dtype == np.float32
        assert np.array_equal(r["image"], Xq[i]) and int(r["label"]) == yq[i]
    batch = next(iter(q.dataset("train", with_path=False).iter_torch_batches(batch_size=8)))
    assert tuple(batch["image"].shape) == (8, 1, 32, 32) and str(batch["label"].dtype) == "torch.int64"

    # 5) a different spec is a different key
    cfg_b = load_config(str(job), ["preprocess.size=16"])
    from medxfer.data.cache import cache_key
    from medxfer.data.manifest import load_manifest

    df = load_manifest(None, cfg_b.data, check_files=False)
    assert cache_key(df, cfg_b, df.attrs["classes"]) != p.key
