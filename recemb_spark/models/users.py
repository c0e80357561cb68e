"""User embeddings pooled from the vectors of the items in each user's history."""
from __future__ import annotations

from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def pool_user_vectors(histories: DataFrame, item_vectors: DataFrame, pooling: str = "mean",
                      half_life: float = 10.0) -> DataFrame:
    """Each user's vector: the (weighted) mean of the vectors of the items in their history.

    ``histories``: ``(user_id, items array<string>)`` in time order, oldest first.
    ``item_vectors``: ``(item_id, vector array<float>)``.
    ``pooling``: ``mean`` (equal weights) or ``recency``: the item at position p from the end
    (0 = latest) weighs ``0.5 ** (p / half_life)``; positions count every history item, also
    those without a vector. Items without a vector are skipped; users with no known item get
    no row. Returns ``(user_id string, vector array<float>)``.
    """
    exploded = histories.select("user_id", F.size("items").alias("_n"),
                                F.posexplode("items").alias("_pos", "item_id"))
    if pooling == "recency":
        weight = F.pow(F.lit(0.5), (F.col("_n") - 1 - F.col("_pos")) / F.lit(float(half_life)))
    elif pooling == "mean":
        weight = F.lit(1.0)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    joined = exploded.join(item_vectors, "item_id").withColumn("_w", weight)
    pooled = joined.groupBy("user_id").agg(
        Summarizer.mean(array_to_vector("vector"), F.col("_w")).alias("_mean"))
    return pooled.select("user_id", vector_to_array("_mean", "float32").alias("vector"))
