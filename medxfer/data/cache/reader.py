"""Reading a complete cache: its card, and its tensors for Ray (``dataset``) or plain numpy (``numpy``).

``label_fraction`` is applied here, not when building: the same seeded, stratified subsample of
the training rows is served through Ray Data and through numpy, so label-efficiency runs share one
cache. The numpy reader needs pyarrow only, no Ray (evaluation on a laptop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medxfer import storage
from medxfer.config import PreprocessConfig
from medxfer.data.cache.blocks import (
    DATA_CPUS,
    TASK_RETRIES,
    decode_rows,
    map_batches_bounded,
    read_parquet_bounded,
)
from medxfer.data.manifest import SPLITS, encode_labels, label_subsample, portable_keys, split_counts
from medxfer.errors import DataError


@dataclass
class PreparedData:
    """A complete cache: its card plus readers for Ray (``dataset``) and plain numpy (``numpy``)."""

    key: str
    uri: str
    card: dict
    label_fraction: float = 1.0
    label_seed: int = 0
    hit: bool = False
    shared: bool = False  # storage.shared: its local folder is mounted on every Ray node
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

    # The card's fields other code needs, typed: outside this package nothing reads dataset.json by key.

    def cached_rows(self, split: str) -> int:
        """Images of ``split`` in the cache (before ``label_fraction``), from the card."""
        return int(self.card["counts"][split]["total"])

    def rows(self, split: str) -> int:
        """Images of ``split`` as served (after ``label_fraction``), without Ray."""
        kept = self.kept_rows(split)
        return len(kept) if kept is not None else self.cached_rows(split)

    @property
    def total_rows(self) -> int:
        """Images in the cache, every split."""
        return int(self.card["total"])

    @property
    def input_rows(self) -> int:
        """Rows of the manifest(s) the cache was built from, bad files included."""
        return int(self.card["input_rows"])

    @property
    def bad_file_count(self) -> int:
        """Images that could not be decoded and were left out (listed in ``dataset.json``)."""
        return int(self.card["bad_files"]["count"])

    @property
    def source_names(self) -> list[str]:
        """The sources (manifest ``source`` column) the cached images came from, sorted."""
        return sorted(self.card.get("sources", {}))

    @property
    def decode_seconds(self) -> float:
        """How long decoding took when the cache was built."""
        return self.card["timing"]["decode_seconds"]

    @property
    def images_per_second(self) -> float | None:
        """Decoding throughput when the cache was built (None: too fast to measure)."""
        return self.card["timing"]["images_per_second"]

    def split_uri(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return storage.join(self.uri, self.card["shards"], split)

    def _table(self, split: str, columns: list[str]):
        import pyarrow as pa
        import pyarrow.dataset as pads

        if self.cached_rows(split) == 0:
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
                portable_keys(pd.Series(t.column("path").to_pylist()), self.card["manifests"]),
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

        if self.cached_rows(split) == 0:
            return ray.data.from_items([])
        from medxfer.runtime import cluster_cpus, init_ray, require_shared_storage

        init_ray()
        require_shared_storage([self.uri], self.shared)  # Ray Data reads it on any node
        # Capped concurrency: fractional CPUs would otherwise let Ray start 4 worker processes per
        # core, and on small machines spawning them costs more than reading the cache.
        conc = max(1, int(round(cluster_cpus())))
        fs, path = storage.pyarrow_fs(self.split_uri(split))
        ds = read_parquet_bounded(
            path,
            TASK_RETRIES,  # Ray Data's default: without limit
            filesystem=fs,
            columns=["row", "path", "label", "image"],
            partitioning=None,
            num_cpus=DATA_CPUS,
            concurrency=conc,
        )
        ds = map_batches_bounded(
            ds,
            decode_rows,
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
            max_retries=TASK_RETRIES,
        )
        return ds if with_path else ds.drop_columns(["path"])

    def numpy(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X float32 (N,C,H,W), y)`` read with pyarrow (no Ray), ordered by manifest row.

        Row group by row group into one array made up front: reading a split holds it once plus
        one row group, not the whole Parquet table, its bytes as Python objects and their copies."""
        from medxfer.data.cache.stream import list_pieces, read_piece

        shape = self.image_shape
        stream = list_pieces([self], split)
        X = np.empty((stream.rows, *shape), np.float32)
        y = encode_labels([], self.classes, self.task)
        if not stream.rows:
            return X, (np.zeros((0, len(self.classes)), np.float32) if self.task == "multilabel" else y)
        rows = self._table(split, ["row"]).column("row").to_numpy()
        if stream.keep is not None:
            rows = rows[np.isin(rows, stream.keep)]
        for i in range(len(stream.pieces)):
            piece = read_piece(stream, i)
            at = np.searchsorted(rows, piece["row"])
            X[at] = piece["image"]
            if i == 0:
                y = np.empty((stream.rows, *piece["label"].shape[1:]), piece["label"].dtype)
            y[at] = piece["label"]
        return X, y

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
