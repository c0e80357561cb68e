"""The built-in synthetic MovieLens-like data set (the embedded default; no download).

Structure, so that embeddings have something real to learn:

* items belong to *clusters* (think franchises / sub-genres) of about ``items_per_cluster``
  items; each cluster has a primary genre; items have Zipf-like popularity and a quality;
* users have a Dirichlet taste over genres, a rating bias and a Zipf-like activity;
* a user's history is a run through clusters: each next rating stays in the current cluster
  with probability ``stay_prob``, otherwise jumps to a cluster drawn by taste (and often starts
  a new session, days later); items within a cluster are drawn by popularity among those the
  user has not rated yet;
* ratings (0.5 .. 5.0 in half stars) rise with genre affinity, item quality and user bias.

Consecutive liked items therefore share clusters, so a sequence model beats popularity.
Every user is generated on the executors from its own seeded generator: the data set depends
only on the config (same seed, same rows), not on the partitioning.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import SampleConfig
from .warehouse import HadoopFS, join_path

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western"]
_T0 = 1_420_070_400          # 2015-01-01 UTC
_T_SPAN = 5 * 365 * 86_400   # users start within five years


@dataclass
class Catalogue:
    """Item attributes and the arrays used to sample items (size O(n_items))."""

    genre: np.ndarray          # primary genre per item
    second_genre: np.ndarray   # secondary genre per item, -1 for none
    cluster: np.ndarray        # cluster per item
    quality: np.ndarray        # item quality (rating offset)
    year: np.ndarray
    cluster_genre: np.ndarray  # primary genre per cluster
    cluster_weight: np.ndarray  # total popularity per cluster
    order: np.ndarray          # item ids sorted by cluster
    cum: np.ndarray            # cumulative popularity along ``order``
    lo: np.ndarray             # per cluster: cumulative weight before its first item
    hi: np.ndarray             # per cluster: cumulative weight after its last item
    start: np.ndarray          # per cluster: first position in ``order``
    end: np.ndarray            # per cluster: one past its last position
    popularity: np.ndarray     # popularity weight per item


def make_catalogue(cfg: SampleConfig) -> Catalogue:
    """The item catalogue for ``cfg`` (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng([cfg.seed, 0])
    n, g = cfg.n_items, cfg.n_genres
    n_clusters = max(1, n // cfg.items_per_cluster)
    genre_pop = rng.dirichlet(np.full(g, 2.0))
    cluster_genre = rng.choice(g, size=n_clusters, p=genre_pop)
    # every cluster gets at least one item; the rest are spread at random
    cluster = np.concatenate([np.arange(n_clusters), rng.integers(0, n_clusters, n - n_clusters)])
    rng.shuffle(cluster)
    ranks = rng.permutation(n)
    popularity = 1.0 / (ranks + 1.0) ** cfg.popularity_exponent
    genre = cluster_genre[cluster]
    second = np.where(rng.random(n) < 0.4, rng.integers(0, g, n), -1)
    second = np.where(second == genre, -1, second)
    order = np.argsort(cluster, kind="stable")
    cum = np.cumsum(popularity[order])
    start = np.searchsorted(cluster[order], np.arange(n_clusters), side="left")
    end = np.searchsorted(cluster[order], np.arange(n_clusters), side="right")
    hi = cum[end - 1]
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    return Catalogue(genre=genre, second_genre=second, cluster=cluster,
                     quality=rng.normal(0.0, 0.5, n), year=rng.integers(1950, 2020, n),
                     cluster_genre=cluster_genre, cluster_weight=hi - lo, order=order, cum=cum,
                     lo=lo, hi=hi, start=start, end=end, popularity=popularity)


def user_counts(cfg: SampleConfig) -> np.ndarray:
    """Ratings per user (Zipf-like activity) adding up to about ``cfg.n_ratings``."""
    rng = np.random.default_rng([cfg.seed, 2])
    weights = rng.lognormal(0.0, 1.0, cfg.n_users)
    floor = max(2, min(20, cfg.n_ratings // cfg.n_users // 2))
    cap = max(2, cfg.n_items // 2)
    counts = np.clip(weights / weights.sum() * cfg.n_ratings, floor, cap)
    for _ in range(50):  # hand what the cap cut off to the users still below it
        deficit = cfg.n_ratings - counts.sum()
        open_ = counts < cap
        if deficit < 1 or not open_.any():
            break
        counts[open_] += deficit * weights[open_] / weights[open_].sum()
        counts = np.minimum(counts, cap)
    return np.round(counts).astype(np.int64)


def user_ratings(user: int, count: int, cat: Catalogue,
                 cfg: SampleConfig) -> list[tuple[str, str, float, int]]:
    """One user's ratings as ``(user_id, item_id, rating, epoch_seconds)`` in time order.

    A walk over clusters: each step stays in the current cluster with probability
    ``stay_prob`` (while it has unrated items), else jumps to a cluster drawn by taste x the
    popularity the user has not rated yet; the item is an unrated one of the cluster, drawn by
    popularity. No item repeats, so every step is a rating.
    """
    rng = np.random.default_rng([cfg.seed, 1, user])
    taste = rng.dirichlet(np.full(cfg.n_genres, 0.3))
    bias = rng.normal(0.0, 0.4)
    count = min(count, len(cat.genre))
    # per-cluster remaining items and weights, copied lazily when the user first visits
    remaining: dict[int, tuple[list[int], list[float]]] = {}
    mass = (taste[cat.cluster_genre] + 0.01) * cat.cluster_weight  # jump weight per cluster
    u_stay, u_jump, u_pick = rng.random(count), rng.random(count), rng.random(count)
    items = np.empty(count, np.int64)
    jumped = np.empty(count, bool)
    current = -1
    for step in range(count):
        jump = current < 0 or u_stay[step] >= cfg.stay_prob or not remaining[current][0]
        if jump:
            cum = np.cumsum(mass)
            current = int(min(np.searchsorted(cum, u_jump[step] * cum[-1], side="right"),
                              len(cum) - 1))
            if current not in remaining:
                lo, hi = cat.start[current], cat.end[current]
                cluster = cat.order[lo:hi]
                remaining[current] = (cluster.tolist(), cat.popularity[cluster].tolist())
        members, weights = remaining[current]
        target, acc, pick = u_pick[step] * sum(weights), 0.0, len(weights) - 1
        for j, w in enumerate(weights):
            acc += w
            if acc >= target:
                pick = j
                break
        items[step] = members.pop(pick)
        taken = weights.pop(pick)
        scale = taste[cat.cluster_genre[current]] + 0.01
        mass[current] = max(mass[current] - scale * taken, 0.0) if members else 0.0
        jumped[step] = jump
    # time: short gaps inside a session, days between sessions (mostly at jumps)
    new_session = np.where(jumped, rng.random(count) < 0.7, rng.random(count) < 0.05)
    gaps = np.where(new_session, rng.exponential(3 * 86_400, count),
                    rng.exponential(240, count))
    ts = _T0 + int(rng.integers(0, _T_SPAN)) + np.cumsum(gaps).astype(np.int64)
    affinity = taste[cat.genre[items]] * cfg.n_genres
    second = cat.second_genre[items]
    affinity = affinity + np.where(second >= 0, taste[np.maximum(second, 0)] * cfg.n_genres, 0.0)
    score = (3.2 + bias + cat.quality[items] + 0.35 * np.log(affinity + 0.1)
             + rng.normal(0.0, 0.7, count))
    rating = np.clip(np.round(score * 2.0) / 2.0, 0.5, 5.0)
    uid = str(user + 1)
    return [(uid, str(i + 1), float(r), int(t)) for i, r, t in zip(items, rating, ts, strict=True)]


def generate(spark: SparkSession, cfg: SampleConfig) -> tuple[DataFrame, DataFrame]:
    """The sample's ``ratings`` and ``items`` DataFrames (schemas as the readers produce).

    Users are generated in parallel on the executors; the catalogue (O(n_items)) and the
    per-user counts (O(n_users) ints) are broadcast.
    """
    cat = make_catalogue(cfg)
    counts = user_counts(cfg)
    sc = spark.sparkContext
    bc = sc.broadcast((cat, counts))  # catalogue arrays + one int per user: a few MB at most

    def gen(users: Iterable[int]) -> Iterator[tuple[str, str, float, int]]:
        catalogue, per_user = bc.value
        for u in users:
            yield from user_ratings(u, int(per_user[u]), catalogue, cfg)

    n_slices = max(sc.defaultParallelism, cfg.n_users // 5000)
    rows = sc.parallelize(range(cfg.n_users), n_slices).mapPartitions(gen)
    ratings = (spark.createDataFrame(rows, "user_id string, item_id string, rating double, "
                                           "epoch long")
               .select("user_id", "item_id", "rating",
                       F.timestamp_seconds("epoch").alias("ts")))
    return ratings, items_frame(spark, cat, cfg)


def items_frame(spark: SparkSession, cat: Catalogue, cfg: SampleConfig) -> DataFrame:
    """``(item_id, title, genres)`` for the catalogue (built on the driver: O(n_items))."""
    rows = []
    for i in range(cfg.n_items):
        genres = [GENRES[cat.genre[i]]]
        if cat.second_genre[i] >= 0:
            genres.append(GENRES[cat.second_genre[i]])
        rows.append((str(i + 1), f"Sample Movie {i + 1} ({cat.year[i]})", genres))
    return spark.createDataFrame(rows, "item_id string, title string, genres array<string>")


def write_sample(spark: SparkSession, cfg: SampleConfig, out_dir: str) -> dict[str, str]:
    """Write the sample as MovieLens files and Parquet under ``out_dir``; return the paths.

    ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv`` (movieId,title,genres)
    as single files, like MovieLens' own; ``ratings.parquet`` and ``items.parquet`` as folders.
    """
    ratings, items = generate(spark, cfg)
    ratings = ratings.persist()
    paths = {name: join_path(out_dir, name) for name in
             ("ratings.csv", "movies.csv", "ratings.parquet", "items.parquet")}
    ratings.write.mode("overwrite").parquet(paths["ratings.parquet"])
    items.write.mode("overwrite").parquet(paths["items.parquet"])
    csv_ratings = ratings.select(F.col("user_id").alias("userId"),
                                 F.col("item_id").alias("movieId"),
                                 F.format_number("rating", 1).alias("rating"),
                                 F.unix_seconds("ts").alias("timestamp"))
    csv_items = items.select(F.col("item_id").alias("movieId"), "title",
                             F.array_join("genres", "|").alias("genres"))
    _write_single_csv(spark, csv_ratings.orderBy(F.col("userId").cast("long"), "timestamp"),
                      paths["ratings.csv"])
    _write_single_csv(spark, csv_items.orderBy(F.col("movieId").cast("long")),
                      paths["movies.csv"])
    ratings.unpersist()
    return paths


def _write_single_csv(spark: SparkSession, df: DataFrame, path: str) -> None:
    fs = HadoopFS(spark)
    tmp = path + "._tmp"
    df.coalesce(1).write.mode("overwrite").option("header", True).csv(tmp)
    part = [n for n in fs.list_names(tmp) if n.startswith("part-")][0]
    fs.delete(path)
    fs.rename(join_path(tmp, part), path)
    fs.delete(tmp)
