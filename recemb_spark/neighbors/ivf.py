"""Inverted-file (IVF) top-``k``: items in k-means lists, each query scored against the items
of the ``nprobe`` lists nearest to it, with the dense float32 kernel of the exact search.

Why: at hundreds of thousands of items the exact search scores every pair (5.2e11 at 722k)
and banded LSH scores its candidate pairs one Spark row at a time (~27 ns a pair against
~0.8 ns in the dense kernel). Measured on the 722k item2vec vectors of the Taobao-shaped log
(``bench/ivf_probe.py``): 240 lists, a query probing its 12 nearest lists finds 0.967 of its
exact top-10 scoring 4.7% of the items.

The index (:class:`IvfIndex`) is small: ``n_lists x dim`` centroids (spherical k-means on a
seeded sample of at most :data:`TRAIN_SAMPLE` items, :func:`spherical_kmeans`), the list
sizes, and ``nprobe``, tuned per query set (:func:`tune_probes`) on sampled queries against
their exact top-``k``. The search (:func:`ivf_top_k`) holds one block of one list's items
and one block of the queries probing that list in a task, both bounded whatever the skew:
a list gets as many item blocks as its size needs (:func:`~recemb_spark.neighbors.blocks.
item_block_rows` each) and as many query blocks as the queries probing it need
(:data:`~recemb_spark.neighbors.blocks.QUERY_BLOCK_ROWS` each), so a hot list (k-means
lists are uneven: the largest at 722k items held 17k items, 6x the mean) becomes more tasks,
not a bigger one:

1. every item gets its nearest list, every query its ``nprobe`` nearest (best first);
2. pass 1: each query against the items of its nearest list, by a cogroup keyed by
   (list, query block, item block): at most ``k`` candidates per query and block, and the
   ``k``-th best score found;
3. pass 2: each query against its other lists, keeping only candidates scoring at least that
   ``k``-th score (they are the only ones that can enter its top ``k``): a query's candidate
   rows stay near ``k`` instead of ``k x nprobe``;
4. the candidates are merged per query (score descending, ties in natural id order, as the
   exact search breaks them).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from . import blocks, ivf_local
from .topk import (
    TOPK_SCHEMA,
    exact_core_seconds,
    exclusions,
    query_matrix,
    stream_top_k,
    topk_batch,
    unit_rows,
)

#: items per list the index aims at (``n_lists`` = items / this, within 1..MAX_LISTS): small
#: lists scan less per probe, many lists need more probes and more query rows
ITEMS_PER_LIST = 3000
MAX_LISTS = 4096
#: items collected to the driver to train the centroids (seeded hash sample): bounded
TRAIN_SAMPLE = 100_000
KMEANS_ITERATIONS = 15
#: estimated core-seconds per query-probe row (the exploded query rows' shuffle, cogroup and
#: Arrow conversion) and per query (numbering, assignment, the k-th score's join, the merge
#: and the write), on top of the scored pairs: fitted to the two models of the 722k-item log
#: (item2vec: 10 probes, 95 s on 2 cores; DeepWalk: 4 probes, 56 s)
PROBE_ROW_SECONDS = 16e-6
QUERY_SECONDS = 80e-6
#: the broadcast path (:mod:`~recemb_spark.neighbors.ivf_local`: no probe rows) per query, on
#: top of the scored pairs: fitted to the same two models' item queries (28 and 44 µs)
BROADCAST_QUERY_SECONDS = 40e-6
CANDIDATE_SCHEMA = "query_id string, item_id string, item_idx long, score float"


@dataclass
class IvfIndex:
    """Centroids (unit rows, ``n_lists x dim``), items per list, and the probes per query with
    the recall and scanned share (mean fraction of the items a query scores) they were
    estimated to give on the tuning sample."""

    centroids: np.ndarray
    sizes: np.ndarray
    nprobe: int = 1
    est_recall: float = float("nan")
    est_scanned: float = float("nan")
    #: how the number of lists was chosen (:func:`choose_lists`)
    rungs: list[dict[str, float]] = field(default_factory=list)

    @property
    def n_lists(self) -> int:
        return len(self.centroids)

    def details(self) -> dict[str, Any]:
        """What the manifest records of the index."""
        return {"lists": self.n_lists, "nprobe": self.nprobe,
                "largest_list": int(self.sizes.max()) if len(self.sizes) else 0,
                "estimated_recall": round(self.est_recall, 4),
                "estimated_scanned_share": round(self.est_scanned, 4),
                "list_choice": self.rungs}


def n_lists_for(n_items: int, items_per_list: int = ITEMS_PER_LIST) -> int:
    """Lists of an index over ``n_items`` items: about ``items_per_list`` items each, within
    ``1..MAX_LISTS``."""
    return int(min(MAX_LISTS, max(1, round(n_items / max(items_per_list, 1)))))


#: scores per block of :func:`nearest_lists` (float32: 64 MiB, whatever the number of lists)
SCORE_BLOCK = 2**24


def nearest_lists(x: np.ndarray, centroids: np.ndarray, n: int,
                  chunk: int | None = None) -> np.ndarray:
    """The ``n`` centroids of highest dot product with each row of ``x``, best first (ties by
    list number): an int32 ``(len(x), n)`` array. Holds one ``chunk x n_lists`` score block
    (default: :data:`SCORE_BLOCK` scores)."""
    n = min(n, len(centroids))
    chunk = chunk or max(1, SCORE_BLOCK // max(len(centroids), 1))
    out = np.zeros((len(x), n), np.int32)
    for r0 in range(0, len(x), chunk):
        s = x[r0:r0 + chunk] @ centroids.T
        if n == 1:  # the nearest only (k-means, the items' lists): argmax takes the first
            out[r0:r0 + chunk, 0] = np.argmax(s, axis=1)  # of tied lists, as the sort does
            continue
        if n < s.shape[1]:
            part = np.argpartition(-s, n - 1, axis=1)[:, :n]
        else:
            part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
        ps = np.take_along_axis(s, part, 1)
        order = np.lexsort((part, -ps), axis=1)
        out[r0:r0 + chunk] = np.take_along_axis(part, order, 1)
    return out


def spherical_kmeans(x: np.ndarray, n_lists: int, seed: int,
                     iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """``n_lists`` unit centroids of the unit rows ``x`` (k-means on the sphere: assign by dot
    product, centroid = normalised mean). Seeded: the first centroids are a seeded choice of
    rows; an emptied list is re-seeded with the row farthest from its centroid."""
    rng = np.random.default_rng(seed)
    n_lists = max(1, min(n_lists, len(x)))
    cent = x[np.sort(rng.choice(len(x), n_lists, replace=False))].astype(np.float32)
    for _ in range(iterations):
        assign = nearest_lists(x, cent, 1)[:, 0]
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=n_lists)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            own = np.einsum("ij,ij->i", x, cent[assign])
            worst = np.argsort(own, kind="stable")[:len(empty)]
            sums[empty] = x[worst]
        cent = unit_rows(sums)
    return cent


def probe_positions(q: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n_q, n_lists)``: the position (0 = nearest) of every list in each query's probe
    order (:func:`nearest_lists` over all lists)."""
    order = nearest_lists(q, centroids, len(centroids))
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(order.shape[1], dtype=order.dtype)[None, :], 1)
    return pos


def tune_probes(q: np.ndarray, truth: np.ndarray, valid: np.ndarray, index: IvfIndex,
                target: float) -> IvfIndex:
    """``index`` with the fewest probes whose recall of the queries' exact top-``k`` reaches
    ``target`` (all lists when none fewer does): ``q`` the sampled queries (unit rows),
    ``truth`` their exact neighbours' vectors ``(n_q, k, dim)``, ``valid`` where a neighbour
    exists. Recall of ``nprobe`` = the share of the valid neighbours whose list is among the
    query's first ``nprobe``; the scanned share = the mean size of those lists / items."""
    n_lists = index.n_lists
    if len(q) == 0 or not valid.any():
        return replace(index, nprobe=1, est_recall=float("nan"), est_scanned=1 / n_lists)
    pos = probe_positions(q, index.centroids)
    true_lists = nearest_lists(truth.reshape(-1, truth.shape[2]), index.centroids, 1)
    true_pos = np.take_along_axis(pos, true_lists.reshape(len(q), -1), 1)[valid]
    recall = np.cumsum(np.bincount(true_pos, minlength=n_lists)) / len(true_pos)
    nprobe = int(np.searchsorted(recall, target - 1e-9) + 1)
    nprobe = min(nprobe, n_lists)
    order = np.argsort(pos, axis=1)[:, :nprobe]
    scanned = float(index.sizes[order].sum(axis=1).mean() / max(index.sizes.sum(), 1))
    return replace(index, nprobe=nprobe, est_recall=float(recall[nprobe - 1]),
                   est_scanned=scanned)


def ivf_core_seconds(index: IvfIndex, n_queries: int, n_items: int, dim: int,
                     broadcast: bool = False) -> float:
    """Estimated core-seconds of :func:`ivf_top_k`: the scored pairs at the exact kernel's
    cost plus, sharded, :data:`PROBE_ROW_SECONDS` per query-probe row and
    :data:`QUERY_SECONDS` per query; with the items ``broadcast``,
    :data:`BROADCAST_QUERY_SECONDS` per query."""
    scoring = exact_core_seconds(n_queries, int(index.est_scanned * n_items), dim)
    if broadcast:
        return scoring + n_queries * BROADCAST_QUERY_SECONDS
    return scoring + n_queries * (index.nprobe * PROBE_ROW_SECONDS + QUERY_SECONDS)


def with_lists(df: DataFrame, bc: Broadcast, n: int, col: str) -> DataFrame:
    """``df`` (a ``vector`` column of unit rows) plus ``col array<int>``: its ``n`` nearest
    lists of the broadcast centroids, best first."""
    fields = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.schema.fields)
    vcol = df.columns.index("vector")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cent = bc.value
        for batch in batches:
            if batch.num_rows == 0:
                continue
            lists = nearest_lists(query_matrix(batch, vcol), cent, n)
            offsets = pa.array(np.arange(0, lists.size + 1, lists.shape[1], dtype=np.int32))
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.ListArray.from_arrays(offsets, pa.array(lists.ravel()))],
                names=[*batch.schema.names, col])

    return df.mapInArrow(run, f"{fields}, `{col}` array<int>")


def list_sizes(assigned: DataFrame, n_lists: int) -> np.ndarray:
    """Items per list of ``assigned (list int)``: a small aggregate."""
    sizes = np.zeros(n_lists, np.int64)
    for row in assigned.groupBy("list").count().collect():
        sizes[int(row["list"])] = int(row["count"])
    return sizes


#: list counts :func:`choose_lists` tries: ``n_lists_for(items, items_per_list)`` divided by
#: 1, 2, 4, ... (this many rungs)
LIST_LADDER = 4


@dataclass
class ListChoice:
    """The centroids :func:`choose_lists` chose and what each rung was estimated to give
    (``rungs``: lists, probes, estimated recall and scanned share, core-seconds)."""

    centroids: np.ndarray
    rungs: list[dict[str, float]]


def choose_lists(sample: np.ndarray, n_items: int, q: np.ndarray, truth: np.ndarray,
                 valid: np.ndarray, target: float, n_queries: int, dim: int, seed: int,
                 items_per_list: int = ITEMS_PER_LIST, broadcast: bool = False) -> ListChoice:
    """The number of lists by estimated cost: for ``n_lists_for(n_items, items_per_list)`` lists
    and :data:`LIST_LADDER` - 1 halvings of it, k-means on ``sample`` (unit rows), list sizes
    estimated from the sample's assignment, probes tuned on the queries ``q``
    (:func:`tune_probes`, ``target`` recall), and :func:`ivf_core_seconds` for ``n_queries``
    queries on the path ``broadcast`` says; the cheapest wins (the first on a tie). Why:
    sharded, each probe repeats the query's row (:data:`PROBE_ROW_SECONDS`, and its shuffle
    bytes) and finer lists need more probes for the same recall. ALS's inner-product queries at
    3M items needed 267 of 1,000 lists for recall 0.97 of their top 50 (267 copies of every
    user's row, past 100 GB of shuffle); on the 722k-item log's ALS factors 30 lists needed 14
    probes (27% of the items scored) where 240 needed 59 (8.7%), an estimated 542 against 1,046
    µs per query. Without queries the first rung is used."""
    x = unit_rows(sample)
    first = n_lists_for(n_items, items_per_list)
    counts = sorted({max(1, first >> j) for j in range(LIST_LADDER)}, reverse=True)
    if len(q) == 0 or not valid.any():
        counts = counts[:1]
    best: tuple[float, np.ndarray] | None = None
    rungs = []
    for n in counts:
        cent = spherical_kmeans(x, n, seed)
        sizes = np.bincount(nearest_lists(x, cent, 1)[:, 0], minlength=len(cent))
        sizes = np.round(sizes * (n_items / max(len(x), 1))).astype(np.int64)
        tuned = tune_probes(q, truth, valid, IvfIndex(cent, sizes), target)
        cost = ivf_core_seconds(tuned, n_queries, n_items, dim, broadcast)
        rungs.append({"lists": len(cent), "nprobe": tuned.nprobe,
                      "estimated_recall": round(tuned.est_recall, 4),
                      "estimated_scanned_share": round(tuned.est_scanned, 4),
                      "core_seconds": round(cost, 1)})
        if best is None or cost < best[0]:
            best = (cost, cent)
    assert best is not None
    return ListChoice(best[1], rungs)


def build_index(spark: SparkSession, items: DataFrame, centroids: np.ndarray,
                rungs: list[dict[str, float]] | None = None) -> tuple[IvfIndex, DataFrame]:
    """``items (item_id, vector)`` (unit rows) numbered in natural id order
    (:func:`~recemb_spark.neighbors.blocks.number_items`: ties rank as the exact search ranks
    them) with their nearest ``list`` of ``centroids`` (:func:`choose_lists`):
    ``(item_idx, item_id, vector, list)``, persisted (the caller unpersists); and the index
    with the true list sizes (and ``rungs``, how the list count was chosen). ``nprobe`` is
    still 1: see :func:`tune_probes`."""
    bc = spark.sparkContext.broadcast(centroids)
    numbered = blocks.number_items(items.select("item_id", "vector"))
    assigned = (with_lists(numbered, bc, 1, "_lists")
                .select("item_idx", "item_id", "vector", F.col("_lists")[0].alias("list"))
                .persist())
    sizes = list_sizes(assigned, len(centroids))
    bc.unpersist()
    return IvfIndex(centroids, sizes, rungs=rungs or []), assigned


def _score(k: int, keep_from_threshold: bool) -> Callable[[pa.Table, pa.Table], pa.Table]:
    """The cogroup function of one (list, query block): the queries ``(query_id, qvec,
    exclude, kth)`` against the list's items ``(item_id, ivec)``; at most ``k`` candidates
    per query, and with ``keep_from_threshold`` only those scoring at least the query's
    ``kth`` (the kernel's floor: no partial sort for those queries)."""

    def score(q_table: pa.Table, i_table: pa.Table) -> pa.Table:
        if q_table.num_rows == 0 or i_table.num_rows == 0:
            return pa.table({"query_id": pa.array([], pa.string()),
                             "item_id": pa.array([], pa.string()),
                             "item_idx": pa.array([], pa.int64()),
                             "score": pa.array([], pa.float32())})
        items = blocks.sorted_block(i_table)  # ties by natural id order
        qt = q_table.combine_chunks()
        m, q = blocks.block_matrix(items, "ivec"), blocks.block_matrix(qt, "qvec")
        ids = items.column("item_id").combine_chunks()
        excl = exclusions(qt.column("exclude").combine_chunks(), ids)
        kth = (qt.column("kth").to_numpy(zero_copy_only=False).astype(np.float32)
               if keep_from_threshold else None)
        idx, vals = stream_top_k(q, np.ascontiguousarray(m.T), min(k, len(m)), excl,
                                 floor=kth)
        ok = idx >= 0
        if kth is not None:
            ok &= vals >= kth[:, None]
        rows, _ = np.nonzero(ok)
        taken = pa.array(idx[ok])
        return pa.table({"query_id": qt.column("query_id").take(pa.array(rows)),
                         "item_id": ids.take(taken),
                         "item_idx": items.column("item_idx").combine_chunks().take(taken),
                         "score": pa.array(vals[ok].astype(np.float32))})

    return score


def pass_keys(spark: SparkSession, lists: DataFrame, sizes: np.ndarray, query_rows: int,
              item_rows: int) -> tuple[DataFrame, dict[str, int]]:
    """``(list, n_qb, ib)`` (a small frame, one row per list probed in this pass): how many
    query blocks of at most ``query_rows`` rows the probe rows ``lists (list int)`` of each
    list are cut in, and how many item blocks of at most ``item_rows`` its ``sizes`` items
    are; and the pass's ``tasks``, ``scored_pairs`` (probe rows x list sizes) and
    ``most_item_blocks`` (of one probed list). Counts the probe rows per list (one row per
    list reaches the driver)."""
    counts = np.zeros(len(sizes), np.int64)
    for r in lists.groupBy("list").count().collect():
        counts[int(r["list"])] = int(r["count"])
    probed = np.flatnonzero(counts)
    qb = {int(li): blocks.blocks_of(int(counts[li]), query_rows) for li in probed}
    ib = {int(li): blocks.blocks_of(int(sizes[li]), item_rows) for li in probed}
    frame = spark.createDataFrame([(li, qb[li], ib[li]) for li in qb],
                                  "list int, n_qb int, ib int")
    return F.broadcast(frame), {"tasks": sum(qb[li] * ib[li] for li in qb),
                                "scored_pairs": int((counts * sizes).sum()),
                                "most_item_blocks": max(ib.values(), default=1)}


def two_pass_top_k(spark: SparkSession, qs: DataFrame, first_list: Column,
                   more_lists: Column | None, items: DataFrame, sizes: np.ndarray, k: int,
                   query_rows: int, item_rows: int) -> tuple[DataFrame, dict[str, Any]]:
    """The top-``k`` items per query among the items of the lists it probes, in two passes:
    ``(query_id, item_id, rank, score double)`` (score descending, ties by ``item_idx``) and
    counters (both passes' tasks and candidates, the scored pairs).

    ``qs``: the queries ``(query_id, vector, exclude, ...)`` (persisted by the caller);
    ``first_list``: the list each probes first (an int column of ``qs``); ``more_lists``:
    the lists it probes next, an ``array<int>`` column that may read ``qs``'s columns and
    ``kth`` (the k-th best score of pass 1; -inf when the first list held fewer than ``k``
    candidates), or None for one pass; ``items``: ``(item_idx, item_id, ivec, list)``,
    ``sizes[list]`` items in each. A task holds one (list, query block, item block): see
    :func:`pass_keys`. Pass 2 keeps only candidates scoring at least ``kth``."""

    def search(rows: DataFrame, first: bool) -> tuple[DataFrame, dict[str, int]]:
        """One pass over probe rows ``(query_id, qvec, exclude, kth, list)``."""
        keys, counters = pass_keys(spark, rows.select("list"), sizes, query_rows, item_rows)
        q_rows = (rows.join(keys, "list")
                  .withColumn("qb", F.pmod(F.xxhash64("query_id"), F.col("n_qb")).cast("int"))
                  .withColumn("ib", F.explode(F.sequence(F.lit(0), F.col("ib") - 1)))
                  .select("list", "qb", "ib", "query_id", "qvec", "exclude", "kth"))
        i_rows = (items.join(keys, "list")
                  .withColumn("ib", F.pmod(F.xxhash64("item_idx"), F.col("ib")).cast("int"))
                  .withColumn("qb", F.explode(F.sequence(F.lit(0), F.col("n_qb") - 1)))
                  .select("list", "qb", "ib", "item_idx", "item_id", "ivec"))
        out = (blocks.cogroup_blocks(q_rows, i_rows, ["list", "qb", "ib"], counters["tasks"])
               .applyInArrow(_score(k, not first), CANDIDATE_SCHEMA))
        return out, counters

    head: list[Column | str] = ["query_id", F.col("vector").alias("qvec"), "exclude"]
    first, c1 = search(qs.select(*head, F.lit(None).cast("float").alias("kth"),
                                 first_list.alias("list")), True)
    first = first.persist()
    # the k-th best score of the first list; -inf (null, filled below) when it has fewer.
    # One item block per list: a query's candidates are its top k there, the k-th is their
    # minimum (a plain aggregate: at a million queries the sorted lists cost minutes)
    if c1["most_item_blocks"] == 1:
        kth = first.groupBy("query_id").agg(
            F.when(F.count("*") >= k, F.min("score")).alias("kth"))
    else:  # the k-th best over the candidates of the list's item blocks
        kth = first.groupBy("query_id").agg(F.try_element_at(
            F.sort_array(F.collect_list("score"), asc=False), F.lit(k)).alias("kth"))
    c2 = {"tasks": 0, "scored_pairs": 0}
    rest = first.limit(0)
    if more_lists is not None:
        with_kth = qs.join(kth, "query_id", "left").fillna(float("-inf"), ["kth"])
        rest, c2 = search(with_kth.select(*head, "kth", F.explode(more_lists).alias("list")),
                          False)
    rest = rest.persist()
    counters = {"first_tasks": c1["tasks"], "more_tasks": c2["tasks"],
                "scored_pairs": c1["scored_pairs"] + c2["scored_pairs"],
                "first_candidates": first.count(), "more_candidates": rest.count()}
    w = Window.partitionBy("query_id").orderBy(F.desc("score"), F.col("item_idx"))
    out = (first.unionByName(rest).withColumn("rank", F.row_number().over(w))
           .filter(F.col("rank") <= k)
           .select("query_id", "item_id", F.col("rank").cast("int"),
                   F.col("score").cast("double").alias("score")))
    return out, {"cached": [first, rest], **counters}


def ivf_top_k(spark: SparkSession, queries: DataFrame, assigned: DataFrame, index: IvfIndex,
              k: int, query_rows: int = blocks.QUERY_BLOCK_ROWS,
              item_rows: int | None = None,
              path: str = "sharded") -> tuple[DataFrame, dict[str, Any]]:
    """Top-``k`` items per query among the items of its ``index.nprobe`` nearest lists:
    ``(query_id, item_id, rank, score)``, score descending, ties by natural id order (as the
    exact search), and counters.

    ``queries``: ``(query_id, vector, exclude array<string>)``, unit vectors (null vectors
    skipped); ``assigned``: :func:`build_index`'s items with their list. A task holds at most
    about ``query_rows`` queries and ``item_rows`` items (default
    :func:`~recemb_spark.neighbors.blocks.item_block_rows` of the dimension): see
    :func:`two_pass_top_k`. With ``nprobe`` = all lists this is the exact top-``k``.
    ``path``: ``sharded`` as above, or ``broadcast``: the items broadcast and the queries
    searched where they are (:mod:`recemb_spark.neighbors.ivf_local`; the caller checked the
    threshold), the same rows."""
    nprobe = index.nprobe
    if path == "broadcast":
        out, info = broadcast_ivf_top_k(spark, queries, assigned, index.centroids, nprobe, k)
        return out, {**info, "path": path}
    bc = spark.sparkContext.broadcast(index.centroids)
    qs = with_lists(queries.filter(F.col("vector").isNotNull())
                    .select("query_id", "vector", "exclude"), bc, nprobe, "lists").persist()
    n_queries = qs.count()
    dim = index.centroids.shape[1]
    item_rows = item_rows or blocks.item_block_rows(dim)
    items = assigned.select("item_idx", "item_id", F.col("vector").alias("ivec"), "list")
    out, info = two_pass_top_k(
        spark, qs, F.col("lists")[0], F.slice("lists", 2, nprobe - 1) if nprobe > 1 else None,
        items, index.sizes, k, query_rows, item_rows)
    item_blocks = sum(blocks.blocks_of(int(n), item_rows) for n in index.sizes)
    return out, {**info, "broadcast": bc, "cached": [qs, *info["cached"]], "path": path,
                 "queries": n_queries, "item_blocks": item_blocks}


def broadcast_ivf_top_k(spark: SparkSession, queries: DataFrame, assigned: DataFrame,
                        centroids: np.ndarray, nprobe: int, k: int
                        ) -> tuple[DataFrame, dict[str, Any]]:
    """:func:`ivf_top_k` with the items broadcast (:mod:`~recemb_spark.neighbors.ivf_local`):
    ``(query_id, item_id, rank, score)`` (the same rows as the sharded search) and
    :func:`broadcast_probe_top_k`'s counters. ``queries``: ``(query_id, vector, exclude)``,
    unit vectors, null vectors skipped; ``assigned``: the indexed items."""
    return broadcast_probe_top_k(
        spark, queries, ivf_local.collect_listed(assigned, centroids), k,
        lambda q, items: nearest_lists(q, items.centroids, nprobe))


def broadcast_probe_top_k(spark: SparkSession, queries: DataFrame,
                          listed: ivf_local.ListedItems, k: int,
                          probes: Callable[[np.ndarray, ivf_local.ListedItems], np.ndarray],
                          prune_for: Callable[[np.ndarray], ivf_local.Prune] | None = None
                          ) -> tuple[DataFrame, dict[str, Any]]:
    """Top-``k`` items per query by dot product among the items of the lists ``probes(q,
    items)`` gives each row of a query block ``q`` (first searched first; then the others,
    pruned by ``prune_for(q)`` if given: :func:`~recemb_spark.neighbors.ivf_local.
    probe_top_k`), with ``listed`` broadcast and the queries searched where they are:
    ``(query_id, item_id, rank, score)`` (ties by natural id order) and ``{"broadcast":
    ..., "scored": ...}`` (the caller unpersists the one and reads the pairs scored from
    the other, an accumulator, after the action). ``queries``: ``(query_id, vector,
    exclude)``, null vectors skipped."""
    bc = spark.sparkContext.broadcast(listed)
    scored = spark.sparkContext.accumulator(0)
    k = min(k, len(listed.number))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items: ivf_local.ListedItems = bc.value
        for batch in batches:
            if batch.num_rows == 0:
                continue
            q = query_matrix(batch, 1)
            idx, vals, pairs = ivf_local.probe_top_k(
                items, q, probes(q, items), k, exclusions(batch.column(2), items.ids),
                prune_for(q) if prune_for is not None else None)
            scored.add(pairs)
            yield topk_batch(batch.column(0), idx, vals, items.ids)

    out = (queries.filter(F.col("vector").isNotNull())
           .select("query_id", "vector", "exclude").mapInArrow(run, TOPK_SCHEMA))
    return out, {"broadcast": bc, "scored": scored}
