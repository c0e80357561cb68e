"""Unit vectors computed over Arrow batches."""
import math

import pytest
from chispa import assert_approx_df_equality

from recemb_spark.vectors import unit_vectors


def test_unit_vectors_scale_rows_and_drop_null_empty_and_zero(spark):
    df = spark.createDataFrame(
        [("a", [3.0, 4.0]), ("b", [0.0, 0.0]), ("c", None), ("d", []), ("e", [0.0, -2.0]),
         ("f", [1e-20, 1e-20])],
        "item_id string, vector array<float>")
    got = unit_vectors(df)
    assert got.schema.simpleString() == "struct<item_id:string,vector:array<float>>"
    r = 1 / math.sqrt(2)
    want = spark.createDataFrame([("a", [0.6, 0.8]), ("e", [0.0, -1.0]), ("f", [r, r])],
                                 "item_id string, vector array<float>")
    assert_approx_df_equality(got, want, 1e-7, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_unit_vectors_keep_other_id_columns_and_every_batch_size(spark, batch):
    df = spark.createDataFrame([(i, [float(i), 1.0, 0.0]) for i in range(7)],
                               "user_id long, vector array<float>")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", batch)
    try:
        rows = {r["user_id"]: r["vector"] for r in unit_vectors(df, "user_id").collect()}
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert sorted(rows) == list(range(7))
    for i, v in rows.items():
        n = math.sqrt(i * i + 1)
        assert v == pytest.approx([i / n, 1 / n, 0.0], abs=1e-7)
