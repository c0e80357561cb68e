"""Exact top-``k`` by inner product over a large catalogue, pruned by the norm bound: ALS's
user candidates at hundreds of thousands to millions of items.

An item ``x`` can enter a query ``q``'s top ``k`` only if ``|q| |x|`` (Cauchy-Schwarz: the
largest dot product it could have) reaches the query's ``k``-th best score. ALS's item
factors have long-tailed norms (an item seen once has a small factor): on the 722k-item
Taobao-shaped log the median norm is 0.28, the largest 3.2, and the exact top 50 of a user
needs only 12% of the items on average (``bench/mips_probe.py``).

The search: items are cut into :func:`n_bands_for` bands of equal counts by norm (band 0 the
largest norms; boundaries from ``approxQuantile``), and run through
:func:`~recemb_spark.neighbors.ivf.two_pass_top_k` with the bands as its lists:

1. pass 1: every query against band 0: its candidates and their ``k``-th score, a floor;
2. pass 2: each query against the other bands whose largest norm times ``|q|`` reaches the
   floor (the other bands cannot hold an item of its top ``k``), keeping only candidates at
   or above the floor;
3. merged per query: the exact top-``k`` (ties by natural id order, as the exact search).

No recall is traded: the result is the exact search's. What it costs is the share of the
items scored, measured per run (``scanned_share``): 16.6% with 16 bands on the 722k-item log
(against 27% for ivf on the inner-product transform at recall 0.97 of the top 50), 39% with
8 bands on the ML-25M-shaped run's 59k items, 34% on a 72k-item generated log.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import blocks, ivf_local
from .ivf import broadcast_probe_top_k, two_pass_top_k
from .nearest import squared_norm

#: bands below / from :data:`LARGE_CATALOGUE` items: finer bands prune closer to the bound
#: but the floor comes from a smaller band 0 and each band a query needs is one more copy of
#: its row. Measured (``bench/mips_probe.py --bands``, share of the items scored): 722k
#: items 18.9% (8 bands), 16.6% (16), 17.1% (32), 19.7% (64); 59k items 39.4% (8), 42.7%
#: (16); 72k items 34.3% (8), 36.7% (16)
SMALL_BANDS = 8
LARGE_BANDS = 16
LARGE_CATALOGUE = 400_000
#: a band is searched when ``|q| x its largest norm x (1 + SLACK)`` reaches the floor: the
#: float32 kernel's rounding must not prune an item tied with the k-th
SLACK = 1e-5


def n_bands_for(n_items: int) -> int:
    """Norm bands of a catalogue of ``n_items`` items (at most one per item)."""
    return max(1, min(n_items, LARGE_BANDS if n_items >= LARGE_CATALOGUE else SMALL_BANDS))


def norm_bands(items: DataFrame, n_bands: int
               ) -> tuple[DataFrame, np.ndarray, np.ndarray, DataFrame]:
    """``items (item_id, vector)`` numbered in natural id order (ties) with their norm band:
    ``(item_idx, item_id, ivec, list)`` (band 0 = the largest norms); the items per band;
    each band's largest norm (a band's bound covers the bands after it: non-increasing; 0
    for an empty band); and the persisted frame the bands are read from (the caller
    unpersists it). ``n_bands`` - 1 norm quantiles come from ``approxQuantile`` (relative
    error 1e-3: bands of about equal counts; equal norms share a band)."""
    numbered = (blocks.number_items(items.select("item_id", "vector"))
                .withColumn("norm", F.sqrt(squared_norm())).persist())
    probs = [1.0 - b / n_bands for b in range(1, n_bands)]
    cuts = numbered.approxQuantile("norm", probs, 1e-3) if probs else []
    band = F.size(F.filter(F.array(*[F.lit(float(c)) for c in cuts]) if cuts
                           else F.array().cast("array<double>"),
                           lambda c: c > F.col("norm")))
    banded = numbered.select("item_idx", "item_id", F.col("vector").alias("ivec"),
                             band.cast("int").alias("list"), "norm")
    sizes, tops = np.zeros(n_bands, np.int64), np.zeros(n_bands)
    for r in banded.groupBy("list").agg(F.count("*").alias("n"),
                                        F.max("norm").alias("top")).collect():
        sizes[int(r["list"])], tops[int(r["list"])] = int(r["n"]), float(r["top"] or 0.0)
    return banded.drop("norm"), sizes, np.maximum.accumulate(tops[::-1])[::-1], numbered


def norm_top_k(spark: SparkSession, queries: DataFrame, items: DataFrame, k: int,
               n_bands: int | None = None, query_rows: int = blocks.QUERY_BLOCK_ROWS,
               item_rows: int | None = None,
               broadcast: bool = False) -> tuple[DataFrame, dict[str, Any]]:
    """The exact top-``k`` items per query by dot product: ``(query_id, item_id, rank,
    score)`` (ties by natural id order) and counters (``bands``, ``scanned_share``: the
    share of the query-item pairs scored, the two passes' tasks and candidates; ``cached``:
    frames the caller unpersists once the result is written).

    ``queries``: ``(query_id, vector, exclude array<string>)`` (null vectors skipped);
    ``items``: ``(item_id, vector)``, any norms. ``n_bands`` None: :func:`n_bands_for`, or
    more when band 0 would pass one block of ``item_rows`` items (default
    :func:`~recemb_spark.neighbors.blocks.item_block_rows`; 23 bands at 3M items, dim 64). A
    task holds at most about ``query_rows`` queries and ``item_rows`` items. ``broadcast``
    (the caller checked the broadcast threshold): the banded items are broadcast and each
    task searches its queries where they are, in the same two rounds
    (:func:`~recemb_spark.neighbors.ivf.broadcast_probe_top_k`): the same rows, nothing per
    band a Spark row; the pairs scored come from an accumulator
    (:func:`~recemb_spark.neighbors.nearest.materialise` reads it)."""
    n_items, dim = blocks.table_shape(items)
    item_rows = item_rows or blocks.item_block_rows(dim)
    # band 0 in one item block: each query's pass-1 candidates are then its top k there
    n_bands = n_bands or max(n_bands_for(n_items), blocks.blocks_of(n_items, item_rows))
    banded, sizes, tops, numbered = norm_bands(items, n_bands)
    if broadcast:
        return _broadcast_norm_top_k(spark, queries, banded, sizes, tops, numbered, k, dim)
    qs = (queries.filter(F.col("vector").isNotNull())
          .select("query_id", "vector", "exclude", F.sqrt(squared_norm()).alias("qnorm")).persist())
    n_queries = qs.count()
    later = [b for b in range(1, n_bands) if sizes[b] > 0]  # empty bands never searched
    more = None
    if later:
        top = F.array(*[F.lit(float(t) * (1 + SLACK)) for t in tops])
        more = F.filter(F.array(*[F.lit(b) for b in later]),
                        lambda b: F.element_at(top, b + 1) * F.col("qnorm") >= F.col("kth"))
    out, info = two_pass_top_k(spark, qs, F.lit(0), more, banded, sizes, k, query_rows,
                               item_rows)
    pairs = max(n_queries * n_items, 1)
    return out, {**info, "cached": [numbered, qs, *info["cached"]], "queries": n_queries,
                 "bands": n_bands, "band_sizes": [int(s) for s in sizes], "path": "sharded",
                 "scanned_share": round(info["scored_pairs"] / pairs, 4)}


def _broadcast_norm_top_k(spark: SparkSession, queries: DataFrame, banded: DataFrame,
                          sizes: np.ndarray, tops: np.ndarray, numbered: DataFrame, k: int,
                          dim: int) -> tuple[DataFrame, dict[str, Any]]:
    """:func:`norm_top_k` on the broadcast path: every query against band 0, then against
    each later non-empty band whose bound reaches its floor."""
    order = np.array([0, *[b for b in range(1, len(sizes)) if sizes[b] > 0]], np.int64)
    bound = (tops * (1 + SLACK)).astype(np.float64)

    def probes(q: np.ndarray, _: ivf_local.ListedItems) -> np.ndarray:
        return np.broadcast_to(order, (len(q), len(order)))

    def prune_for(q: np.ndarray) -> ivf_local.Prune:
        q64 = q.astype(np.float64)
        qnorm = np.sqrt(np.einsum("ij,ij->i", q64, q64))
        return lambda rows, lists, floor: bound[lists] * qnorm[rows] >= floor

    listed = ivf_local.collect_listed(banded, np.zeros((len(sizes), dim), np.float32), "ivec")
    n_queries = queries.filter(F.col("vector").isNotNull()).count()
    out, info = broadcast_probe_top_k(spark, queries, listed, k, probes, prune_for)
    return out, {**info, "cached": [numbered], "queries": n_queries, "bands": len(sizes),
                 "band_sizes": [int(s) for s in sizes], "path": "broadcast",
                 "all_pairs": max(n_queries * int(sizes.sum()), 1)}
