"""User embeddings pooled from the vectors of the items in each user's history."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from ..neighbors.topk import broadcast_items, first_of, list_positions

USERS_SCHEMA = "user_id string, vector array<float>"
#: history items pooled per numpy step (bounds a task's memory: x dim x 8 bytes)
CHUNK_TOKENS = 1_000_000


def pool_user_vectors(histories: DataFrame, item_vectors: DataFrame, pooling: str = "mean",
                      half_life: float = 10.0) -> DataFrame:
    """Each user's vector: the (weighted) mean of the vectors of the items in their history.

    ``histories``: ``(user_id, items array<string>)`` in time order, oldest first, one row per
    user. ``item_vectors``: ``(item_id, vector array<float>)``: collected to the driver and
    broadcast (O(catalogue x dim), as the top-K search does), so the history table is read
    once, without exploding or shuffling it. ``pooling``: ``mean`` (equal weights) or
    ``recency``: the item at position p from the end (0 = latest) weighs
    ``0.5 ** (p / half_life)``; positions count every history item, also those without a
    vector. Items without a vector are skipped; users with no known item get no row. Sums in
    float64. Returns ``(user_id string, vector array<float>)``.
    """
    if pooling not in ("mean", "recency"):
        raise ValueError(f"unknown pooling {pooling!r}")
    recency = pooling == "recency"
    bc = broadcast_items(item_vectors.sparkSession, item_vectors, normalise=False)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, matrix = bc.value
        for batch in batches:
            step = _rows_per_chunk(batch)
            for lo in range(0, batch.num_rows, step):
                out = _pool(batch.slice(lo, step), matrix, ids, recency, half_life)
                if out.num_rows:
                    yield out

    return histories.select("user_id", "items").mapInArrow(run, USERS_SCHEMA)


def _rows_per_chunk(batch: pa.RecordBatch) -> int:
    tokens = max(1, len(batch.column(1).flatten()))
    return max(1, int(batch.num_rows * min(1.0, CHUNK_TOKENS / tokens)))


def _pool(batch: pa.RecordBatch, matrix: np.ndarray, ids: pa.Array, recency: bool,
          half_life: float) -> pa.RecordBatch:
    """Pooled vectors of one batch of ``(user_id, items)`` rows (users without a known item
    dropped)."""
    lists = batch.column(1)
    lengths, rows, cols = list_positions(lists, ids)
    if recency:
        starts = np.cumsum(lengths) - lengths
        from_end = (lengths[rows] - 1) - (np.arange(len(rows)) - starts[rows])
        weights = np.power(0.5, from_end / float(half_life))
    else:
        weights = np.ones(len(rows))
    known = cols >= 0
    rows, cols, weights = rows[known], cols[known], weights[known]
    dim = matrix.shape[1]
    if len(rows) == 0:
        keep, means = np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    else:  # rows ascend: one segment per user with a known item
        starts = first_of(rows)
        sums = np.add.reduceat(weights[:, None] * matrix[cols].astype(np.float64), starts, 0)
        totals = np.add.reduceat(weights, starts)
        keep, means = rows[starts], (sums / totals[:, None]).astype(np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(means.ravel()), dim)
    return pa.RecordBatch.from_arrays(
        [batch.column(0).take(pa.array(keep)), vectors.cast(pa.list_(pa.float32()))],
        names=["user_id", "vector"])
