"""Reading a cache (``medxfer.data.cache.reader``) with pyarrow alone."""

from __future__ import annotations

import numpy as np

from medxfer import storage
from medxfer.data.cache import PreparedData


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


def _cache(root, data_folder: str, n: int = 40) -> str:
    """A cache of ``n`` training rows whose images lie under ``data_folder`` (its manifest's folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "shards-x" / "train").mkdir(parents=True)
    labels = ["a" if i % 4 else "b" for i in range(n)]
    pq.write_table(
        pa.table({"row": list(range(n)), "path": [f"{data_folder}/img/{i}.png" for i in range(n)], "label": labels,
                  "image": [np.zeros((1, 2, 2), np.float32).tobytes()] * n}),
        root / "shards-x" / "train" / "part-000000000.parquet",
    )
    card = {"key": "k", "shards": "shards-x", "classes": ["a", "b"], "task": "multiclass", "spec": {"size": 2},
            "image_shape": [1, 2, 2], "dtype": "float32", "manifests": [f"{data_folder}/manifest.csv"],
            "counts": {"train": {"total": n, "per_class": {"a": 30, "b": 10}},
                       "val": {"total": 0, "per_class": {}}, "test": {"total": 0, "per_class": {}}}}
    storage.write_json(str(root / "dataset.json"), card)
    return str(root)


def test_label_fraction_keeps_the_same_rows_wherever_the_dataset_lies(tmp_path):
    """A 25 % subset is the same images for a dataset on this disk and one in a bucket: the
    reader hashes names within the manifest's folder, not the stored (resolved) paths."""
    here = PreparedData.open(_cache(tmp_path / "c1", str(tmp_path / "data")), 0.25, 7)
    there = PreparedData.open(_cache(tmp_path / "c2", "s3://bucket/projects/breast"), 0.25, 7)
    kept = here.kept_rows("train")
    assert len(kept) == 10 and np.array_equal(kept, there.kept_rows("train"))
    assert here.numpy("train")[1].tolist() == there.numpy("train")[1].tolist()
    assert not np.array_equal(kept, PreparedData.open(_cache(tmp_path / "c3", str(tmp_path / "d")), 0.25, 8)
                              .kept_rows("train"))
