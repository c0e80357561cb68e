"""Broadcast or shard: the size threshold, and item blocks x query blocks for exact top-K.

Below the threshold an item matrix is collected to the driver and broadcast to every Python
worker (:func:`recemb_spark.neighbors.topk.broadcast_items`): fastest, and what every path did
before. Above it nothing proportional to the catalogue reaches the driver or one task:

* ``sharded``: items numbered 0..n-1 in natural id order and cut into blocks of
  :func:`item_block_rows` consecutive numbers, queries cut into blocks by a hash of their id;
  each (query block, item block) pair is one cogroup whose task scores the two blocks with the
  :func:`~recemb_spark.neighbors.topk.stream_top_k` kernel and emits at most ``k`` candidates
  per query; each query's top-``k`` is merged from those by a keyed window (score descending,
  ties by item number = natural id order, as the broadcast path breaks them).
* ``broadcast_queries``: few queries (a recall sample) against a large catalogue: the query
  side is broadcast and the items stream past it, partition by partition.

:func:`choose_path` decides once per call site from a count and one row (never a collect).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.group_ops import PandasCogroupedOps

from ..ids import dense_index
from .topk import exclusions, merge_top_k, query_matrix, stream_top_k, unit_rows

#: What a broadcast item matrix weighs in one Python worker, per item: the float32 row (4 x dim
#: bytes) twice -- the unpickled matrix and the contiguous transposed copy a task makes for the
#: kernel -- plus the id (an Arrow string, or a dict entry in the evaluation: ~100 bytes). The
#: driver holds the collected Arrow table and the pickled copy on top. At 4M items x dim 64
#: that is 4M x (512 + 100) B = 2.3 GiB per worker, where a YARN/Kubernetes container gives
#: a Python worker one or two.
BYTES_PER_ID = 100
#: auto threshold: a broadcast may take this share of the memory one Python worker may use
AUTO_SHARE = 0.125
#: What one query's running top-``k`` list weighs, per slot, in a
#: :func:`broadcast_queries_top_k` task: the kept list (int64 number + float32 score, 12 B),
#: one item batch's list beside it and :func:`~recemb_spark.neighbors.topk.merge_top_k`'s
#: temporaries over both (two concatenations, two sort orders, the gathered copies): 98 B
#: measured with tracemalloc (``tests/test_shards.py``), plus the candidate rows emitted in
#: Arrow at the end (id, number, score: ~25 B). At 220k user queries and k = 50 that is
#: 1.4 GB -- ten times the queries' vectors, and what a capped cluster run of the 722k-item
#: log died of when only the vectors were counted.
TOPK_SLOT_BYTES = 128
#: one item block (float32 rows) in a sharded task: ~32 MiB, whatever the catalogue
BLOCK_BYTES = 32 * 2**20
#: one query block: at most this many queries (x dim x 4 bytes, plus their exclusions)
QUERY_BLOCK_ROWS = 50_000
#: candidate rows of the sharded paths: one per (query, item) kept by a block
CANDIDATE_SCHEMA = "query_id string, item_idx long, score float"
#: the memory string Spark assumes when a memory setting is absent
SPARK_DEFAULT_MEMORY = "1g"
#: local mode: a Python worker's budget is the driver's memory up to this (the default
#: ``spark.driver_memory``). The workers live beside the JVM, not in it: a driver heap raised
#: for Word2Vec's vocabulary (14g for 3M items) says nothing about the room for ``cores``
#: more copies of a broadcast, and let the 3M-item run's pooling broadcast its item matrix
#: into every worker (872 MB RSS, against 680 MB at 722k items with the default)
LOCAL_WORKER_CAP = "4g"

PATHS = ("broadcast", "broadcast_queries", "sharded")


def broadcast_bytes(n: int, dim: int) -> int:
    """Bytes one Python worker holds for a broadcast matrix of ``n`` items x ``dim`` floats."""
    return n * (2 * 4 * dim + BYTES_PER_ID)


def query_bytes(n: int, dim: int, k: int) -> int:
    """Bytes one Python worker holds for ``n`` broadcast queries that each keep a running
    top-``k``: their vectors and ids (:func:`broadcast_bytes`) and :data:`TOPK_SLOT_BYTES`
    per kept slot."""
    return broadcast_bytes(n, dim) + n * k * TOPK_SLOT_BYTES


def memory_bytes(value: str) -> int:
    """Bytes of a JVM memory string (``512m``, ``4g``, ``1024`` = MiB as Spark reads it)."""
    v = value.strip().lower().removesuffix("b")
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    if v and v[-1] in units:
        return int(float(v[:-1]) * units[v[-1]])
    return int(float(v) * 2**20)


def worker_memory_bytes(conf: dict[str, str], local: bool, cores: int) -> int:
    """The memory one Python worker may use: ``spark.executor.pyspark.memory`` / executor cores
    when set (Spark's per-worker limit), else ``spark.executor.memory`` / executor cores; in
    local mode (driver and workers share a machine, and the broadcast is collected by the
    driver) ``spark.driver.memory``, at most :data:`LOCAL_WORKER_CAP`. ``conf``: the
    session's settings; ``cores``: executor cores (``spark.executor.cores``, else the
    default parallelism in local mode)."""
    cores = max(1, int(conf.get("spark.executor.cores", cores)))
    if "spark.executor.pyspark.memory" in conf:
        return memory_bytes(conf["spark.executor.pyspark.memory"]) // cores
    if local:
        return min(memory_bytes(conf.get("spark.driver.memory", SPARK_DEFAULT_MEMORY)),
                   memory_bytes(LOCAL_WORKER_CAP))
    return memory_bytes(conf.get("spark.executor.memory", SPARK_DEFAULT_MEMORY)) // cores


def broadcast_limit(spark: SparkSession, max_mb: float | None) -> int:
    """The largest broadcast (bytes, as :func:`broadcast_bytes` weighs it) allowed:
    ``max_mb`` MiB when given (0 = never broadcast), else :data:`AUTO_SHARE` of
    :func:`worker_memory_bytes`."""
    if max_mb is not None:
        return int(max_mb * 2**20)
    sc = spark.sparkContext
    conf = dict(sc.getConf().getAll())
    local = (sc.master or "").startswith("local")
    return int(AUTO_SHARE * worker_memory_bytes(conf, local, sc.defaultParallelism))


def table_shape(vectors: DataFrame, col: str = "vector") -> tuple[int, int]:
    """``(rows, dim)`` of a vector table: a count and the length of one row's vector."""
    n = vectors.count()
    row = vectors.select(F.size(col).alias("d")).filter(F.col("d") > 0).first() if n else None
    return n, int(row["d"]) if row else 0


def choose_path(n_items: int, dim: int, n_queries: int | None, limit: int, *, k: int) -> str:
    """``broadcast`` when the item matrix weighs at most ``limit`` bytes in a worker;
    ``broadcast_queries`` when it does not but the ``n_queries`` queries, each keeping a
    running top-``k``, do (:func:`query_bytes`; ``None``: not considered); ``sharded``
    otherwise."""
    if broadcast_bytes(n_items, dim) <= limit:
        return "broadcast"
    if n_queries is not None and query_bytes(n_queries, dim, k) <= limit:
        return "broadcast_queries"
    return "sharded"


def item_block_rows(dim: int) -> int:
    """Items per block: :data:`BLOCK_BYTES` of float32 rows (at least 1024)."""
    return max(1024, BLOCK_BYTES // (4 * max(dim, 1)))


def number_items(items: DataFrame) -> DataFrame:
    """``(item_idx long, item_id, vector)``: items numbered 0..n-1 in natural id order
    (:func:`recemb_spark.ids.dense_index`), so that a smaller number breaks a tie exactly
    as the broadcast path's column order does. Distributed; not cached (the numbering is
    deterministic, so a recomputation numbers the same way)."""
    index = dense_index(items.select("item_id"), "item_id")
    index.unpersist()
    return (items.join(index, "item_id")
            .select(F.col("item_id_idx").cast("long").alias("item_idx"), "item_id", "vector"))


#: block searches shuffle into at least this many partitions per unit of Spark's default
#: parallelism (2 x cores in local mode): a cogroup's groups (one per block pair) are uneven,
#: and with 2 x cores partitions the last one left a core idle for a quarter of the 3M-item
#: log's first ivf pass
PARALLELISM_MULTIPLE = 8


def group_partitions(spark: SparkSession, groups: int) -> int:
    """Shuffle partitions for a cogroup of ``groups`` block pairs: Spark's
    ``spark.sql.shuffle.partitions``, raised to :data:`PARALLELISM_MULTIPLE` x the default
    parallelism, never more than ``groups`` (at least 1)."""
    shuffle = int(spark.conf.get("spark.sql.shuffle.partitions") or 1)
    parallelism = spark.sparkContext.defaultParallelism
    return max(1, min(groups, max(shuffle, PARALLELISM_MULTIPLE * parallelism)))


def cogroup_blocks(left: DataFrame, right: DataFrame, keys: list[str],
                   groups: int) -> PandasCogroupedOps:
    """``left`` and ``right`` grouped by ``keys`` (``groups`` distinct keys at most) for a
    cogroup, both hash-partitioned by ``keys`` into :func:`group_partitions` partitions (the
    cogroup adds no shuffle)."""
    n = group_partitions(left.sparkSession, groups)
    return (left.repartition(n, *keys).groupBy(*keys)
            .cogroup(right.repartition(n, *keys).groupBy(*keys)))


def blocks_of(n: int, rows: int) -> int:
    """Blocks of at most ``rows`` needed for ``n`` rows (at least 1)."""
    return max(1, math.ceil(n / max(rows, 1)))


def pair_blocks(left: DataFrame, left_block: Any, n_left: int, right: DataFrame,
                right_block: Any, n_right: int) -> PandasCogroupedOps:
    """``left`` and ``right`` cogrouped by ``(lb, rb)``, every (left block, right block) pair
    (:func:`cogroup_blocks`): each left row repeated once per right block and vice versa
    (blocks are numbered ``0..n_left-1`` / ``0..n_right-1`` by the two block columns)."""
    lk = (left.withColumn("lb", left_block.cast("int"))
          .withColumn("rb", F.explode(F.sequence(F.lit(0), F.lit(n_right - 1)))))
    rk = (right.withColumn("rb", right_block.cast("int"))
          .withColumn("lb", F.explode(F.sequence(F.lit(0), F.lit(n_left - 1)))))
    return cogroup_blocks(lk, rk, ["lb", "rb"], n_left * n_right)


def hash_block(col: str, n_blocks: int) -> Any:
    """A block number 0..n_blocks-1 from a hash of ``col``."""
    return F.pmod(F.xxhash64(col), F.lit(n_blocks))


def sorted_block(items: pa.Table) -> pa.Table:
    """An item block's rows in item-number order (a cogroup delivers them in any order)."""
    return items.sort_by("item_idx").combine_chunks()


def block_matrix(table: pa.Table, col: str) -> np.ndarray:
    """The ``array<float>`` column ``col`` of ``table`` as a float32 matrix (one row each)."""
    values = table.column(col).combine_chunks()
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(table.num_rows, -1) if table.num_rows else flat.reshape(0, 1)


def merge_candidates(candidates: DataFrame, numbered: DataFrame, k: int) -> DataFrame:
    """Each query's ``k`` best of the blocks' candidates ``(query_id, item_idx, score)``:
    ``(query_id, item_id, rank, score double)``, ranked by score descending, ties by item
    number (the broadcast path's order); ids from ``numbered`` (:func:`number_items`)."""
    w = Window.partitionBy("query_id").orderBy(F.desc("score"), F.col("item_idx"))
    best = candidates.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
    return (best.join(numbered.select("item_idx", "item_id"), "item_idx")
            .select("query_id", "item_id", F.col("rank").cast("int"),
                    F.col("score").cast("double").alias("score")))


def sharded_top_k(queries: DataFrame, numbered: DataFrame, n_items: int, dim: int, k: int,
                  cosine: bool) -> DataFrame:
    """Exact top-``k`` per query without a broadcast: ``(query_id, item_id, rank, score)``.

    ``queries``: ``(query_id, vector, exclude array<string>)`` (null vectors skipped);
    ``numbered``: :func:`number_items` of the item vectors (``n_items`` rows of ``dim``).
    Blocks: :func:`item_block_rows` consecutive item numbers, :data:`QUERY_BLOCK_ROWS`
    queries by hash. One task holds one block of each; it emits at most ``k``
    candidates per query."""

    rows, query_rows = item_block_rows(dim), QUERY_BLOCK_ROWS
    n_ib = blocks_of(n_items, rows)
    # fresh column names on both sides: queries made from the item table itself (item
    # neighbours) would otherwise make the cogroup an ambiguous self-join
    qs = queries.filter(F.col("vector").isNotNull()).select(
        F.col("query_id").alias("query_id"), F.col("vector").alias("qvec"),
        F.col("exclude").alias("exclude"))
    side = numbered.select(F.col("item_idx").alias("item_idx"),
                           F.col("item_id").alias("item_id"), F.col("vector").alias("ivec"))
    n_queries = qs.count()
    n_qb = blocks_of(n_queries, query_rows)
    pairs = pair_blocks(qs, hash_block("query_id", n_qb), n_qb, side,
                        F.floor(F.col("item_idx") / F.lit(rows)), n_ib)

    def score(q_table: pa.Table, i_table: pa.Table) -> pa.Table:
        if q_table.num_rows == 0 or i_table.num_rows == 0:
            return pa.table({"query_id": pa.array([], pa.string()),
                             "item_idx": pa.array([], pa.int64()),
                             "score": pa.array([], pa.float32())})
        items = sorted_block(i_table)
        m = block_matrix(items, "ivec")
        q = block_matrix(q_table.combine_chunks(), "qvec")
        if cosine:
            m, q = unit_rows(m), unit_rows(q)
        ids = items.column("item_id").combine_chunks()
        excl = exclusions(q_table.column("exclude").combine_chunks(), ids)
        idx, vals = stream_top_k(q, np.ascontiguousarray(m.T), min(k, len(m)), excl)
        ok = idx >= 0
        rows_, _ = np.nonzero(ok)
        return pa.table({
            "query_id": q_table.column("query_id").combine_chunks().take(pa.array(rows_)),
            "item_idx": items.column("item_idx").combine_chunks().take(pa.array(idx[ok])),
            "score": pa.array(vals[ok].astype(np.float32))})

    candidates = pairs.applyInArrow(score, CANDIDATE_SCHEMA)
    return merge_candidates(candidates, numbered, k)


def broadcast_queries_top_k(spark: SparkSession, queries: DataFrame, numbered: DataFrame,
                            k: int, cosine: bool) -> DataFrame:
    """Exact top-``k`` for few queries: the queries (vectors and exclusions) are collected and
    broadcast, the numbered items (:func:`number_items`) stream past them; each item partition
    emits at most ``k`` candidates per query, merged as :func:`sharded_top_k` merges.
    ``(query_id, item_id, rank, score)``."""

    table = (queries.filter(F.col("vector").isNotNull())
             .select("query_id", "vector", "exclude").toArrow().combine_chunks())
    qids = table.column("query_id").combine_chunks()
    q = block_matrix(table, "vector") if table.num_rows else np.zeros((0, 1), np.float32)
    if cosine:
        q = unit_rows(q)
    bc = spark.sparkContext.broadcast((qids, q, table.column("exclude").combine_chunks()))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from queries_partition_top_k(*bc.value, batches, k, cosine)

    candidates = numbered.select("item_idx", "item_id", "vector").mapInArrow(
        run, CANDIDATE_SCHEMA)
    return merge_candidates(candidates, numbered, k)


def queries_partition_top_k(qids: pa.Array, q: np.ndarray, excl_lists: pa.Array,
                            batches: Iterator[pa.RecordBatch], k: int,
                            cosine: bool) -> Iterator[pa.RecordBatch]:
    """One item partition's candidates for the broadcast queries of
    :func:`broadcast_queries_top_k`: ``(query_id, item_idx, score)`` rows, at most ``k`` per
    query. ``q``: the query matrix (unit rows when ``cosine``); ``batches``: numbered items
    ``(item_idx, item_id, vector)``. Holds one running top-``k`` per query
    (:func:`query_bytes`) and one batch."""
    if len(qids) == 0:
        return
    best_i = np.full((len(q), k), -1, np.int64)
    best_v = np.full((len(q), k), -np.inf, np.float32)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        items = pa.Table.from_batches([batch]).sort_by("item_idx").combine_chunks()
        m = query_matrix(items.to_batches()[0], 2)
        if cosine:
            m = unit_rows(m)
        ids = items.column("item_id").combine_chunks()
        idx, vals = stream_top_k(q, np.ascontiguousarray(m.T), min(k, len(m)),
                                 exclusions(excl_lists, ids))
        numbers = items.column("item_idx").to_numpy()
        glob = np.where(idx >= 0, numbers[np.maximum(idx, 0)], -1)
        pad = k - glob.shape[1]
        if pad:
            glob = np.pad(glob, ((0, 0), (0, pad)), constant_values=-1)
            vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
        best_i, best_v = merge_top_k(best_i, best_v, glob, vals, k)
    ok = best_i >= 0
    rows_, _ = np.nonzero(ok)
    yield pa.RecordBatch.from_arrays(
        [qids.take(pa.array(rows_)), pa.array(best_i[ok]),
         pa.array(best_v[ok].astype(np.float32))],
        names=["query_id", "item_idx", "score"])
