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
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .neighbors.topk import BLOCK_CELLS, collect_matrix, top_k_rows, unit_rows
from .stage import metric_row
from .holdout import last_liked, without_holdout
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
class _Partial:
    """Per-partition sums, merged on the driver (size O(catalogue) for the coverage mask)."""

    users: int
    missing_query: int
    missing_heldout: int
    hits: dict[int, int]
    ndcg: dict[int, float]
    covered: np.ndarray

    def merge(self, other: "_Partial") -> "_Partial":
        return _Partial(self.users + other.users, self.missing_query + other.missing_query,
                        self.missing_heldout + other.missing_heldout,
                        {k: self.hits[k] + other.hits[k] for k in self.hits},
                        {k: self.ndcg[k] + other.ndcg[k] for k in self.ndcg},
                        self.covered | other.covered)


def _score_rows(rows: Iterable[Any], ids: dict[str, int], matrix: np.ndarray, ks: list[int],
                mode: str, normalise_query: bool = True) -> _Partial:
    """Score one partition of cases. ``mode``: ``item`` (query = the query item's vector),
    ``user`` (query = the row's ``uvec``, unit-length when ``normalise_query``) or
    ``constant`` (query = [1.0], for popularity)."""
    n = matrix.shape[0]
    part = _Partial(0, 0, 0, {k: 0 for k in ks}, {k: 0.0 for k in ks}, np.zeros(n, bool))
    block = max(1, min(1024, BLOCK_CELLS // max(n, 1)))
    batch: list[tuple[np.ndarray, int, list[int]]] = []

    def flush() -> None:
        if not batch:
            return
        queries = np.stack([b[0] for b in batch])
        heldout = np.array([b[1] for b in batch])
        scores = queries @ matrix.T
        for r, (_, _, excluded) in enumerate(batch):
            scores[r, excluded] = -np.inf
        ranks = heldout_ranks(scores, heldout)
        for k in ks:
            h, g = hit_and_ndcg(ranks, k)
            part.hits[k] += h
            part.ndcg[k] += g
        top, _ = top_k_rows(scores, ks[0])
        part.covered[top[top >= 0]] = True
        batch.clear()

    for row in rows:
        part.users += 1
        h = ids.get(row["heldout"])
        if mode == "item":
            q = ids.get(row["query"])
            query = None if q is None else matrix[q]
        elif mode == "user":
            query = None if row["uvec"] is None else np.asarray(row["uvec"], np.float32)
            if query is not None and normalise_query:
                query = unit_rows(query[None, :])[0]
        else:
            query = np.ones(matrix.shape[1], np.float32)
        if query is None:
            part.missing_query += 1
            continue
        if h is None:
            part.missing_heldout += 1
            continue
        excluded = [ids[i] for i in row["history"] if i in ids]
        batch.append((query, h, excluded))
        if len(batch) >= block:
            flush()
    flush()
    return part


# --------------------------------------------------------------------------------------------
# Spark side


def score_model(spark: SparkSession, cases: DataFrame, item_vectors: DataFrame, ks: list[int],
                model: str, catalogue_size: int, mode: str = "item",
                user_vectors: Optional[DataFrame] = None,
                similarity: str = "cosine") -> list[dict[str, Any]]:
    """Metrics rows ``{model, metric, k, value}`` for one model and query mode.

    The item matrix (O(catalogue x dim)) is collected and broadcast once; the cases are scored
    where they are, block by block in ``mapPartitions``; only one small summary per partition
    comes back. ``mode="user"`` needs ``user_vectors (user_id, vector)``; ``"constant"`` scores
    every item by its (unnormalised) one-dimensional vector, as popularity does.
    ``similarity="dot"`` scores user queries by dot product (ALS factors); item queries are
    always cosine.
    """
    dot = mode == "user" and similarity == "dot"
    item_ids, matrix = collect_matrix(item_vectors, normalise=mode != "constant" and not dot)
    ids = {item: i for i, item in enumerate(item_ids)}
    bc = spark.sparkContext.broadcast((ids, matrix))
    data = cases
    if mode == "user":
        data = cases.join(user_vectors.withColumnRenamed("vector", "uvec"), "user_id", "left")
    ks_sorted = list(ks)

    def run(part: Iterator[Any]) -> Iterator[_Partial]:
        ids_, matrix_ = bc.value
        yield _score_rows(part, ids_, matrix_, ks_sorted, mode, normalise_query=not dot)

    partials = data.rdd.mapPartitions(run).collect()
    bc.unpersist()
    total = partials[0]
    for p in partials[1:]:
        total = total.merge(p)
    prefix = "user_" if mode == "user" else ""
    users = max(total.users, 1)
    out = [] if mode == "user" else [metric_row(model, "users", 0, total.users)]
    out += [metric_row(model, f"{prefix}query_missing", 0, total.missing_query),
            metric_row(model, f"{prefix}heldout_missing", 0, total.missing_heldout)]
    for k in ks_sorted:
        out.append(metric_row(model, f"{prefix}hr", k, total.hits[k] / users))
        out.append(metric_row(model, f"{prefix}ndcg", k, total.ndcg[k] / users))
    out.append(metric_row(model, f"{prefix}coverage", ks_sorted[0],
                       float(total.covered.sum()) / max(catalogue_size, 1)))
    return out


def format_metrics(metrics: list[dict[str, Any]], ks: list[int]) -> str:
    """A small text table: one line per model and query (item / user)."""
    by: dict[tuple[str, str], dict[str, float]] = {}
    for m in metrics:
        query = "user" if m["metric"].startswith("user_") else "item"
        name = m["metric"].removeprefix("user_")
        if m["model"] == "popularity":
            query = "-"
        by.setdefault((m["model"], query), {})[f"{name}@{m['k']}" if m["k"] else name] = m["value"]
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{ks[0]}"]
    head = f"{'model':<14}{'query':<7}" + "".join(f"{c:>12}" for c in cols) + f"{'misses':>9}"
    lines = [head, "-" * len(head)]
    for (model, query), vals in by.items():
        if not any(c in vals for c in cols):
            continue
        misses = int(vals.get("query_missing", 0) + vals.get("heldout_missing", 0))
        lines.append(f"{model:<14}{query:<7}" + "".join(
            f"{vals.get(c, float('nan')):>12.4f}" for c in cols) + f"{misses:>9}")
    return "\n".join(lines)
