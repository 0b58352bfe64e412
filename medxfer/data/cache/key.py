"""What a cache is keyed by: the resolved manifest, the resolved spec, the task, the classes and
the decode limits — and the spec's ``channels: auto`` resolved from the images' headers first.

The key is the sha256 of the *resolved* manifest (paths, labels, splits — so split settings and
the manifest's location are included), the *resolved* spec, the task, the classes and the decode
limits (pixels, decoded bytes, the decode's memory budget and time): each decides which files
are bad, so raising one re-decodes the files it refused instead of reading the old cache.
``label_fraction`` is not in it: subsampling is applied when reading, so label-efficiency runs
share one cache. ``CACHE_VERSION`` changes when the same spec would give other pixels, so that
old caches are never read as new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import JobConfig, PreprocessConfig
from medxfer.data.manifest import fingerprint, hash_keys, load_manifest, portable_keys
from medxfer.errors import ConfigError, StorageError

log = logging.getLogger("medxfer.data")

# 2: EXIF orientation applied, large JPEGs decoded at reduced scale (different pixels than 1).
# 3: images resized at their stored depth before any float copy (integer rounding: at most half a
#    grey level, 1/510, apart from 2), DICOM grey values rounded to 1/65535.
CACHE_VERSION = 3
CHANNEL_SAMPLE = 16  # images whose headers decide preprocess.channels: auto
HEADER_BYTES = 1 << 20  # read for a header; the whole file only when that is not enough


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
        "max_decode_bytes": cfg.data.max_decode_bytes,
        "decode_timeout_s": cfg.data.decode_timeout_s,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _stores_colour(uris: list[str], cfg: JobConfig) -> list[bool | None]:
    """Whether each image stores colour, from its header; None when it cannot be told (a bad or missing
    file is reported where the images are decoded).

    The first :data:`HEADER_BYTES` of each file first; the whole file (up to ``data.max_image_bytes``)
    only when that is not enough (e.g. a TIFF's directory at its end). Headers are read in the decode
    worker (:mod:`medxfer.data.decode.sandbox`): reading one can inflate a whole deflated DICOM dataset."""
    from medxfer.data.decode.sandbox import DecodeLimits, read_headers

    limits = DecodeLimits.of(cfg.data)
    votes: list[bool | None] = [None] * len(uris)
    todo = list(range(len(uris)))
    for whole in (False, True):
        items, where = [], []
        for i in todo:
            try:
                blob = (storage.read_bytes(uris[i], cfg.data.max_image_bytes) if whole
                        else storage.read_head(uris[i], HEADER_BYTES))
            except StorageError:
                continue
            items.append((uris[i], blob))
            where.append(i)
        todo = []
        for i, (_, blob), got in zip(where, items, read_headers(items, limits), strict=True):
            if got.reason is None:
                votes[i] = got.color
            elif len(blob) >= HEADER_BYTES:
                todo.append(i)
    return votes


def resolve_channels(cfg: JobConfig, df: pd.DataFrame | None = None) -> JobConfig:
    """``cfg`` with ``preprocess.channels: auto`` replaced by 1 or 3, from the manifest's images.

    The headers of a seeded sample of the images (the same sample for the same manifest in any
    folder, so the cache key is stable) decide: 3 when any of them stores colour, else 1. Explicit
    1 or 3 are returned unchanged. ``df``: the loaded manifest(s), when the caller has them.
    """
    spec = cfg.preprocess
    if spec.channels != "auto":
        return cfg
    if df is None:
        df = load_manifest(None, cfg.data, check_files=False)
    # Sampled by the images' names within their manifests' folders, so the same dataset resolves
    # the same way wherever it lies (see medxfer.data.manifest.splits).
    order = np.argsort(hash_keys(portable_keys(df["path"], df.attrs.get("manifests", [])), 0),
                       kind="stable")[:CHANNEL_SAMPLE]
    votes = _stores_colour([str(p) for p in df["path"].to_numpy()[order]], cfg)
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
