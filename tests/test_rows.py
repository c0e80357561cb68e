import pytest
from pyspark.sql import functions as F

from recemb_spark.jvm import driver_jvm
from recemb_spark.rows import one_row


def test_one_row_of_a_global_aggregation_even_when_the_input_is_empty(spark):
    df = spark.createDataFrame([(1,), (4,)], "x int")
    assert tuple(one_row(df.agg(F.count("*"), F.sum("x")))) == (2, 5)
    assert tuple(one_row(df.filter("x > 9").agg(F.count("*"), F.sum("x")))) == (0, None)


def test_one_row_of_an_empty_frame_is_an_error(spark):
    with pytest.raises(ValueError, match="empty"):
        one_row(spark.createDataFrame([], "x int"))


def test_driver_jvm_reaches_java_classes(spark):
    assert driver_jvm(spark).java.lang.Integer.parseInt("42") == 42
