"""Side information for Word2Vec models (the EGES idea with MLlib's trainer).

Item features (genres from an items file, a log's category column) become *side tokens*
(``side:<feature>``) interleaved in the training sentences after each item that has them
(Meta-Prod2Vec style): the skip-gram then learns vectors for the features in the same space
as the items. Frequent side tokens are subsampled (Mikolov's keep probability at
``side_info.sample``) so that a few big categories do not dominate the contexts. After
training, an item without a learned vector (too few events) gets the normalised mean of its
side tokens' vectors, marked ``source = 'side'`` in ``item_embeddings``.
"""
from __future__ import annotations

from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .subsample import keep_probabilities, subsample_sentences
from .word2vec import token_counts

SIDE_PREFIX = "side:"


def side_tokens(items: DataFrame) -> DataFrame:
    """``(item_id, side array<string>)`` from the items table's ``genres``: one side token
    per feature, items without features left out."""
    return (items.select("item_id", F.transform(
        F.filter(F.coalesce("genres", F.array().cast("array<string>")),
                 lambda g: g.isNotNull() & (g != "")),
        lambda g: F.concat(F.lit(SIDE_PREFIX), g)).alias("side"))
        .filter(F.size("side") > 0))


def interleave_side_tokens(sentences: DataFrame, side: DataFrame, sample: float, seed: int,
                           input_col: str = "items") -> DataFrame:
    """Sentences with each item followed by its side tokens: ``(input_col array<string>)``.

    Distributed: explode with positions, join the side table (bounded by the catalogue),
    regroup in order. Side tokens are then subsampled at ``sample`` (0 = keep all); item
    tokens are never dropped here."""
    numbered = (sentences.select(F.monotonically_increasing_id().alias("_s"), input_col)
                .select("_s", F.posexplode(input_col).alias("_p", "item_id")))
    joined = numbered.join(F.broadcast(side), "item_id", "left")
    tokens = F.concat(F.array("item_id"), F.coalesce("side", F.array().cast("array<string>")))
    grouped = (joined.groupBy("_s")
               .agg(F.array_sort(F.collect_list(F.struct("_p", tokens.alias("_t")))).alias("_x"))
               .select(F.flatten(F.transform("_x", lambda e: e["_t"])).alias(input_col)))
    if sample <= 0:
        return grouped
    counts = token_counts(grouped, input_col)
    total = counts.agg(F.sum("count")).first()[0] or 0
    keep = {t: p for t, p in keep_probabilities(counts, sample, total).items()
            if t.startswith(SIDE_PREFIX)}
    return subsample_sentences(grouped, keep, seed, input_col)


def split_vectors(vectors: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Trained vectors -> (item vectors, side-token vectors), both ``(item_id, vector)``."""
    is_side = F.col("item_id").startswith(SIDE_PREFIX)
    return vectors.filter(~is_side), vectors.filter(is_side)


def cold_item_vectors(side: DataFrame, side_vectors: DataFrame,
                      learned: DataFrame) -> DataFrame:
    """``(item_id, vector)`` for items of ``side`` without a learned vector: the normalised
    mean of the unit vectors of their side tokens (items whose tokens have no vector are
    left out)."""
    unit = side_vectors.select(
        F.col("item_id").alias("_token"),
        F.transform("vector", lambda x: x / F.sqrt(F.aggregate(
            "vector", F.lit(0.0), lambda acc, y: acc + y * y)))
        .alias("_v"))
    cold = side.join(learned.select("item_id"), "item_id", "left_anti")
    pooled = (cold.select("item_id", F.explode("side").alias("_token"))
              .join(unit, "_token")
              .groupBy("item_id")
              .agg(Summarizer.mean(array_to_vector("_v")).alias("_m"))
              .select("item_id", vector_to_array("_m", "float32").alias("vector")))
    norm = F.sqrt(F.aggregate("vector", F.lit(0.0), lambda acc, y: acc + y * y))
    return (pooled.withColumn("_n", norm).filter(F.col("_n") > 0)
            .select("item_id", F.transform("vector", lambda x: (x / F.col("_n")).cast("float"))
                    .alias("vector")))


def with_cold_items(items: DataFrame, side_vectors: DataFrame,
                    side: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """The learned item vectors marked ``source = 'learned'`` plus side-information vectors
    for the items of ``side`` without one (``source = 'side'``), and counts for the
    manifest. ``items`` and ``side_vectors`` come from :func:`split_vectors` (after any
    mapping of walk nodes back to item ids)."""
    cold = cold_item_vectors(side, side_vectors, items).persist()
    out = (items.select("item_id", "vector", F.lit("learned").alias("source"))
           .unionByName(cold.select("item_id", "vector", F.lit("side").alias("source"))))
    return out, {"side_token_vectors": side_vectors.count(), "cold_item_vectors": cold.count()}
