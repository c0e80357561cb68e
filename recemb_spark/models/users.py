"""User embeddings pooled from the vectors of the items in each user's history."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..neighbors import blocks
from ..neighbors.topk import broadcast_items, first_of, list_positions

USERS_SCHEMA = "user_id string, vector array<float>"
#: history items pooled per numpy step (bounds a task's memory: x dim x 8 bytes)
CHUNK_TOKENS = 1_000_000


def pooling_path(item_vectors: DataFrame, broadcast_max_mb: float | None = None) -> str:
    """``broadcast`` when the item matrix fits the broadcast threshold
    (:func:`recemb_spark.neighbors.blocks.broadcast_limit`), else ``join``."""
    n, dim = blocks.table_shape(item_vectors)
    limit = blocks.broadcast_limit(item_vectors.sparkSession, broadcast_max_mb)
    return "broadcast" if blocks.choose_path(n, dim, None, limit, k=0) == "broadcast" else "join"


def pool_user_vectors(histories: DataFrame, item_vectors: DataFrame, pooling: str = "mean",
                      half_life: float = 10.0, path: str | None = None,
                      broadcast_max_mb: float | None = None) -> DataFrame:
    """Each user's vector: the (weighted) mean of the vectors of the items in their history.

    ``histories``: ``(user_id, items array<string>)`` in time order, oldest first, one row per
    user. ``item_vectors``: ``(item_id, vector array<float>)``. ``path="broadcast"``: the
    item matrix is collected to the driver and broadcast (O(catalogue x dim), as the top-K
    search does), so the history table is read once, without exploding or shuffling it;
    ``"join"``: histories exploded with their positions and joined with the item vectors
    (:func:`pool_by_join`, nothing per catalogue in one place); None: :func:`pooling_path`
    decides (``broadcast_max_mb``: None = auto, 0 = always join). ``pooling``: ``mean``
    (equal weights) or
    ``recency``: the item at position p from the end (0 = latest) weighs
    ``0.5 ** (p / half_life)``; positions count every history item, also those without a
    vector. Items without a vector are skipped; users with no known item get no row. Sums in
    float64. Returns ``(user_id string, vector array<float>)``.
    """
    if pooling not in ("mean", "recency"):
        raise ValueError(f"unknown pooling {pooling!r}")
    recency = pooling == "recency"
    path = path or pooling_path(item_vectors, broadcast_max_mb)
    if path == "join":
        return pool_by_join(histories, item_vectors, recency, half_life)
    if path != "broadcast":
        raise ValueError(f"unknown pooling path {path!r} (broadcast or join)")
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


def pool_by_join(histories: DataFrame, item_vectors: DataFrame, recency: bool,
                 half_life: float) -> DataFrame:
    """:func:`pool_user_vectors` without a broadcast: every history item with its position
    from the end (counting items without a vector) and weight, joined with its vector, summed
    per user in float64 by Spark SQL (no Python worker). ``(user_id, vector array<float>)``."""
    events = histories.select("user_id", F.posexplode("items").alias("pos", "item_id"),
                              F.size("items").alias("n"))
    from_end = F.col("n") - 1 - F.col("pos")
    weight = (F.pow(F.lit(0.5), from_end / F.lit(float(half_life))) if recency
              else F.lit(1.0))
    joined = (events.join(item_vectors.select("item_id", "vector"), "item_id")
              .select("user_id", weight.alias("w"),
                      F.transform("vector", lambda x: x.cast("double")).alias("v")))
    sums = joined.groupBy("user_id").agg(
        F.sum("w").alias("total"),
        F.aggregate(F.collect_list(F.struct("w", "v")),
                    F.array_repeat(F.lit(0.0), F.size(F.first("v"))),
                    lambda acc, e: F.zip_with(acc, e["v"], lambda a, b: a + e["w"] * b))
        .alias("sum"))
    return sums.select("user_id", F.transform("sum", lambda x: (x / F.col("total"))
                                              .cast("float")).alias("vector"))


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
