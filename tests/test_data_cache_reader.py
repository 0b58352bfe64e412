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
