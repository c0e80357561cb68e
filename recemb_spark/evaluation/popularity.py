"""The one head / tail / cold rule, used by the evaluation (segments of the held-out items),
the ``ann`` stage (coverage per segment) and the ``daily`` stage (overlap per segment)."""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def popularity_segments(train: DataFrame, min_rating: float, head_share: float = 0.2,
                        cold_max_events: int = 5) -> DataFrame:
    """Each liked item's popularity segments: ``(item_id, segments array<string>)``.

    ``head``: the most liked items that together hold the first ``head_share`` of the liked
    events (rating >= ``min_rating``): taken in order of liked count, ties by item id, an item
    is head while the liked events of the items before it are below the share; ``tail``: the
    rest; ``cold`` (also tail, or head on a tiny log): at most ``cold_max_events`` liked
    events. Items with no liked event are not listed: :func:`~.scoring.segments_for_cases`
    counts them as tail and cold, the daily overlap as tail.

    Only the histogram ``liked count -> number of items`` reaches the driver (one row per
    distinct count); the items tied at the boundary count are ordered by a window partitioned
    by count, so no task holds the catalogue.
    """
    counts = (train.filter(F.col("rating") >= F.lit(min_rating))
              .groupBy("item_id").agg(F.count("*").alias("events")))
    hist = sorted(((r["events"], r["n"]) for r in
                   counts.groupBy("events").agg(F.count("*").alias("n")).collect()),
                  reverse=True)
    target = head_share * sum(c * n for c, n in hist)
    boundary, take, before = None, 0, 0  # items with count > boundary are head, plus `take`
    for c, n in hist:                    # items of count == boundary (the first by item id)
        if before >= target:
            break
        take = min(n, math.ceil((target - before) / c))
        boundary = c
        if take < n:
            break
        before += c * n
    if boundary is None:
        head = F.lit(False)
    else:
        tied = F.row_number().over(Window.partitionBy("events").orderBy(F.col("item_id")))
        head = (F.col("events") > boundary) | ((F.col("events") == boundary) & (tied <= take))
    return counts.select(
        "item_id",
        F.when(head & (F.col("events") > cold_max_events), F.array(F.lit("head")))
        .when(head, F.array(F.lit("head"), F.lit("cold")))
        .when(F.col("events") <= cold_max_events, F.array(F.lit("tail"), F.lit("cold")))
        .otherwise(F.array(F.lit("tail"))).alias("segments"))


def is_head(segments: str = "segments") -> Column:
    """True where the ``segments`` column of :func:`popularity_segments` says head (false
    for an item missing from it)."""
    return F.coalesce(F.element_at(segments, 1) == F.lit("head"), F.lit(False))
