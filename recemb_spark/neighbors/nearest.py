"""Nearest neighbours of item and user vectors: exact, banded LSH, and Spark's stock LSH join.

All methods work on L2-normalised vectors, so Euclidean order is cosine order, and report
``similarity`` = cosine.

``lsh`` (banded): ``BucketedRandomProjectionLSH`` supplies ``k x L`` hash functions
(``floor(x . r / w)`` for random unit ``r``; :func:`brp_projections` takes the ``r`` of a model
fitted with the configured seed); they are grouped into ``L`` bands of ``k`` (AND within a band,
OR across bands). Two paths, chosen by the size of the item matrix (:func:`lsh_path`):

- ``broadcast`` (small catalogues, the fast path): the item matrix and the projections are
  broadcast; each task takes a slice of the queries, groups all items by ``(band, band key)``
  (numpy, identical in every task), scores each query exactly against the items of its
  buckets, and keeps its best ``K`` distinct items (:mod:`recemb_spark.neighbors.banded`).
  Nothing per candidate pair is ever a Spark row.
- ``sharded`` (large catalogues): a keyed join by ``(band, key, chunk)``
  (:mod:`recemb_spark.neighbors.lsh_join`); memory per task is bounded by the bucket cap, not
  the catalogue; at most ``K`` candidates per query and band become rows, merged per query.

Buckets larger than ``max_bucket_size`` are cut into chunks (counted). The layout is tuned
from samples only (:func:`band_layout`).

``spark_lsh``: ``approxSimilarityJoin`` with a distance threshold (kept for comparison: its
hash tables are single projections ORed, with no AND amplification).

``exact``: :func:`recemb_spark.neighbors.exact.exact_top_k`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import AccumulatorParam, TaskContext
from pyspark.ml.feature import BucketedRandomProjectionLSH
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import Vectors
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..config import AnnConfig
from ..rows import one_row
from ..vectors import unit_vectors
from . import blocks, ivf, lsh_join
from .banded import (
    MAX_HASHES,
    TUNE_ITEM_SAMPLE,
    BandLayout,
    banded_top_k,
    tune_layout,
)
from .exact import exact_top_k, user_queries
from .topk import (
    TOPK_SCHEMA,
    broadcast_items,
    exclusions,
    positions,
    query_matrix,
    topk_batch,
    unit_rows,
)

log = logging.getLogger(__name__)
#: a tuning sample (:func:`tune_queries`): queries, their exact neighbours' vectors, validity
TuneSample = tuple[np.ndarray, np.ndarray, np.ndarray]
NEIGHBORS_SCHEMA = "item_id string, neighbor_id string, rank int, similarity double"
QUERY_SCHEMA = pa.schema([("query_id", pa.string()), ("vector", pa.list_(pa.float32())),
                          ("exclude", pa.list_(pa.string())), ("salt", pa.int64())])


def squared_norm(col: str = "vector") -> Column:
    """The squared L2 norm of an ``array<float>`` column, as a Spark expression."""
    return F.aggregate(col, F.lit(0.0), lambda acc, x: acc + x * x)


def normalise(vectors: DataFrame, id_col: str = "item_id") -> DataFrame:
    """``(id_col, vector)`` with every vector scaled to unit length (zero vectors dropped):
    :func:`recemb_spark.vectors.unit_vectors`."""
    return unit_vectors(vectors, id_col)


def auto_bucket_length(cfg: AnnConfig, dim: int) -> float:
    """The bucket width: ``cfg.bucket_length``, or ``bucket_scale`` standard deviations of a
    projection of a unit vector onto a random unit direction (std ~= 1/sqrt(dim))."""
    return cfg.bucket_length or cfg.bucket_scale / math.sqrt(max(dim, 1))


def brp_projections(spark: SparkSession, dim: int, n: int, seed: int) -> np.ndarray:
    """The ``(n, dim)`` random unit vectors of a ``BucketedRandomProjectionLSH`` with ``n``
    hash tables fitted with ``seed`` (the model's ``randMatrix``; Spark draws them from the seed
    and the input dimension only)."""
    one = spark.createDataFrame([(Vectors.dense([1.0] * dim),)], ["v"])
    model = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", numHashTables=n,
                                        bucketLength=1.0, seed=seed).fit(one)
    java_model = model._java_obj
    assert java_model is not None  # a fitted model has its JVM twin
    m = java_model.randMatrix()  # Matrix.toArray is column-major
    return np.array(list(m.toArray()), np.float64).reshape(m.numCols(), m.numRows()).T


class PerPartition(AccumulatorParam):
    """Accumulates ``{partition id: counters}``: a partition computed twice (a retried task, a
    re-run stage) replaces its own entry instead of adding to a sum."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:
        a.update(b)
        return a


@dataclass
class LshStats:
    """Counters from the tasks, per partition: ``(candidate pairs, buckets split, largest
    bucket)``; pairs are summed over partitions. ``path`` ``broadcast``: the bucket counters
    come from partition 0 (every task builds the same buckets). ``sharded``: the split buckets
    are the rows of ``hot`` (:func:`recemb_spark.neighbors.lsh_join.hot_buckets`), the largest
    bucket the largest of theirs and of the groups the tasks saw."""

    parts: Any  # Accumulator of {partition id: (pairs, split, largest)}
    path: str = "broadcast"
    hot: DataFrame | None = None

    def as_dict(self, bucket_length: float) -> dict[str, Any]:
        per = self.parts.value
        pairs = int(sum(v[0] for v in per.values()))
        if self.hot is None:
            _, split, largest = per.get(0, (0, 0, 0))
        else:
            row = self.hot.agg(F.count(F.lit(1)).alias("n"), F.max("size").alias("max")).first()
            split = row["n"] if row is not None else 0
            top = (row["max"] if row is not None else None) or 0
            largest = max([top, *(v[2] for v in per.values())])
        return {"candidate_pairs": pairs, "buckets_split": int(split),
                "largest_bucket": int(largest), "bucket_length": bucket_length,
                "path": self.path}


#: What the broadcast LSH path weighs in one Python worker, per item and dimension: the matrix,
#: the ids, 8 bytes of band key per item and band, the per-band bucket arrays and the task's
#: query-side arrays. Measured (bench/results/lsh_shards.json, 200k items x dim 32, 8 bands,
#: a fresh worker per task): 1.66 GB peak worker RSS broadcast against 0.23 GB sharded, about
#: 7 KB per item = 224 B per item and dimension.
LSH_BYTES_PER_ITEM_DIM = 224


def lsh_broadcast_bytes(n_items: int, dim: int) -> int:
    """Bytes one Python worker holds on the broadcast LSH path (:data:`LSH_BYTES_PER_ITEM_DIM`)."""
    return n_items * dim * LSH_BYTES_PER_ITEM_DIM


def lsh_path(n_items: int, dim: int, limit: int) -> str:
    """``broadcast`` while :func:`lsh_broadcast_bytes` of the items is at most ``limit``
    bytes (:func:`~recemb_spark.neighbors.blocks.broadcast_limit` of ``ann.broadcast_max_mb``,
    the one threshold of every item-matrix broadcast), else ``sharded``. No items:
    ``sharded`` (nothing to broadcast; it runs on empty inputs)."""
    return "broadcast" if 0 < lsh_broadcast_bytes(n_items, dim) <= limit else "sharded"


def lsh_top_k(spark: SparkSession, queries: DataFrame, items: DataFrame, cfg: AnnConfig,
              k: int, self_join: bool,
              tuned: tuple[BandLayout, np.ndarray] | None = None
              ) -> tuple[DataFrame, dict[str, Any]]:
    """Banded-LSH top-``k`` items per query: ``(query_id, item_id, rank, score)`` and counters.

    ``queries``: ``(query_id, vector, exclude array<string>)``; with ``self_join`` the queries
    are the items themselves (never their own neighbour). Vectors must be unit-length.
    Below ``ann.broadcast_max_mb`` (:func:`lsh_path`) the items are broadcast and every task
    builds all buckets; above, a keyed join by (band, key) (:mod:`.lsh_join`). Counters are
    read after the result is materialised (see :func:`materialise`). ``tuned``: the
    :func:`band_layout` already tuned for these queries (None: tune it here)."""
    sc = spark.sparkContext
    n_items = items.count()
    first = items.select(F.size("vector").alias("d")).first() if n_items else None
    dim = int(first["d"]) if first is not None else 1
    path = lsh_path(n_items, dim, blocks.broadcast_limit(spark, cfg.broadcast_max_mb))
    layout, proj = tuned or band_layout(spark, queries, items, cfg, k, self_join, n_items,
                                        dim)
    if layout.est_recall < cfg.target_recall:  # nan (not tuned) compares false
        log.warning("lsh layout: no layout within ann.max_candidates_per_query=%d reaches "
                    "ann.target_recall=%.2f; using the best within it (estimated recall "
                    "%.3f): raise the cap for recall, or use ann.method=exact",
                    cfg.max_candidates_per_query, cfg.target_recall, layout.est_recall)
    stats = LshStats(sc.accumulator({}, PerPartition()), path)
    if path == "sharded":
        plan = lsh_join.sharded_top_k(spark, None if self_join else queries, items, proj,
                                      layout.bucket_length, layout.bands, k,
                                      cfg.max_bucket_size, cfg.seed, n_items, stats.parts)
        stats.hot = plan.hot
        return plan.out, {"stats": stats, "layout": layout, "broadcast": plan.proj,
                          "cached": [plan.hot]}
    bc = broadcast_items(spark, items, normalise=False)
    length, bands = layout.bucket_length, layout.bands
    cap, seed = cfg.max_bucket_size, cfg.seed
    parts = max(2 * sc.defaultParallelism, -(-len(bc.value[1]) // 250_000))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = TaskContext.get()
        assert ctx is not None  # runs inside a task
        part = ctx.partitionId()
        got = list(batches)
        table = pa.Table.from_batches(got) if got else QUERY_SCHEMA.empty_table()
        batch = table.combine_chunks()
        if batch.num_rows == 0 and part != 0:  # partition 0 reports the buckets
            return
        ids, x = bc.value
        qids = batch.column(0).combine_chunks()
        q = (query_matrix(batch.to_batches()[0], 1) if batch.num_rows
             else np.zeros((0, x.shape[1]), np.float32))
        if self_join:
            self_idx = positions(qids, ids)
            exclude = (np.zeros(0, np.int64),) * 2
        else:
            self_idx = np.full(batch.num_rows, -1, np.int64)
            exclude = exclusions(batch.column(2).combine_chunks(), ids)
        salt = batch.column(3).to_numpy(zero_copy_only=False).astype(np.uint64)
        res = banded_top_k(q, x, proj, length, bands, min(k, len(x)), cap, seed, self_idx,
                           exclude, salt)
        stats.parts.add({part: (res.pairs, res.split, res.largest)})
        if batch.num_rows:
            yield topk_batch(qids, res.idx, res.score, ids)

    out = (queries.select("query_id", "vector", "exclude",
                          F.xxhash64("query_id", F.lit(seed)).alias("salt"))
           .repartition(parts, "query_id").mapInArrow(run, TOPK_SCHEMA))
    return out, {"stats": stats, "layout": layout, "broadcast": bc}


def materialise(df: DataFrame, info: dict[str, Any]) -> tuple[DataFrame, dict[str, Any]]:
    """Persist and count ``df`` once, then read the task counters in ``info`` (if any) and
    release the executors' copies of the broadcast (item matrix or projections) and any
    DataFrame cached for the counters."""
    df = df.persist()
    df.count()
    stats, layout = info.pop("stats", None), info.pop("layout", None)
    if stats is not None:
        info.update(stats.as_dict(layout.bucket_length), hashes_per_band=layout.hashes_per_band,
                    bands=layout.bands, estimated_recall=layout.est_recall)
    if "broadcast" in info:
        info.pop("broadcast").unpersist()
    if "scored" in info:  # an accumulator of the pairs scored (the broadcast probe searches)
        info["scored_pairs"] = int(info.pop("scored").value)
        if info.get("all_pairs"):
            info["scanned_share"] = round(info["scored_pairs"] / info["all_pairs"], 4)
    for cached in info.pop("cached", []):
        cached.unpersist()
    return df, info


def hashed_sample(df: DataFrame, id_col: str, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """About ``n`` rows of ``df (id_col, vector)`` chosen by a seeded hash of the id
    (deterministic; a top-``n`` per partition, so no task holds more than ``n`` rows): their
    ids and their vectors as a float32 matrix."""
    table = (df.select(id_col, "vector").orderBy(F.xxhash64(id_col, F.lit(seed)))
             .limit(n).toArrow())
    ids = table.column(id_col).to_pylist()
    if not ids:
        return ids, np.zeros((0, 1), np.float32)
    vectors = table.column("vector").combine_chunks()
    return ids, vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(
        len(ids), -1)


def tune_queries(spark: SparkSession, queries: DataFrame, items: DataFrame, k: int,
                 self_join: bool, n_items: int, dim: int, n: int, seed: int) -> TuneSample:
    """The sample an approximate method is tuned on: ``n`` queries chosen by a seeded hash
    (unit rows; with ``self_join`` sampled items), the vectors of their exact top-``k`` among
    ``items`` ``(n_q, k, dim)`` and where those exist
    (:func:`recemb_spark.neighbors.lsh_join.few_queries_top_k`), each query's exclusions
    honoured (its own id in a self-join, else the ``exclude`` column: a user's history --
    without it a pooled user vector's nearest items are its own history, and a tuner
    rewarded for finding them overestimates recall). The rows are in hash order, so the
    first ``m`` rows are the sample of ``m``."""
    if self_join:
        ids, q = hashed_sample(items, "item_id", n, seed + 1)
        exclude = [[i] for i in ids]
    else:
        table = (queries.select("query_id", "vector", "exclude")
                 .orderBy(F.xxhash64("query_id", F.lit(seed))).limit(n).toArrow())
        exclude = [e or [] for e in table.column("exclude").to_pylist()]
        q = unit_rows(blocks.block_matrix(table, "vector"))
    q = q.reshape(-1, dim)
    if len(q) == 0:
        return q, np.zeros((0, k, dim), np.float32), np.zeros((0, k), bool)
    truth, valid, _ = lsh_join.few_queries_top_k(spark, q, exclude, items, min(k, n_items))
    return q, truth, valid


def first_rows(sample: TuneSample, n: int) -> TuneSample:
    """The first ``n`` queries of a tuning sample (the sample of ``n``)."""
    return sample[0][:n], sample[1][:n], sample[2][:n]


def band_layout(spark: SparkSession, queries: DataFrame, items: DataFrame, cfg: AnnConfig,
                k: int, self_join: bool, n_items: int, dim: int,
                sample: TuneSample | None = None) -> tuple[BandLayout, np.ndarray]:
    """The band layout and its projections: with ``cfg.tune`` the cheapest layout whose recall
    on ``cfg.tune_sample`` sampled queries (against their exact top-``k``) reaches
    ``cfg.target_recall`` within ``cfg.max_candidates_per_query`` (else the best recall
    within it); else (or without items or queries) ``hashes_per_band`` x ``bands`` with the
    configured bucket width. The driver holds only samples:
    :data:`TUNE_ITEM_SAMPLE` items, the queries, and the vectors of their exact top-``k``
    (found by scanning the item partitions)."""
    fixed = BandLayout(cfg.hashes_per_band, cfg.bands, auto_bucket_length(cfg, dim))
    if not cfg.tune or n_items == 0:
        return fixed, brp_projections(spark, dim, fixed.hashes_per_band * fixed.bands, cfg.seed)
    q, truth, valid = first_rows(sample, cfg.tune_sample) if sample else tune_queries(
        spark, queries, items, k, self_join, n_items, dim, cfg.tune_sample, cfg.seed)
    if len(q) == 0:  # no queries: nothing to tune for
        return fixed, brp_projections(spark, dim, fixed.hashes_per_band * fixed.bands, cfg.seed)
    proj = brp_projections(spark, dim, MAX_HASHES, cfg.seed)
    _, item_sample = hashed_sample(items, "item_id", TUNE_ITEM_SAMPLE, cfg.seed)
    layout = tune_layout(item_sample, n_items, q, truth, valid, proj, cfg.target_recall,
                         cfg.max_candidates_per_query)
    log.info("lsh layout: %d bands of %d hashes, bucket width %.4f (estimated recall %.3f, "
             "%.0f candidates per query)", layout.bands, layout.hashes_per_band,
             layout.bucket_length, layout.est_recall, layout.est_pairs_per_query)
    return layout, proj[:layout.hashes_per_band * layout.bands]


def lsh_item_neighbors(spark: SparkSession, vectors: DataFrame, cfg: AnnConfig, k: int,
                       layout: tuple[BandLayout, np.ndarray] | None = None
                       ) -> tuple[DataFrame, dict[str, Any]]:
    """Banded-LSH top-``k`` neighbours per item: ``(item_id, neighbor_id, rank, similarity)``
    (persisted) and the counters. ``vectors`` must be unit-length (:func:`normalise`);
    ``layout``: :func:`item_layout`'s, when already tuned."""
    queries = vectors.select(F.col("item_id").alias("query_id"), "vector",
                             F.array().cast("array<string>").alias("exclude"))
    out, info = lsh_top_k(spark, queries, vectors, cfg, k, self_join=True, tuned=layout)
    return materialise(out.select(F.col("query_id").alias("item_id"),
                                  F.col("item_id").alias("neighbor_id"), "rank",
                                  F.col("score").alias("similarity")), info)


def item_layout(spark: SparkSession, vectors: DataFrame, cfg: AnnConfig, k: int, n_items: int,
                dim: int, sample: TuneSample | None = None) -> tuple[BandLayout, np.ndarray]:
    """:func:`band_layout` of the item self-join (unit-length ``vectors``)."""
    return band_layout(spark, vectors, vectors, cfg, k, True, n_items, dim, sample)


def _rank(df: DataFrame, key: str, other: str, score: str, k: int) -> DataFrame:
    """Keep the best ``k`` rows per ``key`` by ``score`` (ties by ``other``), with ``rank``."""
    w = Window.partitionBy(key).orderBy(F.desc(score), other)
    return (df.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
            .select(key, other, F.col("rank").cast("int"), score))


def exact_item_neighbors(spark: SparkSession, vectors: DataFrame, k: int,
                         only: DataFrame | None = None, path: str | None = None,
                         broadcast_max_mb: float | None = None) -> DataFrame:
    """Exact top-``k`` cosine neighbours among all ``vectors`` for every item, or only for the
    items in ``only (item_id)`` (e.g. a recall sample); no self-pairs. ``path`` and
    ``broadcast_max_mb``: see :func:`recemb_spark.neighbors.exact.exact_top_k`."""
    queried = vectors if only is None else vectors.join(only.select("item_id"), "item_id")
    return (exact_top_k(spark, item_queries(queried), vectors, k, "cosine", path, broadcast_max_mb)
            .select(F.col("query_id").alias("item_id"), F.col("item_id").alias("neighbor_id"),
                    "rank", F.col("score").alias("similarity")))


def spark_lsh_item_neighbors(spark: SparkSession, vectors: DataFrame, cfg: AnnConfig,
                             k: int) -> tuple[DataFrame, dict[str, Any]]:
    """Spark's ``approxSimilarityJoin`` (self-join under ``spark_lsh_threshold``), top-``k``."""
    data = vectors.withColumn("_v", array_to_vector(F.col("vector")))
    dim = len(one_row(vectors.select("vector").limit(1))["vector"])
    length = auto_bucket_length(cfg, dim)
    model = BucketedRandomProjectionLSH(inputCol="_v", outputCol="_h",
                                        numHashTables=cfg.spark_lsh_tables, bucketLength=length,
                                        seed=cfg.seed).fit(data)
    joined = (model.approxSimilarityJoin(data, data, cfg.spark_lsh_threshold, distCol="_d")
              .select(F.col("datasetA.item_id").alias("item_id"),
                      F.col("datasetB.item_id").alias("neighbor_id"), "_d")
              .filter(F.col("item_id") != F.col("neighbor_id"))
              .withColumn("similarity", 1.0 - F.col("_d") * F.col("_d") / 2.0)
              .persist())
    stats = {"candidate_pairs": joined.count(), "bucket_length": length}
    out = _rank(joined.select("item_id", "neighbor_id", "similarity"), "item_id",
                "neighbor_id", "similarity", k)
    return out, stats


def lsh_user_candidates(spark: SparkSession, items: DataFrame, users: DataFrame,
                        histories: DataFrame, cfg: AnnConfig,
                        k: int) -> tuple[DataFrame, dict[str, Any]]:
    """Banded-LSH top-``k`` unseen items per user ``(user_id, item_id, rank, score)``
    (persisted): users hashed into the items' buckets, their histories excluded inside the
    buckets. Vectors must be unit-length."""
    queries = user_queries(users, histories)
    out, info = lsh_top_k(spark, queries, items, cfg, k, self_join=False)
    return materialise(out.withColumnRenamed("query_id", "user_id"), info)


def ivf_index(spark: SparkSession, items: DataFrame, cfg: AnnConfig, n_items: int, dim: int,
              sample: TuneSample, n_queries: int,
              broadcast: bool = False) -> tuple[ivf.IvfIndex, DataFrame]:
    """The IVF index of unit-length ``items`` and the items with their list (persisted: the
    caller unpersists): centroids trained on a seeded sample of at most
    :data:`~recemb_spark.neighbors.ivf.TRAIN_SAMPLE` items, as many lists as
    :func:`recemb_spark.neighbors.ivf.choose_lists` finds cheapest for ``n_queries`` queries
    like the tuning ``sample``'s (:func:`tune_queries`), searched on the path ``broadcast``
    says."""
    _, train = hashed_sample(items, "item_id", ivf.TRAIN_SAMPLE, cfg.seed)
    q, truth, valid = first_rows(sample, cfg.ivf_tune_sample)
    chosen = ivf.choose_lists(train, n_items, q, truth, valid, cfg.target_recall, n_queries,
                              dim, cfg.seed, cfg.ivf_items_per_list, broadcast)
    log.info("ivf: lists by estimated cost %s", chosen.rungs)
    return ivf.build_index(spark, items, chosen.centroids, chosen.rungs)


def ivf_tuned(spark: SparkSession, queries: DataFrame, items: DataFrame, index: ivf.IvfIndex,
              cfg: AnnConfig, k: int, self_join: bool, n_items: int, dim: int,
              sample: TuneSample | None = None) -> ivf.IvfIndex:
    """``index`` with ``nprobe`` tuned for these queries (:func:`tune_queries` of
    ``cfg.ivf_tune_sample`` queries, or ``sample`` when already drawn;
    :func:`recemb_spark.neighbors.ivf.tune_probes`; ``cfg.target_recall``)."""
    q, truth, valid = sample or tune_queries(spark, queries, items, k, self_join, n_items,
                                             dim, cfg.ivf_tune_sample, cfg.seed)
    tuned = ivf.tune_probes(q, truth, valid, index, cfg.target_recall)
    log.info("ivf: %d lists, %d probes (estimated recall %.3f, %.1f%% of the items scored "
             "per query)", tuned.n_lists, tuned.nprobe, tuned.est_recall,
             100 * tuned.est_scanned)
    return tuned


def item_queries(vectors: DataFrame) -> DataFrame:
    """Every item as a query ``(query_id, vector, exclude)`` that never returns itself."""
    return vectors.select(F.col("item_id").alias("query_id"), "vector",
                          F.array("item_id").alias("exclude"))


def ivf_item_neighbors(spark: SparkSession, vectors: DataFrame, assigned: DataFrame,
                       index: ivf.IvfIndex, k: int,
                       path: str = "sharded") -> tuple[DataFrame, dict[str, Any]]:
    """IVF top-``k`` neighbours per item ``(item_id, neighbor_id, rank, similarity)``
    (persisted) and the counters; ``index`` tuned for the item queries (:func:`ivf_tuned`);
    ``path`` as in :func:`~recemb_spark.neighbors.ivf.ivf_top_k`."""
    out, info = ivf.ivf_top_k(spark, item_queries(vectors), assigned, index, k, path=path)
    info.update(index.details())
    return materialise(out.select(F.col("query_id").alias("item_id"),
                                  F.col("item_id").alias("neighbor_id"), "rank",
                                  F.col("score").alias("similarity")), info)


def ivf_user_candidates(spark: SparkSession, items: DataFrame, assigned: DataFrame,
                        index: ivf.IvfIndex, users: DataFrame, histories: DataFrame,
                        cfg: AnnConfig, k: int, n_items: int, dim: int,
                        path: str = "sharded") -> tuple[DataFrame, dict[str, Any]]:
    """IVF top-``k`` unseen items per user ``(user_id, item_id, rank, score)`` (persisted),
    ``nprobe`` tuned for the user queries; ``path`` as in
    :func:`~recemb_spark.neighbors.ivf.ivf_top_k`. Vectors must be unit-length."""
    queries = user_queries(users, histories)
    tuned = ivf_tuned(spark, queries, items, index, cfg, k, False, n_items, dim)
    out, info = ivf.ivf_top_k(spark, queries, assigned, tuned, k, path=path)
    info.update(tuned.details())
    return materialise(out.withColumnRenamed("query_id", "user_id"), info)


def recall_at_k(approx: DataFrame, exact: DataFrame, key: str, other: str) -> float:
    """Mean over the queries of ``exact`` of |approx top-k ∩ exact top-k| / |exact top-k|.

    Assumes ``exact`` is the small ground truth of a sample (``ann.recall_sample`` queries x
    k rows): it is cached for the call and its query ids broadcast, so only ``approx``'s rows
    of those queries are compared — ``approx`` (every query's list, millions of rows at
    catalogue scale) is filtered where it lies, never shuffled whole."""
    exact = exact.select(key, other).persist()
    try:
        asked = F.broadcast(exact.select(key).distinct())
        mine = approx.select(key, other).join(asked, key, "left_semi")
        hits = exact.join(mine, [key, other], "left_semi").groupBy(key).count()
        totals = exact.groupBy(key).count().withColumnRenamed("count", "n")
        row = one_row(totals.join(hits, key, "left").fillna({"count": 0}).agg(
            F.mean(F.col("count") / F.col("n")).alias("recall")))
    finally:
        exact.unpersist()
    return float(row["recall"]) if row["recall"] is not None else float("nan")


def sample_ids(df: DataFrame, col: str, n: int, seed: int) -> DataFrame:
    """About ``n`` ids of ``df[col]``, chosen by a seeded hash (deterministic)."""
    return (df.select(col).withColumn("_h", F.xxhash64(col, F.lit(seed)))
            .orderBy("_h").limit(n).select(col))


def spark_lsh_user_candidates(spark: SparkSession, items: DataFrame, users: DataFrame,
                              histories: DataFrame, cfg: AnnConfig,
                              k: int) -> tuple[DataFrame, dict[str, Any]]:
    """``approxSimilarityJoin`` of users against items, seen items removed, top ``k``."""
    dim = len(one_row(items.select("vector").limit(1))["vector"])
    length = auto_bucket_length(cfg, dim)
    data = items.withColumn("_v", array_to_vector(F.col("vector")))
    model = BucketedRandomProjectionLSH(inputCol="_v", outputCol="_h",
                                        numHashTables=cfg.spark_lsh_tables, bucketLength=length,
                                        seed=cfg.seed).fit(data)
    queries = users.withColumn("_v", array_to_vector(F.col("vector")))
    joined = (model.approxSimilarityJoin(queries, data, cfg.spark_lsh_threshold, distCol="_d")
              .select(F.col("datasetA.user_id").alias("user_id"),
                      F.col("datasetB.item_id").alias("item_id"),
                      (1.0 - F.col("_d") * F.col("_d") / 2.0).alias("score")))
    seen = histories.select("user_id", F.explode("items").alias("item_id"))
    fresh = joined.join(seen, ["user_id", "item_id"], "left_anti")
    return _rank(fresh, "user_id", "item_id", "score", k), {"bucket_length": length}
