"""The weighted item graph built from consecutive items in sequences."""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ..config import GraphConfig
from ..rows import one_row

EDGES_SCHEMA = "src string, dst string, weight double"
GRAPH_SCHEMA = "src string, dst string, weight double, prob double"


def consecutive_pairs(sequences: DataFrame) -> DataFrame:
    """One row per pair of consecutive items in a sequence:
    ``(user_id, src, dst, ts_end)`` (``ts_end`` of the sequence the pair comes from)."""
    n = F.size("items")
    pairs = F.arrays_zip(F.slice("items", 1, n - 1).alias("src"),
                         F.slice("items", 2, n - 1).alias("dst"))
    return (sequences.filter(n >= 2)
            .select("user_id", "ts_end", F.explode(pairs).alias("_p"))
            .select("user_id", F.col("_p")["src"].alias("src"), F.col("_p")["dst"].alias("dst"),
                    "ts_end"))


def edge_weights(sequences: DataFrame, cfg: GraphConfig,
                 ratings: DataFrame | None = None) -> DataFrame:
    """Every directed edge with its weight, before any filter: ``(src, dst, weight)``.

    ``count``: the number of times ``dst`` directly follows ``src``. ``rating``: the sum of the
    user's ratings of ``dst`` over those occurrences (needs ``ratings``). ``recency``: each
    occurrence weighs ``0.5 ** (age_days / recency_half_life_days)``, age measured from the
    newest sequence end. ``undirected`` adds each occurrence in both directions.
    """
    pairs = consecutive_pairs(sequences)
    if cfg.weighting == "count":
        pairs = pairs.withColumn("_w", F.lit(1.0))
    elif cfg.weighting == "rating":
        if ratings is None:
            raise ValueError("graph.weighting=rating needs the rating table")
        r = ratings.select("user_id", F.col("item_id").alias("dst"), F.col("rating").alias("_w"))
        pairs = pairs.join(r, ["user_id", "dst"], "left").fillna({"_w": 1.0})
    elif cfg.weighting == "recency":
        newest = one_row(sequences.agg(F.max(F.unix_seconds("ts_end"))))[0] or 0  # one scalar
        age_days = (F.lit(newest) - F.unix_seconds("ts_end")) / 86400.0
        pairs = pairs.withColumn(
            "_w", F.pow(F.lit(0.5), age_days / F.lit(cfg.recency_half_life_days)))
    else:
        raise ValueError(f"unknown graph weighting {cfg.weighting!r}")
    pairs = pairs.select("src", "dst", "_w")
    if cfg.undirected:
        pairs = pairs.unionByName(pairs.select(F.col("dst").alias("src"),
                                               F.col("src").alias("dst"), "_w"))
    return pairs.groupBy("src", "dst").agg(F.sum("_w").alias("weight"))


def transition_probabilities(edges: DataFrame, min_edge_weight: float = 0.0) -> DataFrame:
    """The item graph: edges of weight >= ``min_edge_weight`` with
    ``prob = P(dst | src) = weight / sum of src's kept out-weights``:
    ``(src, dst, weight, prob)``; each node's probabilities sum to 1."""
    kept = edges.filter(F.col("weight") >= F.lit(min_edge_weight))
    total = F.sum("weight").over(Window.partitionBy("src"))
    return kept.withColumn("prob", F.col("weight") / total).select("src", "dst", "weight", "prob")


def build_item_graph(sequences: DataFrame, cfg: GraphConfig,
                     ratings: DataFrame | None = None) -> DataFrame:
    """:func:`edge_weights` then :func:`transition_probabilities` with ``cfg.min_edge_weight``."""
    return transition_probabilities(edge_weights(sequences, cfg, ratings), cfg.min_edge_weight)
