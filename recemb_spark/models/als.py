"""ALS matrix factorisation (Spark MLlib) with string ids mapped to dense ints and back."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import AlsConfig
from ..ids import dense_index
from ..rows import one_row


def to_indexed(ratings: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Ratings with ``user_id_idx``/``item_id_idx`` joined in."""
    return ratings.join(users, "user_id").join(items, "item_id")


class AlsFit(NamedTuple):
    """A fitted ALS model, its dense id indexes (persisted), the confidence scale and the
    number of iterations it used."""

    model: ALSModel
    users: DataFrame
    items: DataFrame
    alpha: float
    iterations: int


#: ``max_iter: 0`` in explicit mode (no confidence to go by): the default before auto
#: iterations, at which the README's explicit RMSE was measured
EXPLICIT_AUTO_ITERATIONS = 10


def auto_alpha(rows: int, signal_sum: float, n_users: int, n_items: int, scale: float,
               exponent: float) -> float:
    """The implicit confidence scale for a table of ``rows`` (user, item) pairs whose signal
    sums to ``signal_sum``: the mean observed pair's added confidence (``alpha x mean
    signal``) is ``scale x (cells / rows) ** exponent``, with ``cells = n_users x n_items``.

    ``cells / rows`` is one over the density: the number of unobserved cells (each weighted 1
    by ALS) per observed pair. The sparser the matrix, the more the observed pairs' confidence
    must grow to keep their weight. Dividing by the mean signal makes the confidences
    independent of its unit (ratings, summed event weights, counts). The scale and exponent
    are fitted to the best measured alphas (``bench/als_confidence.py``): the built-in sample
    (density 6.6%, mean signal 3.3) 1-2, a 1.5M-rating generated log (1.1%) 4-10, yoochoose
    (0.07%, 1.35) 40-100; ML-100K is flat from 0.25 to 40. Assumes ``rows`` and
    ``signal_sum`` > 0; the result is rounded to 4 significant digits.
    """
    return four_digits(scale * (n_users * n_items / rows) ** exponent * rows / signal_sum)


def four_digits(value: float) -> float:
    """``value`` rounded to 4 significant digits. Applied to whatever is derived from a float
    sum of the signal (the auto alpha, the mean confidence): such a sum depends on the
    partition order in its last bits, and the same data must give the same alpha, iteration
    count and factors on any cluster."""
    return float(f"{value:.4g}")


def auto_iterations(confidence: float, per_iteration: float, lowest: int, highest: int,
                    pairs: int = 0, pair_budget: int = 0) -> int:
    """ALS iterations for a table whose mean observed pair has added confidence
    ``confidence`` (``alpha x mean signal``): one iteration per ``per_iteration`` of it,
    rounded half up and kept within ``[lowest, highest]``; with ``pairs`` and ``pair_budget``
    both > 0, also at most ``pair_budget // pairs`` (never below ``lowest``).

    Implicit ALS converges more slowly the more the observed pairs' confidence outweighs the
    unobserved cells' (rank 64, item-query HR@10 at 5 / 10 iterations): the built-in sample
    (confidence 4.7) 0.406 / 0.404, ML-100K (4.8) 0.119 / 0.117, a 1.5M-rating generated log
    (15.4) 0.352 / 0.347, but yoochoose (88) 0.350 / 0.399, and 0.408 at 15
    (``bench/als_confidence.py``). Iterations cost time in proportion, so dense tables get
    few. Large tables too: an iteration costs in proportion to the observed pairs (~33 s at
    4.0M pairs on 2 cores), and on the 722k-item Taobao-shaped log (confidence ~570) 5
    iterations scored better than 8, 10 or 15 (``AlsConfig.auto_max_iter``'s doc). Assumes
    ``per_iteration`` > 0 and ``lowest`` <= ``highest``.
    """
    if pairs > 0 and pair_budget > 0:
        highest = max(lowest, min(highest, pair_budget // pairs))
    steps = confidence / per_iteration + 0.5
    return lowest if math.isnan(steps) else max(lowest, int(min(steps, highest)))


def _estimator(cfg: AlsConfig, cold_start: str, alpha: float, iterations: int) -> ALS:
    return ALS(rank=cfg.rank, maxIter=iterations, regParam=cfg.reg_param, alpha=alpha,
               implicitPrefs=cfg.implicit_prefs, nonnegative=cfg.nonnegative,
               numUserBlocks=cfg.num_user_blocks, numItemBlocks=cfg.num_item_blocks,
               checkpointInterval=cfg.checkpoint_interval if cfg.checkpoint_interval else -1,
               seed=cfg.seed, userCol="user_id_idx", itemCol="item_id_idx", ratingCol="signal",
               coldStartStrategy=cold_start)


def training_frame(ratings: DataFrame, cfg: AlsConfig) -> DataFrame:
    """The rating column ALS trains on (``signal``): the rating in explicit mode; in implicit
    mode (``implicit_signal``) the rating, 1 per (user, item), or the table's own ``signal``
    (an implicit log's summed event weights; the rating for rated input). A table without a
    ``signal`` column falls back to the rating."""
    if cfg.implicit_prefs and cfg.implicit_signal == "count":
        return ratings.withColumn("signal", F.lit(1.0))
    if cfg.implicit_prefs and cfg.implicit_signal == "signal" and "signal" in ratings.columns:
        return ratings
    return ratings.withColumn("signal", F.col("rating"))


def signal_totals(ratings: DataFrame, cfg: AlsConfig) -> tuple[int, float]:
    """``(pairs, summed signal)`` of ``ratings`` as ALS trains on them (:func:`training_frame`),
    in one pass; the sum is 0.0 for an empty table."""
    rows, signal_sum = one_row(training_frame(ratings, cfg).agg(F.count("*"), F.sum("signal")))
    return rows, signal_sum or 0.0


def fit(spark: SparkSession, ratings: DataFrame, cfg: AlsConfig,
        checkpoint_dir: str) -> AlsFit:
    """Fit ALS on ``ratings``; return the model, the user/item index tables, the alpha used
    (``cfg.alpha``, or :func:`auto_alpha` of the table when it is 0 in implicit mode) and the
    iterations (``cfg.max_iter``, or when it is 0 :func:`auto_iterations` of the table's
    mean confidence in implicit mode, :data:`EXPLICIT_AUTO_ITERATIONS` in explicit mode).

    A checkpoint directory is set when ``checkpoint_interval`` > 0 (MLlib ignores the interval
    without one, and long lineages then overflow the stack).
    """
    if cfg.checkpoint_interval:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    users, items = dense_index(ratings, "user_id"), dense_index(ratings, "item_id")
    alpha, iterations = cfg.alpha, cfg.max_iter
    if cfg.implicit_prefs and not (alpha and iterations):
        rows, signal_sum = signal_totals(ratings, cfg)
        if not alpha:
            alpha = (auto_alpha(rows, signal_sum, users.count(), items.count(),
                                cfg.auto_alpha_scale, cfg.auto_alpha_exponent)
                     if signal_sum > 0 else 1.0)  # an empty or all-zero table
        if not iterations:
            confidence = four_digits(alpha * signal_sum / max(rows, 1))
            iterations = auto_iterations(confidence, cfg.auto_iter_confidence,
                                         cfg.auto_min_iter, cfg.auto_max_iter,
                                         rows, cfg.auto_max_pair_iterations)
    elif not iterations:  # explicit mode: no confidence to go by
        iterations = EXPLICIT_AUTO_ITERATIONS
    data = training_frame(to_indexed(ratings, users, items), cfg)
    model = _estimator(cfg, "drop", alpha, iterations).fit(data)
    return AlsFit(model, users, items, alpha, iterations)


def factor_tables(model: ALSModel, users: DataFrame,
                  items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """``(user_id, vector)`` and ``(item_id, vector)`` factor tables with the original ids."""
    def table(factors: DataFrame, index: DataFrame, col: str) -> DataFrame:
        return (factors.join(index, factors["id"] == index[f"{col}_idx"])
                .select(col, F.col("features").cast("array<float>").alias("vector")))
    return table(model.userFactors, users, "user_id"), table(model.itemFactors, items, "item_id")


def rmse_report(spark: SparkSession, ratings: DataFrame, cfg: AlsConfig,
                checkpoint_dir: str) -> dict[str, Any]:
    """Explicit mode: RMSE of ALS on a held-out random share of the ratings, next to the
    global-mean baseline on the same rows (cold-start rows dropped, counted)."""
    train, test = ratings.randomSplit([1 - cfg.rmse_test_fraction, cfg.rmse_test_fraction],
                                      seed=cfg.seed)
    train, test = train.persist(), test.persist()
    model, users, items = fit(spark, train, cfg, checkpoint_dir)[:3]
    indexed = training_frame(to_indexed(test, users, items), cfg)
    predictions = model.transform(indexed).persist()
    n_test, n_scored = test.count(), predictions.count()
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="signal",
                                    predictionCol="prediction")
    mean = one_row(train.agg(F.mean("rating")))[0]
    baseline = one_row(predictions.agg(F.sqrt(F.mean((F.col("signal") - F.lit(mean)) ** 2))))[0]
    report = {"rmse": evaluator.evaluate(predictions), "rmse_global_mean": baseline,
              "rmse_test_rows": n_scored, "rmse_cold_start_dropped": n_test - n_scored}
    for df in (predictions, train, test, users, items):
        df.unpersist()
    return report
