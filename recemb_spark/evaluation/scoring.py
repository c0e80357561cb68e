"""Leave-last-out evaluation: HR@K, NDCG@K and coverage for any item-embedding model.

Protocol (the same for every model, so their figures compare):

* *Eligible users* have at least two liked items (rating >= ``sequences.min_rating``).
* Each eligible user's last liked item (by time, ties by item id in natural order) is *held
  out*; the models are trained on the rating table without those rows
  (:func:`leave_last_out`, computed once per run and shared by all models).
* The query is the vector of the user's last liked *training* item (and, as a second figure,
  the user vector pooled from the liked training history). All items with a vector are ranked
  by cosine similarity, the user's liked training items excluded.
* HR@K = share of eligible users whose held-out item ranks in the top K; NDCG@K with one
  relevant item = mean of 1/log2(rank + 2) over users with rank < K (rank 0-based). A held-out
  or query item without a vector is a miss, counted (``heldout_missing``, ``query_missing``).
  Coverage@K = share of the catalogue (items in the training ratings) that appears in at
  least one user's top K.
* Popularity ranks items by their number of liked training ratings, with the same exclusions.

Ties rank by item index (pessimistic for the held-out item only by chance, never optimistic).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ..ids import event_struct
from ..metrics import metric_row
from ..neighbors import blocks
from ..neighbors.topk import QUERY_BLOCK, categories_of, collect_matrix, exclusions, unit_rows
from . import counted
from .holdout import last_liked, without_holdout
from .ranks import CategoryBonus, OrderRanks, heldout_targets, rank_block


@dataclass
class Split:
    """The shared leave-last-out split.

    ``train``: the rating table without the held-out rows. ``cases``: one row per eligible
    user, ``(user_id, heldout string, query string, history array<string>)`` where ``history``
    is the user's liked training items in time order (its last element is ``query``).
    """

    train: DataFrame
    cases: DataFrame


def leave_last_out(ratings: DataFrame, min_rating: float) -> Split:
    """Hold out each eligible user's last liked item; see the module doc."""
    heldout = last_liked(ratings, min_rating)
    train = without_holdout(ratings, heldout)
    return Split(train=train, cases=holdout_cases(train, heldout, min_rating))


def holdout_cases(train: DataFrame, heldout: DataFrame, min_rating: float) -> DataFrame:
    """The evaluation cases for held-out pairs ``heldout (user_id, item_id)`` and the rating
    table they were taken out of, ``train``: ``(user_id, heldout, query, history)`` with
    ``history`` the user's liked training items in time order (ties as in :func:`last_liked`)
    and ``query`` its last element. Users without a liked training item get no case."""
    liked = (train.filter(F.col("rating") >= F.lit(min_rating))
             .join(heldout.select("user_id").distinct(), "user_id"))
    history = (liked.groupBy("user_id")
               .agg(F.array_sort(F.collect_list(event_struct())).alias("_h"))
               .select("user_id", F.transform("_h", lambda e: e["item_id"]).alias("history")))
    return (heldout.select("user_id", F.col("item_id").alias("heldout")).join(history, "user_id")
            .select("user_id", "heldout", F.element_at("history", -1).alias("query"),
                    "history"))


def popularity_vectors(train: DataFrame, min_rating: float) -> DataFrame:
    """Popularity as a one-dimensional "embedding": ``(item_id, vector=[liked count])``."""
    return (train.filter(F.col("rating") >= F.lit(min_rating)).groupBy("item_id").count()
            .select("item_id", F.array(F.col("count").cast("float")).alias("vector")))


def scoring_cases(cases: DataFrame, exclude_history: bool) -> DataFrame:
    """``cases`` as :func:`score_model` scores them (``evaluate.exclude_history``): unchanged
    (the liked training history excluded from the ranking), or with an empty ``history``
    (nothing excluded: repeat-heavy logs, where users come back to items they had)."""
    if exclude_history:
        return cases
    return cases.withColumn("history", F.array().cast("array<string>"))


def heldout_in_history(cases: DataFrame, train: DataFrame) -> float:
    """The share of ``cases`` whose held-out item the user already has in ``train`` (any
    rating): the items ``evaluate.exclude_history`` keeps out of reach. 0 for pairs held out
    of a table with one row per (user, item), as both protocols hold them out today."""
    found = (cases.select("user_id", F.col("heldout").alias("item_id"))
             .join(train.select("user_id", "item_id").withColumn("_seen", F.lit(1)),
                   ["user_id", "item_id"], "left")
             .agg(F.count("*").alias("n"), F.count("_seen").alias("seen")).collect()[0])
    return float(found["seen"]) / max(int(found["n"]), 1)


# --------------------------------------------------------------------------------------------
# numpy core (pure: tested directly)


def heldout_ranks(scores: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """0-based rank of ``heldout[r]`` in row ``r`` of ``scores`` (higher score = better).

    Excluded items must already be ``-inf``. Ties are broken by item index: an item with the
    same score ranks ahead of the held-out item when its index is lower.
    """
    rows = np.arange(len(heldout))
    target = scores[rows, heldout][:, None]
    cols = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target) | ((scores == target) & (cols < heldout[:, None]))
    return ahead.sum(axis=1)


def hit_and_ndcg(ranks: np.ndarray, k: int) -> tuple[int, float]:
    """Hits and summed NDCG contributions at cut-off ``k`` for 0-based ``ranks``."""
    inside = ranks < k
    return int(inside.sum()), float((1.0 / np.log2(ranks[inside] + 2.0)).sum())


@dataclass
class _Counts:
    """Sums over scored cases: users, misses, and how many held-out items ranked at each
    0-based rank below the largest k (HR and NDCG follow from those counts, summed in rank
    order: the same figures whatever the order the cases were scored in)."""

    users: int
    missing_query: int
    missing_heldout: int
    ranks: dict[int, int]

    @classmethod
    def zero(cls) -> _Counts:
        return cls(0, 0, 0, {})

    def add_rank(self, rank: int, top: int) -> None:
        """Count one scored case whose held-out item ranked ``rank`` (kept when < ``top``)."""
        if rank < top:
            self.ranks[rank] = self.ranks.get(rank, 0) + 1

    def hits(self, k: int) -> int:
        """Scored cases with the held-out item in the top ``k``."""
        return sum(c for r, c in self.ranks.items() if r < k)

    def ndcg(self, k: int) -> float:
        """Summed NDCG@``k`` contributions: 1 / log2(rank + 2) per hit."""
        return math.fsum(c / math.log2(r + 2) for r, c in sorted(self.ranks.items()) if r < k)

    def merge(self, other: _Counts) -> _Counts:
        ranks = dict(self.ranks)
        for r, c in other.ranks.items():
            ranks[r] = ranks.get(r, 0) + c
        return _Counts(self.users + other.users, self.missing_query + other.missing_query,
                       self.missing_heldout + other.missing_heldout, ranks)


@dataclass
class _Partial:
    """Per-partition sums, merged on the driver: all cases, the cases of each segment of
    the held-out item (head / tail / cold), and the coverage mask (size O(catalogue))."""

    total: _Counts
    segments: dict[str, _Counts]
    covered: np.ndarray

    def merge(self, other: _Partial) -> _Partial:
        names = set(self.segments) | set(other.segments)
        segments = {s: self.segments.get(s, _Counts.zero()).merge(
            other.segments.get(s, _Counts.zero())) for s in names}
        return _Partial(self.total.merge(other.total), segments, self.covered | other.covered)


@dataclass
class _Totals:
    """What the metric rows are made of: all cases, each segment, and the number of items in
    some scored case's top ``ks[0]``."""

    total: _Counts
    segments: dict[str, _Counts]
    covered: int


def _score_rows(rows: Iterable[Any], ids: dict[str, int], matrix: np.ndarray, ks: list[int],
                mode: str, normalise_query: bool = True,
                categories: np.ndarray | None = None) -> _Partial:
    """Score one partition of cases. ``mode``: ``item`` (query = the query item's vector),
    ``user`` (query = the row's ``uvec``, unit-length when ``normalise_query``),
    ``constant`` (query = [1.0], for popularity) or ``category`` (popularity, items of the
    query item's category first: ``categories`` holds each item's category index, -1 none).
    A row's ``segments`` (when present) name the held-out item's popularity segments."""
    n = matrix.shape[0]
    top = max(ks)
    part = _Partial(_Counts.zero(), {}, np.zeros(n, bool))
    batch: list[tuple[np.ndarray, int, list[int], list[str], int]] = []
    bonus = category_bonus(matrix) if mode == "category" else None
    mt, numbers = matrix.T, np.arange(n)
    order_ranks = None  # popularity: ranks by counting (the same figures, no pass per case)
    if mode in ("constant", "category") and OrderRanks.applies(matrix):
        order_ranks = OrderRanks(matrix[:, 0], categories if mode == "category" else None)

    def counts_of(row_segments: list[str]) -> list[_Counts]:
        return [part.total] + [part.segments.setdefault(s, _Counts.zero())
                               for s in row_segments]

    def flush() -> None:
        if not batch:
            return
        if order_ranks is not None:
            for _, h, excluded, row_segments, qcat in batch:
                ex = np.unique(np.asarray(excluded, np.int64))
                rank = order_ranks.rank(h, ex, qcat)
                for counts in counts_of(row_segments):
                    counts.add_rank(rank, top)
                part.covered[order_ranks.top(ks[0], ex, qcat)] = True
            batch.clear()
            return
        queries = np.stack([b[0] for b in batch])
        heldout = np.array([b[1] for b in batch])
        lengths = [len(b[2]) for b in batch]
        ex_rows = np.repeat(np.arange(len(batch)), lengths)
        ex_cols = np.array([c for b in batch for c in b[2]], np.int64)
        extra = None
        if bonus is not None:
            assert categories is not None  # a bonus comes with the categories
            extra = CategoryBonus(bonus, categories, np.array([b[4] for b in batch]))
        target = heldout_targets(queries, mt, heldout, extra)
        target[np.unique(ex_rows[ex_cols == heldout[ex_rows]])] = -np.inf
        ranks, best, _ = rank_block(queries, mt, numbers, target, heldout, ks[0], ex_rows,
                                    ex_cols, extra)
        for r, (_, _, _, row_segments, _) in enumerate(batch):
            for counts in counts_of(row_segments):
                counts.add_rank(int(ranks[r]), top)
        part.covered[best[best >= 0]] = True
        batch.clear()

    for row in rows:
        row_segments = list(row["segments"] or []) if "segments" in row else []
        for counts in counts_of(row_segments):
            counts.users += 1
        h = ids.get(row["heldout"])
        q = ids.get(row["query"])
        if mode == "item":
            query = None if q is None else matrix[q]
        elif mode == "user":
            query = None if row["uvec"] is None else np.asarray(row["uvec"], np.float32)
            if query is not None and normalise_query:
                query = unit_rows(query[None, :])[0]
        else:
            query = np.ones(matrix.shape[1], np.float32)
        if query is None:
            for counts in counts_of(row_segments):
                counts.missing_query += 1
            continue
        if h is None:
            for counts in counts_of(row_segments):
                counts.missing_heldout += 1
            continue
        excluded = [ids[i] for i in row["history"] if i in ids]
        query_cat = (int(categories[q]) if mode == "category" and q is not None
                     and categories is not None else -1)
        batch.append((query, h, excluded, row_segments, query_cat))
        if len(batch) >= QUERY_BLOCK:
            flush()
    flush()
    return part


def category_bonus(matrix: np.ndarray) -> np.float32:
    """What ``category`` mode adds to the score of an item of the query item's category:
    more than any popularity score (float32, as the scores are)."""
    top = np.abs(matrix).max() if matrix.size else np.float32(0.0)
    return np.float32(np.float32(top) + np.float32(1.0))


# --------------------------------------------------------------------------------------------
# Spark side


def scoring_path(spark: SparkSession, item_vectors: DataFrame,
                 broadcast_max_mb: float | None = None) -> str:
    """``broadcast`` when the item matrix fits the broadcast threshold
    (:func:`recemb_spark.neighbors.blocks.broadcast_limit`), else ``sharded``."""
    n, dim = blocks.table_shape(item_vectors)
    return blocks.choose_path(n, dim, None, blocks.broadcast_limit(spark, broadcast_max_mb),
                              k=0)


def score_model(spark: SparkSession, cases: DataFrame, item_vectors: DataFrame, ks: list[int],
                model: str, catalogue_size: int, mode: str = "item",
                user_vectors: DataFrame | None = None,
                similarity: str = "cosine",
                segments: DataFrame | None = None,
                item_categories: DataFrame | None = None,
                path: str | None = None,
                broadcast_max_mb: float | None = None,
                numbered: DataFrame | None = None,
                collected: Collected | None = None) -> list[dict[str, Any]]:
    """Metrics rows ``{model, metric, k, value}`` for one model and query mode.

    ``path="broadcast"``: the item matrix (O(catalogue x dim)) is collected and broadcast
    once; the cases are scored where they are, block by block in ``mapPartitions``; only one
    small summary per partition comes back. ``"sharded"``: cases and items cut into blocks,
    each (case block, item block) scored by one task (:func:`_sharded_totals`); the same
    figures. None: :func:`scoring_path` decides (``broadcast_max_mb``: None = auto, 0 = never
    broadcast). ``mode="user"`` needs ``user_vectors (user_id, vector)``; ``"constant"``
    scores every item by its (unnormalised) one-dimensional vector, as popularity does;
    ``"category"`` does the same but ranks the items of the query item's category first
    (``item_categories (item_id, category)``, one per item). ``similarity="dot"`` scores user
    queries by dot product (ALS factors); item queries are always cosine.
    ``segments (item_id, segments array<string>)`` (see
    :func:`.popularity.popularity_segments`) adds the rows ``hr_<segment>``,
    ``ndcg_<segment>``, ``users_<segment>`` and ``heldout_missing_<segment>`` over the
    cases whose held-out item is in each segment. Popularity (``constant`` / ``category``
    over whole counts) is ranked by counting positions in one order, not by scoring: on
    the broadcast path always (:class:`.ranks.OrderRanks`), on the sharded path from
    :data:`.counted.COUNT_MIN_PAIRS` case x item pairs (:mod:`.counted`); the same figures.
    ``numbered``: the sharded path's
    :func:`~recemb_spark.neighbors.blocks.number_items` of ``item_vectors``, when the caller
    scores several query modes on the same items (numbered once, persisted by the caller).
    ``collected``: the broadcast path's :func:`collect_items` of ``item_vectors``, likewise
    (collected and broadcast once; released by the caller).
    """
    dot = mode == "user" and similarity == "dot"
    normalise = mode not in ("constant", "category") and not dot
    data = cases
    if mode == "user":
        assert user_vectors is not None, "mode 'user' needs user_vectors"
        data = data.join(user_vectors.withColumnRenamed("vector", "uvec"), "user_id", "left")
    if segments is not None:
        data = data.join(segments.withColumnRenamed("item_id", "heldout"), "heldout", "left")
    ks_sorted = list(ks)
    path = path or scoring_path(spark, item_vectors, broadcast_max_mb)
    if path == "broadcast":
        total = _broadcast_totals(spark, data, item_vectors, ks_sorted, mode, normalise, dot,
                                  item_categories, collected)
    elif path == "sharded":
        total = _sharded_totals(data, item_vectors, ks_sorted, mode, normalise, dot,
                                item_categories, segments is not None, numbered)
    else:
        raise ValueError(f"unknown scoring path {path!r} (broadcast or sharded)")
    prefix = "user_" if mode == "user" else ""
    out = metric_rows(model, prefix, "", total.total, ks_sorted, with_users=mode != "user")
    for name in sorted(total.segments):
        out += metric_rows(model, prefix, f"_{name}", total.segments[name], ks_sorted,
                           with_users=True)
    out.append(metric_row(model, f"{prefix}coverage", ks_sorted[0],
                          float(total.covered) / max(catalogue_size, 1)))
    return out


@dataclass
class Collected:
    """An item matrix on the driver for several broadcast-path scorings of the same items
    (:func:`collect_items`): the ids in natural order, their positions, the vectors as
    stored, and one broadcast per normalisation, made on first use. :meth:`release`
    unpersists them."""

    ids: list[str]
    index: dict[str, int]
    raw: np.ndarray
    broadcasts: dict[bool, Broadcast[Any]] = field(default_factory=dict)

    def broadcast(self, spark: SparkSession, normalise: bool) -> Broadcast[Any]:
        """``(index, matrix, None)`` broadcast, the matrix's rows unit-length when
        ``normalise``: made once per value of ``normalise``."""
        if normalise not in self.broadcasts:
            matrix = unit_rows(self.raw) if normalise else self.raw
            self.broadcasts[normalise] = spark.sparkContext.broadcast(
                (self.index, matrix, None))
        return self.broadcasts[normalise]

    def release(self) -> None:
        """Unpersist the broadcasts (the executors drop their copies)."""
        for bc in self.broadcasts.values():
            bc.unpersist()
        self.broadcasts.clear()


def collect_items(item_vectors: DataFrame) -> Collected:
    """``item_vectors (item_id, vector)`` collected to the driver once
    (:func:`~recemb_spark.neighbors.topk.collect_matrix`, O(catalogue x dim)), for
    :func:`score_model`'s ``collected``."""
    ids, raw = collect_matrix(item_vectors, normalise=False)
    return Collected(ids, {item: i for i, item in enumerate(ids)}, raw)


def _broadcast_totals(spark: SparkSession, data: DataFrame, item_vectors: DataFrame,
                      ks: list[int], mode: str, normalise: bool, dot: bool,
                      item_categories: DataFrame | None,
                      collected: Collected | None = None) -> _Totals:
    """:func:`score_model`'s sums with the item matrix (and ids) broadcast: ``collected``'s,
    else collected here for this call."""
    items = collect_items(item_vectors) if collected is None else collected
    if mode == "category":  # category index per item: O(catalogue)
        assert item_categories is not None, "mode 'category' needs item_categories"
        codes, _ = categories_of(item_categories.filter(F.col("category") != ""),
                                 pa.array(items.ids, pa.string()))
        bc = spark.sparkContext.broadcast((items.index, items.raw, codes.astype(np.int32)))
    else:
        bc = items.broadcast(spark, normalise)

    def run(part: Iterable[Any]) -> Iterator[_Partial]:
        ids_, matrix_, categories_ = bc.value
        yield _score_rows(part, ids_, matrix_, ks, mode, normalise_query=not dot,
                          categories=categories_)

    # the cases are few bytes (AQE may coalesce them into one partition) but each costs a
    # pass over the catalogue: spread over Spark's default parallelism so that every core
    # scores (the totals do not depend on how the cases are cut)
    spread = data.repartition(spark.sparkContext.defaultParallelism)
    partials = spread.rdd.mapPartitions(run).collect()
    if mode == "category":
        bc.unpersist()
    if collected is None:
        items.release()
    total = _Partial(_Counts.zero(), {}, np.zeros(len(items.ids), bool))  # no partition: 0
    for p in partials:
        total = total.merge(p)
    return _Totals(total.total, total.segments, int(total.covered.sum()))


#: rows out of a sharded scoring task: a case's count of items ahead of its held-out item in
#: one item block (``item_idx`` -1), or one of its top ``ks[0]`` items there (``ahead`` 0)
_SHARD_SCHEMA = "_case long, item_idx long, score float, ahead long"
#: the pseudo segment that holds every case in the sharded summary
_ALL = "__all__"


def _sharded_totals(data: DataFrame, item_vectors: DataFrame, ks: list[int], mode: str,
                    normalise: bool, dot: bool, item_categories: DataFrame | None,
                    with_segments: bool, numbered: DataFrame | None = None) -> _Totals:
    """:func:`score_model`'s sums without a broadcast, the same as :func:`_score_rows` gives.

    Items are numbered in natural id order (the broadcast matrix's row order) and cut into
    blocks of :func:`~recemb_spark.neighbors.blocks.item_block_rows`; the scored cases into
    blocks of :data:`~recemb_spark.neighbors.blocks.QUERY_BLOCK_ROWS` by a hash. A task
    gets one block of each; per case it counts the block's items ahead of the held-out item
    (higher score, or equal with a smaller number; excluded items score -inf) and keeps the
    block's top ``ks[0]`` for coverage. A case's rank is the sum of its counts; its held-out
    score is computed from the held-out vector joined to the case, the same float64-summed
    way as every exact score (:func:`recemb_spark.evaluation.ranks.rank_block`).
    ``numbered``: the items already numbered (:func:`~recemb_spark.neighbors.blocks.
    number_items` of ``item_vectors``), or None to number them here."""
    numbered = numbered if numbered is not None else blocks.number_items(item_vectors)
    n_items, dim = blocks.table_shape(item_vectors)
    rows, case_rows = blocks.item_block_rows(dim), blocks.QUERY_BLOCK_ROWS
    bonus = None
    if mode == "category":
        if item_categories is None:
            raise ValueError("score_model: mode 'category' needs item_categories")
        numbered = numbered.join(category_codes(item_categories), "item_id", "left")
        top = item_vectors.select(F.max(F.array_max(F.transform(
            "vector", lambda x: F.abs(x)))).alias("m")).collect()[0]["m"]
        bonus = category_bonus(np.array([top or 0.0], np.float32))
    else:
        numbered = numbered.withColumn("cat", F.lit(None).cast("int"))
    numbered = numbered.select("item_idx", "item_id", "vector",
                               F.coalesce("cat", F.lit(-1)).alias("cat"))
    held = numbered.select(F.col("item_id").alias("heldout"), F.col("item_idx").alias("h_idx"),
                           F.col("vector").alias("hvec"), F.col("cat").alias("h_cat"))
    asked = numbered.select(F.col("item_id").alias("query"), F.col("vector").alias("qvec"),
                            F.col("cat").alias("q_cat"))
    segs = F.col("segments") if with_segments else F.lit(None).cast("array<string>")
    cases = (data.withColumn("_case", F.monotonically_increasing_id())
             .join(held, "heldout", "left").join(asked, "query", "left"))
    qv = {"item": F.col("qvec"), "user": F.col("uvec")}.get(mode, F.lit(None))
    no_query = qv.isNull() if mode in ("item", "user") else F.lit(False)
    cases = cases.select(
        "_case", "history", F.coalesce("q_cat", F.lit(-1)).alias("q_cat"),
        qv.cast("array<float>").alias("qv"), "hvec", "h_idx", "h_cat",
        F.coalesce(F.array_contains("history", F.col("heldout")), F.lit(False)).alias("h_excl"),
        F.when(no_query, "query").when(F.col("h_idx").isNull(), "heldout").otherwise("scored")
        .alias("status"),
        F.concat(F.array(F.lit(_ALL)), F.coalesce(segs, F.array().cast("array<string>")))
        .alias("segs")).persist()
    cached: list[DataFrame] = []
    try:
        scored = cases.filter(F.col("status") == "scored").drop("segs", "status")
        n_cases = scored.count()
        ranks = coverage = None
        if (mode in ("constant", "category") and dim == 1
                and n_cases * n_items >= counted.COUNT_MIN_PAIRS):
            pop = numbered.select("item_id", "item_idx", F.col("vector")[0].alias("s"),
                                  "cat").persist()
            cached.append(pop)
            if counted.counting_applies(pop):
                ranks = counted.counted_ranks(scored, pop, mode == "category").persist()
                cached.append(ranks)
                coverage = counted.counted_coverage(scored, pop, ks[0], mode == "category")
        if n_cases and ranks is None:
            n_cb = blocks.blocks_of(n_cases, case_rows)
            n_ib = blocks.blocks_of(n_items, rows)
            pairs = blocks.pair_blocks(scored, blocks.hash_block("_case", n_cb), n_cb,
                                       numbered, F.floor(F.col("item_idx") / F.lit(rows)),
                                       n_ib)
            task = _shard_scorer(ks[0], mode, normalise, not dot, bonus, dim)
            out = pairs.applyInArrow(task, _SHARD_SCHEMA).persist()
            cached.append(out)
            ranks = (out.filter(F.col("item_idx") < 0).groupBy("_case")
                     .agg(F.sum("ahead").alias("rank")))
            w = Window.partitionBy("_case").orderBy(F.desc("score"), F.col("item_idx"))
            coverage = (out.filter(F.col("item_idx") >= 0)
                        .withColumn("_r", F.row_number().over(w))
                        .filter(F.col("_r") <= ks[0])
                        .agg(F.countDistinct("item_idx").alias("n")).collect()[0]["n"])
        summary = cases.select("_case", "status", "segs")
        if ranks is not None:
            summary = summary.join(ranks, "_case", "left")
        else:
            summary = summary.withColumn("rank", F.lit(None).cast("long"))
        top = max(ks)
        rows_out = (summary.select(F.explode("segs").alias("seg"), "status",
                                   F.when(F.col("rank") < top, F.col("rank"))
                                   .otherwise(F.lit(-1)).alias("rank"))
                    .groupBy("seg", "status", "rank").count().collect())
    finally:
        for frame in [cases, *cached]:
            frame.unpersist()
    by: dict[str, _Counts] = {}
    for r in rows_out:
        c = by.setdefault(r["seg"], _Counts.zero())
        c.users += r["count"]
        if r["status"] == "query":
            c.missing_query += r["count"]
        elif r["status"] == "heldout":
            c.missing_heldout += r["count"]
        elif r["rank"] >= 0:
            c.ranks[int(r["rank"])] = c.ranks.get(int(r["rank"]), 0) + r["count"]
    total = by.pop(_ALL, _Counts.zero())
    return _Totals(total, by, int(coverage or 0))


def category_codes(item_categories: DataFrame) -> DataFrame:
    """``(item_id, cat int)``: each item's category as a number (equal numbers = equal
    categories; empty names have none), one per item."""
    named = (item_categories.filter(F.col("category").isNotNull() & (F.col("category") != ""))
             .groupBy("item_id").agg(F.max("category").alias("category")))
    codes = named.select("category").distinct().withColumn(
        "cat", F.dense_rank().over(Window.orderBy("category")).cast("int"))
    return named.join(codes, "category").select("item_id", "cat")


def col(table: pa.Table, name: str) -> np.ndarray:
    """A non-null column of ``table`` as a numpy array."""
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)


def _shard_scorer(top: int, mode: str, normalise: bool, normalise_query: bool,
                  bonus: np.float32 | None, dim: int) -> Any:
    """The cogroup function of :func:`_sharded_totals`: one case block x one item block."""

    def score(cases: pa.Table, items: pa.Table) -> pa.Table:
        if cases.num_rows == 0 or items.num_rows == 0:
            return pa.table({"_case": pa.array([], pa.int64()),
                             "item_idx": pa.array([], pa.int64()),
                             "score": pa.array([], pa.float32()),
                             "ahead": pa.array([], pa.int64())})
        items = blocks.sorted_block(items)
        cases = cases.combine_chunks()
        m = blocks.block_matrix(items, "vector")
        if normalise:
            m = unit_rows(m)
        numbers = col(items, "item_idx")
        cats = col(items, "cat")
        ids = items.column("item_id").combine_chunks()
        h = blocks.block_matrix(cases, "hvec")
        if normalise:
            h = unit_rows(h)
        if mode in ("item", "user"):
            q = blocks.block_matrix(cases, "qv")
            if mode == "item" and normalise or mode == "user" and normalise_query:
                q = unit_rows(q)
        else:
            q = np.ones((cases.num_rows, m.shape[1]), np.float32)
        h_idx, q_cat, h_cat = col(cases, "h_idx"), col(cases, "q_cat"), col(cases, "h_cat")
        held_bonus = None if bonus is None else CategoryBonus(bonus, h_cat, q_cat)
        target = heldout_targets(q, h.T, np.arange(len(q)), held_bonus)  # row r: h[r]
        target[col(cases, "h_excl").astype(bool)] = -np.inf
        ex_rows, ex_cols = exclusions(cases.column("history").combine_chunks(), ids)
        case_ids = col(cases, "_case")
        extra = None if bonus is None else CategoryBonus(bonus, cats, q_cat)
        ahead, best, vals = rank_block(q, m.T, numbers, target, h_idx, top, ex_rows, ex_cols,
                                       extra)
        r, c = np.nonzero(best >= 0)
        n_cases = len(q)
        return pa.table({
            "_case": pa.array(np.concatenate([case_ids, case_ids[r]])),
            "item_idx": pa.array(np.concatenate([np.full(n_cases, -1, np.int64),
                                                 numbers[best[r, c]]])),
            "score": pa.array(np.concatenate([np.zeros(n_cases, np.float32), vals[r, c]])
                              .astype(np.float32)),
            "ahead": pa.array(np.concatenate([ahead, np.zeros(len(r), np.int64)])
                              .astype(np.int64))})

    return score


def metric_rows(model: str, prefix: str, suffix: str, counts: _Counts, ks: list[int],
                with_users: bool) -> list[dict[str, Any]]:
    """The metric rows of one set of sums: users, misses, HR@k and NDCG@k (shares of the
    users, misses counted as failures)."""
    users = max(counts.users, 1)
    out = [metric_row(model, f"{prefix}users{suffix}", 0, counts.users)] if with_users else []
    out += [metric_row(model, f"{prefix}query_missing{suffix}", 0, counts.missing_query),
            metric_row(model, f"{prefix}heldout_missing{suffix}", 0, counts.missing_heldout)]
    for k in ks:
        out.append(metric_row(model, f"{prefix}hr{suffix}", k, counts.hits(k) / users))
        out.append(metric_row(model, f"{prefix}ndcg{suffix}", k, counts.ndcg(k) / users))
    return out


def segments_for_cases(cases: DataFrame, segments: DataFrame) -> DataFrame:
    """``(item_id, segments)`` for every held-out item of ``cases``: from ``segments``, and
    ``[tail, cold]`` for an item never liked in training."""
    heldout = cases.select(F.col("heldout").alias("item_id")).distinct()
    return (heldout.join(segments, "item_id", "left")
            .select("item_id", F.coalesce("segments", F.array(F.lit("tail"), F.lit("cold")))
                    .alias("segments")))


#: the baselines scored without embeddings: one ranking whatever the query (no item / user)
BASELINES = ("popularity", "popularity_category")


def is_baseline(model: str) -> bool:
    """True for a :data:`BASELINES` model name."""
    return model in BASELINES


def format_metrics(metrics: list[dict[str, Any]], ks: list[int]) -> str:
    """A small text table: one line per model and query (item / user; ``-`` for a
    baseline), the model column as wide as the longest name needs."""
    by: dict[tuple[str, str], dict[str, float]] = {}
    for m in metrics:
        query = "user" if m["metric"].startswith("user_") else "item"
        name = m["metric"].removeprefix("user_")
        if is_baseline(m["model"]):
            query = "-"
        by.setdefault((m["model"], query), {})[f"{name}@{m['k']}" if m["k"] else name] = m["value"]
    w = max([14] + [len(model) + 1 for model, _ in by])
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{ks[0]}"]
    head = f"{'model':<{w}}{'query':<7}" + "".join(f"{c:>12}" for c in cols) + f"{'misses':>9}"
    lines = [head, "-" * len(head)]
    for (model, query), vals in by.items():
        if not any(c in vals for c in cols):
            continue
        misses = int(vals.get("query_missing", 0) + vals.get("heldout_missing", 0))
        lines.append(f"{model:<{w}}{query:<7}" + "".join(
            f"{vals.get(c, float('nan')):>12.4f}" for c in cols) + f"{misses:>9}")
    k = ks[0]
    segments = [s for s in SEGMENTS if any(f"hr_{s}@{k}" in v for v in by.values())]
    if segments:  # HR@k by the held-out item's popularity segment, with its users
        lines += ["", f"HR@{k} by the held-out item's popularity (users; misses = held-out "
                      f"items without a vector)",
                  f"{'model':<{w}}{'query':<7}" + "".join(
                      f"{s:>12}{'misses':>8}" for s in segments)]
        for (model, query), vals in by.items():
            if not any(f"hr_{s}@{k}" in vals for s in segments):
                continue
            lines.append(f"{model:<{w}}{query:<7}" + "".join(
                f"{vals.get(f'hr_{s}@{k}', float('nan')):>12.4f}"
                f"{int(vals.get(f'heldout_missing_{s}', 0)):>8}" for s in segments))
        users = next(v for v in by.values() if f"users_{segments[0]}" in v)
        lines.append(f"{'(users)':<{w + 7}}" + "".join(
            f"{int(users.get(f'users_{s}', 0)):>12}{'':>8}" for s in segments))
    return "\n".join(lines)


#: the held-out item segments of :func:`.popularity.popularity_segments`, in print order
SEGMENTS = ["head", "tail", "cold"]
