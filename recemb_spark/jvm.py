"""The driver JVM behind a classic (py4j) SparkSession."""

from __future__ import annotations

import gc
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


def persistent_rdd_ids(spark: SparkSession) -> set[int]:
    """The ids of the RDDs the driver holds persisted now (cached Datasets' included)."""
    return {int(i) for i in spark.sparkContext._jsc.getPersistentRDDs().keySet().toArray()}


def release_caches(spark: SparkSession, kept: set[int]) -> int:
    """Drop every cached Dataset and unpersist every persisted RDD whose id is not in
    ``kept`` (e.g. :func:`persistent_rdd_ids` taken before a stage ran). Returns how many
    RDDs were unpersisted.

    A stage's caches, broadcast join relations and checkpointed walk corpora otherwise stay
    on the driver's heap for the rest of the session: one pipeline runs all stages in one
    JVM. Cached Datasets are dropped wholesale (``catalog.clearCache``): a stage never hands
    a cached frame to the next one, so this only costs a recomputation to a caller that
    kept one across stages."""
    spark.catalog.clearCache()
    rdds = spark.sparkContext._jsc.getPersistentRDDs()
    dropped = persistent_rdd_ids(spark) - kept
    for key in dropped:
        rdds.get(key).unpersist(False)
    return len(dropped)


def drop_python_references() -> int:
    """Collect the Python reference cycles now (``gc.collect()``, whose count it returns),
    so the JVM objects only they held are released in the driver.

    Every py4j ``JavaObject`` a method was called on is in a cycle: it caches its
    ``JavaMember``s, which point back at it. The gateway keeps the Java object alive until
    the Python one is collected, and CPython's cyclic collector reaches the old generation
    rarely in a long run. So a stage's Datasets (their plans, and through them an MLlib
    Word2Vec model's ``getVectors`` rows: vocabulary x vector_size on the driver heap) stayed
    pinned for the rest of the run: on the 722k-item log item2vec's 722k rows and DeepWalk's
    684k were both still on the heap in ALS's stage."""
    return gc.collect()
