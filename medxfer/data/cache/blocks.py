"""The work of one Ray Data task (or one local thread): a block of manifest rows -> Parquet shards,
and, when reading, Parquet rows -> training tensors.

Only an image the decoder refuses (:class:`ImageDecodeError`, a file over ``data.max_image_bytes``,
a decode over its memory or time budget) is a bad file, skipped and listed. Anything else — a read
that failed after its retries, this process running out of memory, a bug — fails the job and
caches nothing: skipping would quietly shrink the dataset under an unchanged key.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import PreprocessConfig
from medxfer.data.decode import DEFAULT_MAX_IMAGE_BYTES
from medxfer.data.decode.sandbox import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_DECODE_BYTES,
    DecodeLimits,
    oversized_reason,
    preprocess_files,
)
from medxfer.data.manifest import encode_labels
from medxfer.errors import MedxferError, StorageError

DATA_CPUS = 0.25  # per Ray Data task: leaves room next to Ray Train workers
# How often Ray runs a preprocessing (or prediction) task again after its process died. Ray Data's
# default is without limit: a file that killed its worker process (before files were decoded in
# budgeted workers) was retried for ever and the job never ended. A file can no longer kill a
# task's process; what is left is the machine (a node lost, this process out of memory).
TASK_RETRIES = 2


@contextmanager
def _retry_options_allowed():
    """Ray 2.60 takes Ray's retry options (``max_retries``, ``max_restarts``, ``max_task_retries``) only
    as extra remote arguments, which it marks deprecated for 2.64 without a named replacement; medxfer
    needs them, since Ray Data's defaults retry without limit, so the warning is silenced here, around
    the calls that pass them."""
    import warnings

    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RayDeprecationWarning, message=".*ray_remote_args.*")
        yield


def map_batches_bounded(ds, fn, **kwargs):
    """``ds.map_batches(fn, **kwargs)`` where kwargs may hold Ray's retry options."""
    with _retry_options_allowed():
        return ds.map_batches(fn, **kwargs)


def read_parquet_bounded(path: str, max_retries: int, **kwargs):
    """``ray.data.read_parquet`` whose read tasks run at most ``max_retries`` more times. Give the map
    that follows the same options: Ray Data fuses a read and a map only when their options match."""
    import ray.data

    with _retry_options_allowed():
        return ray.data.read_parquet(path, ray_remote_args={"max_retries": max_retries}, **kwargs)


class ImageFacts(NamedTuple):
    """What the cache card records of one stored image; all a block keeps once it is preprocessed."""

    height: int
    width: int
    fmt: str
    color: bool


ROW_GROUP_BYTES = 32 * 1024**2  # a streaming worker reads a row group at a time (medxfer.data.cache.stream)


def write_parquet(table, uri: str) -> None:
    """Write one shard; a failure (a full disk above all) is a StorageError naming the shard, which
    stops the job in either engine: the card is never written over shards that are not all there."""
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_fs(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        rows = max(1, ROW_GROUP_BYTES * table.num_rows // max(1, table.nbytes))
        pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=rows)
    except OSError as e:
        raise storage.os_error(uri, e, "write") from None


READ_AHEAD = 32  # files read at once: work for storage's read threads (8 on S3)
CALL_FILES, CALL_BYTES = 256, 16 << 20  # small files go to the decode worker in calls of up to this many


def _preprocess_all(paths: list[str], spec_json: str, limits: DecodeLimits):
    """``(array bytes or None, error or None, ImageFacts or None)`` per path; raises on what is not the
    image's fault.

    Files are read :data:`READ_AHEAD` at a time (at most ``data.max_image_bytes`` each: a larger
    file is a bad file, never read) and decoded in a budgeted decode worker
    (:mod:`medxfer.data.decode.sandbox`), which sends back only the small tensors and the images'
    facts, so a block of large photos never holds their decoded pixels. Small files go to the worker
    several read-aheads at a time (:data:`CALL_FILES`, :data:`CALL_BYTES`): a call costs a round trip."""
    out: list = [None] * len(paths)
    waiting: list[tuple[int, str, bytes]] = []

    def decode_waiting() -> None:
        prepared = preprocess_files([(p, b) for _, p, b in waiting], spec_json, limits)
        for (i, _, _), r in zip(waiting, prepared, strict=True):
            out[i] = ((None, r.reason, None) if r.reason is not None else
                      (r.array.tobytes(), None, ImageFacts(r.height, r.width, r.fmt, r.color)))
        waiting.clear()

    try:
        for start in range(0, len(paths), READ_AHEAD):
            chunk = paths[start : start + READ_AHEAD]
            blobs = storage.read_many(chunk, limits.max_image_bytes)
            for i, (p, blob) in enumerate(zip(chunk, blobs, strict=True), start):
                if isinstance(blob, storage.TooLarge):
                    out[i] = (None, oversized_reason(blob), None)
                elif isinstance(blob, storage.NotAFile):  # a FIFO or a device named like an image
                    out[i] = (None, blob.reason, None)
                elif isinstance(blob, StorageError):
                    # Not a bad image but storage failing after its retries: skipping would quietly
                    # shrink the dataset under an unchanged cache key. Stop; nothing is cached.
                    raise StorageError(f"{blob}; nothing was cached, re-run when the storage is reachable")
                else:
                    waiting.append((i, p, blob))
            if len(waiting) >= CALL_FILES or sum(len(b) for _, _, b in waiting) >= CALL_BYTES:
                decode_waiting()
        decode_waiting()
    except MemoryError:
        raise MedxferError(
            f"{paths[0]}...: this process ran out of memory while preprocessing (not a file's fault: files are "
            "decoded in budgeted workers); nothing was cached. Give the preprocessing tasks more memory"
        ) from None
    return out


def process_block(
    batch: pd.DataFrame, spec_json: str, shards: str, max_pixels: int, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S,
) -> pd.DataFrame:
    """One block of manifest rows -> Parquet shard(s) per split + metadata rows for the card."""
    import pyarrow as pa

    limits = DecodeLimits(max_pixels, max_image_bytes, max_decode_bytes, decode_timeout_s)
    paths = batch["path"].tolist()
    done = _preprocess_all(paths, PreprocessConfig.model_validate_json(spec_json).model_dump_json(), limits)
    ok = np.array([err is None for _, err, _ in done])
    rows, splits, labels = batch["row"].to_numpy(), batch["split"].to_numpy(), batch["label"].to_numpy()
    for sp in np.unique(splits[ok]) if ok.any() else []:
        sel = np.flatnonzero(ok & (splits == sp))
        table = pa.table({
            "row": pa.array(rows[sel], pa.int64()),
            "path": pa.array([paths[i] for i in sel], pa.string()),
            "label": pa.array([labels[i] for i in sel], pa.string()),
            "image": pa.array([done[i][0] for i in sel], pa.binary()),
        })
        # Named by the block's first row: a retried task overwrites its own file (idempotent).
        write_parquet(table, storage.join(shards, str(sp), f"part-{int(rows[sel[0]]):09d}.parquet"))
    return pd.DataFrame({
        "row": rows,
        "error": [err for _, err, _ in done],
        "height": [f.height if f else 0 for _, _, f in done],
        "width": [f.width if f else 0 for _, _, f in done],
        "fmt": [f.fmt if f else "" for _, _, f in done],
        "color": [bool(f and f.color) for _, _, f in done],
    })


def decode_rows(
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
    paths = [str(p) for p, m in zip(batch["path"], mask, strict=True) if m]
    return {"image": img, "label": y, "path": np.asarray(paths, dtype=object)}
