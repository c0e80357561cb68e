"""ALS matrix factorisation (Spark MLlib) with string ids mapped to dense ints and back."""
from __future__ import annotations

from typing import Any, NamedTuple

from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import AlsConfig
from ..tables import dense_index


def to_indexed(ratings: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Ratings with ``user_id_idx``/``item_id_idx`` joined in."""
    return ratings.join(users, "user_id").join(items, "item_id")


class AlsFit(NamedTuple):
    """A fitted ALS model, its dense id indexes (persisted) and the confidence scale it used."""

    model: ALSModel
    users: DataFrame
    items: DataFrame
    alpha: float


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
    alpha = scale * (n_users * n_items / rows) ** exponent * rows / signal_sum
    # 4 significant digits: a float sum of the signal depends on the partition order in its
    # last bits, and the same data must give the same alpha (and factors) on any cluster
    return float(f"{alpha:.4g}")


def blas_implementation(spark: SparkSession) -> str:
    """The BLAS that MLlib's linear algebra (ALS's normal equations) uses in the driver JVM,
    which in local mode runs the tasks too: ``JNIBLAS`` (native: a system ``libblas.so.3``
    such as OpenBLAS), ``VectorBLAS`` (the Java Vector API fallback) or ``F2jBLAS``;
    ``unknown`` when the JVM cannot say."""
    try:
        return str(spark._jvm.dev.ludovic.netlib.blas.BLAS.getInstance()  # type: ignore
                   .getClass().getSimpleName())
    except Exception:  # noqa: BLE001 - another Spark build or JVM: a label, not a failure
        return "unknown"


def _estimator(cfg: AlsConfig, cold_start: str, alpha: float) -> ALS:
    return ALS(rank=cfg.rank, maxIter=cfg.max_iter, regParam=cfg.reg_param, alpha=alpha,
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
    rows, signal_sum = training_frame(ratings, cfg).agg(F.count("*"), F.sum("signal")).first()
    return rows, signal_sum or 0.0


def fit(spark: SparkSession, ratings: DataFrame, cfg: AlsConfig,
        checkpoint_dir: str) -> AlsFit:
    """Fit ALS on ``ratings``; return the model, the user/item index tables and the alpha used
    (``cfg.alpha``, or :func:`auto_alpha` of the table when it is 0 in implicit mode).

    A checkpoint directory is set when ``checkpoint_interval`` > 0 (MLlib ignores the interval
    without one, and long lineages then overflow the stack).
    """
    if cfg.checkpoint_interval:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    users, items = dense_index(ratings, "user_id").persist(), dense_index(ratings,
                                                                         "item_id").persist()
    alpha = cfg.alpha
    if cfg.implicit_prefs and not alpha:
        rows, signal_sum = signal_totals(ratings, cfg)
        alpha = (auto_alpha(rows, signal_sum, users.count(), items.count(),
                            cfg.auto_alpha_scale, cfg.auto_alpha_exponent)
                 if signal_sum > 0 else 1.0)  # an empty or all-zero table
    data = training_frame(to_indexed(ratings, users, items), cfg)
    model = _estimator(cfg, "drop", alpha).fit(data)
    return AlsFit(model, users, items, alpha)


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
    model, users, items, _ = fit(spark, train, cfg, checkpoint_dir)
    indexed = training_frame(to_indexed(test, users, items), cfg)
    predictions = model.transform(indexed).persist()
    n_test, n_scored = test.count(), predictions.count()
    evaluator = RegressionEvaluator(metricName="rmse", labelCol="signal",
                                    predictionCol="prediction")
    mean = train.agg(F.mean("rating")).first()[0]
    baseline = predictions.agg(F.sqrt(F.mean((F.col("signal") - F.lit(mean)) ** 2))).first()[0]
    report = {"rmse": evaluator.evaluate(predictions), "rmse_global_mean": baseline,
              "rmse_test_rows": n_scored, "rmse_cold_start_dropped": n_test - n_scored}
    for df in (predictions, train, test, users, items):
        df.unpersist()
    return report
