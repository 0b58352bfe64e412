"""Building a cache on a miss: the manifest split into blocks, each block preprocessed and written
as Parquet by Ray Data tasks (``engine: ray``) or by this process's threads (``engine: local``),
then the card written last.

Ray Data: ``from_pandas`` of the blocks -> ``map_batches`` running :func:`~.blocks.process_block`,
which reads each file's bytes (``storage.read_many``), preprocesses them and writes its Parquet
shard straight to storage; only small metadata rows come back for the card. Tasks ask for
0.25 CPU and their number is capped at the cluster's CPU count, so all cores are busy and the
pipeline still schedules while Ray Train workers hold whole CPUs. Local: the same function over
the same blocks, on threads (OpenCV, Pillow, pydicom's decoders and pyarrow release the GIL).

Each attempt writes its own ``shards-<attempt>`` folder and ``dataset.json`` is created with
put-if-absent, so two concurrent preprocess jobs cannot corrupt each other; a folder without
``dataset.json`` is an interrupted run and is rebuilt.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import DataConfig, JobConfig
from medxfer.data.cache.blocks import DATA_CPUS, TASK_RETRIES, map_batches_bounded, process_block
from medxfer.data.cache.dataset_card import make_card
from medxfer.data.cache.key import cache_key, resolve_channels
from medxfer.data.cache.reader import PreparedData
from medxfer.data.manifest import load_manifest
from medxfer.errors import DataError, MedxferError, StorageError

log = logging.getLogger("medxfer.data")

_COLUMNS = ["row", "path", "label", "split"]


def _blocks(df: pd.DataFrame, cpus: float) -> list[pd.DataFrame]:
    n = len(df)
    per = int(min(512, max(8, math.ceil(n / max(1.0, 4 * cpus)))))
    return [df.iloc[i : i + per].reset_index(drop=True) for i in range(0, n, per)]


def _block_kwargs(cfg: JobConfig, shards: str) -> dict:
    return {"spec_json": cfg.preprocess.model_dump_json(), "shards": shards, "max_pixels": cfg.data.max_pixels,
            "max_image_bytes": cfg.data.max_image_bytes, "max_decode_bytes": cfg.data.max_decode_bytes,
            "decode_timeout_s": cfg.data.decode_timeout_s}


def choose_engine(data_cfg: DataConfig, n_images: int) -> str:
    """'local' or 'ray' for ``data.engine`` (see its description for the 'auto' rule)."""
    if data_cfg.engine != "auto":
        return data_cfg.engine
    return "local" if n_images <= data_cfg.local_max_images else "ray"


def _run_local(df: pd.DataFrame, cfg: JobConfig, shards: str) -> pd.DataFrame:
    """The pipeline's own block function over the same blocks, on this process's threads (no Ray);
    each block writes its shards exactly as a Ray task would."""
    cpus = os.cpu_count() or 1
    blocks = _blocks(df[_COLUMNS], cpus)
    kwargs = _block_kwargs(cfg, shards)
    with ThreadPoolExecutor(max_workers=min(cpus, len(blocks))) as pool:
        metas = list(pool.map(lambda b: process_block(b, **kwargs), blocks))
    return pd.concat(metas, ignore_index=True).sort_values("row").reset_index(drop=True)


def _run_pipeline(df: pd.DataFrame, cfg: JobConfig, shards: str) -> pd.DataFrame:
    import ray
    import ray.data

    from medxfer.runtime import cluster_cpus, init_ray, require_shared_storage
    from medxfer.runtime.waiting import watched

    init_ray()
    # Tasks on any node read the images and write the shards.
    local_image = next((p for p in df["path"] if storage.node_local(p)), None)
    require_shared_storage([cfg.storage.root, local_image], cfg.storage.shared)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(getattr(sys.stderr, "isatty", lambda: False)())
    cpus = cluster_cpus()
    blocks = _blocks(df[_COLUMNS], cpus)
    ds = ray.data.from_pandas(blocks)
    ds = map_batches_bounded(
        ds,
        process_block,
        batch_size=None,
        batch_format="pandas",
        fn_kwargs=_block_kwargs(cfg, shards),
        num_cpus=DATA_CPUS,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(len(blocks), int(round(cpus))))),
        max_retries=TASK_RETRIES,
    )
    parts = []
    try:
        with watched("preprocess", len(df), cfg.failure.watchdog_s, DATA_CPUS) as progress:
            for block in ds.iter_batches(batch_format="pandas", batch_size=None):
                parts.append(block)
                progress.tick(len(block))
    except ray.exceptions.RayError as e:
        raise _task_error(e) from None
    return pd.concat(parts, ignore_index=True).sort_values("row").reset_index(drop=True)


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
    """Return the cache for ``cfg``'s manifest(s) and spec, building it on a miss."""
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
        return PreparedData(key, root, storage.read_json(card_uri), lf, ls, hit=True, shared=cfg.storage.shared)

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
        card = make_card(df, meta, cfg, classes, key, root, attempt, started, decode_s, time.time() - t0, engine)
    except BaseException:
        _quiet_delete(shards)
        raise
    won = storage.put_if_absent(card_uri, (json.dumps(card, indent=2, default=str) + "\n").encode("utf-8"))
    if not won:  # another job finished the same key first: use its result
        _quiet_delete(shards)
        return PreparedData(key, root, storage.read_json(card_uri), lf, ls, hit=True, shared=cfg.storage.shared)
    for name in storage.list_dir(root):
        if name.startswith("shards-") and name != attempt:
            _quiet_delete(storage.join(root, name))
    _warn_if_colour_dropped(card)
    return PreparedData(key, root, card, lf, ls, hit=False, shared=cfg.storage.shared)


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
