"""The Ray Data pipeline and the content-keyed cache, on a real local Ray and a real S3 protocol."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from medxfer import storage
from medxfer.cli import main
from medxfer.config_io import load_config
from medxfer.data.cache import CACHE_VERSION, PreparedData, prepare
from medxfer.data.preprocess import preprocess_bytes
from medxfer.errors import ConfigError, DataError, MedxferError, StorageError

pytestmark = [pytest.mark.ray]


def _objects(prefix: str) -> dict[str, str]:
    """key -> ETag+LastModified of every object under an s3:// prefix (detects any rewrite)."""
    bucket, key = storage.split_s3(prefix)
    out = {}
    for page in storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for o in page.get("Contents", []):
            out[o["Key"]] = f"{o['ETag']}@{o['LastModified'].isoformat()}"
    return out


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
    assert p.classes == ["0", "1"] and p.num_outputs == 2 and p.spec.channels == 1  # 'auto': gray images
    assert p.spec == cfg.preprocess.model_copy(update={"channels": 1}) and p.card["version"] == CACHE_VERSION == 2
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


def _mini_dataset(test_data, root) -> str:
    """12 real images (PNG, JPEG, DICOM) + a corrupt and an empty file, with a manifest."""
    srcs = sorted((test_data / "images").rglob("*"))
    srcs = [s for s in srcs if s.is_file() and "LICENSE" not in s.name and "J2K" not in s.name
            and "jpeg2k" not in s.name][:12]
    rows = []
    (root / "img").mkdir(parents=True)
    for i, s in enumerate(srcs):
        shutil.copy(s, root / "img" / f"{i}{s.suffix}")
        rows.append({"path": f"img/{i}{s.suffix}", "label": "a" if i % 2 else "b",
                     "split": "train" if i < 8 else ("val" if i < 10 else "test")})
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (root / "img" / "empty.jpg").write_bytes(b"")
    rows += [{"path": "img/corrupt.png", "label": "a", "split": "train"},
             {"path": "img/empty.jpg", "label": "b", "split": "train"}]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root / "manifest.csv")


def test_bad_files_policy_partial_cache_and_rebuild(test_data, ray_cluster, tmp_path, capsys):
    manifest = _mini_dataset(test_data, tmp_path / "ds")
    base = [f"data.manifest={manifest}", f"storage.root={tmp_path / 'store'}", "preprocess.size=24",
            "preprocess.channels=3"]
    with pytest.raises(DataError, match=r"2 of 14 image\(s\) \(14\.3%\) could not be decoded.*max_bad_fraction"):
        prepare(load_config(None, base))
    with pytest.raises(DataError, match=r"2 of 14 image\(s\) could not be decoded \(data.bad_files=fail\)"):
        prepare(load_config(None, [*base, "data.bad_files=fail"]))
    cfg = load_config(None, [*base, "data.max_bad_fraction=0.2"])
    p = prepare(cfg)
    assert not p.hit
    bad = {b["path"].rsplit("/", 1)[1]: b["reason"] for b in p.card["bad_files"]["files"]}
    assert set(bad) == {"corrupt.png", "empty.jpg"}
    assert "corrupt or truncated PNG" in bad["corrupt.png"] and "empty" in bad["empty.jpg"]
    assert p.card["counts"]["train"]["total"] == 8 and p.card["input_rows"] == 14
    assert p.card["image_stats"]["formats"].keys() >= {"png", "jpeg", "dicom"}
    X, y = p.numpy("train")
    assert X.shape == (8, 3, 24, 24) and np.isfinite(X).all()
    # The failed attempts left nothing half-written behind as a "complete" cache.
    assert storage.list_dir(p.uri) == ["dataset.json", p.card["shards"]]

    # A cache folder without dataset.json is incomplete: it is rebuilt, stale shards removed.
    storage.delete(storage.join(p.uri, "dataset.json"))
    p2 = prepare(cfg)
    assert not p2.hit and p2.card["shards"] != p.card["shards"]
    assert storage.list_dir(p2.uri) == sorted(["dataset.json", p2.card["shards"]])
    assert np.array_equal(p2.numpy("train")[0], X)
    again = PreparedData.open(p2.uri)
    assert again.hit and again.key == p2.key and again.image_shape == (3, 24, 24)
    # The CLI with local paths finds the same cache.
    job = tmp_path / "job.yaml"
    job.write_text(
        f"data:\n  manifest: {manifest}\n  max_bad_fraction: 0.2\npreprocess:\n  size: 24\n  channels: 3\n"
        f"storage:\n  root: {tmp_path / 'store'}\n"
    )
    capsys.readouterr()
    assert main(["preprocess", "--config", str(job)]) == 0
    assert f"cache hit: {p2.uri}" in capsys.readouterr().out


def test_missing_files_fail_before_any_decoding(test_data, ray_cluster, tmp_path):
    manifest = _mini_dataset(test_data, tmp_path / "ds")
    df = pd.read_csv(manifest)
    df.loc[0, "path"] = "img/nope.png"
    df.to_csv(manifest, index=False)
    store = tmp_path / "store"
    with pytest.raises(DataError, match=r"1 of 14 image file\(s\) do not exist"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}"]))
    assert not (store / "cache").exists() or not any((store / "cache").rglob("*.parquet"))


def test_numpy_reader_needs_no_ray(tmp_path):
    """A cache built elsewhere is readable with pyarrow alone (evaluation on a laptop)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "cache" / "k"
    (root / "shards-x" / "val").mkdir(parents=True)
    imgs = np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
    pq.write_table(
        pa.table({"row": [5, 3], "path": ["b.png", "a.png"], "label": ["y", "x"],
                  "image": [imgs[0].tobytes(), imgs[1].tobytes()]}),
        root / "shards-x" / "val" / "part-000000003.parquet",
    )
    card = {"key": "k", "shards": "shards-x", "classes": ["x", "y"], "task": "multiclass",
            "spec": {"size": 8}, "image_shape": [1, 8, 8], "dtype": "float32",
            "counts": {"train": {"total": 0, "per_class": {}}, "val": {"total": 2, "per_class": {"x": 1, "y": 1}},
                       "test": {"total": 0, "per_class": {}}}}
    storage.write_json(str(root / "dataset.json"), card)
    p = PreparedData.open(str(root))
    X, y = p.numpy("val")
    assert np.array_equal(X, imgs[::-1]) and y.tolist() == [0, 1]  # ordered by manifest row
    assert p.paths("val") == ["a.png", "b.png"] and p.class_counts("val") == [1, 1]
    assert p.numpy("test")[0].shape == (0, 1, 8, 8)


# ----------------------------------------------------------------------------- colour, failures


def _colour_and_gray(test_data, root) -> tuple[str, str]:
    """Two manifests of real images: colour (ultrasound RGB, YBR and palette DICOMs, an RGB PNG), and gray."""
    images = test_data / "images"
    sets = {"colour": ["dicom/examples_rgb_color.dcm", "dicom/examples_ybr_color.dcm", "dicom/examples_palette.dcm",
                       "cxr/tbx11k_tb_tb0005.png"],
            "gray": ["cxr/nih_00000001_000_cardiomegaly.png", "cxr/nih_00027426_000_no_finding.png",
                     "cxr/siim_monochrome2.dcm"]}
    out = []
    for name, files in sets.items():
        (root / name).mkdir(parents=True)
        rows = []
        for i in range(10):
            src = images / files[i % len(files)]
            shutil.copy(src, root / name / f"{i}{src.suffix}")
            rows.append({"path": f"{i}{src.suffix}", "label": "a" if i % 2 else "b",
                         "split": "train" if i < 6 else ("val" if i < 8 else "test")})
        pd.DataFrame(rows).to_csv(root / name / "manifest.csv", index=False)
        out.append(str(root / name / "manifest.csv"))
    return out[0], out[1]


def test_channels_auto_is_resolved_from_the_headers_of_a_seeded_sample(test_data, tmp_path):
    from medxfer.data.cache import resolve_channels

    colour, gray = _colour_and_gray(test_data, tmp_path)
    auto = load_config(None, [f"data.manifest={colour}"])
    assert auto.preprocess.channels == "auto"
    assert resolve_channels(auto).preprocess.channels == 3
    assert resolve_channels(load_config(None, [f"data.manifest={gray}"])).preprocess.channels == 1
    explicit = load_config(None, [f"data.manifest={colour}", "preprocess.channels=1"])
    assert resolve_channels(explicit) is explicit
    with pytest.raises(ConfigError, match=r"'auto' resolved to 1 .* preprocess.mean/std have 3 values"):
        resolve_channels(load_config(None, [f"data.manifest={gray}", "preprocess.mean=[0.4,0.5,0.6]",
                                            "preprocess.std=[0.2,0.2,0.2]"]))


def test_colour_is_kept_by_default_and_the_card_records_the_resolved_spec(test_data, ray_cluster, tmp_path, caplog):
    colour, gray = _colour_and_gray(test_data, tmp_path / "ds")
    base = [f"storage.root={tmp_path / 'store'}", "preprocess.size=16"]
    p = prepare(load_config(None, [*base, f"data.manifest={colour}"]))
    assert p.image_shape == (3, 16, 16) and p.spec.channels == 3 and p.card["spec"]["channels"] == 3
    X, _ = p.numpy("train")
    assert np.abs(X[:, 0] - X[:, 2]).max() > 0.05  # real colour, not gray copied three times
    # The key is a function of the resolved spec: 'auto' and an explicit 3 share the cache.
    p3 = prepare(load_config(None, [*base, f"data.manifest={colour}", "preprocess.channels=3"]))
    assert p3.hit and p3.key == p.key
    g = prepare(load_config(None, [*base, f"data.manifest={gray}"]))
    assert g.image_shape == (1, 16, 16) and g.card["spec"]["channels"] == 1
    with caplog.at_level(logging.WARNING, logger="medxfer.data"):
        one = prepare(load_config(None, [*base, f"data.manifest={colour}", "preprocess.channels=1"]))
    assert one.image_shape == (1, 16, 16) and one.key != p.key
    assert "10 of 10 images store colour and preprocess.channels is 1: they were converted to grayscale" in caplog.text


def test_a_read_failing_inside_the_pipeline_fails_the_job_and_caches_nothing(test_data, ray_cluster, tmp_path):
    """Only an image the decoder refuses is a bad file. A read error (here the kernel's EIO on
    /proc/self/mem, a real file that cannot be read) stops the job with the file named."""
    manifest = _mini_dataset(test_data, tmp_path / "ds")
    df = pd.read_csv(manifest)
    df = pd.concat([df, pd.DataFrame([{"path": "/proc/self/mem", "label": "a", "split": "train"}])])
    df.to_csv(manifest, index=False)
    store = tmp_path / "store"
    with pytest.raises(StorageError, match=r"/proc/self/mem: could not read .* nothing was cached"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}", "data.engine=ray",
                                   "data.max_bad_fraction=0.5", "preprocess.channels=3"]))
    assert not list(store.rglob("dataset.json")) and not list(store.rglob("*.parquet"))
    with pytest.raises(StorageError, match=r"/proc/self/mem: could not read .* nothing was cached"):
        prepare(load_config(None, [f"data.manifest={manifest}", f"storage.root={store}", "data.engine=local",
                                   "data.max_bad_fraction=0.5", "preprocess.channels=3"]))
    assert not list(store.rglob("dataset.json")) and not list(store.rglob("*.parquet"))


_OOM = """
import json, resource, sys
import pandas as pd
from medxfer.config import PreprocessConfig
from medxfer.data.cache import _process_block

big, small, shards = sys.argv[1], sys.argv[2], sys.argv[3]
spec = PreprocessConfig(size=2048, channels=3).model_dump_json()
warm = pd.DataFrame({"row": [0], "path": [small], "label": ["a"], "split": ["train"]})
_process_block(warm, spec, shards + "-warm", 10**12)  # every library loaded, every pool started
vm = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 32 * 2**20, resource.RLIM_INFINITY))  # 32 MiB more, no more
batch = pd.DataFrame({"row": [1, 2], "path": [big, small], "label": ["a", "b"], "split": ["train", "train"]})
try:
    meta = _process_block(batch, spec, shards, 10**12)
    print(json.dumps({"raised": None, "errors": meta["error"].tolist()}))
except BaseException as e:
    print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
"""


def test_running_out_of_memory_fails_the_job_instead_of_skipping_the_image(test_data, tmp_path):
    """A real MemoryError (the process's address space capped just above what it uses, then a
    2373x2373 JPEG preprocessed to 2048 px): not a bad file, but a failed job with nothing cached."""
    big = test_data / "images" / "cxr" / "cxr_rgb_2373x2373.jpg"
    small = test_data / "images" / "cxr" / "nih_00000001_000_cardiomegaly.png"
    shards = tmp_path / "shards"
    r = subprocess.run([sys.executable, "-c", _OOM, str(big), str(small), str(shards)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["raised"] == MedxferError.__name__, out
    assert "ran out of memory while decoding; nothing was cached" in out["message"]
    assert str(big) in out["message"] and "data.max_image_bytes" in out["message"]
    assert not shards.exists()


def test_local_engine_writes_the_same_cache_as_ray_data_and_small_sets_need_no_ray(test_data, ray_cluster, tmp_path):
    """A small manifest is preprocessed in the command's own process (engine auto -> local), with the
    pipeline's own block function: the cached tensors equal those of the Ray Data engine."""
    from medxfer.data.importers import import_medmnist

    import_medmnist(test_data / "medmnist/breastmnist.npz", str(tmp_path / "breast"))
    base = [f"data.manifest={tmp_path / 'breast' / 'manifest.csv'}", "preprocess.size=32", "preprocess.clahe=true"]
    local = prepare(load_config(None, [*base, f"storage.root={tmp_path / 'a'}"]))
    ray_made = prepare(load_config(None, [*base, f"storage.root={tmp_path / 'b'}", "data.engine=ray"]))
    assert local.card["engine"] == "local" and ray_made.card["engine"] == "ray"
    assert local.key == ray_made.key  # where it ran is not part of what was made
    for split in ("train", "val", "test"):
        (Xa, ya), (Xb, yb) = local.numpy(split), ray_made.numpy(split)
        assert np.array_equal(Xa, Xb) and np.array_equal(ya, yb) and local.paths(split) == ray_made.paths(split)
    assert local.card["counts"] == ray_made.card["counts"]
    too_many = load_config(None, [*base, f"storage.root={tmp_path / 'c'}", "data.local_max_images=100"])
    from medxfer.data.cache import choose_engine

    assert choose_engine(too_many.data, 780) == "ray" and choose_engine(too_many.data, 100) == "local"
