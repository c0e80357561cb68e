"""Exact top-K by matrix multiply: the item matrix broadcast, query blocks scored per partition.

Used for ALS user candidates, the ``exact`` nearest-neighbour method, and the ground truth
that approximate methods' recall is measured against.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .tables import natural_key

# at most this many (query, item) scores in memory at once per task (~80 MB of float32)
BLOCK_CELLS = 20_000_000
TOPK_SCHEMA = "query_id string, item_id string, rank int, score double"


def collect_matrix(item_vectors: DataFrame, normalise: bool) -> tuple[list[str], np.ndarray]:
    """Item ids (in natural order, so ties rank by id) and their vectors as a float32 matrix,
    rows unit-length when ``normalise``. Collected to the driver: O(catalogue x dim), the one
    thing we broadcast."""
    rows = sorted(item_vectors.select("item_id", "vector").collect(),
                  key=lambda r: natural_key(r["item_id"]))
    ids = [r["item_id"] for r in rows]
    dim = len(rows[0]["vector"]) if rows else 1
    matrix = (np.array([r["vector"] for r in rows], dtype=np.float32) if rows
              else np.zeros((0, dim), np.float32))
    return ids, unit_rows(matrix) if normalise else matrix


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best columns in descending score order (ties by column) and their
    scores; ``-inf`` entries are never returned (their slots hold index -1)."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0))
    n = scores.shape[1]
    part = np.argpartition(scores, n - k, axis=1)[:, n - k:]  # largest k, no negated copy
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isfinite(best), idx, -1)
    return idx, best


def exact_top_k(spark: SparkSession, queries: DataFrame, item_vectors: DataFrame, k: int,
                similarity: str = "cosine") -> DataFrame:
    """The ``k`` best items for every query: ``(query_id, item_id, rank, score)``.

    ``queries``: ``(query_id string, vector array<float>, exclude array<string>)`` — items in
    ``exclude`` are never returned (the user's history, or the item itself). ``similarity``:
    ``cosine`` (vectors normalised) or ``dot``. ``rank`` starts at 1. Rows come back where the
    queries are; only the item matrix is broadcast.
    """
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"unknown similarity {similarity!r}")
    ids, matrix = collect_matrix(item_vectors, normalise=similarity == "cosine")
    index = {item: i for i, item in enumerate(ids)}
    bc = spark.sparkContext.broadcast((np.array(ids, dtype=object), index, matrix))
    block = max(1, min(4096, BLOCK_CELLS // max(len(ids), 1)))
    cosine = similarity == "cosine"

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids_, index_, m = bc.value
        for batch in batches:
            batch = batch.filter(pc.is_valid(batch.column(1)))
            for lo in range(0, batch.num_rows, block):
                part = batch.slice(lo, block)
                qids = np.array(part.column(0).to_pylist(), dtype=object)
                q = (part.column(1).flatten().to_numpy(zero_copy_only=False)
                     .astype(np.float32).reshape(part.num_rows, -1))
                if cosine:
                    q = unit_rows(q)
                scores = q @ m.T
                for r, excluded in enumerate(part.column(2).to_pylist()):
                    cols = [index_[i] for i in (excluded or []) if i in index_]
                    scores[r, cols] = -np.inf
                top, best = top_k_rows(scores, k)
                ok = top >= 0
                rows, _ = np.nonzero(ok)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(qids[rows], pa.string()), pa.array(ids_[top[ok]], pa.string()),
                     pa.array((np.nonzero(ok)[1] + 1).astype(np.int32)),
                     pa.array(best[ok].astype(np.float64))],
                    names=["query_id", "item_id", "rank", "score"])

    return queries.select("query_id", "vector", "exclude").mapInArrow(run, TOPK_SCHEMA)


def user_candidates(spark: SparkSession, user_vectors: DataFrame, item_vectors: DataFrame,
                    histories: DataFrame, k: int, similarity: str) -> DataFrame:
    """Top-``k`` unseen items per user: ``(user_id, item_id, rank, score)``.
    ``histories``: ``(user_id, items)`` — those items are excluded."""
    queries = (user_vectors.join(histories, "user_id", "left")
               .select(F.col("user_id").alias("query_id"), "vector",
                       F.coalesce("items", F.array().cast("array<string>")).alias("exclude")))
    return (exact_top_k(spark, queries, item_vectors, k, similarity)
            .withColumnRenamed("query_id", "user_id"))
