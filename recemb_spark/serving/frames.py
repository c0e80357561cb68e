"""The warehouse tables in the shape the Redis writer takes, and the distributed write.

Pure DataFrame -> DataFrame functions (one row per key to write) plus :func:`write_frame`,
which runs the executors' writer (:func:`redis_store.partition_writer`) over every partition
and returns only per-partition counts to the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..rows import one_row
from .redis_store import RANKED, WRITE_RESULT_SCHEMA, RedisTarget, partition_writer

#: per kind: the warehouse table and (key column, listed id column, score column) for ranked
#: kinds; vector kinds list only their key column
SOURCES = {
    "items": ("item_embeddings", ("item_id",)),
    "users": ("user_embeddings", ("user_id",)),
    "neighbors": ("item_neighbors", ("item_id", "neighbor_id", "similarity")),
    "user_candidates": ("user_candidates", ("user_id", "item_id", "score")),
}


def vector_frame(df: DataFrame, id_col: str) -> DataFrame:
    """``(id string, vector array<float>)`` from an embedding table keyed by ``id_col``."""
    return df.select(F.col(id_col).cast("string").alias("id"),
                     F.col("vector").cast("array<float>").alias("vector"))


def ranked_frame(df: DataFrame, key_col: str, id_col: str, score_col: str) -> DataFrame:
    """One row per ``key_col`` value: ``(id, ids array<string>, scores array<double>)`` with
    the listed ids and their scores in ``rank`` order (rows of a neighbour/candidate table)."""
    entries = F.sort_array(F.collect_list(F.struct(
        F.col("rank"), F.col(id_col).cast("string").alias("e_id"),
        F.col(score_col).cast("double").alias("e_score"))))
    return (df.groupBy(F.col(key_col).cast("string").alias("id")).agg(entries.alias("l"))
            .select("id", F.col("l.e_id").alias("ids"), F.col("l.e_score").alias("scores")))


def export_frame(df: DataFrame, kind: str) -> DataFrame:
    """The rows to write for ``kind`` (see :data:`SOURCES`) from its warehouse table."""
    cols = SOURCES[kind][1]
    return ranked_frame(df, *cols) if kind in RANKED else vector_frame(df, cols[0])


@dataclass
class Expected:
    """What a frame should put into Redis: keys, distinct ids, vector dims (0 for lists)."""

    keys: int
    distinct: int
    min_dim: int = 0
    max_dim: int = 0


def expected_counts(frame: DataFrame, kind: str) -> Expected:
    """Rows, distinct ids and (vector kinds) the smallest and largest dimension, in one job.
    A ranked frame is grouped by id already: its rows are its distinct ids."""
    if kind in RANKED:
        n = frame.count()
        return Expected(n, n)
    row = one_row(frame.agg(F.count(F.lit(1)), F.countDistinct("id"), F.min(F.size("vector")),
                            F.max(F.size("vector"))))
    return Expected(*(int(x or 0) for x in row))


def write_frame(frame: DataFrame, target: RedisTarget, prefix: str, model: str, version: str,
                kind: str, batch_size: int) -> dict[str, int]:
    """Write every row of ``frame`` (an :func:`export_frame`) from the executors; return
    ``{"rows": .., "present": .., "partitions": ..}`` summed over the partitions' reports
    (one small row per partition comes back to the driver, nothing per key)."""
    writer = partition_writer(target, prefix, model, version, kind, batch_size)
    reports = frame.mapInArrow(writer, WRITE_RESULT_SCHEMA).collect()
    return {"rows": sum(r["rows"] for r in reports),
            "present": sum(r["present"] for r in reports), "partitions": len(reports)}
