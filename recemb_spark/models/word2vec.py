"""MLlib Word2Vec on sequences of item ids: the trainer item2vec and DeepWalk share."""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.ml.feature import Word2Vec
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Word2VecConfig
from ..jvm import drop_python_references
from ..rows import one_row
from .blas import warn_if_native_for_word2vec
from .subsample import keep_probabilities, subsample_sentences
from .word2vec_guard import (
    Word2VecSize,
    check_limits,
    driver_heap_bytes,
    fit_details,
    heap_share,
    result_limit_bytes,
)

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
    tokens = one_row(sentences.agg(F.sum(F.size(input_col))))[0] or 0
    return LARGE_STEP if tokens >= AUTO_STEP_MIN_TOKENS else SMALL_STEP


#: MLlib hands the trained vectors back as a table local to the driver; Spark ships it to the
#: executors sliced into ``spark.sql.leafNodeDefaultParallelism`` tasks (by default the
#: default parallelism: 2 on a 2-core cluster), each slice inside its task. At 722k items that
#: was 68 MB per task ("task of very large size"), and a task over spark.rpc.message.maxSize
#: (128 MiB) fails on a cluster: the slices are kept to this size instead
VECTOR_SLICE_BYTES = 8 * 2**20
#: bytes of one vector row in a slice: the id (~40 B as an UnsafeRow field) and the floats
ROW_OVERHEAD_BYTES = 64


def vector_slices(vocabulary: int, dim: int) -> int:
    """Tasks the trained vectors are shipped in: :data:`VECTOR_SLICE_BYTES` each."""
    return max(1, math.ceil(vocabulary * (4 * dim + ROW_OVERHEAD_BYTES) / VECTOR_SLICE_BYTES))


@contextmanager
def leaf_parallelism(spark: SparkSession, slices: int) -> Iterator[None]:
    """``spark.sql.leafNodeDefaultParallelism`` at ``slices`` (at least the default
    parallelism) inside the block, as it was after it."""
    key = "spark.sql.leafNodeDefaultParallelism"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(max(slices, spark.sparkContext.defaultParallelism)))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def fit_word2vec(sentences: DataFrame, cfg: Word2VecConfig, input_col: str = "items") -> DataFrame:
    """Train skip-gram Word2Vec on ``sentences[input_col]`` (array<string>).

    Returns the item vectors ``(item_id string, vector array<float>)``, one row per item seen at
    least ``cfg.min_count`` times. MLlib keeps the vocabulary and the vectors on the driver
    (O(vocabulary x vector_size)); the training itself runs on ``cfg.num_partitions`` tasks
    (0, unresolved auto, trains on one).
    """
    w2v = Word2Vec(vectorSize=cfg.vector_size, windowSize=cfg.window_size,
                   minCount=cfg.min_count, maxIter=cfg.max_iter,
                   numPartitions=max(1, cfg.num_partitions),
                   stepSize=resolve_step_size(cfg, sentences, input_col),
                   maxSentenceLength=cfg.max_sentence_length, seed=cfg.seed,
                   inputCol=input_col, outputCol="_w2v")
    model = w2v.fit(sentences.select(input_col))
    return model.getVectors().select(F.col("word").alias("item_id"),
                                     vector_to_array(F.col("vector"), "float32").alias("vector"))


def vocabulary_report(sentences: DataFrame, vectors: DataFrame, min_count: int,
                      input_col: str = "items",
                      counts: DataFrame | None = None) -> dict[str, int]:
    """Counts for the manifest: distinct items in the sentences, items with a vector, and
    items left without one because they occur fewer than ``min_count`` times. ``counts``:
    the corpus's :func:`token_counts` when the caller has them already."""
    counts = token_counts(sentences, input_col) if counts is None else counts
    row = one_row(counts.agg(F.count("*").alias("items"),
                             F.sum((F.col("count") < min_count).cast("int")).alias("below")))
    return {"items_in_sentences": int(row["items"] or 0),
            "items_with_vector": vectors.count(),
            "items_below_min_count": int(row["below"] or 0)}


# --------------------------------------------------------------------------------------------
# corpus-adaptive settings and frequent-token subsampling

#: ``max_iter: 0`` (auto): epochs so that the fit makes about this many token updates, within
#: [AUTO_MIN_ITER, AUTO_MAX_ITER] (small corpora need more epochs; large ones are slow).
#: Measured (bench/results/quality_grid_*.json): on yoochoose (34k training tokens) 5 epochs
#: HR@10 0.364-0.366, 20 epochs 0.30-0.32.
AUTO_ITER_UPDATES = 150_000
AUTO_MIN_ITER, AUTO_MAX_ITER = 5, 25
#: Large corpora: MLlib trains at ~60k (window 10) to ~140k (window 5) tokens/s on one core,
#: so 5 epochs of a MovieLens-25M corpus (22M tokens) would take half an hour. From
#: AUTO_MAX_UPDATES token updates up, auto epochs drop to what keeps the fit under that
#: budget (at least one). At 25M ratings: item2vec 1 epoch (25.1M tokens), DeepWalk 2 (11.8M;
#: 1 epoch measured HR@10 0.399 against 0.395 at 2, bench/results/word2vec_scale_settings.json).
#: An earlier floor of 300 updates per vocabulary item kept 5 epochs on every long-tailed
#: catalogue (722k items, 8.6M tokens: 43M updates, 356 s of item2vec alone) and is gone:
#: see docs/benchmarks.md, "catalogue scale", for what the epochs bought there.
AUTO_MAX_UPDATES = 25_000_000
#: ``num_partitions: 0`` (auto): AUTO_PARTITIONS from this many token updates (tokens x
#: epochs) up, else 1. MLlib trains each partition on one core and averages the vectors after
#: every epoch; one partition leaves the second core of a 2-core machine idle through the
#: longest fits. Measured (HR@10 with 2 partitions / 1, fit seconds): 1.5M-rating log item2vec
#: at 5 epochs (7.5M updates) 0.394 / 0.393, 69 / ~110 s; its DeepWalk (14.5M) 0.398 / 0.398,
#: 68 / 129 s; the 25M log's DeepWalk at 1 epoch (11.8M) 0.399 / 0.400, 72 / 138 s; item2vec
#: on the 1.5M log at 1 epoch 0.389 / 0.384. Below (every shared data set: at most ~1M
#: updates) fits take seconds and stay on one partition.
AUTO_PARALLEL_UPDATES = 5_000_000
AUTO_PARTITIONS = 2
#: ``min_count: 0`` (auto): 1 (every item gets a vector) while at least this share of the
#: vocabulary is seen once (long tails: their held-out items would have no vector), else 2.
AUTO_MIN_COUNT_SINGLETON_SHARE = 0.25


@dataclass(frozen=True)
class Corpus:
    """Statistics of a sentence corpus that the auto settings follow."""

    sentences: int
    tokens: int
    vocabulary: int
    singletons: int

    @property
    def mean_length(self) -> float:
        return self.tokens / max(self.sentences, 1)


def token_counts(sentences: DataFrame, input_col: str = "items") -> DataFrame:
    """``(item_id, count)``: occurrences of every token in the corpus (distributed)."""
    return sentences.select(F.explode(input_col).alias("item_id")).groupBy("item_id").count()


def corpus_stats(sentences: DataFrame, input_col: str = "items",
                 counts: DataFrame | None = None) -> Corpus:
    """Sentences, tokens, vocabulary and items seen once (two aggregations)."""
    counts = token_counts(sentences, input_col) if counts is None else counts
    row = one_row(counts.agg(F.count("*").alias("v"), F.sum("count").alias("t"),
                             F.sum((F.col("count") == 1).cast("int")).alias("s")))
    n = sentences.count()
    return Corpus(n, int(row["t"] or 0), int(row["v"] or 0), int(row["s"] or 0))


def auto_epochs(corpus: Corpus) -> int:
    """Epochs for ``max_iter: 0``: about :data:`AUTO_ITER_UPDATES` token updates within
    [AUTO_MIN_ITER, AUTO_MAX_ITER]; for a corpus where that exceeds :data:`AUTO_MAX_UPDATES`,
    as many as fit that budget (at least one)."""
    tokens = max(corpus.tokens, 1)
    epochs = min(AUTO_MAX_ITER, max(AUTO_MIN_ITER, math.ceil(AUTO_ITER_UPDATES / tokens)))
    if tokens * epochs > AUTO_MAX_UPDATES:
        epochs = min(epochs, max(1, AUTO_MAX_UPDATES // tokens))
    return int(epochs)


def resolve_settings(cfg: Word2VecConfig, corpus: Corpus) -> Word2VecConfig:
    """``cfg`` with every auto key (0) replaced by the value for this corpus: ``step_size``
    (:data:`AUTO_STEP_MIN_TOKENS`), ``max_iter`` (:data:`AUTO_ITER_UPDATES`),
    ``num_partitions`` (:data:`AUTO_PARALLEL_UPDATES`) and ``min_count``
    (:data:`AUTO_MIN_COUNT_SINGLETON_SHARE`)."""
    changes: dict[str, Any] = {}
    if cfg.step_size == 0:
        changes["step_size"] = (LARGE_STEP if corpus.tokens >= AUTO_STEP_MIN_TOKENS
                                else SMALL_STEP)
    if cfg.max_iter == 0:
        changes["max_iter"] = auto_epochs(corpus)
    if cfg.num_partitions == 0:
        epochs = changes.get("max_iter", cfg.max_iter)
        changes["num_partitions"] = (AUTO_PARTITIONS if corpus.tokens * epochs
                                     >= AUTO_PARALLEL_UPDATES else 1)
    if cfg.min_count == 0:
        share = corpus.singletons / max(corpus.vocabulary, 1)
        changes["min_count"] = 1 if share >= AUTO_MIN_COUNT_SINGLETON_SHARE else 2
    return dataclasses.replace(cfg, **changes)


def repeatable(master: str, num_partitions: int) -> bool:
    """Whether MLlib Word2Vec gives the same floats again for the same corpus and seed: only
    on one partition in local mode. On two or more, local mode's tasks update one shared
    array (MLlib broadcasts the vectors, and a local broadcast hands every task the driver's
    own array): measured, two fits of one corpus in one session differed by up to 0.5-0.7 a
    coordinate (numPartitions 1: identical). On a cluster the corpus's rows reach MLlib's
    repartition in the order shuffle blocks arrive from the executors."""
    return num_partitions <= 1 and master.startswith("local")


def train_word2vec(sentences: DataFrame, cfg: Word2VecConfig, sample: float = 0.0,
                   input_col: str = "items", section: str = "item2vec"
                   ) -> tuple[DataFrame, dict[str, Any]]:
    """Corpus statistics -> auto settings -> subsampling -> MLlib fit.

    Returns the vectors (cached; see :func:`fit_word2vec`) and the manifest details: the
    corpus statistics, the settings used (auto keys resolved), tokens before and after
    subsampling, and the vocabulary report. Subsampling uses the full corpus's counts; the
    vocabulary (``min_count``) is decided after it, as MLlib sees the corpus.
    """
    counts = token_counts(sentences, input_col).persist()
    corpus = corpus_stats(sentences, input_col, counts)
    resolved = resolve_settings(cfg, corpus)
    trained_on = sentences
    details: dict[str, Any] = {"corpus_sentences": corpus.sentences,
                               "corpus_tokens": corpus.tokens,
                               "corpus_vocabulary": corpus.vocabulary,
                               "corpus_singletons": corpus.singletons}
    if sample > 0:
        keep = keep_probabilities(counts, sample, corpus.tokens)
        trained_on = subsample_sentences(sentences.select(input_col), keep, resolved.seed,
                                         input_col).persist()
        details.update(subsampled_items=len(keep),
                       tokens_after_subsampling=int(one_row(trained_on.agg(
                           F.sum(F.size(input_col))))[0] or 0))
    # the guard: MLlib keeps vocabulary x vector_size arrays on the driver (``section`` names
    # the keys in its error)
    vocab = counts.filter(F.col("count") >= max(resolved.min_count, 1)).count()
    heap = driver_heap_bytes(sentences.sparkSession)
    size = Word2VecSize(details.get("tokens_after_subsampling", corpus.tokens), vocab,
                        check_limits(vocab, resolved.vector_size, heap, section,
                                     result_limit_bytes(sentences.sparkSession),
                                     heap_share(sentences.sparkSession)), heap)
    details["blas"] = warn_if_native_for_word2vec(sentences.sparkSession)
    t0 = time.perf_counter()
    with leaf_parallelism(sentences.sparkSession, vector_slices(vocab, resolved.vector_size)):
        vectors = fit_word2vec(trained_on, resolved, input_col).persist()
        vectors.count()  # shipped (and cached) here, in slices of VECTOR_SLICE_BYTES
    drop_python_references()  # the MLlib model (vocabulary x vector_size, twice) can go
    details.update(fit_details(size, time.perf_counter() - t0, resolved.max_iter))
    details.update(vocabulary_report(sentences, vectors, resolved.min_count, input_col,
                                     counts))
    details.update({f"used_{k}": getattr(resolved, k) for k in
                    ("step_size", "max_iter", "min_count", "window_size", "vector_size",
                     "num_partitions")},
                   sample=sample,
                   word2vec_repeatable=repeatable(sentences.sparkSession.sparkContext.master or "",
                                                  resolved.num_partitions))
    counts.unpersist()
    if trained_on is not sentences:
        trained_on.unpersist()
    return vectors, details
