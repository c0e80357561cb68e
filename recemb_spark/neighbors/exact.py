"""Exact top-K on Spark: each call chooses the broadcast path (the item matrix in every Python
worker, :mod:`recemb_spark.neighbors.topk`'s kernels over query blocks) or, above
``ann.broadcast_max_mb``, the sharded paths of :mod:`recemb_spark.neighbors.blocks`; every path
returns the same rows."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import blocks
from .topk import (
    TOPK_SCHEMA,
    broadcast_items,
    exclusions,
    query_matrix,
    stream_top_k,
    topk_batch,
    unit_rows,
)


def exact_path(spark: SparkSession, queries: DataFrame | None, item_vectors: DataFrame,
               broadcast_max_mb: float | None, k: int) -> str:
    """How :func:`exact_top_k` runs for these tables and ``k``: ``broadcast`` (the item matrix
    fits the threshold of :func:`recemb_spark.neighbors.blocks.broadcast_limit`),
    ``broadcast_queries`` (it does not, the queries with their running top-``k`` do) or
    ``sharded``. Counts both tables and reads one row."""
    n_items, dim = blocks.table_shape(item_vectors)
    n_queries = queries.count() if queries is not None else None
    return blocks.choose_path(n_items, dim, n_queries,
                              blocks.broadcast_limit(spark, broadcast_max_mb), k=k)


def exact_top_k(spark: SparkSession, queries: DataFrame, item_vectors: DataFrame, k: int,
                similarity: str = "cosine", path: str | None = None,
                broadcast_max_mb: float | None = None) -> DataFrame:
    """The ``k`` best items for every query: ``(query_id, item_id, rank, score)``.

    ``queries``: ``(query_id string, vector array<float>, exclude array<string>)`` — items in
    ``exclude`` are never returned (the user's history, or the item itself). ``similarity``:
    ``cosine`` (vectors normalised) or ``dot``. ``rank`` starts at 1; ties rank by item id in
    natural order. ``path``: one of :data:`recemb_spark.neighbors.blocks.PATHS`, or None to
    choose with :func:`exact_path` (``broadcast_max_mb``: None = auto, 0 = never broadcast).
    Every path returns the same rows.
    """
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"unknown similarity {similarity!r}")
    cosine = similarity == "cosine"
    path = path or exact_path(spark, queries, item_vectors, broadcast_max_mb, k)
    if path == "broadcast":
        return _broadcast_top_k(spark, queries, item_vectors, k, cosine)
    if path not in blocks.PATHS:
        raise ValueError(f"unknown exact path {path!r} (one of {', '.join(blocks.PATHS)})")
    numbered = blocks.number_items(item_vectors)
    if path == "broadcast_queries":
        return blocks.broadcast_queries_top_k(spark, queries, numbered, k, cosine)
    n_items, dim = blocks.table_shape(item_vectors)
    return blocks.sharded_top_k(queries, numbered, n_items, dim, k, cosine)


def _broadcast_top_k(spark: SparkSession, queries: DataFrame, item_vectors: DataFrame, k: int,
                     cosine: bool) -> DataFrame:
    """:func:`exact_top_k` with the item matrix broadcast: the queries are scored where they
    are."""
    bc = broadcast_items(spark, item_vectors, normalise=cosine)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ids, m = bc.value
        mt = np.ascontiguousarray(m.T)
        for batch in batches:
            batch = batch.filter(batch.column(1).is_valid())
            if batch.num_rows == 0:
                continue
            q = query_matrix(batch, 1)
            if cosine:
                q = unit_rows(q)
            idx, vals = stream_top_k(q, mt, min(k, m.shape[0]),
                                     exclusions(batch.column(2), ids))
            yield topk_batch(batch.column(0), idx, vals, ids)

    return queries.select("query_id", "vector", "exclude").mapInArrow(run, TOPK_SCHEMA)


def user_queries(user_vectors: DataFrame, histories: DataFrame) -> DataFrame:
    """The :func:`exact_top_k` queries of users: ``(query_id, vector, exclude)`` with the
    items of ``histories (user_id, items)`` excluded."""
    return (user_vectors.join(histories, "user_id", "left")
            .select(F.col("user_id").alias("query_id"), "vector",
                    F.coalesce("items", F.array().cast("array<string>")).alias("exclude")))


def user_candidates(spark: SparkSession, user_vectors: DataFrame, item_vectors: DataFrame,
                    histories: DataFrame, k: int, similarity: str, path: str | None = None,
                    broadcast_max_mb: float | None = None) -> DataFrame:
    """Top-``k`` unseen items per user: ``(user_id, item_id, rank, score)``.
    ``histories``: ``(user_id, items)`` — those items are excluded. ``path`` and
    ``broadcast_max_mb`` as in :func:`exact_top_k`."""
    return (exact_top_k(spark, user_queries(user_vectors, histories), item_vectors, k,
                        similarity, path, broadcast_max_mb)
            .withColumnRenamed("query_id", "user_id"))
