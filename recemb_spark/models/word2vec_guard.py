"""Fail early, with a clear message, when MLlib Word2Vec's driver-side arrays cannot fit.

MLlib's ``Word2Vec.fit`` builds the vocabulary on the driver (one ``VocabWord`` per word with
two 40-int Huffman arrays) and two float arrays of ``vocabulary x vector_size`` (``syn0``,
``syn1``), indexed by a JVM ``Int``; every epoch it broadcasts both, collects the partitions'
updated rows, and at the end copies the vectors into the model and a word -> vector map. A
vocabulary that breaks these fails after minutes of work with an ``OutOfMemoryError`` or a
negative array size deep inside Spark; :func:`check_word2vec_fits` finds out in one
aggregation before the fit starts and names the keys to change.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Word2VecConfig
from ..errors import ConfigError
from ..jvm import driver_jvm
from ..rows import one_row

log = logging.getLogger(__name__)

INT_MAX = 2**31 - 1
#: float copies of vocabulary x vector_size the driver may hold at once: syn0 and syn1, their
#: broadcast copies (serialised blocks + the local executor's values), the collected updates of
#: one epoch (up to one row of each per partition) and the final model's vectors and map
FLOAT_COPIES = 8
#: bytes per vocabulary word besides its vectors: the VocabWord (two int[40] arrays, a String),
#: the word -> index hash map entry and the final map's key
BYTES_PER_WORD = 600
#: share of the driver heap the estimate may take (the rest: Spark's own memory, other caches)
SAFE_HEAP_SHARE = 0.5
#: the same in local mode, where the executors' cached blocks live in the driver's heap too:
#: Spark lets them fill spark.memory.fraction (0.6) of it, and MLlib's arrays are outside
#: that account. Measured: DeepWalk on 2.85M words (estimate 4.3 GiB) died of heap space in a
#: 10 GiB local driver, the heap at 9.9 GiB, after item2vec's 3.0M words (4.5 GiB) passed
LOCAL_HEAP_SHARE = 0.35
#: serialised bytes per collected update row besides its floats (an ``(Int, float[])`` pair):
#: every epoch the driver collects one row per modified word of syn0 and of syn1, and the
#: collect must fit ``spark.driver.maxResultSize``. Measured: 1,058.3 MiB for 3,003,910
#: words x vector_size 32 (the 20M-event, 3M-item log), 185 B per row of 128 B of floats
RESULT_ROW_OVERHEAD = 60


@dataclass(frozen=True)
class Word2VecSize:
    """What the guard measured: tokens in the corpus, words with >= min_count occurrences,
    the driver bytes the fit needs (estimate) and the driver heap it has."""

    tokens: int
    vocabulary: int
    driver_bytes: int
    heap_bytes: int

    def as_details(self, prefix: str = "word2vec_") -> dict[str, int]:
        return {f"{prefix}tokens": self.tokens, f"{prefix}vocabulary": self.vocabulary,
                f"{prefix}driver_bytes_estimate": self.driver_bytes,
                f"{prefix}driver_heap_bytes": self.heap_bytes}


def driver_bytes(vocabulary: int, vector_size: int) -> int:
    """Estimated driver bytes of one MLlib Word2Vec fit (see :data:`FLOAT_COPIES`)."""
    return vocabulary * (FLOAT_COPIES * 4 * vector_size + BYTES_PER_WORD)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """Bytes of a JVM memory string (``4g``, ``512m``, ``1024k``, ``2048``: bytes)."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(f"not a memory size: {text!r}")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def driver_heap_bytes(spark: SparkSession) -> int:
    """The driver JVM's maximum heap (``Runtime.maxMemory``); ``spark.driver.memory`` (default
    1g) when the JVM cannot be asked."""
    try:
        return int(driver_jvm(spark).java.lang.Runtime.getRuntime().maxMemory())
    except Exception:  # pragma: no cover - a remote driver (Spark Connect)
        memory = spark.conf.get("spark.driver.memory", "1g")
        assert memory is not None  # a default is given
        return parse_memory(memory)


def collected_bytes(vocabulary: int, vector_size: int) -> int:
    """Serialised bytes of one epoch's collected updates (syn0 and syn1 rows of every word)."""
    return 2 * vocabulary * (4 * vector_size + RESULT_ROW_OVERHEAD)


def result_limit_bytes(spark: SparkSession) -> int:
    """``spark.driver.maxResultSize`` of the running session in bytes (0 = unlimited)."""
    return parse_memory(spark.sparkContext.getConf().get("spark.driver.maxResultSize", "1g")
                        or "1g")


def heap_share(spark: SparkSession) -> float:
    """The share of the driver heap Word2Vec's arrays may take: :data:`LOCAL_HEAP_SHARE` in
    local mode, else :data:`SAFE_HEAP_SHARE`."""
    local = (spark.sparkContext.master or "").startswith("local")
    return LOCAL_HEAP_SHARE if local else SAFE_HEAP_SHARE


def driver_memory_setting(need_bytes: int, share: float = SAFE_HEAP_SHARE) -> str:
    """The ``spark.driver.memory`` value (whole GiB, ``"6g"``) whose heap holds ``need_bytes``
    within ``share`` of it (plus 10%: the JVM's usable heap is a little below ``-Xmx``)."""
    return f"{max(1, math.ceil(need_bytes / share * 1.1 / 2**30))}g"


def check_limits(vocabulary: int, vector_size: int, heap_bytes: int,
                 section: str = "item2vec/deepwalk", result_limit: int = 0,
                 share: float = SAFE_HEAP_SHARE) -> int:
    """Raise ConfigError when ``vocabulary x vector_size`` reaches ``Int.MaxValue``, the
    estimate exceeds ``share`` of ``heap_bytes`` (:func:`heap_share`), or an epoch's collected
    updates (:func:`collected_bytes`) exceed ``result_limit`` (``spark.driver.maxResultSize``
    in bytes, 0 = unlimited); return the estimate (logged before the fit). Each error is one
    line naming the Spark setting and the value to give it."""
    cells = vocabulary * vector_size
    keys = f"raise {section}.min_count, lower {section}.vector_size"
    if cells >= INT_MAX:
        raise ConfigError(
            f"Word2Vec cannot train {vocabulary:,} words x vector_size {vector_size}: "
            f"{cells:,} cells exceed MLlib's limit of {INT_MAX:,} (Int.MaxValue); {keys}")
    need = driver_bytes(vocabulary, vector_size)
    log.info("word2vec (%s): %s words x vector_size %d need about %.2f GiB of driver heap "
             "(MLlib keeps the vocabulary on the driver); the driver has %.2f GiB", section,
             f"{vocabulary:,}", vector_size, need / 2**30, heap_bytes / 2**30)
    if need > share * heap_bytes:
        value = driver_memory_setting(need, share)
        raise ConfigError(
            f"Word2Vec ({section}) on {vocabulary:,} words x vector_size {vector_size} needs "
            f"about {need / 2**30:.1f} GiB of driver heap, more than {share:.0%} of "
            f"the {heap_bytes / 2**30:.1f} GiB the driver has: set spark.driver.memory={value} "
            f"(--set spark.driver_memory={value}, or spark-submit --driver-memory {value}), "
            f"or {keys}")
    collected = collected_bytes(vocabulary, vector_size)
    if 0 < result_limit < collected:
        gib = math.ceil(collected * 1.2 / 2**30)
        raise ConfigError(
            f"Word2Vec ({section}) on {vocabulary:,} words x vector_size {vector_size} collects "
            f"about {collected / 2**30:.1f} GiB of updates on the driver every epoch, more than "
            f"spark.driver.maxResultSize ({result_limit / 2**30:.1f} GiB): set "
            f"spark.driver.maxResultSize={gib}g (spark-submit --conf; in local mode it is half "
            f"of spark.driver.memory: --set spark.driver_memory={2 * gib}g), or {keys}")
    return need


def check_word2vec_fits(sentences: DataFrame, cfg: Word2VecConfig, input_col: str = "items",
                        section: str = "item2vec/deepwalk",
                        heap_bytes: int | None = None) -> Word2VecSize:
    """Count the corpus' tokens and the words MLlib would keep (>= ``cfg.min_count``), in one
    aggregation, and :func:`check_limits` them against the driver heap (``heap_bytes``, by
    default the running driver's). Returns the sizes (for the manifest)."""
    counts = (sentences.select(F.explode(input_col).alias("_w")).groupBy("_w").count())
    row = one_row(counts.agg(
        F.sum("count").alias("tokens"),
        F.sum((F.col("count") >= cfg.min_count).cast("long")).alias("vocab")))
    tokens, vocab = int(row["tokens"] or 0), int(row["vocab"] or 0)
    heap = heap_bytes if heap_bytes is not None else driver_heap_bytes(sentences.sparkSession)
    need = check_limits(vocab, cfg.vector_size, heap, section,
                        result_limit_bytes(sentences.sparkSession),
                        heap_share(sentences.sparkSession))
    return Word2VecSize(tokens, vocab, need, heap)


def fit_details(size: Word2VecSize, seconds: float, epochs: int) -> dict[str, float]:
    """Manifest details of one fit: the sizes, its seconds and training tokens per second
    (``tokens x epochs / seconds``)."""
    return {**size.as_details(), "word2vec_seconds": round(seconds, 3),
            "word2vec_tokens_per_s": round(size.tokens * epochs / max(seconds, 1e-9), 1)}
