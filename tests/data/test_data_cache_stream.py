"""medxfer.data.cache.stream: a cached split read piece by piece, on a real cache built in this process (no Ray)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from medxfer.config import JobConfig
from medxfer.data.cache.stream import eval_batches, list_pieces, rank_slices, train_batches


def _key(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """300 phantom PNGs at 32 px, preprocessed by the local engine into several Parquet row groups."""
    from medxfer.data.cache import prepare
    from medxfer.data.phantom import write_pngs

    root = tmp_path_factory.mktemp("stream")
    manifest = write_pngs(str(root / "png"), 300, size=32)
    cfg = JobConfig.model_validate({"data": {"manifest": manifest, "engine": "local"},
                                    "preprocess": {"size": 32, "channels": 1}, "storage": {"root": str(root)}})
    return prepare(cfg)


def test_rank_slices_lay_pieces_end_to_end_and_cut_equal_parts():
    counts, order = [5, 3, 4], [2, 0, 1]  # rows: piece 2 (0-3), piece 0 (4-8), piece 1 (9-11)
    assert rank_slices(counts, order, 0, 6) == [(2, 0, 4), (0, 0, 2)]
    assert rank_slices(counts, order, 1, 6) == [(0, 2, 5), (1, 0, 3)]
    assert rank_slices(counts, order, 2, 6) == []  # beyond the rows: nothing (world * rows_per_rank <= total)
    assert sum(b - a for _, a, b in rank_slices(counts, order, 0, 12)) == 12


def test_ranks_train_on_disjoint_equal_parts_in_a_new_order_each_epoch(cache):
    stream = list_pieces([cache], "train")
    images, labels = cache.numpy("train")
    assert len(stream.pieces) >= 4 and stream.rows == len(images) == 240
    label_of = {_key(x): y for x, y in zip(images, labels, strict=True)}
    per_rank = len(images) // 2

    def epoch(seed: int, rank: int, window: int) -> list[dict]:
        return list(train_batches(stream, seed, seed + 1 + rank, rank, per_rank, 16, window))

    seen = []
    for rank in (0, 1):
        batches = epoch(1, rank, 0)  # the smallest window: two pieces at a time
        assert [len(b["image"]) for b in batches] == [16] * (per_rank // 16) + ([per_rank % 16] if per_rank % 16 else [])
        rows = [(_key(x), y) for b in batches for x, y in zip(b["image"], b["label"], strict=True)]
        assert all(label_of[k] == y for k, y in rows)  # labels travel with their images
        seen.append([k for k, _ in rows])
    assert len(set(seen[0])) == per_rank and not set(seen[0]) & set(seen[1])  # disjoint, no repeats
    again = [_key(x) for b in epoch(1, 0, 0) for x in b["image"]]
    assert again == seen[0]  # seeded: the same order for the same (epoch, rank)
    other = [_key(x) for b in epoch(2, 0, 0) for x in b["image"]]
    assert other != seen[0] and set(other) != set(seen[0])  # another epoch: other pieces, other order
    # Batches mix pieces: a batch holds rows of more than one piece.
    piece_of = {}
    for i in range(len(stream.pieces)):
        for b in eval_batches(stream, i, len(stream.pieces), 1000):
            piece_of.update({_key(x): i for x in b["image"]})
    assert any(len({piece_of[_key(x)] for x in b["image"]}) > 1 for b in epoch(1, 0, 0))


def test_validation_parts_together_are_the_whole_split_once(cache):
    stream = list_pieces([cache], "val")
    images, labels = cache.numpy("val")
    parts = [[(_key(x), int(y)) for b in eval_batches(stream, rank, 3, 7) for x, y in zip(b["image"], b["label"],
                                                                                           strict=True)]
             for rank in range(3)]
    assert sorted(sum(parts, [])) == sorted((_key(x), int(y)) for x, y in zip(images, labels, strict=True))
    assert all(b["image"].dtype == np.float32 for b in eval_batches(stream, 0, 1, 7))


def test_label_fraction_streams_the_same_rows_as_memory(cache):
    from medxfer.data.cache import PreparedData

    half = PreparedData.open(cache.uri, label_fraction=0.5, label_seed=3)
    stream = list_pieces([half], "train")
    images, _ = half.numpy("train")
    assert stream.rows == len(images) == len(half.kept_rows("train")) < 240
    streamed = [_key(x) for b in train_batches(stream, 0, 1, 0, stream.rows, 32, 10**9) for x in b["image"]]
    assert sorted(streamed) == sorted(_key(x) for x in images)


def test_pooled_caches_stream_as_one_split_without_labels(cache, tmp_path):
    """Pretraining pools several caches: their pieces form one split, read without labels."""
    from medxfer.data.cache import prepare
    from medxfer.data.phantom import write_pngs

    other = prepare(JobConfig.model_validate({
        "data": {"manifest": write_pngs(str(tmp_path / "png"), 100, size=32, seed=1), "engine": "local"},
        "preprocess": {"size": 32, "channels": 1}, "storage": {"root": str(tmp_path)}}))
    stream = list_pieces([cache, other], "train")
    assert stream.rows == 240 + 80 and {p.source for p in stream.pieces} == {0, 1}
    batches = list(train_batches(stream, 0, 1, 0, stream.rows, 32, 10**9, labels=False))
    assert all(set(b) == {"row", "image"} for b in batches)
    keys = {_key(x) for b in batches for x in b["image"]}
    assert keys == {_key(x) for p in (cache, other) for x in p.numpy("train")[0]}
