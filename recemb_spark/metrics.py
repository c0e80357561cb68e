"""The metrics table's rows: ``(model, metric, k, value)``, made by :func:`metric_row` in every
module that measures something (pure functions included), and written by the stages as one
DataFrame (:func:`metrics_frame`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

METRICS_SCHEMA = "model string, metric string, k int, value double"


def metric_row(model: str, metric: str, k: int, value: float) -> dict[str, Any]:
    """One row of the metrics table."""
    return {"model": model, "metric": metric, "k": int(k), "value": float(value)}


def metrics_frame(spark: SparkSession, metrics: list[dict[str, Any]]) -> DataFrame:
    """The rows of :func:`metric_row` as a metrics-table DataFrame (:data:`METRICS_SCHEMA`)."""
    return spark.createDataFrame([(m["model"], m["metric"], m["k"], m["value"]) for m in metrics],
                                 METRICS_SCHEMA)
