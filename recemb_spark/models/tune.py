"""Choosing Word2Vec settings per run on a validation split (``item2vec.tune``,
``deepwalk.tune``).

The validation split never touches the evaluation's held-out item: each user's *last* liked
item is dropped (it is what the evaluation holds out), the *second-to-last* is the validation
target, the one before it the query, and the models of the grid train on the rest. Each
grid point is scored by HR@10 (cosine, history excluded, misses counted) with the same scorer
as the evaluation; points run in order until the time budget is spent, and the best point
wins (ties: the earlier point, so the grid lists the defaults first).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Word2VecConfig
from ..evaluation.scoring import score_model
from ..interactions import user_histories

log = logging.getLogger(__name__)

#: The grid: changes to the configured settings, the configuration itself first.
GRID: list[dict[str, Any]] = [
    {},
    {"step_size": 0.025},
    {"step_size": 0.1},
    {"window_size": 5},
    {"max_iter": 10},
    {"min_count": 1},
    {"sample": 0.001},
]


def validation_split(sequences: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``(train sentences (items), cases (user_id, heldout, query, history))`` from the
    sequence table: per user, the liked history in time order without its last item; the
    last of the rest is held out for validation, its predecessor is the query. Users with
    fewer than four liked items give no case (their shortened history still trains)."""
    hist = user_histories(sequences).select(
        "user_id", F.slice("items", 1, F.greatest(F.size("items") - 1, F.lit(0))).alias("h"))
    n = F.size("h")
    cases = (hist.filter(n >= 3)
             .select("user_id", F.element_at("h", -1).alias("heldout"),
                     F.element_at("h", -2).alias("query"),
                     F.slice("h", 1, n - 1).alias("history")))
    train = hist.select(F.when(n >= 3, F.slice("h", 1, n - 1)).otherwise(F.col("h"))
                        .alias("items")).filter(F.size("items") >= 2)
    return train, cases


W2V = TypeVar("W2V", bound=Word2VecConfig)


def tune_word2vec(spark: SparkSession, sentences_of: Callable[[DataFrame], DataFrame],
                  sequences: DataFrame, cfg: W2V, sample: float,
                  budget_seconds: float,
                  train: Callable[..., tuple[DataFrame, dict[str, Any]]]
                  ) -> tuple[W2V, float, dict[str, Any]]:
    """The best grid point for this data: ``(config, sample, report)``.

    ``sentences_of(train_sequences)`` turns validation training sequences into the model's
    sentences (identity for item2vec; walks for DeepWalk); ``train(sentences, cfg, sample)``
    is the trainer (returns vectors and details). The report lists every point tried with its
    HR@10 and seconds, the chosen point, and the points skipped for the budget.
    """
    train_seqs, cases = validation_split(sequences)
    train_seqs, cases = train_seqs.persist(), cases.persist()
    n_cases = cases.count()
    catalogue = train_seqs.select(F.explode("items")).distinct().count()
    sentences = sentences_of(train_seqs)
    started = time.perf_counter()
    tried: list[dict[str, Any]] = []
    best: tuple[float, W2V, float, dict[str, Any]] = (-1.0, cfg, sample, {})
    for point in GRID:
        if tried and time.perf_counter() - started > budget_seconds:
            break
        values = dict(point)
        point_sample = values.pop("sample", sample)
        point_cfg = dataclasses.replace(cfg, **values)
        t0 = time.perf_counter()
        vectors, _ = train(sentences, point_cfg, point_sample)
        rows = score_model(spark, cases, vectors, [10], "tune", catalogue)
        hr = next(r["value"] for r in rows if r["metric"] == "hr")
        vectors.unpersist()
        tried.append({"point": point, "hr@10": round(hr, 5),
                      "seconds": round(time.perf_counter() - t0, 2)})
        log.info("tune: %s HR@10 %.4f (%.1fs)", point or "configured", hr,
                 time.perf_counter() - t0)
        if hr > best[0]:
            best = (hr, point_cfg, point_sample, point)
    train_seqs.unpersist()
    cases.unpersist()
    report = {"tune_cases": n_cases, "tune_points": tried, "tune_chosen": best[3],
              "tune_skipped": len(GRID) - len(tried)}
    return best[1], best[2], report
