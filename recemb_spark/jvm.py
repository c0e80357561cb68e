"""The driver JVM behind a classic (py4j) SparkSession."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def driver_jvm(spark: SparkSession) -> Any:
    """``spark``'s py4j view of the driver JVM (``sparkContext._jvm``, untyped: any Java
    package or class is an attribute). Assumes a classic driver; raises RuntimeError when the
    gateway is gone (a stopped context)."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("the SparkContext has no JVM gateway (stopped?)")
    return jvm
