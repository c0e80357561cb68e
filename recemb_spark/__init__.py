"""recemb-spark: embedding tables for recommenders, built in batch on Apache Spark.

The library: every stage's logic as importable functions (DataFrame -> DataFrame where
possible). No SparkSession is created at import time; see :mod:`recemb_spark.session`.
"""

__version__ = "0.1.0"
