"""Leave-last-out evaluation: HR@K, NDCG@K and coverage for any item-embedding model.

Protocol (the same for every model, so their figures compare):

* *Eligible users* have at least two liked items (rating >= ``sequences.min_rating``).
* Each eligible user's last liked item (by time, ties by item id in natural order) is *held
  out*; the models are trained on the rating table without those rows (:func:`leave_last_out`, computed once
  per run and shared by all models).
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

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from .holdout import last_liked, without_holdout
from .neighbors.topk import BLOCK_CELLS, collect_matrix, top_k_rows, unit_rows
from .stage import metric_row
from .tables import event_struct


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
    """Sums over scored cases: users, misses, hits and NDCG at each k."""

    users: int
    missing_query: int
    missing_heldout: int
    hits: dict[int, int]
    ndcg: dict[int, float]

    @classmethod
    def zero(cls, ks: list[int]) -> "_Counts":
        return cls(0, 0, 0, {k: 0 for k in ks}, {k: 0.0 for k in ks})

    def merge(self, other: "_Counts") -> "_Counts":
        return _Counts(self.users + other.users, self.missing_query + other.missing_query,
                       self.missing_heldout + other.missing_heldout,
                       {k: self.hits[k] + other.hits[k] for k in self.hits},
                       {k: self.ndcg[k] + other.ndcg[k] for k in self.ndcg})


@dataclass
class _Partial:
    """Per-partition sums, merged on the driver: all cases, the cases of each segment of
    the held-out item (head / tail / cold), and the coverage mask (size O(catalogue))."""

    total: _Counts
    segments: dict[str, _Counts]
    covered: np.ndarray

    def merge(self, other: "_Partial") -> "_Partial":
        names = set(self.segments) | set(other.segments)
        ks = list(self.total.hits)
        segments = {s: self.segments.get(s, _Counts.zero(ks)).merge(
            other.segments.get(s, _Counts.zero(ks))) for s in names}
        return _Partial(self.total.merge(other.total), segments, self.covered | other.covered)


def _score_rows(rows: Iterable[Any], ids: dict[str, int], matrix: np.ndarray, ks: list[int],
                mode: str, normalise_query: bool = True,
                categories: Optional[np.ndarray] = None) -> _Partial:
    """Score one partition of cases. ``mode``: ``item`` (query = the query item's vector),
    ``user`` (query = the row's ``uvec``, unit-length when ``normalise_query``),
    ``constant`` (query = [1.0], for popularity) or ``category`` (popularity, items of the
    query item's category first: ``categories`` holds each item's category index, -1 none).
    A row's ``segments`` (when present) name the held-out item's popularity segments."""
    n = matrix.shape[0]
    part = _Partial(_Counts.zero(ks), {}, np.zeros(n, bool))
    block = max(1, min(1024, BLOCK_CELLS // max(n, 1)))
    batch: list[tuple[np.ndarray, int, list[int], list[str], int]] = []

    def counts_of(row_segments: list[str]) -> list[_Counts]:
        return [part.total] + [part.segments.setdefault(s, _Counts.zero(ks))
                               for s in row_segments]

    def flush() -> None:
        if not batch:
            return
        queries = np.stack([b[0] for b in batch])
        heldout = np.array([b[1] for b in batch])
        scores = queries @ matrix.T
        if mode == "category":
            query_cats = np.array([b[4] for b in batch])
            same = (categories[None, :] == query_cats[:, None]) & (query_cats[:, None] >= 0)
            scores = scores + same * (np.abs(matrix).max() + 1.0)
        for r, (_, _, excluded, _, _) in enumerate(batch):
            scores[r, excluded] = -np.inf
        ranks = heldout_ranks(scores, heldout)
        for r, (_, _, _, row_segments, _) in enumerate(batch):
            for counts in counts_of(row_segments):
                for k in ks:
                    h, g = hit_and_ndcg(ranks[r:r + 1], k)
                    counts.hits[k] += h
                    counts.ndcg[k] += g
        top, _ = top_k_rows(scores, ks[0])
        part.covered[top[top >= 0]] = True
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
        query_cat = int(categories[q]) if mode == "category" and q is not None else -1
        batch.append((query, h, excluded, row_segments, query_cat))
        if len(batch) >= block:
            flush()
    flush()
    return part


# --------------------------------------------------------------------------------------------
# Spark side


def score_model(spark: SparkSession, cases: DataFrame, item_vectors: DataFrame, ks: list[int],
                model: str, catalogue_size: int, mode: str = "item",
                user_vectors: Optional[DataFrame] = None,
                similarity: str = "cosine",
                segments: Optional[DataFrame] = None,
                item_categories: Optional[DataFrame] = None) -> list[dict[str, Any]]:
    """Metrics rows ``{model, metric, k, value}`` for one model and query mode.

    The item matrix (O(catalogue x dim)) is collected and broadcast once; the cases are scored
    where they are, block by block in ``mapPartitions``; only one small summary per partition
    comes back. ``mode="user"`` needs ``user_vectors (user_id, vector)``; ``"constant"`` scores
    every item by its (unnormalised) one-dimensional vector, as popularity does;
    ``"category"`` does the same but ranks the items of the query item's category first
    (``item_categories (item_id, category)``, one per item). ``similarity="dot"`` scores user
    queries by dot product (ALS factors); item queries are always cosine.
    ``segments (item_id, segments array<string>)`` (see :func:`popularity_segments`) adds the
    rows ``hr_<segment>``, ``ndcg_<segment>``, ``users_<segment>`` and
    ``heldout_missing_<segment>`` over the cases whose held-out item is in each segment.
    """
    dot = mode == "user" and similarity == "dot"
    item_ids, matrix = collect_matrix(
        item_vectors, normalise=mode not in ("constant", "category") and not dot)
    ids = {item: i for i, item in enumerate(item_ids)}
    categories = None
    if mode == "category":  # category index per item: O(catalogue)
        names = {r["item_id"]: r["category"] for r in item_categories.collect()}
        codes = {c: i for i, c in enumerate(sorted({c for c in names.values() if c}))}
        categories = np.array([codes.get(names.get(i), -1) for i in item_ids], np.int32)
    bc = spark.sparkContext.broadcast((ids, matrix, categories))
    data = cases
    if mode == "user":
        data = data.join(user_vectors.withColumnRenamed("vector", "uvec"), "user_id", "left")
    if segments is not None:
        data = data.join(segments.withColumnRenamed("item_id", "heldout"), "heldout", "left")
    ks_sorted = list(ks)

    def run(part: Iterator[Any]) -> Iterator[_Partial]:
        ids_, matrix_, categories_ = bc.value
        yield _score_rows(part, ids_, matrix_, ks_sorted, mode, normalise_query=not dot,
                          categories=categories_)

    partials = data.rdd.mapPartitions(run).collect()
    bc.unpersist()
    total = partials[0]
    for p in partials[1:]:
        total = total.merge(p)
    prefix = "user_" if mode == "user" else ""
    out = metric_rows(model, prefix, "", total.total, ks_sorted, with_users=mode != "user")
    for name in sorted(total.segments):
        out += metric_rows(model, prefix, f"_{name}", total.segments[name], ks_sorted,
                           with_users=True)
    out.append(metric_row(model, f"{prefix}coverage", ks_sorted[0],
                          float(total.covered.sum()) / max(catalogue_size, 1)))
    return out


def metric_rows(model: str, prefix: str, suffix: str, counts: _Counts, ks: list[int],
                with_users: bool) -> list[dict[str, Any]]:
    """The metric rows of one set of sums: users, misses, HR@k and NDCG@k (shares of the
    users, misses counted as failures)."""
    users = max(counts.users, 1)
    out = [metric_row(model, f"{prefix}users{suffix}", 0, counts.users)] if with_users else []
    out += [metric_row(model, f"{prefix}query_missing{suffix}", 0, counts.missing_query),
            metric_row(model, f"{prefix}heldout_missing{suffix}", 0, counts.missing_heldout)]
    for k in ks:
        out.append(metric_row(model, f"{prefix}hr{suffix}", k, counts.hits[k] / users))
        out.append(metric_row(model, f"{prefix}ndcg{suffix}", k, counts.ndcg[k] / users))
    return out


def popularity_segments(train: DataFrame, min_rating: float, head_share: float = 0.2,
                        cold_max_events: int = 5) -> DataFrame:
    """Each training item's popularity segments: ``(item_id, segments array<string>)``.

    ``head``: the most liked items that together hold the first ``head_share`` of the liked
    training events (the item that crosses the line included); ``tail``: the rest; ``cold``
    (also tail): at most ``cold_max_events`` liked training events. Items with no liked
    training event (never seen) are not listed: :func:`segments_for_cases` counts them as
    tail and cold. Ties in popularity are ordered by item id.
    """
    counts = (train.filter(F.col("rating") >= F.lit(min_rating))
              .groupBy("item_id").agg(F.count("*").alias("events")))
    ordered = Window.orderBy(F.desc("events"), F.col("item_id")).rowsBetween(
        Window.unboundedPreceding, -1)
    total = counts.agg(F.sum("events")).first()[0] or 0
    before = F.coalesce(F.sum("events").over(ordered), F.lit(0))
    head = before < F.lit(head_share * total)
    return counts.select(
        "item_id",
        F.when(head & (F.col("events") > cold_max_events), F.array(F.lit("head")))
        .when(head, F.array(F.lit("head"), F.lit("cold")))
        .when(F.col("events") <= cold_max_events, F.array(F.lit("tail"), F.lit("cold")))
        .otherwise(F.array(F.lit("tail"))).alias("segments"))


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


#: the held-out item segments of :func:`popularity_segments`, in print order
SEGMENTS = ["head", "tail", "cold"]
