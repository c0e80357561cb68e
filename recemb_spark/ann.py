"""Nearest neighbours of item and user vectors: exact, banded LSH, and Spark's stock LSH join.

All methods work on L2-normalised vectors, so Euclidean order is cosine order, and report
``similarity`` = cosine.

``lsh`` (banded): ``BucketedRandomProjectionLSH`` supplies ``k x L`` hash functions
(``floor(x . r / w)`` for random unit ``r``); they are grouped into ``L`` bands of ``k``. Two
items are candidates when all ``k`` hashes of at least one band agree (AND within a band, OR
across bands). Items are grouped by ``(band, band key)``; a bucket larger than
``max_bucket_size`` is split into random chunks of that size (counted), so one hot bucket
cannot stall the job. Inside a bucket the members are scored exactly with one small matrix
multiply and each member keeps only its best ``K`` — the m^2 candidate pairs are never
materialised as rows. The per-band lists are merged and the best ``K`` distinct neighbours
kept.

``spark_lsh``: ``approxSimilarityJoin`` with a distance threshold (kept for comparison: its
hash tables are single projections ORed, with no AND amplification).

``exact``: :func:`recemb_spark.topk.exact_top_k`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
from pyspark.ml.feature import BucketedRandomProjectionLSH
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from .config import AnnConfig
from .topk import exact_top_k, top_k_rows

NEIGHBORS_SCHEMA = "item_id string, neighbor_id string, rank int, similarity double"


def normalise(vectors: DataFrame, id_col: str = "item_id") -> DataFrame:
    """``(id_col, vector)`` with every vector scaled to unit length (zero vectors dropped)."""
    norm = F.sqrt(F.aggregate("vector", F.lit(0.0), lambda acc, x: acc + x * x))
    return (vectors.withColumn("_n", norm).filter(F.col("_n") > 0)
            .select(id_col, F.transform("vector", lambda x: (x / F.col("_n")).cast("float"))
                    .alias("vector")))


def list_column(col: pa.Array) -> Iterator[np.ndarray]:
    """The lists of an Arrow list<long> column as numpy arrays (no Python objects per value)."""
    values = col.flatten().to_numpy(zero_copy_only=False)
    ends = np.cumsum(col.value_lengths().to_numpy(zero_copy_only=False))
    starts = ends - col.value_lengths().to_numpy(zero_copy_only=False)
    for lo, hi in zip(starts, ends):
        yield values[lo:hi]


def auto_bucket_length(cfg: AnnConfig, dim: int) -> float:
    """The bucket width: ``cfg.bucket_length``, or ``bucket_scale`` standard deviations of a
    projection of a unit vector onto a random unit direction (std ~= 1/sqrt(dim))."""
    return cfg.bucket_length or cfg.bucket_scale / math.sqrt(max(dim, 1))


@dataclass
class LshBuckets:
    """Band keys per id, and the hash model (to hash queries the same way)."""

    keys: DataFrame  # (id, band int, key long)
    model: Any
    bucket_length: float


def band_keys(vectors: DataFrame, cfg: AnnConfig, id_col: str = "item_id",
              model: Any = None, bucket_length: float = 0.0) -> LshBuckets:
    """Hash ``vectors`` with ``k x L`` BRP functions and fold them into ``L`` band keys.

    Pass the ``model`` of an earlier call to hash other vectors (users) into the same buckets.
    """
    k, bands = cfg.hashes_per_band, cfg.bands
    data = vectors.withColumn("_v", array_to_vector("vector"))
    if model is None:
        dim = len(vectors.select("vector").first()["vector"])
        bucket_length = auto_bucket_length(cfg, dim)
        model = BucketedRandomProjectionLSH(inputCol="_v", outputCol="_h",
                                            numHashTables=k * bands,
                                            bucketLength=bucket_length, seed=cfg.seed).fit(data)
    hashed = model.transform(data).select(
        F.col(id_col).alias("id"),
        F.transform("_h", lambda h: vector_to_array(h)[0]).alias("_h"))
    keyed = hashed.select("id", F.posexplode(F.sequence(F.lit(0), F.lit(bands - 1)))
                          .alias("_pos", "band"), "_h")
    keys = keyed.select("id", "band",
                        F.xxhash64("band", F.slice("_h", F.col("band") * k + 1, k)).alias("key"))
    return LshBuckets(keys, model, bucket_length)


def _chunked(keys: DataFrame, cfg: AnnConfig) -> DataFrame:
    """Add ``chunk``: members of a bucket beyond ``max_bucket_size`` go to further chunks, in
    a seeded random order, so that every chunk has at most that many members."""
    w = Window.partitionBy("band", "key").orderBy(F.xxhash64("id", F.lit(cfg.seed)), "id")
    return keys.withColumn("chunk", ((F.row_number().over(w) - 1) / cfg.max_bucket_size)
                           .cast("int"))


def bucket_stats(keys: DataFrame, cfg: AnnConfig) -> dict[str, int]:
    """Bucket counts for the manifest: buckets, buckets over the cap, candidate pairs scored
    (sum of m(m-1)/2 over chunks), and the largest bucket."""
    sizes = keys.groupBy("band", "key").count()
    full, rest = F.floor(F.col("count") / cfg.max_bucket_size), F.col("count") % cfg.max_bucket_size
    pairs = (full * cfg.max_bucket_size * (cfg.max_bucket_size - 1) / 2
             + rest * (rest - 1) / 2)
    row = sizes.agg(F.count("*").alias("buckets"),
                    F.sum((F.col("count") > cfg.max_bucket_size).cast("long")).alias("over"),
                    F.sum(pairs).alias("pairs"), F.max("count").alias("largest")).first()
    return {"buckets": int(row["buckets"] or 0), "buckets_split": int(row["over"] or 0),
            "candidate_pairs": int(row["pairs"] or 0), "largest_bucket": int(row["largest"] or 0)}


@dataclass
class IndexedItems:
    """Unit item vectors with dense indexes: ``frame (idx long, item_id, vector)`` and the
    same vectors as a matrix (row = idx) broadcast to the executors — O(catalogue x dim),
    the same matrix exact top-K broadcasts. Bucket members travel as ints, never vectors."""

    frame: DataFrame
    ids: DataFrame
    broadcast: Any

    def release(self) -> None:
        self.frame.unpersist()
        self.broadcast.unpersist()


def index_items(spark: SparkSession, vectors: DataFrame) -> IndexedItems:
    rows = vectors.rdd.zipWithIndex().map(lambda r: (r[1], r[0]["item_id"], r[0]["vector"]))
    frame = rows.toDF("idx long, item_id string, vector array<float>").persist()
    pairs = frame.select("idx", "vector").collect()  # catalogue-sized: becomes the broadcast
    dim = len(pairs[0]["vector"]) if pairs else 1
    matrix = np.zeros((len(pairs), dim), dtype=np.float32)
    for r in pairs:
        matrix[r["idx"]] = r["vector"]
    return IndexedItems(frame, frame.select("idx", "item_id"),
                        spark.sparkContext.broadcast(matrix))


def lsh_item_neighbors(spark: SparkSession, vectors: DataFrame, cfg: AnnConfig,
                       k: int) -> tuple[DataFrame, dict[str, Any]]:
    """Banded-LSH top-``k`` neighbours per item: ``(item_id, neighbor_id, rank, similarity)``
    and bucket statistics. ``vectors`` must be unit-length (:func:`normalise`)."""
    items = index_items(spark, vectors)
    buckets = band_keys(items.frame.select(F.col("idx").alias("item_id"), "vector"), cfg)
    keys = _chunked(buckets.keys, cfg).persist()
    stats = bucket_stats(keys, cfg)
    stats["bucket_length"] = buckets.bucket_length
    grouped = (keys.groupBy("band", "key", "chunk").agg(F.collect_list("id").alias("m"))
               .filter(F.size("m") >= 2).select("m"))
    bc = items.broadcast

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each bucket's members scored exactly; each keeps its best k (Arrow in and out)."""
        matrix = bc.value
        for batch in batches:
            for idx in list_column(batch.column(0)):
                v = matrix[idx]
                s = v @ v.T
                np.fill_diagonal(s, -np.inf)
                top, best = top_k_rows(s, k)
                ok = top >= 0
                src = np.broadcast_to(idx[:, None], top.shape)[ok]
                yield pa.RecordBatch.from_arrays(
                    [pa.array(src), pa.array(idx[top[ok]]), pa.array(best[ok].astype(np.float64))],
                    names=["a", "b", "similarity"])

    pairs = grouped.mapInArrow(score, "a long, b long, similarity double")
    best = pairs.groupBy("a", "b").agg(F.max("similarity").alias("similarity"))
    named = (best.join(items.ids.withColumnRenamed("idx", "a"), "a")
             .join(items.ids.withColumnRenamed("idx", "b")
                   .withColumnRenamed("item_id", "neighbor_id"), "b")
             .select("item_id", "neighbor_id", "similarity"))
    out = _rank(named, "item_id", "neighbor_id", "similarity", k).persist()
    out.count()  # materialise before the intermediates are released
    keys.unpersist()
    items.release()
    return out, stats


def _rank(df: DataFrame, key: str, other: str, score: str, k: int) -> DataFrame:
    """Keep the best ``k`` rows per ``key`` by ``score`` (ties by ``other``), with ``rank``."""
    w = Window.partitionBy(key).orderBy(F.desc(score), other)
    return (df.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
            .select(key, other, F.col("rank").cast("int"), score))


def exact_item_neighbors(spark: SparkSession, vectors: DataFrame, k: int,
                         only: Optional[DataFrame] = None) -> DataFrame:
    """Exact top-``k`` cosine neighbours among all ``vectors`` for every item, or only for the
    items in ``only (item_id)`` (e.g. a recall sample); no self-pairs."""
    queried = vectors if only is None else vectors.join(only.select("item_id"), "item_id")
    queries = queried.select(F.col("item_id").alias("query_id"), "vector",
                             F.array("item_id").alias("exclude"))
    return (exact_top_k(spark, queries, vectors, k, "cosine")
            .select(F.col("query_id").alias("item_id"), F.col("item_id").alias("neighbor_id"),
                    "rank", F.col("score").alias("similarity")))


def spark_lsh_item_neighbors(spark: SparkSession, vectors: DataFrame, cfg: AnnConfig,
                             k: int) -> tuple[DataFrame, dict[str, Any]]:
    """Spark's ``approxSimilarityJoin`` (self-join under ``spark_lsh_threshold``), top-``k``."""
    data = vectors.withColumn("_v", array_to_vector("vector"))
    dim = len(vectors.select("vector").first()["vector"])
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
    """Banded-LSH top-``k`` unseen items per user: users hashed into the items' buckets,
    scored exactly inside each bucket (each user keeps its best ``k`` + |history| there),
    seen items removed, best ``k`` kept. Vectors must be unit-length."""
    indexed = index_items(spark, items)
    item_buckets = band_keys(indexed.frame.select(F.col("idx").alias("item_id"), "vector"), cfg)
    user_keys = band_keys(users.withColumnRenamed("user_id", "item_id"), cfg,
                          model=item_buckets.model,
                          bucket_length=item_buckets.bucket_length).keys
    item_groups = (_chunked(item_buckets.keys, cfg).groupBy("band", "key", "chunk")
                   .agg(F.collect_list("id").alias("items")))
    seen_n = histories.select("user_id", F.size("items").alias("n_seen"))
    user_rows = (user_keys.withColumnRenamed("id", "user_id")
                 .join(users, "user_id").join(seen_n, "user_id", "left")
                 .fillna({"n_seen": 0}))
    joined = user_rows.join(item_groups, ["band", "key"])
    bc = indexed.broadcast

    def score(rows: Iterator[Any]) -> Iterator[tuple[str, int, float]]:
        matrix = bc.value
        for row in rows:
            idx = np.asarray(row["items"], dtype=np.int64)
            s = (matrix[idx] @ np.asarray(row["vector"], np.float32))[None, :]
            top, best = top_k_rows(s, k + int(row["n_seen"]))
            for j, sim in zip(top[0].tolist(), best[0].tolist()):
                if j >= 0:
                    yield row["user_id"], int(idx[j]), sim

    pairs = spark.createDataFrame(joined.rdd.mapPartitions(score),
                                  "user_id string, idx long, score double")
    named = pairs.join(indexed.ids, "idx").select("user_id", "item_id", "score")
    seen = histories.select("user_id", F.explode("items").alias("item_id"))
    fresh = (named.join(seen, ["user_id", "item_id"], "left_anti")
             .groupBy("user_id", "item_id").agg(F.max("score").alias("score")))
    out = _rank(fresh, "user_id", "item_id", "score", k).persist()
    out.count()
    indexed.release()
    return out, {"bucket_length": item_buckets.bucket_length}


def recall_at_k(approx: DataFrame, exact: DataFrame, key: str, other: str) -> float:
    """Mean over the queries of ``exact`` of |approx top-k ∩ exact top-k| / |exact top-k|."""
    hits = exact.join(approx.select(key, other), [key, other], "left_semi").groupBy(key).count()
    totals = exact.groupBy(key).count().withColumnRenamed("count", "n")
    row = totals.join(hits, key, "left").fillna({"count": 0}).agg(
        F.mean(F.col("count") / F.col("n")).alias("recall")).first()
    return float(row["recall"]) if row["recall"] is not None else float("nan")


def sample_ids(df: DataFrame, col: str, n: int, seed: int) -> DataFrame:
    """About ``n`` ids of ``df[col]``, chosen by a seeded hash (deterministic)."""
    return (df.select(col).withColumn("_h", F.xxhash64(col, F.lit(seed)))
            .orderBy("_h").limit(n).select(col))


def spark_lsh_user_candidates(spark: SparkSession, items: DataFrame, users: DataFrame,
                              histories: DataFrame, cfg: AnnConfig,
                              k: int) -> tuple[DataFrame, dict[str, Any]]:
    """``approxSimilarityJoin`` of users against items, seen items removed, top ``k``."""
    dim = len(items.select("vector").first()["vector"])
    length = auto_bucket_length(cfg, dim)
    data = items.withColumn("_v", array_to_vector("vector"))
    model = BucketedRandomProjectionLSH(inputCol="_v", outputCol="_h",
                                        numHashTables=cfg.spark_lsh_tables, bucketLength=length,
                                        seed=cfg.seed).fit(data)
    queries = users.withColumn("_v", array_to_vector("vector"))
    joined = (model.approxSimilarityJoin(queries, data, cfg.spark_lsh_threshold, distCol="_d")
              .select(F.col("datasetA.user_id").alias("user_id"),
                      F.col("datasetB.item_id").alias("item_id"),
                      (1.0 - F.col("_d") * F.col("_d") / 2.0).alias("score")))
    seen = histories.select("user_id", F.explode("items").alias("item_id"))
    fresh = joined.join(seen, ["user_id", "item_id"], "left_anti")
    return _rank(fresh, "user_id", "item_id", "score", k), {"bucket_length": length}
