"""The blend's channel lists and their fusion computed in place, per user, with the catalogue
side broadcast: the fast path below the broadcast threshold.

Why: :mod:`recemb_spark.neighbors.fusion` builds every channel as Spark rows: each item and
popularity channel joins its users' rows to a table and anti-joins the result with the
excluded pairs, so the published lists of the 25M-rating log shuffled the 25M ratings again
for every channel; about twenty subplans, none dominant, made the publish 194 s of a 318-second
stage. Yet what the channels read besides the users' own rows is small: the neighbour tables
(items x neighbours), the popularity rankings and the items' categories. When those fit a
Python worker (:func:`catalogue_bytes` against the threshold of every broadcast,
``ann.broadcast_max_mb``), they are broadcast once (:class:`Catalogue`), and each task takes
its users' rows — ``(user_id, history, exclude, <user channel>...)``: the liked items oldest
first, the items never to list, each user-vector channel's ranked items — and builds their
channel lists (:func:`channel_rows`) and, for the published lists, fuses them
(:func:`fuse_rows`) in numpy: one shuffle to group the users' rows, none per channel.

The rows are those of :mod:`~recemb_spark.neighbors.fusion`'s functions: the same scores
(ordered at :data:`~recemb_spark.neighbors.fusion.SCORE_RESOLUTION`), ranks and ties (by
item id: the catalogue's ids are sorted in Spark's string order, so an item's index orders
as its id). Assumed, as the ``blend`` stage's tables give them: one category per item, each
item once in a user's ranked list, and every item of a user-vector list in the catalogue
(ratings and neighbour tables); an item outside it is dropped.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from .blocks import BYTES_PER_ID
from .fusion import SCORE_RESOLUTION
from .topk import categories_of, first_of, list_positions, positions, run_positions

#: bytes a worker holds per broadcast neighbour row (an int32 column and a float64 score)
NEIGHBOR_ROW_BYTES = 12
#: bytes per catalogue item besides its id: its category and its places in three rankings
ITEM_BYTES = 4 * 8


@dataclass
class Csr:
    """Rows of variable length: row ``r``'s values are ``cols[offsets[r]:offsets[r + 1]]``
    (and ``vals`` alike, when given)."""

    offsets: np.ndarray
    cols: np.ndarray
    vals: np.ndarray | None = None

    def expand(self, rows: np.ndarray, counts: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``rows`` (row numbers, repeats allowed), its first ``counts`` values
        (all when None, at most all): ``(which, pos)`` — the index into ``rows`` and the
        position in ``cols``/``vals`` of every value, rows in the given order, each row's
        values in order."""
        start = self.offsets[rows]
        size = self.offsets[rows + 1] - start
        n = size if counts is None else np.minimum(size, counts)
        which = np.repeat(np.arange(len(rows)), n)
        return which, start[which] + run_positions(n)


def csr_of(rows: np.ndarray, cols: np.ndarray, n_rows: int, order_by: np.ndarray,
           vals: np.ndarray | None = None) -> Csr:
    """A :class:`Csr` of ``n_rows`` rows from ``(rows, cols[, vals])`` triples, each row's
    values sorted by ``order_by`` (ascending, stable)."""
    order = np.lexsort((order_by, rows))
    offsets = np.searchsorted(rows[order], np.arange(n_rows + 1)).astype(np.int64)
    return Csr(offsets, cols[order], None if vals is None else vals[order])


@dataclass
class Catalogue:
    """What every task holds: ``ids`` (Arrow strings in Spark's string order; an item's index
    orders as its id), ``neighbors`` (item channel -> :class:`Csr` item -> neighbour items and
    similarities), ``rankings`` (popularity channel -> every item with a liked event, most
    liked first, ties by id), ``category_of`` (item -> category index, -1 for none;
    categories in string order) and ``by_category`` (category -> its items in popularity
    order), the last two None without categories."""

    ids: pa.Array
    neighbors: dict[str, Csr] = field(default_factory=dict)
    rankings: dict[str, np.ndarray] = field(default_factory=dict)
    category_of: np.ndarray | None = None
    by_category: Csr | None = None


@dataclass(frozen=True)
class Plan:
    """Which channels to build and how deep: ``user`` (list columns of the batch, named as
    their channels), ``item`` (keys of :attr:`Catalogue.neighbors`), ``popularity``
    (keys of :attr:`Catalogue.rankings`), ``category`` (the category channel, named
    ``category``); ``depth`` items each, ``popular_depth`` for channel ``popular``;
    ``last_items`` latest history items queried; ``categories`` latest categories."""

    user: tuple[str, ...]
    item: tuple[str, ...]
    popularity: tuple[str, ...]
    category: bool
    depth: int
    popular_depth: int
    last_items: int
    categories: int

    @property
    def names(self) -> list[str]:
        """Every channel's name, in channel-index order."""
        return [*self.user, *self.item, *self.popularity, *(["category"] if self.category
                                                            else [])]


@dataclass
class Rows:
    """Channel rows of a batch of users: ``user`` (row in the batch), ``item`` (catalogue
    index), ``rank`` (1 first) and ``channel`` (index into :attr:`Plan.names`)."""

    user: np.ndarray
    item: np.ndarray
    rank: np.ndarray
    channel: np.ndarray


def in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in the sorted array ``keys`` (repeats allowed)."""
    if len(keys) == 0:
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[pos] == values


def rank_in_order(user: np.ndarray) -> np.ndarray:
    """1-based ranks of rows sorted by user: 1 at each user's first row, then 2, 3, ..."""
    if len(user) == 0:
        return np.zeros(0, np.int64)
    return run_positions(np.diff(np.append(first_of(user), len(user)))) + 1


def first_per_user(order: np.ndarray, user: np.ndarray, item: np.ndarray, depth: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, rank)`` of each user's first ``depth`` rows in ``order`` (a permutation
    sorting the rows by user first)."""
    u, i = user[order], item[order]
    rank = rank_in_order(u)
    keep = rank <= depth
    return u[keep], i[keep], rank[keep]


def score_key(score: np.ndarray) -> np.ndarray:
    """A sort key, ascending = ``score`` descending at :data:`SCORE_RESOLUTION`."""
    return -np.rint(score / SCORE_RESOLUTION)


def channel_rows(batch: pa.RecordBatch, cat: Catalogue, plan: Plan) -> Rows:
    """Every channel of :class:`Plan` for the users of ``batch`` (columns ``history``,
    ``exclude`` and the user channels, ``list<string>``): as
    :func:`~recemb_spark.neighbors.fusion.candidate_channel` (user), ``neighbor_channel``
    (item), ``unseen_ranked`` over ``popularity_ranks`` (popularity) and over the ranks
    within ``recent_categories`` (category) give them."""
    n = len(cat.ids)
    ex_len, ex_u, ex_i = list_positions(batch.column("exclude"), cat.ids)
    # sorted, repeats kept: a lookup needs no more (numpy's hashed unique took 1.3 s on the
    # 1.5M pairs of 10k users of the 25M-rating log; the sort 0.1 s)
    excluded = np.sort(ex_u[ex_i >= 0] * n + ex_i[ex_i >= 0])
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def unseen(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return (i >= 0) & ~in_sorted(u * n + i, excluded)

    for name in plan.user:  # in the list's order, excluded items dropped
        _, u, i = list_positions(batch.column(name), cat.ids)
        keep = unseen(u, i)
        parts.append(first_per_user(np.arange(int(keep.sum())), u[keep], i[keep], plan.depth))
    h_len, h_u, h_i = list_positions(batch.column("history"), cat.ids)
    back = h_len[h_u] - 1 - run_positions(h_len)  # 0 = the latest item
    latest = (back < plan.last_items) & (h_i >= 0)
    for name in plan.item:
        parts.append(_neighbor_rows(cat.neighbors[name], h_u[latest], h_i[latest],
                                    back[latest], n, excluded, plan.depth))
    users = np.arange(batch.num_rows)
    for name in plan.popularity:
        depth = plan.popular_depth if name == "popular" else plan.depth
        ranking = cat.rankings[name]
        take = np.minimum(len(ranking), depth + ex_len)
        u = np.repeat(users, take)
        i = ranking[run_positions(take)]
        keep = unseen(u, i)
        parts.append(first_per_user(np.arange(int(keep.sum())), u[keep], i[keep], depth))
    if plan.category:
        assert cat.category_of is not None and cat.by_category is not None
        parts.append(_category_rows(cat.category_of, cat.by_category, h_u, h_i, back, ex_len,
                                    n, excluded, plan.categories, plan.depth))
    channel = np.concatenate([np.full(len(p[0]), c, np.int64) for c, p in enumerate(parts)]
                             or [np.zeros(0, np.int64)])

    def cat_of(j: int) -> np.ndarray:
        return np.concatenate([p[j] for p in parts] or [np.zeros(0, np.int64)]).astype(np.int64)

    return Rows(cat_of(0), cat_of(1), cat_of(2), channel)


def _neighbor_rows(nb: Csr, u: np.ndarray, i: np.ndarray, back: np.ndarray, n: int,
                   excluded: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The item channel of the latest items ``(u, i, back)``: each neighbour scores the sum of
    ``similarity / (back + 1)``; excluded pairs dropped; ``depth`` best per user, ties by
    item."""
    assert nb.vals is not None
    which, pos = nb.expand(i)
    keys = u[which] * n + nb.cols[pos]
    uniq, inv = np.unique(keys, return_inverse=True)
    score = np.bincount(inv, nb.vals[pos] / (back[which] + 1.0), minlength=len(uniq))
    keep = ~in_sorted(uniq, excluded)
    uniq, score = uniq[keep], score[keep]
    user, item = uniq // n, uniq % n
    return first_per_user(np.lexsort((item, score_key(score), user)), user, item, depth)


def _category_rows(category_of: np.ndarray, by_category: Csr, h_u: np.ndarray,
                   h_i: np.ndarray, back: np.ndarray, ex_len: np.ndarray, n: int,
                   excluded: np.ndarray, n_groups: int, depth: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The category channel: the users' ``n_groups`` latest categories (by their latest item,
    ties by category), their popular items interleaved rank by rank (the latest category first
    at equal rank), excluded items dropped, ``depth`` per user."""
    known = h_i >= 0
    c = np.full(len(h_i), -1, np.int64)
    c[known] = category_of[h_i[known]]
    has = c >= 0
    u, c, b = h_u[has], c[has], back[has]
    order = np.lexsort((b, c, u))  # per (user, category) its latest item first
    u, c, b = u[order], c[order], b[order]
    first = first_of(u * (len(by_category.offsets) - 1) + c)
    u, c, b = u[first], c[first], b[first]
    gu, gc, g = first_per_user(np.lexsort((c, b, u)), u, c, n_groups)
    which, pos = by_category.expand(gc, depth + ex_len[gu])
    user, item = gu[which], by_category.cols[pos].astype(np.int64)
    rank = pos - by_category.offsets[gc[which]] + 1
    keep = ~in_sorted(user * n + item, excluded)
    user, item, rank, grp = user[keep], item[keep], rank[keep], g[which][keep]
    return first_per_user(np.lexsort((item, grp, rank, user)), user, item, depth)


def fuse_rows(rows: Rows, names: Sequence[str], weights: dict[str, float], rr_k: float, k: int,
              fallback: str, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                    np.ndarray]:
    """:func:`~recemb_spark.neighbors.fusion.fuse_filled` on channel ``rows`` (channel index
    into ``names``): ``(user, item, rank, score)``, each user's ``k`` best by ``sum w_c /
    (rr_k + rank_c)`` over the channels with a positive weight, filled from ``fallback``'s
    items in its order (score 0); ties by item."""
    w = np.array([float(weights.get(name, 0.0)) for name in names])
    used = w > 0
    if not used.any():
        raise ValueError("fuse: no channel has a positive weight")
    fb = list(names).index(fallback)
    take = used[rows.channel] | (rows.channel == fb)
    u, i, r, c = rows.user[take], rows.item[take], rows.rank[take], rows.channel[take]
    uniq, inv = np.unique(u * n_items + i, return_inverse=True)
    contrib = np.where(used[c], w[c] / (float(rr_k) + r), 0.0)
    score = np.bincount(inv, contrib, minlength=len(uniq))
    fill = np.full(len(uniq), np.iinfo(np.int64).max)
    from_fb = c == fb
    np.minimum.at(fill, inv[from_fb], r[from_fb])
    user, item = uniq // n_items, uniq % n_items
    order = np.lexsort((item, np.where(score > 0, 0, fill), score_key(score), user))
    user, item, score = user[order], item[order], score[order]
    rank = rank_in_order(user)
    keep = rank <= k
    return user[keep], item[keep], rank[keep], score[keep]


#: what :func:`lists_in_place` yields without fusing: channel lists
CHANNEL_SCHEMA = "user_id string, channel string, item_id string, rank int"
#: and with: fused lists
FUSED_SCHEMA = "user_id string, item_id string, rank int, score double"


@dataclass(frozen=True)
class Fusion:
    """Fuse in place: the weights, ``rr_k``, ``k`` and the filling channel."""

    weights: dict[str, float]
    rr_k: float
    k: int
    fallback: str = "popular"


def lists_in_place(users: DataFrame, bc: Any, plan: Plan, fusion: Fusion | None = None
                   ) -> DataFrame:
    """:func:`channel_rows` (``CHANNEL_SCHEMA``), or with ``fusion`` :func:`fuse_rows`
    (``FUSED_SCHEMA``), of every row of ``users`` (``user_id``, ``history``, ``exclude``
    and a ``list<string>`` column per :attr:`Plan.user` channel) against the broadcast
    :class:`Catalogue` ``bc``."""
    names = plan.names

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cat: Catalogue = bc.value
        for batch in batches:
            rows = channel_rows(batch, cat, plan)
            uid = batch.column("user_id")
            if fusion is None:
                yield pa.RecordBatch.from_arrays(
                    [uid.take(pa.array(rows.user)),
                     pa.array(np.asarray(names, dtype=object)[rows.channel], pa.string()),
                     cat.ids.take(pa.array(rows.item)), pa.array(rows.rank.astype(np.int32))],
                    names=["user_id", "channel", "item_id", "rank"])
                continue
            u, i, r, s = fuse_rows(rows, names, fusion.weights, fusion.rr_k, fusion.k,
                                   fusion.fallback, len(cat.ids))
            yield pa.RecordBatch.from_arrays(
                [uid.take(pa.array(u)), cat.ids.take(pa.array(i)),
                 pa.array(r.astype(np.int32)), pa.array(s.astype(np.float64))],
                names=["user_id", "item_id", "rank", "score"])

    cols = ["user_id", "history", "exclude", *plan.user]
    return users.select(*cols).mapInArrow(run, FUSED_SCHEMA if fusion else CHANNEL_SCHEMA)


# --------------------------------------------------------------------------------------------
# Spark side: the users' rows and the catalogue


def ranked_items(lists: DataFrame, name: str) -> DataFrame:
    """``(user_id, <name> array<string>)``: each user's items of a ranked list ``(user_id,
    item_id, rank)`` in rank order (ties by item id)."""
    return lists.groupBy("user_id").agg(F.transform(
        F.array_sort(F.collect_list(F.struct("rank", "item_id"))),
        lambda e: e["item_id"]).alias(name))


def with_lists(users: DataFrame, lists: dict[str, DataFrame]) -> DataFrame:
    """``users`` with one ``list<string>`` column per channel of ``lists`` (channel -> ranked
    ``(user_id, item_id, rank)``; empty for a user it does not list)."""
    for name, lst in lists.items():
        users = users.join(ranked_items(lst, name), "user_id", "left").withColumn(
            name, F.coalesce(F.col(name), F.array().cast("array<string>")))
    return users


def catalogue_bytes(n_items: int, neighbor_rows: int) -> int:
    """Bytes a worker holds for a :class:`Catalogue` of ``n_items`` items and
    ``neighbor_rows`` neighbour rows in all."""
    return n_items * (BYTES_PER_ID + ITEM_BYTES) + neighbor_rows * NEIGHBOR_ROW_BYTES


def sorted_ids(items: DataFrame) -> pa.Array:
    """The ``item_id`` of ``items`` (assumed distinct: the caller's ``distinct()``, often
    persisted), collected, in Spark's string order."""
    ids = items.select("item_id").toArrow().column("item_id").combine_chunks()
    return ids.take(pc.sort_indices(ids)).cast(pa.string())


def neighbor_csr(neighbors: DataFrame, ids: pa.Array) -> Csr:
    """A neighbour table ``(item_id, neighbor_id, similarity)`` collected as a :class:`Csr`
    over ``ids`` (rows outside them dropped)."""
    t = neighbors.select("item_id", "neighbor_id", "similarity").toArrow()
    src = positions(t.column("item_id").combine_chunks(), ids)
    dst = positions(t.column("neighbor_id").combine_chunks(), ids)
    sim = t.column("similarity").to_numpy().astype(np.float64)
    ok = (src >= 0) & (dst >= 0)
    return csr_of(src[ok], dst[ok].astype(np.int32), len(ids), dst[ok], sim[ok])


def popularity_order(counts: DataFrame, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(items, counts)`` of ``counts (item_id, n)`` collected: item indices into ``ids``
    most counted first, ties by id (:func:`~recemb_spark.neighbors.fusion.popularity_ranks`'
    order), and their counts."""
    t = counts.toArrow()
    item = positions(t.column("item_id").combine_chunks(), ids)
    n = t.column("n").to_numpy().astype(np.int64)
    order = np.lexsort((item, -n))
    return item[order], n[order]


def with_rankings(cat: Catalogue, liked: dict[str, DataFrame],
                  categories: DataFrame | None) -> Catalogue:
    """``cat`` (its ids and neighbours) with the popularity rankings of ``liked`` (popularity
    channel -> its liked rows, one per event) and, when given, ``categories`` (the
    ``category`` channel ranks ``liked["popular"]`` within them), collected."""
    counts = {name: popularity_order(rows.groupBy("item_id").agg(F.count("*").alias("n")),
                                     cat.ids)
              for name, rows in liked.items()}
    out = Catalogue(cat.ids, cat.neighbors, {name: items for name, (items, _) in counts.items()})
    if categories is not None:
        of, n_cats = categories_of(categories, cat.ids)
        items, _ = counts["popular"]
        c = of[items]
        has = c >= 0
        out.category_of = of
        out.by_category = csr_of(c[has], items[has].astype(np.int32), n_cats,
                                 np.flatnonzero(has))
    return out
