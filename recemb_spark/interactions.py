"""The rating table and the sequence table: pure DataFrame -> DataFrame functions."""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from .config import SequencesConfig
from .ids import event_struct, item_order


def clean_ratings(valid: DataFrame) -> DataFrame:
    """The rating table of rated input: one row per (user, item), the latest rating kept.

    Input: ``(user_id string, item_id string, rating double, ts timestamp, ...)``; output
    ``(user_id, item_id, rating, ts, signal double)`` with ``signal`` = the rating (ALS's
    implicit signal). Among duplicates the latest ``ts`` wins; at equal ``ts`` the higher
    rating.
    """
    # max of (ts, rating) structs: a hash aggregation with a map-side partial step, where a
    # row_number window would sort the whole log by (user, item) first
    latest = F.max(F.struct("ts", "rating")).alias("_l")
    return (valid.groupBy("user_id", "item_id").agg(latest)
            .select("user_id", "item_id", F.col("_l.rating").alias("rating"),
                    F.col("_l.ts").alias("ts"), F.col("_l.rating").alias("signal")))


def aggregate_events(events: DataFrame, signal: str = "sum") -> DataFrame:
    """The rating table of an implicit log: one row per (user, item) from all its events.

    ``events``: ``(user_id, item_id, rating = the event's weight, ts, ...)``. Returns
    ``(user_id, item_id, rating, ts, signal)``: ``rating`` is the strongest event's weight,
    ``ts`` the latest event's time, ``signal`` the ``sum`` / ``max`` / ``count`` of the
    weights (what implicit ALS turns into confidence).
    """
    agg = {"sum": F.sum("rating"), "max": F.max("rating"),
           "count": F.count("*").cast("double")}[signal]
    return (events.groupBy("user_id", "item_id")
            .agg(F.max("rating").alias("rating"), F.max("ts").alias("ts"), agg.alias("signal")))


def items_from_categories(events: DataFrame) -> DataFrame:
    """An items table from a log's category column (side information): ``(item_id,
    title null, genres [category])``, the item's most frequent category (ties: the smallest)."""
    counts = (events.filter(F.col("category").isNotNull() & (F.col("category") != ""))
              .groupBy("item_id", "category").count())
    best = Window.partitionBy("item_id").orderBy(F.desc("count"), F.col("category"))
    return (counts.withColumn("_r", F.row_number().over(best)).filter(F.col("_r") == 1)
            .select("item_id", F.lit(None).cast("string").alias("title"),
                    F.array("category").alias("genres")))


def build_sessions(ratings: DataFrame, cfg: SequencesConfig,
                   min_rating: float | None = None) -> DataFrame:
    """Every session of the items rated at least ``min_rating``, before the ``min_length``
    filter.

    ``ratings``: the rating table, or an implicit log's events ``(user_id, item_id, rating,
    ts[, session_id])`` (then an item can recur). Kept = ``rating >= min_rating`` (default
    ``cfg.min_rating``, the liked items; the tables stage passes
    ``Config.context_min_rating``: every rated item by default, every event of an implicit
    log). Each user's kept items are ordered by time (ties by item id in natural
    order, see :func:`item_order`); when ``cfg.max_length`` > 0 only the latest that many are
    kept; a ``session_id`` column keys sessions by (user, session); when
    ``cfg.session_gap_minutes`` > 0 a new session also starts wherever two consecutive items
    are more than that apart; with ``cfg.collapse_repeats`` consecutive repeats of one item
    become one token. Returns ``(user_id, items array<string>, n_items int,
    ts_start timestamp, ts_end timestamp)``.
    """
    threshold = cfg.min_rating if min_rating is None else min_rating
    session = ["session_id"] if "session_id" in ratings.columns else []
    liked = ratings.filter(F.col("rating") >= F.lit(threshold)).select(
        "user_id", "item_id", "ts", *session)
    if cfg.max_length > 0:
        latest = Window.partitionBy("user_id").orderBy(
            F.desc("ts"), *[k.desc() for k in item_order()])
        liked = (liked.withColumn("_r", F.row_number().over(latest))
                 .filter(F.col("_r") <= cfg.max_length).drop("_r"))
    if cfg.session_gap_minutes > 0:
        order = Window.partitionBy("user_id", *session).orderBy(F.col("ts"), *item_order())
        seconds = F.unix_seconds(F.col("ts"))
        gap = seconds - F.lag(seconds).over(order)
        starts = F.when(gap.isNull() | (gap > cfg.session_gap_minutes * 60.0), 1).otherwise(0)
        running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        liked = (liked.withColumn("_start", starts)
                 .withColumn("_session", F.sum("_start").over(running)).drop("_start"))
    else:
        liked = liked.withColumn("_session", F.lit(0))
    events = F.array_sort(F.collect_list(event_struct()))
    items = F.transform("_ev", lambda e: e["item_id"])
    if cfg.collapse_repeats:
        items = F.filter(items, lambda x, i: (i == 0) | (x != F.col("_ev")[i - 1]["item_id"]))
    return (liked.groupBy("user_id", *session, "_session").agg(events.alias("_ev"))
            .select("user_id", items.alias("items"),
                    F.col("_ev")[0]["ts"].alias("ts_start"),
                    F.element_at("_ev", -1)["ts"].alias("ts_end"))
            .select("user_id", "items", F.size("items").alias("n_items"), "ts_start",
                    "ts_end"))


def build_sequences(ratings: DataFrame, cfg: SequencesConfig,
                    min_rating: float | None = None) -> DataFrame:
    """The sequence table: :func:`build_sessions` without sessions shorter than ``min_length``."""
    return build_sessions(ratings, cfg, min_rating).filter(F.col("n_items") >= cfg.min_length)


def rated_items(ratings: DataFrame) -> DataFrame:
    """Every item each user rated, liked or not (what recommendations exclude as seen):
    ``(user_id, items array<string>)``, unordered."""
    return ratings.groupBy("user_id").agg(F.collect_list("item_id").alias("items"))


def user_histories(sequences: DataFrame) -> DataFrame:
    """Each user's liked items in time order across sessions: ``(user_id, items)``."""
    sessions = F.array_sort(F.collect_list(F.struct("ts_start", "items")))
    return (sequences.groupBy("user_id").agg(sessions.alias("_s"))
            .select("user_id", F.flatten(F.transform("_s", lambda s: s["items"])).alias("items")))
