"""Banded LSH as a keyed join: no task and not the driver holds anything catalogue-sized.

The broadcast path (:func:`recemb_spark.neighbors.nearest.lsh_top_k` below its size threshold)
gives every task the whole item matrix and builds all buckets in numpy. Here only the
projections (``k x L x dim`` floats) are broadcast:

1. items (and, for user candidates, queries) get their ``L`` band keys per partition
   (:func:`with_band_keys`: the same hash family and key combination as
   :func:`recemb_spark.neighbors.banded.band_keys`) and become one row per (band, key);
2. buckets of more than ``cap`` items (the *hot* buckets, a small aggregate) are cut into
   ``ceil(size / cap)`` chunks: an item goes to the chunk picked by a hash of (its id, band),
   so chunks hold about ``cap`` items (as LinkedIn's ScANNS bucket limit samples them); an item
   query stays in its own chunk, any other query goes to one chunk picked by a hash of (its id,
   band);
3. a shuffle by (band, key, chunk), sorted by (band, key, chunk, items first), brings each
   group's rows together; one pass over the sorted rows (:func:`score_sorted`) scores the
   queries of each group against its items exactly and keeps at most ``k`` per query, holding
   at most one group's items (about ``cap``) and one Arrow batch at a time;
4. the candidates are merged per query over the bands in Spark (the best score of a repeated
   item, the best ``k`` distinct items).

:func:`few_queries_top_k` is the exact top-``k`` of a few queries (the tune sample) against
all items: the queries are broadcast and each item partition keeps its best ``k`` per query.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import Broadcast, TaskContext
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StructField, StructType

from .banded import band_keys, score_groups
from .topk import TOPK_SCHEMA, exclusions, query_matrix, top_k_rows

# band rows (one per band of every item / query) per partition of the keyed shuffle: the JVM
# sorts them (spilling as needed); the Python pass holds one group and one batch whatever this is
ROWS_PER_PARTITION = 500_000
# candidate rows (at most k per query and band) per partition of the merge by query
CANDIDATES_PER_PARTITION = 1_000_000
GROUP_COLS = ["band", "key", "chunk"]
ROWS_SCHEMA = ("band int, key bigint, chunk int, role int, id string, vector array<float>, "
               "exclude array<string>, size bigint")
CANDIDATES_SCHEMA = "query_id string, item_id string, score float"
ITEM, QUERY = 0, 1


def with_band_keys(df: DataFrame, proj: Broadcast, bucket_length: float,
                   bands: int) -> DataFrame:
    """``df`` (with an ``array<float>`` column ``vector``) plus ``keys array<bigint>``: its
    ``bands`` band keys (:func:`band_keys`; the uint64 keys' bits as int64). ``proj``: the
    broadcast ``(k x bands, dim)`` projections."""
    schema = StructType([*df.schema.fields, StructField("keys", ArrayType(LongType()))])
    col = df.columns.index("vector")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            x = (query_matrix(batch, col) if batch.num_rows
                 else np.zeros((0, proj.value.shape[1]), np.float32))
            keys = band_keys(x, proj.value, bucket_length, bands).view(np.int64)
            offsets = pa.array(np.arange(0, keys.size + 1, bands, dtype=np.int32))
            lists = pa.ListArray.from_arrays(offsets, pa.array(keys.ravel()))
            yield pa.RecordBatch.from_arrays([*batch.columns, lists],
                                             names=[*batch.schema.names, "keys"])

    return df.mapInArrow(run, schema)


def band_rows(keyed: DataFrame) -> DataFrame:
    """One row per band of every row of ``keyed`` (from :func:`with_band_keys`): its columns
    without ``keys``, plus ``band int`` and ``key bigint``."""
    rest = [c for c in keyed.columns if c != "keys"]
    return keyed.select(*rest, F.posexplode("keys").alias("band", "key"))


def hot_buckets(item_rows: DataFrame, cap: int) -> DataFrame:
    """``(band, key, n_chunks, size)`` of the buckets holding more than ``cap`` items: at most
    ``items x bands / cap`` rows."""
    return (item_rows.groupBy("band", "key").agg(F.count(F.lit(1)).alias("size"))
            .filter(F.col("size") > cap)
            .select("band", "key", F.ceil(F.col("size") / cap).cast("int").alias("n_chunks"),
                    "size"))


def chunked(rows: DataFrame, hot: DataFrame, id_col: str, seed: int) -> DataFrame:
    """``rows`` (with ``band``, ``key``) plus ``chunk int`` (0 outside hot buckets, else a hash
    of (``id_col``, band, seed) modulo the bucket's chunks) and ``size bigint`` (the hot
    bucket's size before cutting, 0 elsewhere)."""
    pick = F.pmod(F.xxhash64(id_col, "band", F.lit(seed)), F.col("n_chunks"))
    # broadcast: at most items x bands / cap rows of 24 bytes (4M items, 24 bands, cap 2000:
    # 1.2 MB), and the big side then goes through one shuffle only (the scoring one)
    return (rows.join(F.broadcast(hot), ["band", "key"], "left")
            .withColumn("chunk", F.coalesce(pick, F.lit(0)).cast("int"))
            .withColumn("size", F.coalesce("size", F.lit(0)).cast("long"))
            .drop("n_chunks"))


def group_starts(table: pa.Table) -> np.ndarray:
    """Positions where a new (band, key, chunk) group starts in rows sorted by group."""
    cols = [table.column(c).to_numpy() for c in GROUP_COLS]
    new = np.zeros(table.num_rows, bool)
    new[:1] = True
    for c in cols:
        new[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(new)


def _matrix(table: pa.Table, rows: np.ndarray, dim: int) -> np.ndarray:
    if len(rows) == 0:
        return np.zeros((0, dim), np.float32)
    vectors = table.column("vector").take(pa.array(rows)).combine_chunks()
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
        len(rows), -1)


def _excluded(table: pa.Table, q_rows: np.ndarray, q_group: np.ndarray, i_rows: np.ndarray,
              i_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(query, item)`` positions (in ``q_rows`` / ``i_rows``) where the item's id is in the
    query's ``exclude`` list and both are in the same group."""
    lists = table.column("exclude").take(pa.array(q_rows)).combine_chunks()
    lengths = lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    if len(lists) == 0 or lengths.sum() == 0 or len(i_rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    q_of = np.repeat(np.arange(len(q_rows)), lengths)
    left = pa.table({"g": q_group[q_of], "id": lists.flatten(), "q": q_of})
    right = pa.table({"g": i_group, "id": table.column("id").take(pa.array(i_rows)),
                      "i": np.arange(len(i_rows))})
    pairs = left.join(right, ["g", "id"], join_type="inner")
    return (pairs.column("q").to_numpy().astype(np.int64),
            pairs.column("i").to_numpy().astype(np.int64))


def score_sorted(table: pa.Table, k: int, self_join: bool
                 ) -> tuple[pa.RecordBatch, int, int]:
    """Score the queries of every (band, key, chunk) group of ``table`` (rows in
    :data:`ROWS_SCHEMA`, sorted by group and role: a group's items first) against the group's
    items: ``(query_id, item_id, score)`` rows with at most ``k`` items per query and group,
    the number of scores computed, and the largest bucket seen (a hot bucket's ``size``, else
    a group's item count). With ``self_join`` the items are the queries (never their own
    candidate) and ``role``/``exclude`` are ignored."""
    starts = group_starts(table)
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, table.num_rows)))
    role = table.column("role").to_numpy()
    i_rows = np.flatnonzero(role == ITEM)
    q_rows = i_rows if self_join else np.flatnonzero(role == QUERY)
    vectors = table.column("vector").combine_chunks()
    dim = int(vectors.value_lengths()[0].as_py()) if len(vectors) else 1
    x = _matrix(table, i_rows, dim)
    q = x if self_join else _matrix(table, q_rows, dim)
    if self_join:
        ex_q = ex_i = np.arange(len(i_rows))
    else:
        ex_q, ex_i = _excluded(table, q_rows, group[q_rows], i_rows, group[i_rows])
    rows, idx, score, pairs = score_groups(q, group[q_rows], x, group[i_rows], k, ex_q, ex_i)
    ids = table.column("id")
    out = pa.RecordBatch.from_arrays(
        [ids.take(pa.array(q_rows[rows])).combine_chunks(),
         ids.take(pa.array(i_rows[idx])).combine_chunks(), pa.array(score, pa.float32())],
        names=["query_id", "item_id", "score"])
    counts = np.bincount(group[i_rows], minlength=len(starts)) if len(i_rows) else np.zeros(1)
    size = table.column("size").to_numpy()
    largest = max(int(counts.max(initial=0)), int(size.max(initial=0)))
    return out, pairs, largest


def score_stream(batches: Iterator[pa.RecordBatch], k: int, self_join: bool,
                 totals: list[int]) -> Iterator[pa.RecordBatch]:
    """:func:`score_sorted` over a partition's sorted batches, groups cut by batch boundaries
    carried over: with ``self_join`` the last (maybe incomplete) group waits for the next
    batch; otherwise every query present is scored (a group's items come before its queries)
    and only the last group's items are carried. ``totals`` (``[pairs, largest]``) is updated."""
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        if carry is not None:
            table = pa.concat_tables([carry, table])
        last = int(group_starts(table)[-1])
        tail = table.slice(last)
        if self_join:
            table, carry = table.slice(0, last), tail
        else:
            carry = tail.filter(pc.equal(tail.column("role"), ITEM))
        if table.num_rows:
            out, pairs, largest = score_sorted(table, k, self_join)
            totals[0] += pairs
            totals[1] = max(totals[1], largest)
            if out.num_rows:
                yield out
    if self_join and carry is not None and carry.num_rows:
        out, pairs, largest = score_sorted(carry, k, self_join)
        totals[0] += pairs
        totals[1] = max(totals[1], largest)
        if out.num_rows:
            yield out


def merge_bands(candidates: DataFrame, k: int, parts: int) -> DataFrame:
    """Per query, the best ``k`` distinct items over all bands: ``(query_id, item_id, rank,
    score)`` (an item found in several bands counts once, with its best score; ties by item
    id). One shuffle by query (the aggregate and the window reuse its partitioning)."""
    w = Window.partitionBy("query_id").orderBy(F.desc("score"), "item_id")
    return (candidates.repartition(parts, "query_id")
            .groupBy("query_id", "item_id").agg(F.max("score").alias("score"))
            .withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
            .select("query_id", "item_id", F.col("rank").cast("int"),
                    F.col("score").cast("double")))


@dataclass
class ShardedPlan:
    """The result of :func:`sharded_top_k` before any action: the lazy ``(query_id, item_id,
    rank, score)`` rows, the per-partition counters (``{partition: (pairs, 0, largest)}``),
    the hot buckets (persisted: the manifest's split counters) and the projections."""

    out: DataFrame
    parts: Any
    hot: DataFrame
    proj: Broadcast


def sharded_top_k(spark: SparkSession, queries: DataFrame | None, items: DataFrame,
                  proj: np.ndarray, bucket_length: float, bands: int, k: int, cap: int,
                  seed: int, n_items: int, parts_acc: Any) -> ShardedPlan:
    """Banded-LSH top-``k`` items per query by a keyed join (see the module doc).

    ``items``: ``(item_id, vector)``, unit-length; ``queries``: ``(query_id, vector, exclude
    array<string>)``, or ``None`` for the self-join (every item a query, never its own
    neighbour). ``parts_acc``: an accumulator of ``{partition id: (pairs, 0, largest)}``
    (:class:`recemb_spark.neighbors.nearest.PerPartition`). ``n_items`` sizes the shuffle."""
    sc = spark.sparkContext
    bc = sc.broadcast(np.asarray(proj, np.float64))
    self_join = queries is None
    item_rows = band_rows(with_band_keys(items.select("item_id", "vector"), bc,
                                         bucket_length, bands))
    hot = hot_buckets(item_rows, cap).persist()
    rows = (chunked(item_rows, hot, "item_id", seed)
            .select("band", "key", "chunk", F.lit(ITEM).alias("role"),
                    F.col("item_id").alias("id"), "vector",
                    F.lit(None).cast("array<string>").alias("exclude"), "size"))
    if queries is not None:
        query_rows = band_rows(with_band_keys(
            queries.select("query_id", "vector", "exclude"), bc, bucket_length, bands))
        rows = rows.unionByName(
            chunked(query_rows, hot, "query_id", seed + 1)
            .select("band", "key", "chunk", F.lit(QUERY).alias("role"),
                    F.col("query_id").alias("id"), "vector", "exclude",
                    F.lit(0).cast("long").alias("size")))
    per_query = 1 if self_join else 2
    parts = max(2 * sc.defaultParallelism,
                -(-n_items * bands * per_query // ROWS_PER_PARTITION))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        totals = [0, 0]
        yield from score_stream(batches, k, self_join, totals)
        ctx = TaskContext.get()
        parts_acc.add({ctx.partitionId() if ctx else 0: (totals[0], 0, totals[1])})

    candidates = (rows.repartition(parts, *GROUP_COLS)
                  .sortWithinPartitions(*GROUP_COLS, "role")
                  .mapInArrow(run, CANDIDATES_SCHEMA))
    merge_parts = max(2 * sc.defaultParallelism,
                      -(-n_items * per_query * bands * k // CANDIDATES_PER_PARTITION))
    out = merge_bands(candidates, k, merge_parts)
    return ShardedPlan(out, parts_acc, hot, bc)


def few_queries_top_k(spark: SparkSession, q: np.ndarray, exclude: list[list[str]] | None,
                      items: DataFrame, k: int
                      ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Exact top-``k`` items (by dot product) of a few queries ``q`` (``(n_q, dim)``) among
    all ``items (item_id, vector)``: the queries are broadcast, every item partition keeps its
    best ``k`` per query, Spark merges them. Returns the vectors ``(n_q, k, dim)``, a validity
    mask ``(n_q, k)`` (false where fewer than ``k``) and the ids, best first. ``exclude``: per
    query the item ids never returned (its own id in a self-join, a user's history), or
    ``None``. Driver and tasks hold
    ``O(n_q x k x dim)`` (and the exclusion lists). (A stand-in for the exact search's own
    sharded path.)"""
    n_q, dim = q.shape
    vecs = np.zeros((n_q, k, dim), np.float32)
    valid = np.zeros((n_q, k), bool)
    names: list[list[str]] = [[] for _ in range(n_q)]
    if n_q == 0 or k == 0:
        return vecs, valid, names
    lists = pa.array(exclude or [[] for _ in range(n_q)], pa.list_(pa.string()))
    bc = spark.sparkContext.broadcast((np.asarray(q, np.float32), lists))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        qq, excl = bc.value
        best_v = np.full((len(qq), 0), -np.inf, np.float32)
        best_x = np.zeros((len(qq), 0, qq.shape[1]), np.float32)
        best_id = np.zeros((len(qq), 0), object)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = query_matrix(batch, 1)
            ids = np.array(batch.column(0).to_pylist(), object)
            s = qq @ x.T
            rows_, cols_ = exclusions(excl, batch.column(0))
            s[rows_, cols_] = -np.inf
            idx, val = top_k_rows(s, k)
            ok = idx >= 0
            val = np.where(ok, val, -np.inf).astype(np.float32)
            safe = np.maximum(idx, 0)
            all_v = np.concatenate([best_v, val], axis=1)
            all_x = np.concatenate([best_x, x[safe]], axis=1)
            all_id = np.concatenate([best_id, ids[safe]], axis=1)
            keep = np.argsort(-all_v, axis=1, kind="stable")[:, :k]
            best_v = np.take_along_axis(all_v, keep, 1)
            best_x = np.take_along_axis(all_x, keep[:, :, None], 1)
            best_id = np.take_along_axis(all_id, keep, 1)
        r, c = np.nonzero(np.isfinite(best_v))
        if len(r):
            d = int(qq.shape[1])
            offsets = pa.array(np.arange(0, len(r) * d + 1, d, dtype=np.int32))
            flat = pa.array(best_x[r, c].ravel(), pa.float32())
            yield pa.RecordBatch.from_arrays(
                [pa.array(r.astype(np.int32)), pa.array(best_id[r, c].tolist(), pa.string()),
                 pa.array(best_v[r, c], pa.float32()), pa.ListArray.from_arrays(offsets, flat)],
                names=["row", "item_id", "score", "vector"])

    w = Window.partitionBy("row").orderBy(F.desc("score"), "item_id")
    table = (items.select("item_id", "vector")
             .mapInArrow(run, "row int, item_id string, score float, vector array<float>")
             .withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
             .toArrow())
    bc.unpersist()
    rows = table.column("row").to_numpy().astype(np.int64)
    ranks = table.column("rank").to_numpy().astype(np.int64) - 1
    got = table.column("vector").combine_chunks()
    if len(rows):
        vecs[rows, ranks] = got.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), dim)
        valid[rows, ranks] = True
    item_ids = table.column("item_id").to_pylist()
    for r, _, name in sorted(zip(rows.tolist(), ranks.tolist(), item_ids, strict=True)):
        names[r].append(name)
    return vecs, valid, names


__all__ = ["TOPK_SCHEMA", "few_queries_top_k", "sharded_top_k", "score_sorted",
           "score_stream", "merge_bands", "with_band_keys"]
