"""ALS matrix factorisation (Spark MLlib) with string ids mapped to dense ints and back."""
from __future__ import annotations

from typing import Any

from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import AlsConfig
from ..tables import dense_index


def to_indexed(ratings: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Ratings with ``user_id_idx``/``item_id_idx`` joined in."""
    return ratings.join(users, "user_id").join(items, "item_id")


def _estimator(cfg: AlsConfig, cold_start: str) -> ALS:
    return ALS(rank=cfg.rank, maxIter=cfg.max_iter, regParam=cfg.reg_param, alpha=cfg.alpha,
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


def fit(spark: SparkSession, ratings: DataFrame, cfg: AlsConfig,
        checkpoint_dir: str) -> tuple[ALSModel, DataFrame, DataFrame]:
    """Fit ALS on ``ratings``; return the model and the user/item index tables.

    A checkpoint directory is set when ``checkpoint_interval`` > 0 (MLlib ignores the interval
    without one, and long lineages then overflow the stack).
    """
    if cfg.checkpoint_interval:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
    users, items = dense_index(ratings, "user_id").persist(), dense_index(ratings,
                                                                         "item_id").persist()
    data = training_frame(to_indexed(ratings, users, items), cfg)
    model = _estimator(cfg, "drop").fit(data)
    return model, users, items


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
    model, users, items = fit(spark, train, cfg, checkpoint_dir)
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
