"""Searches over item lists with the item matrix broadcast: the fast path below the broadcast
threshold, for the ivf's k-means lists and the norm bound's bands
(:mod:`recemb_spark.neighbors.normbound`).

Why: the sharded search (:func:`recemb_spark.neighbors.ivf.two_pass_top_k`) copies every
query's row once per probed list through a shuffle and a cogroup. On the 722k-item log that
overhead, not the scoring, was most of the time: item2vec's item queries probed 10 lists,
7.2M probe rows, 80 s on 2 cores for 4% of the pairs scored. When the item matrix fits a
Python worker (:func:`recemb_spark.neighbors.blocks.choose_path`, the threshold of every
item-matrix broadcast) each task takes a slice of the queries where they are, finds their
lists, and scores them against the items of those lists in numpy: nothing per probe is a
Spark row.

:func:`~recemb_spark.neighbors.ivf.broadcast_probe_top_k` runs it on Spark. The broadcast
:class:`ListedItems` holds the matrix ordered by (list, natural id number), so a
list's items are one column range. :func:`probe_top_k` searches a block of queries in two
rounds, as the sharded search's two passes: every query against its nearest list, then
against the others keeping only what beats its ``k``-th best of the first round. Scores are
the exact kernel's (:func:`~recemb_spark.neighbors.topk.stream_top_k`) and ties go by natural
id number, so both paths return the same rows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from .topk import best_per_row, stream_top_k


@dataclass
class ListedItems:
    """The items of an IVF index (or of norm bands), as one worker holds them: ``ids`` (Arrow
    strings, indexed by the natural id number ``item_idx``), ``mt`` (dim x items, C-contiguous,
    columns in (list, ``item_idx``) order), ``number`` (the ``item_idx`` of each column),
    ``starts`` (list ``l``'s columns are ``starts[l]:starts[l + 1]``) and ``centroids``
    (``n_lists x dim``: the ivf lists'; zeros for the norm bands, whose probes do not depend on
    them)."""

    ids: pa.Array
    mt: np.ndarray
    number: np.ndarray
    starts: np.ndarray
    centroids: np.ndarray

    @cached_property
    def column_of(self) -> np.ndarray:
        """The column of ``mt`` of every ``item_idx`` (computed once per worker's copy)."""
        out = np.empty(len(self.number), np.int64)
        out[self.number] = np.arange(len(self.number))
        return out


def listed_items(ids: list[str], item_idx: np.ndarray, vectors: np.ndarray,
                 lists: np.ndarray, centroids: np.ndarray) -> ListedItems:
    """:class:`ListedItems` of items numbered ``item_idx`` (0..n-1, any order), with their
    ``vectors`` (one row each) and ``lists`` (``0..len(centroids) - 1``)."""
    n = len(ids)
    by_number = np.empty(n, np.int64)
    by_number[item_idx] = np.arange(n)
    id_array = pa.array([ids[i] for i in by_number], pa.string())
    order = np.lexsort((item_idx, lists))
    sizes = np.bincount(lists, minlength=len(centroids))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    mt = np.ascontiguousarray(np.asarray(vectors, np.float32)[order].T)
    return ListedItems(id_array, mt, np.asarray(item_idx, np.int64)[order], starts,
                       np.asarray(centroids, np.float32))


def collect_listed(assigned: DataFrame, centroids: np.ndarray,
                   vector_col: str = "vector") -> ListedItems:
    """:func:`listed_items` of items ``(item_idx, item_id, <vector_col>, list)`` (as
    :func:`~recemb_spark.neighbors.ivf.build_index` or
    :func:`~recemb_spark.neighbors.normbound.norm_bands` give them), collected to the driver
    through Arrow (the caller checked the broadcast threshold)."""
    table = assigned.select("item_idx", "item_id", vector_col, "list").toArrow()
    n = table.num_rows
    vectors = table.column(vector_col).combine_chunks()
    dim = centroids.shape[1]
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return listed_items(table.column("item_id").to_pylist(),
                        table.column("item_idx").to_numpy().astype(np.int64),
                        flat.reshape(n, dim) if n else np.zeros((0, dim), np.float32),
                        table.column("list").to_numpy().astype(np.int64), centroids)


#: a round-2 filter: ``(rows, lists, floors of those rows)`` -> which (row, list) pairs to search
Prune = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def _search(items: ListedItems, q: np.ndarray, rows: np.ndarray, lists: np.ndarray, k: int,
            ex: tuple[np.ndarray, np.ndarray], floor: np.ndarray | None
            ) -> tuple[Candidates, int]:
    """Candidates ``(row, item_idx, score)`` of query ``rows`` each against the items of its
    entry of ``lists``: per (row, list) at most ``k``, exact scores; and the pairs scored.
    ``ex``: excluded ``(row, list column)`` pairs, sorted by row; ``floor``: per query row,
    the score below which nothing is wanted (or None)."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    scored = 0
    order = np.argsort(lists, kind="stable")
    rows, lists = rows[order], lists[order]
    cuts = np.flatnonzero(np.diff(lists)) + 1
    ex_r, ex_c = ex
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(rows)]]),
                    strict=True):
        if a == b:
            continue
        li = int(lists[a])
        c0, c1 = int(items.starts[li]), int(items.starts[li + 1])
        if c0 == c1:
            continue
        qr = rows[a:b]  # ascending (stable sort of ascending rows)
        scored += len(qr) * (c1 - c0)
        lo, hi = np.searchsorted(ex_r, [qr[0], qr[-1] + 1])
        er, ec = ex_r[lo:hi], ex_c[lo:hi]
        here = (ec >= c0) & (ec < c1)
        er, ec = er[here], ec[here] - c0
        local = np.searchsorted(qr, er)
        hit = (local < len(qr)) & (qr[np.minimum(local, len(qr) - 1)] == er)
        idx, vals = stream_top_k(q[qr], items.mt[:, c0:c1], min(k, c1 - c0),
                                 (local[hit], ec[hit]),
                                 floor=None if floor is None else floor[qr])
        r, s = np.nonzero(idx >= 0)
        out.append((qr[r], items.number[c0 + idx[r, s]], vals[r, s]))
    if not out:
        empty = np.zeros(0, np.int64)
        return (empty, empty, np.zeros(0, np.float32)), scored
    rr, cc, vv = (np.concatenate(x) for x in zip(*out, strict=True))
    return (rr, cc, vv), scored


def probe_top_k(items: ListedItems, q: np.ndarray, probes: np.ndarray, k: int,
                exclude: tuple[np.ndarray, np.ndarray], prune: Prune | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-``k`` items per query row of ``q`` by dot product among the items of its lists
    ``probes`` (``(n_q, nprobe)``, the first searched first): ``(item_idx, score)`` arrays
    ``(n_q, k)``, best first, ties by ``item_idx``, padded with -1 / -inf, and the pairs
    scored. ``exclude``: ``(row, item_idx)`` pairs never returned. Two rounds: the first list,
    then the others with each query's ``k``-th best of the first as its floor (-inf when it
    had fewer), only the (row, list) pairs ``prune`` keeps (None: all)."""
    n_q = len(q)
    if n_q == 0 or probes.shape[1] == 0:
        return np.full((n_q, k), -1, np.int64), np.full((n_q, k), -np.inf, np.float32), 0
    ex_r, ex_n = exclude
    ex_c = items.column_of[ex_n] if len(ex_n) else np.zeros(0, np.int64)
    order = np.argsort(ex_r, kind="stable")
    ex = (np.asarray(ex_r, np.int64)[order], ex_c[order])
    all_rows = np.arange(n_q, dtype=np.int64)
    (r1, c1, v1), scored = _search(items, q, all_rows, probes[:, 0].astype(np.int64), k, ex,
                                   None)
    best_i, best_v = best_per_row(r1, c1, v1, n_q, k)
    if probes.shape[1] == 1:
        return best_i, best_v, scored
    floor = best_v[:, k - 1]
    rows = np.repeat(all_rows, probes.shape[1] - 1)
    lists = probes[:, 1:].ravel().astype(np.int64)
    if prune is not None:
        keep = prune(rows, lists, floor[rows])
        rows, lists = rows[keep], lists[keep]
    (r2, c2, v2), more = _search(items, q, rows, lists, k, ex, floor)
    ok = best_i >= 0
    r, _ = np.nonzero(ok)
    best_i, best_v = best_per_row(np.concatenate([r, r2]), np.concatenate([best_i[ok], c2]),
                                  np.concatenate([best_v[ok], v2]), n_q, k)
    return best_i, best_v, scored + more
