"""Multi-channel recall: per-user candidate lists from several channels, merged into one.

A *channel list* is a frame ``(user_id, channel string, item_id, rank int)``: for each user,
a channel's best items, rank 1 first, the user's excluded items (history) never listed.
Channels: a model's user-vector candidates (:func:`candidate_channel`), the neighbours of the
user's last liked items (:func:`neighbor_channel`; a model's ``item_neighbors`` or the item
graph's transitions, :func:`graph_neighbors`), and popularity — global, recent, within
the user's categories (:func:`popularity_ranks` + :func:`unseen_ranked`).

The merge (:func:`fuse`) is weighted reciprocal rank fusion: an item's score is the sum over
the channels listing it of ``w_c / (rr_k + rank_c)``. The weights are chosen by
:func:`coordinate_search` on a validation split (numpy core :func:`fused_hits`).

Every function here is pure (DataFrame -> DataFrame or numpy -> numpy); the ``blend`` stage
(:mod:`recemb_spark.stages.blend`) wires them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ..ids import event_struct

CHANNEL_COLUMNS = ["user_id", "channel", "item_id", "rank"]


def liked_histories(ratings: DataFrame, min_rating: float) -> DataFrame:
    """``(user_id, items array<string>)``: each user's liked items (rating >= ``min_rating``)
    in time order, oldest first (ties as :func:`~recemb_spark.ids.event_struct` orders).
    Users without a liked item get no row."""
    liked = ratings.filter(F.col("rating") >= F.lit(min_rating))
    return (liked.groupBy("user_id")
            .agg(F.array_sort(F.collect_list(event_struct())).alias("_h"))
            .select("user_id", F.transform("_h", lambda e: e["item_id"]).alias("items")))


#: scores summed from several rows (fused reciprocal ranks, neighbour similarities) are ordered
#: at this resolution: a float sum's last bits follow the order of its terms, which follows
#: the plan (partitions, the channels read as stored or joined), and two sums equal in exact
#: arithmetic then ranked by those bits (measured: 21 of the 5M log's 2.28M published rows
#: swapped between two plans). Rounded, they tie and the item id decides
SCORE_RESOLUTION = 1e-12


def score_order(score: str = "score") -> Column:
    """``score`` descending, at :data:`SCORE_RESOLUTION` (a sort key; assumes |score| well
    below 2**53 x the resolution, ~9,000)."""
    return F.desc(F.rint(F.col(score) / F.lit(SCORE_RESOLUTION)))


def rank_per_user(scored: DataFrame, depth: int, channel: str | None = None) -> DataFrame:
    """The ``depth`` best rows per user of ``scored (user_id, item_id, score)`` (higher score
    first at :data:`SCORE_RESOLUTION`, ties by item id): ``(user_id, item_id, rank, score)``,
    rank 1 first; with ``channel``, a channel list ``(user_id, channel, item_id, rank)``
    instead."""
    order = Window.partitionBy("user_id").orderBy(score_order(), F.col("item_id"))
    ranked = (scored.withColumn("rank", F.row_number().over(order))
              .filter(F.col("rank") <= depth))
    if channel is None:
        return ranked.select("user_id", "item_id", "rank", F.col("score").cast("double"))
    return ranked.select("user_id", F.lit(channel).alias("channel"), "item_id", "rank")


def candidate_channel(candidates: DataFrame, exclude: DataFrame, depth: int,
                      channel: str) -> DataFrame:
    """A channel list from a ranked candidate table ``(user_id, item_id, rank)`` (a model's
    ``user_candidates``): the ``exclude (user_id, item_id)`` pairs dropped, ranked again
    1..``depth`` in the table's order."""
    kept = candidates.join(exclude.select("user_id", "item_id"), ["user_id", "item_id"],
                           "left_anti")
    return rank_per_user(kept.select("user_id", "item_id", (-F.col("rank")).alias("score")),
                         depth, channel)


def ranked_channel(candidates: DataFrame, depth: int, channel: str) -> DataFrame:
    """:func:`candidate_channel` for a table that leaves out the excluded pairs already and
    ranks each user's rows 1, 2, ... (``user_candidates`` of the run date, written after its
    ratings: see ``stages.blend.excluded_already``): its first ``depth`` rows, read as they
    are, without the anti-join and the window."""
    return candidates.filter(F.col("rank") <= depth).select(
        "user_id", F.lit(channel).alias("channel"), "item_id", "rank")


def neighbor_channel(histories: DataFrame, neighbors: DataFrame, last_items: int,
                     exclude: DataFrame, depth: int, channel: str) -> DataFrame:
    """Item-query candidates: the neighbours of each user's ``last_items`` latest history
    items. ``histories``: ``(user_id, items)`` oldest first; ``neighbors``: an
    ``item_neighbors`` table ``(item_id, neighbor_id, similarity)``. A neighbour scores the
    sum over the last items ``i`` listing it of ``similarity / p`` (``p`` = 1 for the latest
    item, 2 for the one before, ...); ``exclude`` pairs are dropped."""
    recent = (histories.select("user_id", F.posexplode(F.reverse("items")).alias("_p", "item_id"))
              .filter(F.col("_p") < last_items))
    scored = (recent.join(neighbors.select("item_id", "neighbor_id", "similarity"), "item_id")
              .groupBy("user_id", F.col("neighbor_id").alias("item_id"))
              .agg(F.sum(F.col("similarity") / (F.col("_p") + 1)).alias("score"))
              .join(exclude.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti"))
    return rank_per_user(scored, depth, channel)


def graph_neighbors(graph: DataFrame, depth: int) -> DataFrame:
    """The item graph as a neighbour table for :func:`neighbor_channel`: each item's ``depth``
    most probable next items, ``(item_id, neighbor_id, similarity)`` with ``similarity`` =
    ``P(dst | src)``. ``graph``: the ``item_graph`` table ``(src, dst, weight, prob)``;
    ties by ``dst``."""
    order = Window.partitionBy("src").orderBy(F.desc("prob"), F.col("dst"))
    return (graph.withColumn("_r", F.row_number().over(order)).filter(F.col("_r") <= depth)
            .select(F.col("src").alias("item_id"), F.col("dst").alias("neighbor_id"),
                    F.col("prob").alias("similarity")))


def popularity_ranks(liked: DataFrame, limit: int,
                     categories: DataFrame | None = None) -> DataFrame:
    """``(group string, item_id, rank int)``: the ``limit`` most frequent items of ``liked``
    (one row per event or per (user, item)), by count, ties by item id; rank 1 first.
    Without ``categories`` one ranking, ``group`` = ``""``; with ``categories (item_id,
    category)`` one ranking per category (``group`` = the category; items without one are
    left out)."""
    counts = liked.groupBy("item_id").agg(F.count("*").alias("_n"))
    if categories is None:
        top = counts.orderBy(F.desc("_n"), "item_id").limit(limit)  # distributed top-N
        grouped = top.withColumn("group", F.lit(""))
    else:
        grouped = counts.join(categories.select("item_id", F.col("category").alias("group")),
                              "item_id")
    order = Window.partitionBy("group").orderBy(F.desc("_n"), F.col("item_id"))
    return (grouped.withColumn("rank", F.row_number().over(order))
            .filter(F.col("rank") <= limit).select("group", "item_id", "rank"))


def recent_categories(histories: DataFrame, categories: DataFrame, n: int) -> DataFrame:
    """``(user_id, group, _g int)``: the categories of each user's latest history items, the
    ``n`` most recent distinct ones (``_g`` = 1 for the latest item's). ``histories
    (user_id, items)`` oldest first; items without a category are skipped."""
    latest = histories.select("user_id", F.posexplode(F.reverse("items")).alias("_p", "item_id"))
    firsts = (latest.join(categories.select("item_id", F.col("category").alias("group")),
                          "item_id")
              .groupBy("user_id", "group").agg(F.min("_p").alias("_p")))
    order = Window.partitionBy("user_id").orderBy("_p", "group")
    return (firsts.withColumn("_g", F.row_number().over(order)).filter(F.col("_g") <= n)
            .select("user_id", "group", "_g"))


def unseen_ranked(user_groups: DataFrame, ranks: DataFrame, exclude: DataFrame, depth: int,
                  channel: str) -> DataFrame:
    """Each user's first ``depth`` items of the rankings of their groups that they have not
    seen: ``user_groups (user_id, group, _g)`` (``_g``: the group's priority, 1 first, e.g.
    from :func:`recent_categories`; one row with group ``""`` per user for the global
    ranking), ``ranks`` from :func:`popularity_ranks`. Interleaves the groups rank by rank.

    A user with ``n`` excluded items needs at most ``depth + n`` ranks of a group, so only
    those are joined: ``users x depth + excluded pairs`` rows, never users x catalogue."""
    n_excluded = exclude.groupBy("user_id").agg(F.count("*").alias("_x"))
    wanted = (user_groups.join(n_excluded, "user_id", "left")
              .select("user_id", "group", "_g", F.explode(F.sequence(
                  F.lit(1), F.lit(depth) + F.coalesce("_x", F.lit(0)))).alias("rank")))
    found = (wanted.join(ranks, ["group", "rank"])
             .join(exclude.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti"))
    order = Window.partitionBy("user_id").orderBy("rank", "_g", "item_id")
    return (found.dropDuplicates(["user_id", "item_id"])
            .withColumn("_r", F.row_number().over(order)).filter(F.col("_r") <= depth)
            .select("user_id", F.lit(channel).alias("channel"), "item_id",
                    F.col("_r").alias("rank")))


def recent_events(liked: DataFrame, days: int) -> DataFrame:
    """The rows of ``liked (…, ts)`` within ``days`` days of its latest ``ts``."""
    latest = liked.agg(F.max("ts").alias("_latest"))
    return (liked.crossJoin(F.broadcast(latest))
            .filter(F.col("ts") >= F.col("_latest") - F.expr(f"INTERVAL {int(days)} DAYS"))
            .drop("_latest"))


def _positive_weights(weights: dict[str, float]) -> tuple[dict[str, float], Column]:
    """The channels with a positive weight, and a map column channel -> weight of them;
    ValueError when none has one."""
    used = {c: float(w) for c, w in weights.items() if w > 0}
    if not used:
        raise ValueError("fuse: no channel has a positive weight")
    return used, F.create_map(*[x for c, w in used.items() for x in (F.lit(c), F.lit(w))])


def fuse(channels: DataFrame, weights: dict[str, float], rr_k: float, k: int) -> DataFrame:
    """Weighted reciprocal rank fusion of channel lists: ``(user_id, item_id, rank, score)``,
    the ``k`` best items per user by ``sum_c weights[c] / (rr_k + rank_c)``; channels without
    a positive weight are left out (a user only they list gets no row)."""
    used, wmap = _positive_weights(weights)
    scored = (channels.filter(F.col("channel").isin(list(used)))
              .groupBy("user_id", "item_id")
              .agg(F.sum(wmap[F.col("channel")] / (F.lit(float(rr_k)) + F.col("rank")))
                   .alias("score")))
    return rank_per_user(scored, k)


def fuse_filled(channels: DataFrame, weights: dict[str, float], rr_k: float, k: int,
                fallback: str = "popular", partitions: int = 0) -> DataFrame:
    """:func:`fuse`'s lists completed to ``k`` rows per user from channel ``fallback``'s list
    (e.g. popularity): its items not yet listed, in its order, scored 0. Returns ``(user_id,
    item_id, rank, score)``; users only zero-weight channels list get the fallback's first
    ``k`` items, and a fallback with a positive weight is fused like any other channel. One
    aggregation and one window over the channel rows (fusing, then filling from a union, took
    two windows more). ``partitions`` > 0: the channel rows are first spread over that many
    partitions by user (the aggregation's memory per task)."""
    used, wmap = _positive_weights(weights)
    fused = F.col("channel").isin(list(used))
    channels = channels.filter(fused | (F.col("channel") == fallback))
    if partitions > 0:
        channels = channels.repartition(partitions, "user_id")
    scored = (channels.groupBy("user_id", "item_id")
              .agg(F.sum(F.when(fused, wmap[F.col("channel")]
                                / (F.lit(float(rr_k)) + F.col("rank"))).otherwise(0.0))
                   .alias("score"),
                   F.min(F.when(F.col("channel") == fallback, F.col("rank"))).alias("_f")))
    # a fused item scores > 0 (every term w / (rr_k + rank) is): fused items first by score,
    # ties by item id, then the fallback's by its rank
    order = Window.partitionBy("user_id").orderBy(
        score_order(), F.when(F.col("score") > 0, F.lit(0)).otherwise(F.col("_f")),
        F.col("item_id"))
    return (scored.withColumn("rank", F.row_number().over(order)).filter(F.col("rank") <= k)
            .select("user_id", "item_id", "rank", F.col("score").cast("double")))


def list_metrics(top: DataFrame, cases: DataFrame, ks: Sequence[int],
                 names: Sequence[str]) -> DataFrame:
    """HR@k, NDCG@k and coverage of many ranked lists at once: ``top (list string, user_id,
    item_id, rank)`` holds the lists ``names`` (rows of other lists are ignored), ``cases
    (user_id, heldout)`` the held-out items. Returns ``(list string, k int, users long,
    hits long, hr double, ndcg double, items long)``, one row per list and k (``items``: the
    distinct items the list holds within its first k, over every user it lists). A hit: the
    held-out item in the user's first k; NDCG with one relevant item = ``1 / log2(rank + 1)``
    (rank 1-based). A case without a list counts as a miss."""
    spark = top.sparkSession
    lists = spark.createDataFrame([(n,) for n in names], "list string")
    top = top.filter(F.col("list").isin(list(names))).select("list", "user_id", "item_id",
                                                             "rank")
    found = (cases.select("user_id", F.col("heldout").alias("item_id")).crossJoin(lists)
             .join(top, ["list", "user_id", "item_id"], "left"))
    aggs = [F.count("*").alias("users")]
    for k in ks:
        inside = F.col("rank") <= k
        aggs += [F.sum(F.when(inside, 1).otherwise(0)).alias(f"h{k}"),
                 F.sum(F.when(inside, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0))
                 .alias(f"g{k}")]
    rows = found.groupBy("list").agg(*aggs)
    items = top.select("list", "item_id", "rank").groupBy("list", "item_id").agg(
        F.min("rank").alias("_best")).groupBy("list").agg(
        *[F.count(F.when(F.col("_best") <= k, 1)).alias(f"c{k}") for k in ks])
    per_k = F.explode(F.array(*[F.struct(F.lit(k).alias("k"), F.col(f"h{k}").alias("hits"),
                                         F.col(f"g{k}").alias("g"),
                                         F.coalesce(F.col(f"c{k}"), F.lit(0)).alias("c"))
                                for k in ks]))
    users = F.col("users")
    return (rows.join(items, "list", "left").select("list", "users", per_k.alias("_m"))
            .select("list", F.col("_m.k").alias("k"), users,
                    F.col("_m.hits").cast("long").alias("hits"),
                    (F.col("_m.hits") / F.greatest(users, F.lit(1))).alias("hr"),
                    (F.col("_m.g") / F.greatest(users, F.lit(1))).alias("ndcg"),
                    F.col("_m.c").cast("long").alias("items")))


# --------------------------------------------------------------------------------------------
# weight search: numpy core


def validation_rows(channels: DataFrame, targets: DataFrame, names: Sequence[str]) -> DataFrame:
    """One row per validation user for :func:`fused_hits`: ``(user_id, ranks
    array<array<int>>, target int)``. ``ranks[j][c]``: the rank of the user's j-th candidate
    (candidates in item-id order) in channel ``names[c]``, 0 when that channel does not list
    it; ``target``: the position j of the user's ``targets (user_id, item_id)`` item among
    the candidates, -1 when no channel lists it. Users without any candidate get no row."""
    per_item = (channels.filter(F.col("channel").isin(list(names)))
                .groupBy("user_id", "item_id")
                .agg(F.map_from_entries(F.collect_list(F.struct("channel", "rank"))).alias("_m")))
    vec = F.array(*[F.coalesce(F.col("_m")[n], F.lit(0)) for n in names])
    tgt = targets.select("user_id", F.col("item_id").alias("_t"))
    grouped = (per_item.select("user_id", "item_id", vec.alias("_v"))
               .groupBy("user_id").agg(F.array_sort(F.collect_list(
                   F.struct("item_id", "_v"))).alias("_c"))
               .join(tgt, "user_id"))
    return grouped.select(
        "user_id", F.transform("_c", lambda c: c["_v"]).alias("ranks"),
        (F.array_position(F.transform("_c", lambda c: c["item_id"]), F.col("_t")) - 1)
        .cast("int").alias("target"))


def fused_hits(ranks: np.ndarray, target: int, weights: np.ndarray, rr_k: np.ndarray,
               k: int) -> np.ndarray:
    """For one user, whether the target lands in the fused top ``k`` under each of ``W``
    settings: ``ranks`` (candidates x channels, 0 = not listed), ``weights`` (W x channels),
    ``rr_k`` (W,). Ties are broken as :func:`fuse` does (the candidate with the smaller
    position first, candidates being in item-id order). Returns a (W,) 0/1 array."""
    if target < 0:
        return np.zeros(len(weights), np.int64)
    listed = ranks > 0
    recip = listed[None] / (rr_k[:, None, None] + np.where(listed, ranks, 1.0)[None])
    scores = np.einsum("wjc,wc->wj", recip, weights)  # W x candidates
    t = scores[:, target:target + 1]
    ahead = (scores > t) | ((scores == t) & (np.arange(ranks.shape[0])[None] < target))
    return ((ahead.sum(axis=1) < k) & (t[:, 0] > 0)).astype(np.int64)


def coordinate_search(hits_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
                      n_channels: int, grid: Sequence[float], rr_ks: Sequence[float],
                      rounds: int) -> tuple[np.ndarray, float, list[dict[str, object]]]:
    """Coordinate ascent over the channel weights (each from ``grid``) and ``rr_k`` (from
    ``rr_ks``), starting from all weights 1 and the first ``rr_k``: in each round, each
    coordinate in turn takes the value whose setting scores the most hits (ties keep the
    current value). ``hits_of(weights W x C, rr_k (W,))`` returns each setting's total hits.
    Stops after ``rounds`` rounds or a round without a change. Returns ``(weights + [rr_k],
    best hits, trace)``; the trace lists each step's coordinate, value and hits."""
    current = np.append(np.ones(n_channels), float(rr_ks[0]))
    best = float(hits_of(current[None, :-1], current[None, -1])[0])
    trace: list[dict[str, object]] = [{"start": current.tolist(), "hits": best}]
    for _ in range(rounds):
        changed = False
        for c in range(n_channels + 1):
            values = list(rr_ks) if c == n_channels else list(grid)
            trials = np.repeat(current[None], len(values), axis=0)
            trials[:, c] = values
            if c < n_channels:  # at least one channel must keep a positive weight
                keep = trials[:, :-1].max(axis=1) > 0
                trials = trials[keep]
            hits = hits_of(trials[:, :-1], trials[:, -1])
            i = int(np.argmax(hits))
            if hits[i] > best:
                current, best, changed = trials[i], float(hits[i]), True
                trace.append({"coordinate": c, "value": float(trials[i, c]), "hits": best})
        if not changed:
            break
    return current, best, trace


# --------------------------------------------------------------------------------------------
# ALS user vectors folded in from a shortened history (the validation's, without the target)


def fold_in(factors: np.ndarray, values: np.ndarray, reg: float, alpha: float,
            yty: np.ndarray | None) -> np.ndarray:
    """One user's ALS factor solved against fixed item ``factors`` (history items x rank) with
    their ``values`` (the signal ALS trains on), as MLlib's ALS solves it: implicit (``yty`` =
    all item factors' Y^T Y given): ``(YtY + sum c y y^T + reg n I) x = sum (1 + c) y`` over
    the positive values, ``c = alpha x value``; explicit (``yty`` None): ``(sum y y^T + reg n
    I) x = sum value y``; ``n`` = the history's length. Returns the factor (rank,)."""
    rank = factors.shape[1]
    n = len(values)
    if n == 0:
        return np.zeros(rank, np.float32)
    if yty is None:
        a = factors.T @ factors
        b = factors.T @ values
    else:
        c = alpha * np.abs(values)
        a = yty + (factors.T * c) @ factors
        b = factors.T @ np.where(values > 0, 1.0 + c, 0.0)
    a = a + reg * n * np.eye(rank)
    return np.linalg.solve(a, b).astype(np.float32)


def fold_in_users(histories: DataFrame, item_factors: DataFrame, reg: float, alpha: float,
                  implicit: bool) -> DataFrame:
    """ALS user factors of ``histories (user_id, items array<string>, values array<double>)``
    folded in against ``item_factors (item_id, vector)`` (:func:`fold_in`; items without a
    factor skipped): ``(user_id, vector array<float>)``. The item factors are broadcast
    (O(catalogue x rank), as the top-K search does)."""
    from .topk import collect_matrix

    spark = item_factors.sparkSession
    ids, matrix = collect_matrix(item_factors, normalise=False)
    m64 = matrix.astype(np.float64)
    bc = spark.sparkContext.broadcast(({i: n for n, i in enumerate(ids)}, m64,
                                       m64.T @ m64 if implicit else None))

    def run(rows):
        index, y, yty = bc.value
        for r in rows:
            pos = [(index[i], v) for i, v in zip(r["items"], r["values"], strict=True)
                   if i in index]
            cols = np.array([p for p, _ in pos], np.int64)
            vals = np.array([v for _, v in pos], np.float64)
            yield r["user_id"], fold_in(y[cols], vals, reg, alpha, yty).tolist()

    return histories.rdd.mapPartitions(run).toDF("user_id string, vector array<float>")
