"""Preprocess a manifest once with Ray Data, cache the tensors as Parquet, reuse them everywhere.

Why a content-keyed cache: decoding DICOMs from S3 and running CLAHE is the expensive part of an
epoch; doing it once per (manifest content, spec) and reading compact tensors afterwards makes
every later epoch, fine-tuning run and evaluation cheap, and makes "which pixels did this model
see" answerable by a key.

Layout under ``<storage.root>/cache/<key>/``::

    shards-<attempt>/<split>/part-<first row>.parquet   columns row, path, label, image (raw bytes)
    dataset.json                                        the card; written LAST, marks completion

The key is the sha256 of the *resolved* manifest (paths, labels, splits — so split settings and
the manifest's location are included), the *resolved* spec, the task, the classes and the size
limits. ``preprocess.channels: auto`` is resolved first, from the headers of a seeded sample of the
manifest's images (:func:`resolve_channels`): 3 when any of them stores colour, else 1; the card
(and so every model bundle trained from it) records the number, never "auto".
``label_fraction`` is not in the key: subsampling is applied when reading, so label-efficiency
runs share one cache. A folder without ``dataset.json`` is an interrupted run and is rebuilt; each
attempt writes its own ``shards-<attempt>`` folder and ``dataset.json`` is created with
put-if-absent, so two concurrent preprocess jobs cannot corrupt each other.

The pipeline: ``from_pandas`` of the manifest split into blocks -> ``map_batches`` that reads each
file's bytes (pyarrow S3 filesystem with a few I/O threads, or local), applies
:func:`medxfer.data.preprocess.preprocess_bytes`' steps, and writes its Parquet shard straight to
storage; it returns only small metadata rows (errors, original sizes) for the card. Tasks ask for
0.25 CPU and their number is capped at the cluster's CPU count, so all cores are busy and the
pipeline still schedules while Ray Train workers hold whole CPUs.

Only an image the decoder refuses (:class:`ImageDecodeError`) is a bad file, skipped and listed.
Anything else — a read that failed after its retries, running out of memory, a bug — fails the
job and caches nothing: skipping would quietly shrink the dataset under an unchanged key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import JobConfig, PreprocessConfig
from medxfer.data.decode import DEFAULT_MAX_IMAGE_BYTES
from medxfer.data.manifest import (
    SPLITS,
    _hash_keys,
    encode_labels,
    fingerprint,
    label_subsample,
    load_manifest,
    split_counts,
)
from medxfer.errors import ConfigError, DataError, ImageDecodeError, MedxferError, StorageError

log = logging.getLogger("medxfer.data")

# 2: EXIF orientation applied, large JPEGs decoded at reduced scale (different pixels than 1).
CACHE_VERSION = 2
CHANNEL_SAMPLE = 16  # images whose headers decide preprocess.channels: auto
HEADER_BYTES = 1 << 20  # read for a header; the whole file only when that is not enough
DATA_CPUS = 0.25  # per Ray Data task: leaves room next to Ray Train workers
_IO_THREADS = 8
_MAX_LISTED_BAD = 1000


# ----------------------------------------------------------------------------- key


def spec_dict(spec: PreprocessConfig) -> dict:
    return spec.model_dump(mode="json")


def cache_key(df: pd.DataFrame, cfg: JobConfig, classes: list[str]) -> str:
    payload = {
        "version": CACHE_VERSION,
        "manifest": fingerprint(df),
        "spec": spec_dict(cfg.preprocess),
        "task": cfg.data.task,
        "classes": list(classes),
        "max_pixels": cfg.data.max_pixels,
        "max_image_bytes": cfg.data.max_image_bytes,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _stores_colour(uri: str) -> bool | None:
    """Whether the image at ``uri`` stores colour, from its header; None when it cannot be told."""
    from medxfer.data.decode import read_header

    try:
        head = storage.read_head(uri, HEADER_BYTES)
        try:
            return read_header(head, uri).color
        except ImageDecodeError:
            if len(head) < HEADER_BYTES:
                return None
            return read_header(storage.read_bytes(uri), uri).color  # e.g. a TIFF's directory at its end
    except (ImageDecodeError, StorageError):
        return None  # a bad or missing file is reported where the images are decoded


def resolve_channels(cfg: JobConfig, df: pd.DataFrame | None = None) -> JobConfig:
    """``cfg`` with ``preprocess.channels: auto`` replaced by 1 or 3, from the manifest's images.

    The headers of a seeded sample of the images (the same sample for the same manifest, so the
    cache key is stable) decide: 3 when any of them stores colour, else 1. Explicit 1 or 3 are
    returned unchanged. ``df``: the loaded manifest(s), when the caller has them.
    """
    spec = cfg.preprocess
    if spec.channels != "auto":
        return cfg
    if df is None:
        df = load_manifest(None, cfg.data, check_files=False)
    order = np.argsort(_hash_keys(df["path"], 0), kind="stable")[:CHANNEL_SAMPLE]
    votes = [_stores_colour(p) for p in df["path"].to_numpy()[order]]
    colour, known = sum(v is True for v in votes), sum(v is not None for v in votes)
    channels = 3 if colour else 1
    try:
        resolved = PreprocessConfig.model_validate({**spec.model_dump(), "channels": channels})
    except ValueError:
        raise ConfigError([
            f"preprocess.channels: 'auto' resolved to {channels} ({colour} of {known} sampled images store "
            f"colour), but preprocess.mean/std have {len(spec.mean)} values; set preprocess.channels to "
            f"{len(spec.mean)}, or give mean/std {channels} value(s)"
        ]) from None
    log.info("preprocess.channels: auto -> %d (%d of %d sampled images store colour); set preprocess.channels "
             "to 1 or 3 to choose", channels, colour, known)
    return cfg.model_copy(update={"preprocess": resolved})


# ----------------------------------------------------------------------------- worker side


def _read_all(paths: list[str]) -> list[bytes | Exception]:
    """Read file bytes; S3 through one pyarrow filesystem and a few threads (latency-bound)."""
    s3fs = None
    if any(p.startswith("s3://") for p in paths):
        s3fs = storage.pyarrow_s3fs()

    def one(p: str) -> bytes | Exception:
        try:
            if p.startswith("s3://"):
                with s3fs.open_input_stream(p[len("s3://"):]) as f:
                    return f.read()
            with open(p, "rb") as f:
                return f.read()
        except Exception as e:  # noqa: BLE001 - becomes a per-file reason
            return e

    if s3fs is None or len(paths) == 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=_IO_THREADS) as pool:
        return list(pool.map(one, paths))


def _write_parquet(table, uri: str) -> None:
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd")


def _process_block(
    batch: pd.DataFrame, spec_json: str, shards: str, max_pixels: int, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> pd.DataFrame:
    """One block of manifest rows -> Parquet shard(s) per split + metadata rows for the card."""
    import cv2
    import pyarrow as pa

    from medxfer.data.decode import out_of_memory
    from medxfer.data.preprocess import preprocess_image

    cv2.setNumThreads(1)  # one core per task; Ray schedules the parallelism
    spec = PreprocessConfig.model_validate_json(spec_json)
    paths = batch["path"].tolist()
    blobs = _read_all(paths)
    images: list[bytes | None] = []
    errors: list[str | None] = []
    hs, ws, fmts, colors = [], [], [], []
    for p, blob in zip(paths, blobs, strict=True):
        if isinstance(blob, Exception):
            # Not a bad image but storage failing after its retries: skipping would quietly
            # shrink the dataset under an unchanged cache key. Stop; nothing is cached.
            raise StorageError(f"{p}: could not read ({type(blob).__name__}: {str(blob)[:200]}) after "
                               "retries; nothing was cached, re-run when the storage is reachable")
        try:
            arr, d = preprocess_image(blob, spec, p, max_pixels, max_image_bytes)
        except ImageDecodeError as e:
            images.append(None)
            errors.append(e.reason)
            hs.append(0), ws.append(0), fmts.append(""), colors.append(False)
            continue
        except Exception as e:
            if not out_of_memory(e):
                raise  # a bug or a failing machine: not this image's fault, so not a bad file
            raise MedxferError(
                f"{p}: ran out of memory while decoding; nothing was cached. Give the preprocessing tasks "
                "more memory, or lower data.max_image_bytes so that images this large are refused as bad files"
            ) from None
        images.append(arr.tobytes())
        errors.append(None)
        hs.append(d.header.height), ws.append(d.header.width), fmts.append(d.fmt)
        colors.append(d.pixels.ndim == 3)
    ok = np.array([e is None for e in errors])
    rows = batch["row"].to_numpy()
    splits = batch["split"].to_numpy()
    labels = batch["label"].to_numpy()
    for sp in np.unique(splits[ok]) if ok.any() else []:
        sel = np.flatnonzero(ok & (splits == sp))
        table = pa.table(
            {
                "row": pa.array(rows[sel], pa.int64()),
                "path": pa.array([paths[i] for i in sel], pa.string()),
                "label": pa.array([labels[i] for i in sel], pa.string()),
                "image": pa.array([images[i] for i in sel], pa.binary()),
            }
        )
        # Named by the block's first row: a retried task overwrites its own file (idempotent).
        _write_parquet(table, storage.join(shards, str(sp), f"part-{int(rows[sel[0]]):09d}.parquet"))
    return pd.DataFrame(
        {"row": rows, "error": errors, "height": hs, "width": ws, "fmt": fmts, "color": colors}
    )


def _decode_rows(
    batch: dict, shape: tuple, dtype: str, classes: list[str], task: str, keep: np.ndarray | None
) -> dict:
    """Parquet rows -> image float32 (B,C,H,W), encoded label, path (Ray Data map_batches)."""
    rows = np.asarray(batch["row"])
    mask = np.isin(rows, keep) if keep is not None else np.ones(len(rows), dtype=bool)
    blobs = [b for b, m in zip(batch["image"], mask, strict=True) if m]
    n = len(blobs)
    if n:
        img = np.frombuffer(b"".join(blobs), dtype=dtype).reshape((n, *shape)).astype(np.float32)
    else:
        img = np.zeros((0, *shape), dtype=np.float32)
    labels = [str(x) for x, m in zip(batch["label"], mask, strict=True) if m]
    y = encode_labels(labels, classes, task)
    if task == "multilabel" and n == 0:
        y = np.zeros((0, len(classes)), dtype=np.float32)
    return {"image": img, "label": y, "path": np.asarray([str(p) for p, m in zip(batch["path"], mask, strict=True) if m], dtype=object)}


# ----------------------------------------------------------------------------- prepared data


@dataclass
class PreparedData:
    """A complete cache: its card plus readers for Ray (``dataset``) and plain numpy (``numpy``)."""

    key: str
    uri: str
    card: dict
    label_fraction: float = 1.0
    label_seed: int = 0
    hit: bool = False
    _kept: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, uri: str, label_fraction: float = 1.0, label_seed: int = 0) -> PreparedData:
        """Open an existing cache folder (``.../cache/<key>``) by its card."""
        card_uri = storage.join(uri, "dataset.json")
        if not storage.exists(card_uri):
            raise DataError(f"{uri}: not a complete medxfer cache (no dataset.json); run medxfer preprocess")
        card = storage.read_json(card_uri)
        return cls(card["key"], storage.normalize(uri), card, label_fraction, label_seed, hit=True)

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "ordinal" else len(self.classes)

    @property
    def spec(self) -> PreprocessConfig:
        return PreprocessConfig.model_validate(self.card["spec"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.card["image_shape"])

    def split_uri(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return storage.join(self.uri, self.card["shards"], split)

    def _table(self, split: str, columns: list[str]):
        import pyarrow as pa
        import pyarrow.dataset as pads

        if self.card["counts"][split]["total"] == 0:
            return None
        fs, path = storage.pyarrow_fs(self.split_uri(split))
        t = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns)
        order = pa.compute.sort_indices(t, sort_keys=[("row", "ascending")])
        return t.take(order)

    def kept_rows(self, split: str) -> np.ndarray | None:
        """Row ids kept by ``label_fraction`` (train only); None = all rows."""
        if split != "train" or self.label_fraction >= 1.0:
            return None
        if split not in self._kept:
            t = self._table(split, ["row", "path", "label"])
            if t is None:
                return np.zeros(0, dtype=np.int64)
            mask = label_subsample(
                pd.Series(t.column("label").to_pylist()),
                pd.Series(t.column("path").to_pylist()),
                self.label_fraction,
                self.label_seed,
            )
            self._kept[split] = t.column("row").to_numpy()[mask]
        return self._kept[split]

    def dataset(self, split: str, with_path: bool = True):
        """A Ray Dataset with ``image`` float32 (C,H,W), ``label`` (encoded, see contract) and ``path``.

        ``with_path=False`` drops the string column, which ``iter_torch_batches`` cannot convert.
        """
        import ray.data

        if self.card["counts"][split]["total"] == 0:
            return ray.data.from_items([])
        from medxfer.runtime import cluster_cpus, init_ray

        init_ray()
        # Capped concurrency: fractional CPUs would otherwise let Ray start 4 worker processes per
        # core, and on small machines spawning them costs more than reading the cache.
        conc = max(1, int(round(cluster_cpus())))
        fs, path = storage.pyarrow_fs(self.split_uri(split))
        ds = ray.data.read_parquet(
            path,
            filesystem=fs,
            columns=["row", "path", "label", "image"],
            partitioning=None,
            num_cpus=DATA_CPUS,
            concurrency=conc,
        )
        ds = ds.map_batches(
            _decode_rows,
            batch_format="numpy",
            fn_kwargs={
                "shape": self.image_shape,
                "dtype": self.card["dtype"],
                "classes": self.classes,
                "task": self.task,
                "keep": self.kept_rows(split),
            },
            num_cpus=DATA_CPUS,
            compute=ray.data.TaskPoolStrategy(size=conc),
        )
        return ds if with_path else ds.drop_columns(["path"])

    def numpy(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X float32 (N,C,H,W), y)`` read with pyarrow (no Ray), ordered by manifest row."""
        t = self._table(split, ["row", "label", "image"])
        shape = self.image_shape
        if t is None:
            return np.zeros((0, *shape), np.float32), encode_labels([], self.classes, self.task)
        keep = self.kept_rows(split)
        if keep is not None:
            import pyarrow as pa

            t = t.filter(pa.compute.is_in(t.column("row"), value_set=pa.array(keep, pa.int64())))
        d = _decode_rows(
            {"row": t.column("row").to_numpy(), "image": t.column("image").to_pylist(),
             "label": t.column("label").to_pylist(), "path": [""] * t.num_rows},
            shape, self.card["dtype"], self.classes, self.task, None,
        )
        return d["image"], d["label"]

    def paths(self, split: str) -> list[str]:
        """Image paths in ``numpy(split)`` order."""
        t = self._table(split, ["row", "path"])
        if t is None:
            return []
        keep = self.kept_rows(split)
        rows, paths = t.column("row").to_numpy(), t.column("path").to_pylist()
        if keep is None:
            return paths
        m = np.isin(rows, keep)
        return [p for p, k in zip(paths, m, strict=True) if k]

    def class_counts(self, split: str) -> list[int]:
        """Images per class (multilabel: positives per finding; ordinal: per grade) in the split as served."""
        keep = self.kept_rows(split)
        if keep is None:
            per = self.card["counts"][split]["per_class"]
            return [int(per.get(c, 0)) for c in self.classes]
        t = self._table(split, ["row", "label"])
        rows = t.column("row").to_numpy()
        labels = pd.Series(t.column("label").to_pylist())[np.isin(rows, keep)]
        df = pd.DataFrame({"label": labels.to_numpy(), "split": split})
        per = split_counts(df, self.classes, self.task)[split]["per_class"]
        return [int(per.get(c, 0)) for c in self.classes]


# ----------------------------------------------------------------------------- prepare


def _blocks(df: pd.DataFrame, cpus: float) -> list[pd.DataFrame]:
    n = len(df)
    per = int(min(512, max(8, math.ceil(n / max(1.0, 4 * cpus)))))
    return [df.iloc[i : i + per].reset_index(drop=True) for i in range(0, n, per)]


def _stats(values: pd.Series) -> dict:
    if values.empty:
        return {}
    return {"min": int(values.min()), "median": float(values.median()), "max": int(values.max())}


def _block_kwargs(cfg: JobConfig, shards: str) -> dict:
    return {"spec_json": cfg.preprocess.model_dump_json(), "shards": shards, "max_pixels": cfg.data.max_pixels,
            "max_image_bytes": cfg.data.max_image_bytes}


def choose_engine(data_cfg, n_images: int) -> str:
    """'local' or 'ray' for ``data.engine`` (see its description for the 'auto' rule)."""
    if data_cfg.engine != "auto":
        return data_cfg.engine
    return "local" if n_images <= data_cfg.local_max_images else "ray"


def _run_local(df: pd.DataFrame, cfg: JobConfig, shards: str) -> pd.DataFrame:
    """The pipeline's own block function over the same blocks, on this process's threads (no Ray).

    OpenCV, Pillow, pydicom's decoders and pyarrow release the GIL for the heavy parts, so threads
    use the machine's cores; each block writes its shards exactly as a Ray task would.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    cpus = os.cpu_count() or 1
    blocks = _blocks(df[["row", "path", "label", "split"]], cpus)
    kwargs = _block_kwargs(cfg, shards)
    with ThreadPoolExecutor(max_workers=min(cpus, len(blocks))) as pool:
        metas = list(pool.map(lambda b: _process_block(b, **kwargs), blocks))
    return pd.concat(metas, ignore_index=True).sort_values("row").reset_index(drop=True)


def _run_pipeline(df: pd.DataFrame, cfg: JobConfig, shards: str) -> pd.DataFrame:
    import ray
    import ray.data

    from medxfer.runtime import cluster_cpus, init_ray

    init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(getattr(sys.stderr, "isatty", lambda: False)())
    cpus = cluster_cpus()
    blocks = _blocks(df[["row", "path", "label", "split"]], cpus)
    ds = ray.data.from_pandas(blocks)
    ds = ds.map_batches(
        _process_block,
        batch_size=None,
        batch_format="pandas",
        fn_kwargs=_block_kwargs(cfg, shards),
        num_cpus=DATA_CPUS,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(len(blocks), int(round(cpus))))),
    )
    try:
        meta = ds.to_pandas()
    except ray.exceptions.RayError as e:
        raise _task_error(e) from None
    return meta.sort_values("row").reset_index(drop=True)


_TASK_ERRORS = {"StorageError": StorageError, "DataError": DataError, "MedxferError": MedxferError}


def _task_error(e: BaseException) -> MedxferError:
    """The error a preprocessing task raised (a read failing after its retries, running out of
    memory), as the driver's own. Ray Data wraps it in a UserCodeException that keeps only its
    text, so it is found in that text; anything else is named as a failed task."""
    found = re.findall(r"^medxfer\.errors\.(\w+): (.+)$", str(e), flags=re.MULTILINE)
    if found and found[-1][0] in _TASK_ERRORS:
        name, message = found[-1]
        return _TASK_ERRORS[name](message)
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return DataError(f"preprocessing failed in a Ray task: {(lines[-1] if lines else type(e).__name__)[:300]}")


def prepare(cfg: JobConfig) -> PreparedData:
    """Return the cache for ``cfg``'s manifest(s) and spec, building it with Ray Data on a miss."""
    t0 = time.time()
    df = load_manifest(None, cfg.data, check_files=False)
    cfg = resolve_channels(cfg, df)
    classes = df.attrs["classes"]
    key = cache_key(df, cfg, classes)
    root = storage.Layout(cfg.storage.root).cache(key)
    card_uri = storage.join(root, "dataset.json")
    lf, ls = cfg.data.label_fraction, cfg.data.label_seed
    if storage.exists(card_uri):
        log.info("cache hit %s", root)
        return PreparedData(key, root, storage.read_json(card_uri), lf, ls, hit=True)

    # Miss: the expensive checks (every file exists) now, then decode.
    df = load_manifest(None, cfg.data, check_files=True)
    df["row"] = np.arange(len(df), dtype=np.int64)
    attempt = f"shards-{uuid.uuid4().hex[:8]}"
    shards = storage.join(root, attempt)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    engine = choose_engine(cfg.data, len(df))
    log.info("preprocessing %d images into %s%s", len(df), root, " (in this process)" if engine == "local" else "")
    if engine == "ray":
        from medxfer.runtime import init_ray

        init_ray()  # before the clock: cluster start-up is not decoding time
    t1 = time.time()
    try:
        meta = (_run_pipeline if engine == "ray" else _run_local)(df, cfg, shards)
        decode_s = time.time() - t1
        card = _make_card(df, meta, cfg, classes, key, root, attempt, started, decode_s, time.time() - t0, engine)
    except BaseException:
        _quiet_delete(shards)
        raise
    won = storage.put_if_absent(card_uri, (json.dumps(card, indent=2, default=str) + "\n").encode("utf-8"))
    if not won:  # another job finished the same key first: use its result
        _quiet_delete(shards)
        return PreparedData(key, root, storage.read_json(card_uri), lf, ls, hit=True)
    for name in storage.list_dir(root):
        if name.startswith("shards-") and name != attempt:
            _quiet_delete(storage.join(root, name))
    _warn_if_colour_dropped(card)
    return PreparedData(key, root, card, lf, ls, hit=False)


def _warn_if_colour_dropped(card: dict) -> None:
    colour = card["image_stats"]["color"]
    if colour and card["spec"]["channels"] == 1:
        log.warning("%d of %d images store colour and preprocess.channels is 1: they were converted to grayscale; "
                    "set preprocess.channels to 3 (or auto) to keep colour", colour, card["total"])


def _quiet_delete(uri: str) -> None:
    try:
        storage.delete(uri, recursive=True)
    except Exception as e:  # noqa: BLE001 - cleanup is best effort
        log.warning("could not clean up %s: %s", uri, e)


def _make_card(df, meta, cfg: JobConfig, classes, key, root, attempt, started, decode_s, total_s,
               engine: str = "ray") -> dict:
    merged = df.merge(meta, on="row", how="left", validate="one_to_one")
    bad = merged[merged["error"].notna()]
    n, nbad = len(merged), len(bad)
    listed = [{"path": p, "reason": r} for p, r in zip(bad["path"], bad["error"], strict=True)]
    if nbad and cfg.data.bad_files == "fail":
        raise DataError(
            f"{nbad} of {n} image(s) could not be decoded (data.bad_files=fail), e.g. "
            + "; ".join(f"{b['path']}: {b['reason']}" for b in listed[:5])
        )
    if nbad and nbad / n > cfg.data.max_bad_fraction:
        raise DataError(
            f"{nbad} of {n} image(s) ({nbad / n:.1%}) could not be decoded, above data.max_bad_fraction="
            f"{cfg.data.max_bad_fraction}; e.g. " + "; ".join(f"{b['path']}: {b['reason']}" for b in listed[:5])
        )
    good = merged[merged["error"].isna()]
    if (good["split"] == "train").sum() == 0:
        raise DataError("no decodable training image left after skipping bad files")
    spec = cfg.preprocess
    sources = {
        str(s): {sp: int(((good["source"] == s) & (good["split"] == sp)).sum()) for sp in SPLITS}
        for s in sorted(good["source"].unique())
    }
    return {
        "format": "medxfer-cache",
        "version": CACHE_VERSION,
        "key": key,
        "uri": root,
        "shards": attempt,
        "created_at": started,
        "medxfer_version": _version(),
        "task": cfg.data.task,
        "classes": list(classes),
        "num_outputs": 1 if cfg.data.task == "ordinal" else len(classes),
        "spec": spec_dict(spec),
        "image_shape": [spec.channels, spec.size, spec.size],
        "dtype": spec.dtype,
        "manifests": [storage.normalize(u) for u in df.attrs.get("manifests", [])],
        "manifest_fingerprint": fingerprint(df.drop(columns=["row"])),
        "split_settings": {
            "made_by_medxfer": list(df.attrs.get("split_made", [])),
            "split_fractions": list(cfg.data.split_fractions),
            "split_seed": cfg.data.split_seed,
        },
        "max_pixels": cfg.data.max_pixels,
        "max_image_bytes": cfg.data.max_image_bytes,
        "input_rows": n,
        "total": int(len(good)),
        "counts": split_counts(good, list(classes), cfg.data.task),
        "sources": sources,
        "image_stats": {
            "height": _stats(good["height"]),
            "width": _stats(good["width"]),
            "formats": {str(k): int(v) for k, v in good["fmt"].value_counts().items()},
            "color": int(good["color"].sum()),
        },
        "bad_files": {
            "policy": cfg.data.bad_files,
            "count": nbad,
            "fraction": round(nbad / n, 6) if n else 0.0,
            "files": listed[:_MAX_LISTED_BAD],
        },
        "engine": engine,
        "timing": {
            "decode_seconds": round(decode_s, 3),
            "total_seconds": round(total_s, 3),
            "images_per_second": round(n / decode_s, 1) if decode_s > 0 else None,
        },
    }


def _version() -> str:
    try:
        from medxfer import __version__

        return str(__version__)
    except ImportError:
        return "unknown"
