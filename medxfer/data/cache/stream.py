"""A cached split read piece by piece: how a Ray Train worker streams a split too large for its memory.

A *piece* is one Parquet row group of the cache (up to 32 MiB of tensors, ``blocks.ROW_GROUP_BYTES``;
caches written before 2026-12 have one row group per file of up to 512 images). The driver
lists the pieces once (:func:`list_pieces`: file, row group, rows served); each worker then reads
only its own pieces with pyarrow, a couple ahead on a background thread, and shuffles the rows of
a window of pieces. Each epoch the pieces are laid end to end in a seeded order shared by every
rank and each rank takes an equal slice of that row sequence, so every rank takes the same number
of steps (DDP) and the in-memory path's batch rules hold unchanged (:mod:`medxfer.train.batches`).
Validation pieces go to ranks in turn; the ranks' outputs together are the whole split.

Why not Ray Data shards (``streaming_split`` through Ray Train's split coordinator), as medxfer
streamed until 2026-12: measured on 2 CPUs with a 2 GB split of 224 px images,

- a job whose workers held every CPU never started an epoch: Ray Data's file listing asks for a
  whole CPU and its budget was 0 CPU, with nothing printed;
- with one CPU left to Ray Data, the split coordinator's streaming executor spun its scheduling
  loop for the whole run, 184 CPU-seconds against the trainer's 203 (it does not block while every
  operator is held back by a slower consumer, which a trainer always is), and Ray Data's read and
  decode workers held 3.7 GB more than this reader does for the same job (process tree 12.7 GB
  against 9.0 GB; most of the rest is the model's activations).

The cache is already the preprocessed tensors, so an epoch needs no decoding, only reading: a
worker does it on its own CPUs, with no object store, coordinator or CPU reservation to get wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from medxfer import storage

PREFETCH = 2  # pieces read ahead of the one being trained on


@dataclass(frozen=True)
class Piece:
    """One row group of a cached split, as served (after ``label_fraction``)."""

    uri: str  # the Parquet file
    row_group: int
    rows: int  # rows served from it
    source: int  # index into SplitStream.sources (pretraining pools several caches)


@dataclass(frozen=True)
class Source:
    """What reading a cache's rows needs from its card."""

    shape: tuple[int, ...]
    dtype: str
    classes: tuple[str, ...]
    task: str


@dataclass(frozen=True)
class SplitStream:
    """A split's pieces and how to turn their rows into tensors; travels in the run plan."""

    pieces: tuple[Piece, ...]
    sources: tuple[Source, ...]
    keep: np.ndarray | None = None  # row ids served (label_fraction); None: every row

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pieces)

    @property
    def piece_bytes(self) -> int:
        """Float32 bytes of the largest piece: the unit of a worker's read-ahead."""
        return max((p.rows * 4 * math.prod(self.sources[p.source].shape) for p in self.pieces), default=0)


def list_pieces(prepared: Sequence, split: str) -> SplitStream:
    """The pieces of ``split`` in each of ``prepared`` (:class:`~medxfer.data.cache.PreparedData`), in
    row order; read from the Parquet footers (and the ``row`` column when ``label_fraction`` < 1)."""
    import pyarrow.parquet as pq

    pieces, sources, keeps = [], [], []
    for i, p in enumerate(prepared):
        sources.append(Source(tuple(p.image_shape), p.card["dtype"], tuple(p.classes), p.task))
        if p.card["counts"][split]["total"] == 0:
            continue
        kept = p.kept_rows(split)
        if kept is not None:
            keeps.append(kept)
        split_uri = p.split_uri(split)
        for uri in sorted(u for u in storage.list_files(split_uri) if u.endswith(".parquet")):
            fs, path = storage.pyarrow_fs(uri)
            with fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                rows = pf.read(columns=["row"]).column("row").to_numpy() if kept is not None else None
                start = 0
                for g in range(pf.metadata.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    served = n if rows is None else int(np.isin(rows[start:start + n], kept).sum())
                    start += n
                    if served:
                        pieces.append(Piece(uri, g, served, i))
    keep = np.unique(np.concatenate(keeps)) if keeps else None
    return SplitStream(tuple(pieces), tuple(sources), keep)


def rank_slices(counts: Sequence[int], order: Sequence[int], rank: int, rows_per_rank: int) -> list[tuple[int, int, int]]:
    """``(piece, start, stop)`` of the rows ``rank`` reads: the pieces in ``order`` laid end to end,
    rows ``[rank * rows_per_rank, (rank + 1) * rows_per_rank)`` of that sequence. Pure."""
    lo, hi = rank * rows_per_rank, (rank + 1) * rows_per_rank
    out, pos = [], 0
    for i in order:
        n = counts[i]
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            out.append((int(i), a - pos, b - pos))
        pos += n
        if pos >= hi:
            break
    return out


def read_piece(stream: SplitStream, index: int, labels: bool = True) -> dict:
    """The rows a piece serves: ``row`` (manifest row ids), ``image`` (N, C, H, W) in the cache's dtype,
    read-only over pyarrow's buffer (batches are copied when they become tensors), and with ``labels``
    the encoded ``label``."""
    import pyarrow.parquet as pq

    from medxfer.data.manifest import encode_labels

    piece = stream.pieces[index]
    src = stream.sources[piece.source]
    fs, path = storage.pyarrow_fs(piece.uri)
    columns = ["row", "image"] + (["label"] if labels else [])
    with fs.open_input_file(path) as f:
        t = pq.ParquetFile(f).read_row_group(piece.row_group, columns=columns)
    image, rows = tensors(t.column("image"), src.shape, src.dtype), t.column("row").to_numpy()
    keep = None if stream.keep is None else np.isin(rows, stream.keep)
    out = {"row": rows, "image": image} if keep is None else {"row": rows[keep], "image": image[keep]}
    if labels:
        names = t.column("label").to_pylist()
        if keep is not None:
            names = [n for n, k in zip(names, keep, strict=True) if k]
        out["label"] = encode_labels(names, list(src.classes), src.task)
    return out


def tensors(column, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A binary column of equal-size tensors as one ``(N, *shape)`` array over the column's own buffer:
    no copy per image (pyarrow has decompressed it once); read-only."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, *shape), dtype)
    wide = pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if wide else np.int32)[arr.offset:arr.offset + n + 1]
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if not np.all(np.diff(offsets) == size):
        raise ValueError(f"cached tensors are not all {size} bytes ({shape} {dtype}); the cache is damaged")
    return np.frombuffer(arr.buffers()[2], dtype=dtype, count=n * math.prod(shape),
                         offset=int(offsets[0])).reshape((n, *shape))


class _ReadAhead:
    """Pieces read on a background thread, :data:`PREFETCH` ahead of the consumer, in order.

    pyarrow releases the GIL while it reads and decompresses, so the next pieces arrive while the
    current one trains. Closing it (the consumer stopped early) drops what was read ahead."""

    def __init__(self, stream: SplitStream, indices: Sequence[int], labels: bool):
        self.stream, self.indices, self.labels = stream, list(indices), labels
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="medxfer-read")
        self.pending: list[Future] = []
        self.next = 0

    def __iter__(self) -> Iterator[dict]:
        try:
            for _ in range(len(self.indices)):
                self._fill()
                yield self.pending.pop(0).result()
        finally:
            self.close()

    def _fill(self) -> None:
        while len(self.pending) < PREFETCH + 1 and self.next < len(self.indices):
            i = self.indices[self.next]
            self.next += 1
            self.pending.append(self.pool.submit(read_piece, self.stream, i, self.labels))

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending = []
        self.pool.shutdown(wait=False, cancel_futures=True)


def _gather(parts: list[dict], bounds: np.ndarray, idx: np.ndarray) -> dict:
    """Rows ``idx`` of ``parts`` laid end to end (``bounds``: where each part starts), copied out."""
    which = np.searchsorted(bounds, idx, side="right") - 1
    picked = [(j, idx[which == j] - bounds[j]) for j in np.unique(which)]
    return {k: np.concatenate([parts[j][k][rows] for j, rows in picked]) for k in parts[0]}


def train_batches(stream: SplitStream, order_seed: int, shuffle_seed: int, rank: int, rows_per_rank: int,
                  batch_size: int, window_bytes: int, labels: bool = True) -> Iterator[dict]:
    """This rank's training batches for one epoch: ``rows_per_rank`` rows in batches of ``batch_size``
    (the last one possibly short), shuffled within windows of pieces of up to ``window_bytes``.

    ``order_seed`` (the same on every rank) orders the pieces; ``shuffle_seed`` (this rank's) orders the
    rows within each window. A window holds at least two pieces; its rows are copied out only a batch
    at a time, so a window costs its pieces' memory once. With the pieces read ahead, a worker holds
    at most ``window_bytes`` (or two pieces) plus :data:`PREFETCH` + 1 pieces."""
    counts = [p.rows for p in stream.pieces]
    order = np.random.default_rng(order_seed).permutation(len(counts))
    slices = rank_slices(counts, order, rank, rows_per_rank)
    window = max(2, window_bytes // max(1, stream.piece_bytes))
    rng = np.random.default_rng(shuffle_seed)
    carry: list[dict] = []
    pieces = iter(_ReadAhead(stream, [i for i, _, _ in slices], labels))
    for w in range(0, len(slices), window):
        parts = carry + [{k: v[a:b] for k, v in next(pieces).items()} for _, a, b in slices[w:w + window]]
        bounds = np.cumsum([0] + [len(p["image"]) for p in parts])
        perm = rng.permutation(int(bounds[-1]))
        full = len(perm) if w + window >= len(slices) else len(perm) - len(perm) % batch_size
        for s in range(0, full, batch_size):
            yield _gather(parts, bounds, perm[s:s + batch_size])
        carry = [_gather(parts, bounds, perm[full:])] if full < len(perm) else []


def eval_batches(stream: SplitStream, rank: int, world: int, batch_size: int, labels: bool = True) -> Iterator[dict]:
    """This rank's part of a split for scoring: every ``world``-th piece, in batches of up to ``batch_size``
    (a piece's last batch may be short). Together the ranks' parts are the whole split."""
    for piece in _ReadAhead(stream, list(range(rank, len(stream.pieces), world)), labels):
        for s in range(0, len(piece["image"]), batch_size):
            yield {k: v[s:s + batch_size] for k, v in piece.items()}
