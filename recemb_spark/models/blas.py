"""Which BLAS MLlib runs on, and what that costs our two MLlib trainers.

MLlib takes a system ``libblas.so.3`` (for example Debian's ``libopenblas0-pthread``) through
JNI when one is installed, and its Java Vector API fallback otherwise. Both ALS and Word2Vec
call the same JVM-wide choice, with opposite effects (measured on 2 cores, the 1.5M-rating
log): ALS at rank 64 fits 1.45x faster with OpenBLAS (43.6 s vs 63.0 s), while Word2Vec, which
makes one JNI call per 100-float dot product, trains 2.5x slower (20k vs 49k tokens/s). The
whole pipeline is slower with native BLAS, so we do not install it, and warn when it is there
(``bench/results/word2vec_blas.json``, ``als_confidence_gen15_rank64_openblas.json``).
"""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from ..jvm import driver_jvm

log = logging.getLogger(__name__)
_warned: set[str] = set()  # one warning per process, not per fit (tune fits up to 8 times)

NATIVE = "JNIBLAS"


def implementation(spark: SparkSession) -> str:
    """The BLAS that MLlib's linear algebra uses in the driver JVM, which in local mode runs
    the tasks too: ``JNIBLAS`` (native, a system ``libblas.so.3``), ``VectorBLAS`` (the Java
    Vector API fallback), ``Java11BLAS`` / ``Java8BLAS`` (older JVMs); ``unknown`` when the
    JVM cannot say."""
    try:
        return str(driver_jvm(spark).dev.ludovic.netlib.blas.BLAS.getInstance()
                   .getClass().getSimpleName())
    except Exception:  # noqa: BLE001 - another Spark build or JVM: a label, not a failure
        return "unknown"


def warn_if_native_for_word2vec(spark: SparkSession) -> str:
    """Log a warning, once per process, when Word2Vec is about to train on native BLAS (see
    the module note); return :func:`implementation` for the manifest."""
    name = implementation(spark)
    if name == NATIVE and name not in _warned:
        _warned.add(name)
        log.warning("MLlib uses native BLAS (a system libblas.so.3, e.g. OpenBLAS): its "
                    "Word2Vec trains about 2.5x slower with it than with the Java fallback "
                    "(20k vs 49k tokens/s measured); uninstall it (Debian: apt-get remove "
                    "libopenblas0-pthread) unless ALS dominates your runs")
    return name
