"""Day over day: how much today's neighbour lists moved, and how yesterday's model did on the
events that arrived since. Pure DataFrame functions; ``stages/daily.py`` wires them.

*Stability*: for every item with a neighbour list on both dates, the overlap of the two top-k
lists ``|A ∩ B| / k`` (:func:`neighbor_overlap`), summarised as a mean, quantiles and means
for head and tail items (:func:`overlap_metrics`; the rule: :mod:`.popularity`).

*Forward evaluation*: yesterday's tables against the liked events after yesterday's cutoff
(the latest ``ts`` of yesterday's rating table). Each user with such an event is one case
(:func:`forward_cases`): the target is the user's first new liked item (not one they had
rated by the cutoff; ties in time by item id), the query their last liked item at the cutoff,
and everything they had rated by then is excluded from the ranking. The embeddings are scored
with :func:`recemb_spark.evaluation.scoring.score_model` (metric names prefixed ``forward_``,
:func:`forward_rows`); the stored neighbour lists with :func:`forward_neighbor_metrics`.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ..ids import item_order
from ..metrics import metric_row
from ..rows import one_row
from .popularity import is_head

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# --------------------------------------------------------------------------------------------
# stability


def top_lists(neighbors: DataFrame, k: int) -> DataFrame:
    """``(item_id, neighbor_id)`` of the first ``k`` ranks of an item_neighbors table."""
    return (neighbors.filter(F.col("rank") <= k).select("item_id", "neighbor_id")
            .dropDuplicates())


def neighbor_overlap(today: DataFrame, previous: DataFrame, k: int) -> DataFrame:
    """``(item_id string, overlap double)``: ``|A ∩ B| / k`` of each item's top-``k`` lists
    on the two dates, for the items that have a list on both (item_neighbors tables:
    ``item_id, neighbor_id, rank``, rank from 1). An item with no common neighbour gets 0."""
    a, b = top_lists(today, k), top_lists(previous, k)
    items = a.select("item_id").distinct().join(b.select("item_id").distinct(), "item_id")
    common = a.join(b, ["item_id", "neighbor_id"]).groupBy("item_id").agg(F.count("*")
                                                                            .alias("_c"))
    return (items.join(common, "item_id", "left")
            .select("item_id", (F.coalesce(F.col("_c"), F.lit(0)) / F.lit(float(k)))
                    .alias("overlap")))


def overlap_metrics(model: str, overlap: DataFrame, segments: DataFrame,
                    k: int) -> list[dict[str, Any]]:
    """Metric rows of one model's overlaps (one aggregation): ``overlap_mean``,
    ``overlap_p10`` .. ``overlap_p90`` (observed values), ``overlap_head_mean`` /
    ``overlap_tail_mean`` (head and tail by :func:`.popularity.popularity_segments` of today's
    ratings, ``segments``; items not in it count as tail) and the item counts
    ``overlap_items``, ``overlap_head_items`` (k = 0). Empty overlap -> counts only."""
    joined = overlap.join(segments, "item_id", "left").withColumn("_head", is_head())
    row = one_row(joined.agg(
        F.count("*").alias("n"), F.avg("overlap").alias("mean"),
        F.percentile_approx("overlap", list(QUANTILES), 10000).alias("q"),
        F.sum(F.col("_head").cast("long")).alias("n_head"),
        F.avg(F.when(F.col("_head"), F.col("overlap"))).alias("head"),
        F.avg(F.when(~F.col("_head"), F.col("overlap"))).alias("tail")))
    out = [metric_row(model, "overlap_items", 0, row["n"]),
           metric_row(model, "overlap_head_items", 0, row["n_head"] or 0)]
    if not row["n"]:
        return out
    out.append(metric_row(model, "overlap_mean", k, row["mean"]))
    out += [metric_row(model, f"overlap_p{round(q * 100):02d}", k, v)
            for q, v in zip(QUANTILES, row["q"], strict=False)]
    for name in ("head", "tail"):
        if row[name] is not None:
            out.append(metric_row(model, f"overlap_{name}_mean", k, row[name]))
    return out


# --------------------------------------------------------------------------------------------
# forward evaluation


def cutoff_of(previous: DataFrame) -> dt.datetime | None:
    """The latest event time of a rating table (its cutoff), None when it is empty."""
    return one_row(previous.agg(F.max("ts")))[0]


def forward_cases(previous: DataFrame, today: DataFrame, min_rating: float,
                  cutoff: dt.datetime) -> tuple[DataFrame, DataFrame]:
    """The forward cases and the users they could not be built for.

    ``previous``: the rating table at the cutoff; ``today``: today's rating table (either may
    hold events the other lacks). Returns ``(cases, no_query)``: ``cases (user_id, heldout,
    query, history)`` — the shape :func:`recemb_spark.evaluation.scoring.score_model` scores, with
    ``history`` every item the user had rated by the cutoff (excluded from the ranking);
    ``no_query (user_id)`` users with a new liked item but no liked item at the cutoff.
    """
    known = previous.select("user_id", "item_id")
    new = (today.filter((F.col("ts") > F.lit(cutoff)) & (F.col("rating") >= F.lit(min_rating)))
           .join(known, ["user_id", "item_id"], "left_anti"))
    first = Window.partitionBy("user_id").orderBy("ts", *item_order())
    targets = (new.withColumn("_r", F.row_number().over(first)).filter(F.col("_r") == 1)
               .select("user_id", F.col("item_id").alias("heldout")))
    latest = Window.partitionBy("user_id").orderBy(F.desc("ts"), *[c.desc() for c in
                                                                    item_order()])
    queries = (previous.filter(F.col("rating") >= F.lit(min_rating))
               .withColumn("_r", F.row_number().over(latest)).filter(F.col("_r") == 1)
               .select("user_id", F.col("item_id").alias("query")))
    history = known.groupBy("user_id").agg(F.collect_list("item_id").alias("history"))
    cases = targets.join(queries, "user_id").join(history, "user_id").select(
        "user_id", "heldout", "query", "history")
    return cases, targets.join(queries, "user_id", "left_anti").select("user_id")


def forward_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``score_model`` rows renamed for the forward evaluation (``hr`` -> ``forward_hr``)."""
    return [dict(r, metric=f"forward_{r['metric']}") for r in rows]


def forward_neighbor_metrics(model: str, cases: DataFrame, neighbors: DataFrame,
                             k: int) -> list[dict[str, Any]]:
    """HR@k / NDCG@k of the stored neighbour lists: each case is served the query item's
    neighbours in rank order without the items in its ``history``, cut at ``k`` (a list that
    runs short stays short); a hit is the target among them, NDCG = 1/log2(position + 1).
    Rows ``forward_neighbors_hr`` / ``forward_neighbors_ndcg`` over all cases (a query item
    without a list is a miss) and ``forward_neighbors_users`` (k = 0)."""
    served = (cases.join(neighbors.select(F.col("item_id").alias("query"), "neighbor_id",
                                          "rank"), "query")
              .filter(~F.array_contains("history", F.col("neighbor_id"))))
    pos = F.row_number().over(Window.partitionBy("user_id").orderBy("rank", "neighbor_id"))
    hits = (served.withColumn("_pos", pos)
            .filter((F.col("_pos") <= k) & (F.col("neighbor_id") == F.col("heldout"))))
    users = cases.count()
    row = one_row(hits.agg(F.count("*").alias("h"),
                           F.sum(1.0 / F.log2(F.col("_pos") + 1.0)).alias("g")))
    n = max(users, 1)
    return [metric_row(model, "forward_neighbors_users", 0, users),
            metric_row(model, "forward_neighbors_hr", k, row["h"] / n),
            metric_row(model, "forward_neighbors_ndcg", k, (row["g"] or 0.0) / n)]
