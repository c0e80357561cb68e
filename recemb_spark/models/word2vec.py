"""MLlib Word2Vec on sequences of item ids: the trainer item2vec and DeepWalk share."""
from __future__ import annotations

from pyspark.ml.feature import Word2Vec
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..config import Word2VecConfig

VECTORS_SCHEMA = "item_id string, vector array<float>"

#: ``step_size: 0`` (auto) uses LARGE_STEP from this many training tokens up, else SMALL_STEP.
#: Measured (bench/results/item2vec_search_*.json and the closing note): at ~54k tokens
#: (ml-100k) 0.1 beats 0.025 (HR@10 0.116 vs 0.088); at ~13k tokens 0.1 halves HR@10 (0.136
#: vs 0.314); at ~100k tokens (built-in sample) they tie.
AUTO_STEP_MIN_TOKENS = 30_000
LARGE_STEP, SMALL_STEP = 0.1, 0.025


def resolve_step_size(cfg: Word2VecConfig, sentences: DataFrame, input_col: str = "items"
                      ) -> float:
    """``cfg.step_size``, or for 0 (auto) the step for the corpus size (one aggregation)."""
    if cfg.step_size > 0:
        return cfg.step_size
    tokens = sentences.agg(F.sum(F.size(input_col))).first()[0] or 0
    return LARGE_STEP if tokens >= AUTO_STEP_MIN_TOKENS else SMALL_STEP


def fit_word2vec(sentences: DataFrame, cfg: Word2VecConfig, input_col: str = "items") -> DataFrame:
    """Train skip-gram Word2Vec on ``sentences[input_col]`` (array<string>).

    Returns the item vectors ``(item_id string, vector array<float>)``, one row per item seen at
    least ``cfg.min_count`` times. MLlib keeps the vocabulary and the vectors on the driver
    (O(vocabulary x vector_size)); the training itself runs on ``cfg.num_partitions`` tasks.
    """
    w2v = Word2Vec(vectorSize=cfg.vector_size, windowSize=cfg.window_size,
                   minCount=cfg.min_count, maxIter=cfg.max_iter,
                   numPartitions=cfg.num_partitions,
                   stepSize=resolve_step_size(cfg, sentences, input_col),
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
