"""Helpers about ids used across the package: their natural order (numeric ids by value,
then strings), dense int indexes, and the (time, item) order of events."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .errors import InputError

_INT_MAX = 2**31 - 1


def item_order(item: str = "item_id") -> list[Column]:
    """Sort key that puts item ids in natural order: numeric ids by value (9 before 10), then
    other ids as strings. Used wherever equal timestamps are broken by item id (MovieLens has
    many same-second ratings: the order decides which item is "last")."""
    as_number = F.col(item).try_cast("long")
    return [as_number.isNull().cast("int"), F.coalesce(as_number, F.lit(0)), F.col(item)]


def dense_index(ids: DataFrame, col: str) -> DataFrame:
    """``(col, <col>_idx int)``: the distinct values of ``col`` numbered 0..n-1 in natural
    order, cached (the caller unpersists it). Distributed (zipWithIndex); reads ``ids`` once:
    its distinct values are cached, then sorted and numbered (sorting and numbering take
    three passes, over the 25M-row rating table each before). Raises InputError past the int
    range (ALS ids, int32 walk nodes)."""
    distinct = ids.select(col).distinct().persist()
    try:
        n = distinct.count()
        if n - 1 > _INT_MAX:
            raise InputError(f"{n} distinct values of {col}: more than int ids allow")
        ordered = distinct.orderBy(*item_order(col))
        out = (ordered.rdd.zipWithIndex().map(lambda r: (r[0][0], r[1]))
               .toDF(f"{col} string, {col}_idx int").persist())
        out.count()
    finally:
        distinct.unpersist()
    return out


def natural_key(item_id: str) -> tuple[int, int, str]:
    """Python twin of :func:`item_order`: numeric ids by value first, then strings."""
    try:
        return (0, int(item_id), item_id)
    except ValueError:
        return (1, 0, item_id)


def event_struct(ts: str = "ts", item: str = "item_id") -> Column:
    """A struct that sorts events by time, then by :func:`item_order`, carrying ``item_id``."""
    key = item_order(item)
    return F.struct(F.col(ts).alias("ts"), key[0].alias("_k0"), key[1].alias("_k1"),
                    F.col(item).alias("item_id"))
