"""MLlib Word2Vec on sequences of item ids: the trainer item2vec and DeepWalk share."""
from __future__ import annotations

from pyspark.ml.feature import Word2Vec
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .config import Word2VecConfig

VECTORS_SCHEMA = "item_id string, vector array<float>"


def fit_word2vec(sentences: DataFrame, cfg: Word2VecConfig, input_col: str = "items") -> DataFrame:
    """Train skip-gram Word2Vec on ``sentences[input_col]`` (array<string>).

    Returns the item vectors ``(item_id string, vector array<float>)``, one row per item seen at
    least ``cfg.min_count`` times. MLlib keeps the vocabulary and the vectors on the driver
    (O(vocabulary x vector_size)); the training itself runs on ``cfg.num_partitions`` tasks.
    """
    w2v = Word2Vec(vectorSize=cfg.vector_size, windowSize=cfg.window_size,
                   minCount=cfg.min_count, maxIter=cfg.max_iter,
                   numPartitions=cfg.num_partitions, stepSize=cfg.step_size,
                   maxSentenceLength=cfg.max_sentence_length, seed=cfg.seed,
                   inputCol=input_col, outputCol="_w2v")
    model = w2v.fit(sentences.select(input_col))
    return model.getVectors().select(F.col("word").alias("item_id"),
                                     vector_to_array("vector", "float32").alias("vector"))


def vocabulary_report(sentences: DataFrame, vectors: DataFrame, min_count: int,
                      input_col: str = "items") -> dict[str, int]:
    """Counts for the manifest: distinct items in the sentences, items with a vector, and
    items left without one because they occur fewer than ``min_count`` times."""
    counts = sentences.select(F.explode(input_col).alias("item_id")).groupBy("item_id").count()
    row = counts.agg(F.count("*").alias("items"),
                     F.sum((F.col("count") < min_count).cast("int")).alias("below")).first()
    return {"items_in_sentences": int(row["items"] or 0),
            "items_with_vector": vectors.count(),
            "items_below_min_count": int(row["below"] or 0)}
