"""Typed access to the one row of a global aggregation."""

from __future__ import annotations

from pyspark.sql import DataFrame, Row


def one_row(df: DataFrame) -> Row:
    """The first row of ``df``: for a global aggregation (``df.agg(...)`` without a grouping)
    its only row, which Spark always returns, even for an empty input. Assumes ``df`` has a
    row; raises ValueError when it has none."""
    row = df.first()
    if row is None:
        raise ValueError("expected one row (a global aggregation) but the DataFrame is empty")
    return row
