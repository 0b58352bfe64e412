"""Preprocess a manifest once, cache the tensors as Parquet, reuse them everywhere.

Why a content-keyed cache: decoding DICOMs from S3 and running CLAHE is the expensive part of an
epoch; doing it once per (manifest content, spec) and reading compact tensors afterwards makes
every later epoch, fine-tuning run and evaluation cheap, and makes "which pixels did this model
see" answerable by a key.

Layout under ``<storage.root>/cache/<key>/``::

    shards-<attempt>/<split>/part-<first row>.parquet   columns row, path, label, image (raw bytes)
    dataset.json                                        the card; written LAST, marks completion

The package: ``key`` (what the key covers; ``channels: auto`` resolved), ``blocks`` (one task's
work), ``build`` (the Ray Data and local engines, :func:`prepare`), ``card`` (``dataset.json``
and the bad-file policy), ``reader`` (:class:`PreparedData`).
"""

from medxfer.data.cache.build import choose_engine, prepare
from medxfer.data.cache.key import CACHE_VERSION, cache_key, resolve_channels, spec_dict
from medxfer.data.cache.reader import PreparedData

__all__ = ["CACHE_VERSION", "PreparedData", "cache_key", "choose_engine", "prepare", "resolve_channels", "spec_dict"]
