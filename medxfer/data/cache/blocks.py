"""The work of one Ray Data task (or one local thread): a block of manifest rows -> Parquet shards,
and, when reading, Parquet rows -> training tensors.

Only an image the decoder refuses (:class:`ImageDecodeError`) is a bad file, skipped and listed.
Anything else — a read that failed after its retries, running out of memory, a bug — fails the
job and caches nothing: skipping would quietly shrink the dataset under an unchanged key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import PreprocessConfig
from medxfer.data.decode import DEFAULT_MAX_IMAGE_BYTES
from medxfer.data.manifest import encode_labels
from medxfer.errors import ImageDecodeError, MedxferError, StorageError

DATA_CPUS = 0.25  # per Ray Data task: leaves room next to Ray Train workers


def write_parquet(table, uri: str) -> None:
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs, compression="zstd")


def _preprocess_all(paths: list[str], spec: PreprocessConfig, max_pixels: int, max_image_bytes: int):
    """``(arrays or None, errors or None, Decoded or None)`` per path; raises on what is not the image's fault."""
    from medxfer.data.decode import out_of_memory
    from medxfer.data.preprocess import preprocess_image

    out = []
    for p, blob in zip(paths, storage.read_many(paths), strict=True):
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
        out.append((arr.tobytes(), None, d))
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
        "height": [d.header.height if d else 0 for _, _, d in done],
        "width": [d.header.width if d else 0 for _, _, d in done],
        "fmt": [d.fmt if d else "" for _, _, d in done],
        "color": [bool(d and d.pixels.ndim == 3) for _, _, d in done],
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
