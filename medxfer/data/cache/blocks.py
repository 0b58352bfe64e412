"""The work of one Ray Data task (or one local thread): a block of manifest rows -> Parquet shards,
and, when reading, Parquet rows -> training tensors.

Only an image the decoder refuses (:class:`ImageDecodeError`) is a bad file, skipped and listed.
Anything else — a read that failed after its retries, running out of memory, a bug — fails the
job and caches nothing: skipping would quietly shrink the dataset under an unchanged key.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import PreprocessConfig
from medxfer.data.decode import DEFAULT_MAX_IMAGE_BYTES
from medxfer.data.manifest import encode_labels
from medxfer.errors import ImageDecodeError, MedxferError, StorageError

DATA_CPUS = 0.25  # per Ray Data task: leaves room next to Ray Train workers


class ImageFacts(NamedTuple):
    """What the cache card records of one stored image; all a block keeps once it is preprocessed."""

    height: int
    width: int
    fmt: str
    color: bool


ROW_GROUP_BYTES = 32 * 1024**2  # a streaming worker reads a row group at a time (medxfer.data.cache.stream)


def write_parquet(table, uri: str) -> None:
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    rows = max(1, ROW_GROUP_BYTES * table.num_rows // max(1, table.nbytes))
    pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=rows)


READ_AHEAD = 32  # files a block holds the bytes of at once: work for storage's read threads (8 on S3)


def _read_ahead(paths: list[str]):
    """``(path, bytes or StorageError)`` in order, read :data:`READ_AHEAD` at a time, so a block of
    512 fundus photos (a few MB each) does not hold all of their bytes at once."""
    for start in range(0, len(paths), READ_AHEAD):
        chunk = paths[start : start + READ_AHEAD]
        yield from zip(chunk, storage.read_many(chunk), strict=True)


def _preprocess_all(paths: list[str], spec: PreprocessConfig, max_pixels: int, max_image_bytes: int):
    """``(array bytes or None, error or None, ImageFacts or None)`` per path; raises on what is not the
    image's fault.

    Only the small tensor and the image's facts outlive each iteration, not the decoded
    full-resolution pixels. Holding a block's worth of them (float32: 4 MB per 1024x1024 X-ray,
    190 MB per 4928x3264 colour fundus photo decoded in full) made every image pay for fresh
    memory, 12-27 % more CPU per image, and would put a block of large photos over a task's
    memory."""
    from medxfer.data.decode import out_of_memory
    from medxfer.data.preprocess import preprocess_image

    out = []
    for p, blob in _read_ahead(paths):
        if isinstance(blob, StorageError):
            # Not a bad image but storage failing after its retries: skipping would quietly
            # shrink the dataset under an unchanged cache key. Stop; nothing is cached.
            raise StorageError(f"{blob}; nothing was cached, re-run when the storage is reachable")
        try:
            arr, d = preprocess_image(blob, spec, p, max_pixels, max_image_bytes)
        except ImageDecodeError as e:
            out.append((None, e.reason, None))
            continue
        except Exception as e:
            if not out_of_memory(e):
                raise  # a bug or a failing machine: not this image's fault, so not a bad file
            raise MedxferError(
                f"{p}: ran out of memory while decoding; nothing was cached. Give the preprocessing tasks "
                "more memory, or lower data.max_image_bytes so that images this large are refused as bad files"
            ) from None
        out.append((arr.tobytes(), None, ImageFacts(d.header.height, d.header.width, d.fmt, d.pixels.ndim == 3)))
    return out


def process_block(
    batch: pd.DataFrame, spec_json: str, shards: str, max_pixels: int, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> pd.DataFrame:
    """One block of manifest rows -> Parquet shard(s) per split + metadata rows for the card."""
    import cv2
    import pyarrow as pa

    cv2.setNumThreads(1)  # one core per task; Ray schedules the parallelism
    spec = PreprocessConfig.model_validate_json(spec_json)
    paths = batch["path"].tolist()
    done = _preprocess_all(paths, spec, max_pixels, max_image_bytes)
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
