"""The dataset card (``dataset.json``): what a cache holds, how it was made, and which files were
skipped and why. Written last, with put-if-absent, it marks the cache complete.

It is also where the bad-file policy is applied: too many skipped files (``data.max_bad_fraction``)
or any with ``data.bad_files: fail`` stop the job before a card exists.
"""

from __future__ import annotations

import pandas as pd

from medxfer import storage
from medxfer.config import JobConfig
from medxfer.data.cache.key import CACHE_VERSION, spec_dict
from medxfer.data.manifest import SPLITS, fingerprint, split_counts
from medxfer.errors import DataError

_MAX_LISTED_BAD = 1000


def _stats(values: pd.Series) -> dict:
    if values.empty:
        return {}
    return {"min": int(values.min()), "median": float(values.median()), "max": int(values.max())}


def _check_bad_files(listed: list[dict], n: int, cfg: JobConfig) -> None:
    nbad = len(listed)
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


def make_card(df, meta, cfg: JobConfig, classes, key, root, attempt, started, decode_s, total_s,
              engine: str = "ray") -> dict:
    """The card of a finished build: ``df`` the manifest rows, ``meta`` the blocks' metadata rows."""
    merged = df.merge(meta, on="row", how="left", validate="one_to_one")
    bad = merged[merged["error"].notna()]
    n, nbad = len(merged), len(bad)
    listed = [{"path": p, "reason": r} for p, r in zip(bad["path"], bad["error"], strict=True)]
    _check_bad_files(listed, n, cfg)
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
