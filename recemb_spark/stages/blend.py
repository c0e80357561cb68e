"""Stage ``blend``: one candidate list per user, merged from every channel (after ``ann``).

Channels (``blend.channels``): ``user`` — each model's user-vector candidates; ``item`` — the
neighbours of the user's last liked items in each model's ``item_neighbors``; ``graph`` — the
items that followed them in the sessions (the ``item_graph`` table of ``deepwalk``, built from
the training sequences: channel ``graph_item``); ``popular``,
``recent`` (the last ``blend.recent_days`` of the log) and ``category`` (within the
categories of the user's latest liked items, when the items table has genres) popularity.
The merge is weighted reciprocal rank fusion (:func:`recemb_spark.neighbors.fusion.fuse`).
When the item ids and the neighbour tables fit the broadcast threshold (``ann.broadcast_max_mb``,
:func:`shared_catalogue`), every set of lists below is built in place, each task its users'
lists in numpy (:mod:`recemb_spark.neighbors.fusion_local`, :func:`lists_in_place`); above
it by keyed joins (:func:`channel_lists`). The rows are the same.

Three sets of lists are built, each only from data its purpose may see:

* *validation* (``blend.weights: auto``): with held-out pairs (the ``holdout`` table, which
  no model trained on), up to ``blend.validation_users`` of their users in each of two
  seeded halves (:func:`half_of`), their lists those the evaluation scores (built once for
  every held-out user, :func:`heldout_lists`); the weights
  and ``rr_k`` that put the most held-out items in the top ``blend.k`` are chosen by
  coordinate search (:func:`search`) three times: on each half alone (for the evaluation of
  the other half, manifest ``weights_for_half_<h>``) and on both (the published lists,
  ``details.weights``; ``weights_chosen_on``). Without held-out pairs: a seeded sample of
  users, the last liked item of their history as target, the channels built from the
  history before it — but every trained channel saw that target (on taobao-head ALS's
  fold-in found 99.6% of them there and none of the held-out items: the search gave it
  weight 4 and the blend scored 0.43x its best channel).
* *evaluation* (when the ``holdout`` table has pairs): every held-out user, channels from
  the training data only, cross-fitted: each half's users get the blend with the weights
  chosen on the other half, so no user is scored with weights chosen on it, and the figure
  rests on all the held-out users instead of half (on taobao-head's ~800 a half's standard
  error was ~0.02 at HR 0.2). The blend and every channel are scored on the held-out items
  (metrics ``blend`` and ``blend_<channel>``, stage ``blend``; with ``weights: auto`` also
  ``blend_equal``: every channel at weight 1 and ``blend.rr_k``, what the search bought).
* *published*: every user with an event, the channels with a positive weight built from
  every event, history excluded, filled to ``blend.k`` from popularity:
  ``user_candidates`` model ``blend``.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import BlendConfig, Config
from ..evaluation.holdout import fingerprint, last_liked, sample_users, without_holdout
from ..evaluation.scoring import holdout_cases
from ..ids import event_struct
from ..io.warehouse import Warehouse
from ..metrics import metric_row, metrics_frame
from ..models.als import training_frame
from ..models.registry import model_specs
from ..models.users import pool_user_vectors
from ..neighbors import fusion, fusion_local
from ..neighbors.blocks import broadcast_limit
from ..neighbors.exact import user_candidates
from ..rows import one_row
from ..runner.stage import StageContext, StageResult
from .evaluate import item_categories

log = logging.getLogger(__name__)

MODEL = "blend"
#: the item graph's key among the neighbour tables (channel ``graph_item``)
GRAPH = "graph"


@dataclass
class Role:
    """What one set of lists is built from: ``events`` (rating rows: histories and
    popularity), ``users`` (``user_id``: who gets a list), ``exclude`` (``(user_id,
    item_id)``: never listed), ``user_lists`` (model -> ranked user-vector candidates
    ``(user_id, item_id, rank)``) and ``ranked`` (those read as they are)."""

    events: DataFrame
    users: DataFrame
    exclude: DataFrame
    user_lists: dict[str, DataFrame]
    #: the models of ``user_lists`` whose lists leave out ``exclude`` already, ranked 1, 2, ...
    ranked: Collection[str] = ()
    #: ``(user_id, history, exclude)`` per user of ``users``: the liked items of ``events``
    #: oldest first and the ``exclude`` items, as the in-place lists read them
    #: (:func:`lists_in_place`); None: that path is not taken
    rows: DataFrame | None = None


def channel_lists(cfg: Config, role: Role, neighbors: dict[str, DataFrame],
                  categories: DataFrame | None, depth: int,
                  wanted: Collection[str] | None = None,
                  popular_depth: int | None = None) -> DataFrame:
    """Every enabled channel's lists for ``role``'s users (``depth`` items each), as one
    channel-list frame; with ``wanted``, only the channels it names. The ``popular`` channel
    is always built (it fills the gaps), ``popular_depth`` items deep when given."""
    b, min_rating = cfg.blend, cfg.liked_min_rating

    def on(name: str) -> bool:
        return wanted is None or name in wanted

    liked = role.events.filter(F.col("rating") >= F.lit(min_rating))
    mine = liked.join(role.users, "user_id")
    most = role.exclude.groupBy("user_id").count().agg(F.max("count").alias("m")).first()
    limit = depth + int((most and most["m"]) or 0)
    parts = [fusion.ranked_channel(lst, depth, f"{m}_user") if m in role.ranked
             else fusion.candidate_channel(lst, role.exclude, depth, f"{m}_user")
             for m, lst in role.user_lists.items() if on(f"{m}_user")]
    hist = fusion.liked_histories(mine, min_rating)
    parts += [fusion.neighbor_channel(hist, nb, b.last_items, role.exclude, depth, f"{m}_item")
              for m, nb in neighbors.items() if on(f"{m}_item")]
    everyone = role.users.select("user_id", F.lit("").alias("group"), F.lit(1).alias("_g"))
    parts.append(fusion.unseen_ranked(everyone, fusion.popularity_ranks(liked, limit),
                                     role.exclude, popular_depth or depth, "popular"))
    if "recent" in b.channels and on("recent"):
        recent = fusion.recent_events(liked, b.recent_days)
        parts.append(fusion.unseen_ranked(everyone, fusion.popularity_ranks(recent, limit),
                                         role.exclude, depth, "recent"))
    if "category" in b.channels and categories is not None and on("category"):
        groups = fusion.recent_categories(hist, categories, b.categories)
        parts.append(fusion.unseen_ranked(groups, fusion.popularity_ranks(liked, limit,
                                                                        categories),
                                         role.exclude, depth, "category"))
    return reduce(DataFrame.unionByName, parts)


@dataclass
class InPlace:
    """Lists built in place (:mod:`~recemb_spark.neighbors.fusion_local`): the ``lists``
    frame and the broadcast catalogue (the caller unpersists it when the lists are written or
    cached)."""

    lists: DataFrame
    broadcast: Any


def shared_catalogue(spark: SparkSession, cfg: Config, events: DataFrame,
                     neighbors: dict[str, DataFrame]
                     ) -> tuple[fusion_local.Catalogue | None, dict[str, Any]]:
    """The part of the in-place lists' catalogue every set of lists shares: the item ids of
    ``events`` (every rating: a superset of the training rows) and the neighbour tables,
    collected when they fit the broadcast threshold (``ann.broadcast_max_mb``), else None
    (the keyed path); and what was weighed, for the manifest."""
    limit = broadcast_limit(spark, cfg.ann.broadcast_max_mb)
    tables = {f"{m}_item": nb for m, nb in neighbors.items()}
    items = reduce(DataFrame.unionByName, [
        events.select("item_id"),
        *[nb.select(F.col(c).alias("item_id")) for nb in tables.values()
          for c in ("item_id", "neighbor_id")]]).distinct().persist()  # counted, then collected
    n_items = items.count() if limit > 0 else 0
    n_rows = sum(nb.count() for nb in tables.values()) if limit > 0 else 0
    weight = fusion_local.catalogue_bytes(n_items, n_rows)
    fits = 0 < limit and weight <= limit
    details = {"in_place": fits, "items": n_items, "neighbor_rows": n_rows,
               "broadcast_mb": round(weight / 2**20, 1), "limit_mb": round(limit / 2**20, 1)}
    log.info("blend: lists %s: the catalogue (%d items, %d neighbour rows, %.0f MB) against "
             "the broadcast threshold (%.0f MB)", "built in place" if fits else "by keyed joins",
             n_items, n_rows, weight / 2**20, limit / 2**20)
    if not fits:
        items.unpersist()
        return None, details
    ids = fusion_local.sorted_ids(items)
    items.unpersist()
    return fusion_local.Catalogue(ids, {name: fusion_local.neighbor_csr(nb, ids)
                                        for name, nb in tables.items()}), details


def lists_in_place(spark: SparkSession, cfg: Config, role: Role,
                   shared: fusion_local.Catalogue | None, categories: DataFrame | None,
                   depth: int, wanted: Collection[str] | None = None,
                   popular_depth: int | None = None,
                   fused: fusion_local.Fusion | None = None) -> InPlace | None:
    """:func:`channel_lists` (or, with ``fused``, those lists fused and filled as
    :func:`~recemb_spark.neighbors.fusion.fuse_filled` fuses them) built in place, each
    task its users' lists against the broadcast :func:`shared_catalogue` with the
    popularity rankings of ``role.events`` and the ``categories``; None when ``role.rows``
    or ``shared`` is None (the caller takes the keyed path). The same rows either way."""
    if role.rows is None or shared is None:
        return None
    b = cfg.blend

    def on(name: str) -> bool:
        return wanted is None or name in wanted

    liked = role.events.filter(F.col("rating") >= F.lit(cfg.liked_min_rating))
    ranked_by = {"popular": liked}
    if "recent" in b.channels and on("recent"):
        ranked_by["recent"] = fusion.recent_events(liked, b.recent_days)
    cats = categories if "category" in b.channels and on("category") else None
    tables = {name: csr for name, csr in shared.neighbors.items() if on(name)}
    catalogue = fusion_local.with_rankings(fusion_local.Catalogue(shared.ids, tables),
                                           ranked_by, cats)
    bc = spark.sparkContext.broadcast(catalogue)
    lists = {f"{m}_user": lst.filter(F.col("rank") <= depth) if m in role.ranked else lst
             for m, lst in role.user_lists.items() if on(f"{m}_user")}
    plan = fusion_local.Plan(tuple(lists), tuple(tables), tuple(ranked_by), cats is not None,
                             depth, popular_depth or depth, b.last_items, b.categories)
    users = fusion_local.with_lists(role.rows, lists)
    return InPlace(fusion_local.lists_in_place(users, bc, plan, fused), bc)


def published_rows(ratings: DataFrame, min_rating: float) -> DataFrame:
    """``(user_id, history, exclude)``: every user with an event, their liked items (rating
    >= ``min_rating``) oldest first (as :func:`~recemb_spark.neighbors.fusion.liked_histories`
    orders them) and every item they rated. One aggregation."""
    liked = F.col("rating") >= F.lit(min_rating)
    return (ratings.groupBy("user_id")
            .agg(F.array_sort(F.collect_list(F.when(liked, event_struct()))).alias("_h"),
                 F.collect_list("item_id").alias("exclude"))
            .select("user_id", F.transform("_h", lambda e: e["item_id"]).alias("history"),
                    "exclude"))


def _similarity(cfg: Config) -> dict[str, str]:
    return {s.model_name(cfg): s.user_similarity for s in model_specs()}


def _vector_lists(spark: SparkSession, wh: Warehouse, cfg: Config, run_date: str,
                  models: list[str], users: DataFrame, exclude: DataFrame, depth: int,
                  events: DataFrame | None = None) -> dict[str, DataFrame]:
    """User-vector candidates of ``users`` computed from the stored embeddings (exact top
    ``depth``, ``exclude`` pairs left out). With ``events`` (the validation's shortened
    histories), user vectors are made again from them: pooled models pool them, ALS folds
    them in against its item factors (:func:`~recemb_spark.neighbors.fusion.fold_in_users`);
    without, the stored user vectors are used."""
    sim = _similarity(cfg)
    ex = exclude.groupBy("user_id").agg(F.collect_list("item_id").alias("items"))
    out = {}
    for m in models:
        items = wh.read("item_embeddings", run_date, model=m).select("item_id", "vector")
        if events is None:
            vectors = wh.read("user_embeddings", run_date, model=m).join(users, "user_id")
        elif sim.get(m, "cosine") == "cosine":
            context = events.filter(F.col("rating") >= F.lit(cfg.context_min_rating))
            histories = fusion.liked_histories(context.join(users, "user_id"), float("-inf"))
            vectors = pool_user_vectors(histories, items, cfg.users.pooling,
                                        cfg.users.half_life)
        else:
            vectors = _als_fold_in(wh, cfg, run_date, events.join(users, "user_id"), items)
        out[m] = user_candidates(spark, vectors.select("user_id", "vector"), items, ex, depth,
                                 sim.get(m, "cosine")).select("user_id", "item_id", "rank")
    return out


def _als_fold_in(wh: Warehouse, cfg: Config, run_date: str, events: DataFrame,
                 items: DataFrame) -> DataFrame:
    """ALS user factors folded in from ``events`` with the alpha the als stage used."""
    alpha = cfg.als.alpha
    if cfg.als.implicit_prefs and not alpha:  # auto: the alpha the als stage chose
        try:
            alpha = wh.read_manifest(run_date, "als").get("details", {}).get("alpha", 0.0)
        except Exception:  # no manifest (tables copied by hand)
            log.warning("blend: no als manifest for %s; folding in with alpha 1", run_date)
        alpha = float(alpha or 1.0)
    rows = training_frame(events, cfg.als)
    histories = rows.groupBy("user_id").agg(
        F.collect_list("item_id").alias("items"),
        F.collect_list(F.col("signal").cast("double")).alias("values"))
    return fusion.fold_in_users(histories, items, cfg.als.reg_param, alpha,
                               cfg.als.implicit_prefs)


def excluded_already(wh: Warehouse, run_date: str, models: Collection[str]) -> set[str]:
    """The ``models`` whose stored ``user_candidates`` of ``run_date`` leave out every rated
    pair of that date's ratings already: written by the ``ann`` or ``als`` stage (both
    leave out every item the user rated, ranking the rest 1, 2, ...) in a run that started
    after the ``tables`` stage had written the ratings. A missing or failed manifest: none."""
    def manifest(stage: str) -> dict[str, Any]:
        try:
            return wh.read_manifest(run_date, stage)
        except Exception:  # never ran for this date, or the file is unreadable
            return {}

    def when(m: dict[str, Any], key: str) -> dt.datetime | None:
        try:
            return dt.datetime.fromisoformat(str(m[key])) if m.get("status") == "ok" else None
        except (KeyError, ValueError):
            return None

    done = when(manifest("tables"), "finished_at")
    out: set[str] = set()
    for stage in ("ann", "als"):
        m = manifest(stage)
        started = when(m, "started_at")
        if done is None or started is None or started < done:
            continue
        outputs = set(m.get("outputs", []))
        out |= {x for x in models if f"user_candidates/dt={run_date}/model={x}" in outputs}
    return out


def _pairs(events: DataFrame, min_rating: float | None, on: bool) -> DataFrame:
    """``(user_id, item_id)`` to exclude: the (liked, when ``min_rating``) rows of
    ``events``, or none when not ``on``."""
    if min_rating is not None:
        events = events.filter(F.col("rating") >= F.lit(min_rating))
    pairs = events.select("user_id", "item_id")
    return pairs if on else pairs.limit(0)


def heldout_role(spark: SparkSession, wh: Warehouse, cfg: Config, run_date: str,
                 train: DataFrame, cases: DataFrame, user_models: list[str],
                 depth: int) -> Role:
    """The lists' inputs for held-out ``cases`` (:func:`holdout_cases`): their users, their
    training history excluded, the stored user vectors' candidates; popularity from
    ``train``."""
    users = cases.select("user_id")
    exclude = _pairs(cases.select("user_id", F.explode("history").alias("item_id")), None,
                     cfg.evaluate.exclude_history)
    lists = _vector_lists(spark, wh, cfg, run_date, user_models, users, exclude, depth)
    rows = cases.select("user_id", "history", (
        F.col("history") if cfg.evaluate.exclude_history
        else F.array().cast("array<string>")).alias("exclude"))
    return Role(train, users, exclude, lists, rows=rows)


def half_of(seed: int) -> Column:
    """The held-out users' half (0 or 1) by a seeded hash of ``user_id``."""
    return F.pmod(F.xxhash64("user_id", F.lit(seed)), F.lit(2)).cast("int")


@dataclass
class Choice:
    """The blend's weights and ``rr_k``: ``published`` (chosen on every validation user) and,
    with held-out pairs, ``folds[h]``: chosen on the users of the other half only, what the
    evaluation applies to the users of half ``h`` (cross-fitting: no user is scored with
    weights chosen on it)."""

    published: tuple[dict[str, float], float]
    folds: dict[int, tuple[dict[str, float], float]] = field(default_factory=dict)


@dataclass
class Heldout:
    """The held-out users as the stage uses them: ``pairs (user_id, item_id)`` (the holdout
    table, which no model trained on), their evaluation ``cases`` (:func:`holdout_cases`) and
    every channel's ``lists`` for them (:func:`heldout_lists`), built once for the weight
    search and the evaluation. Cached by the caller."""

    pairs: DataFrame
    cases: DataFrame
    lists: DataFrame

    def unpersist(self) -> None:
        """Release the cached cases and lists (the pairs belong to the caller)."""
        self.lists.unpersist()
        self.cases.unpersist()


def choose_weights(spark: SparkSession, wh: Warehouse, cfg: Config, run_date: str,
                   train: DataFrame, user_models: list[str], neighbors: dict[str, DataFrame],
                   categories: DataFrame | None, res: StageResult,
                   held: Heldout | None = None) -> Choice:
    """The channel weights and ``rr_k``: ``blend.fixed_weights`` (1 for a channel not named)
    with ``weights: fixed``, else chosen by the search — on ``held``, held-out users the
    models never trained on (up to ``blend.validation_users`` per half, their lists those
    the evaluation scores; each half searched alone for the other half's evaluation and
    both together for the published lists), or without held-out pairs on a validation
    split of ``train`` (see the module doc)."""
    b = cfg.blend
    names = channel_names(cfg, user_models, neighbors, categories)
    if b.weights == "fixed":
        fixed = ({n: float(b.fixed_weights.get(n, 1.0)) for n in names}, float(b.rr_k))
        return Choice(fixed, {0: fixed, 1: fixed})
    min_rating = cfg.liked_min_rating
    with res.timed("validation"):
        if held is not None:
            halves = held.pairs.withColumn("_half", half_of(b.seed))
            targets = sample_users(halves.filter(F.col("_half") == 0), b.validation_users,
                                   b.seed).unionByName(sample_users(
                                       halves.filter(F.col("_half") == 1),
                                       b.validation_users, b.seed))
            targets = targets.select("user_id", "item_id", "_half").persist()
            chans = held.lists.filter(F.col("rank") <= b.depth).join(
                targets.select("user_id"), "user_id")
        else:
            targets = sample_users(last_liked(train, min_rating), b.validation_users,
                                   b.seed).select("user_id", "item_id",
                                                  F.lit(0).alias("_half")).persist()
            events = without_holdout(train, targets)
            users = targets.select("user_id")
            exclude = _pairs(events.join(users, "user_id"), min_rating,
                             cfg.evaluate.exclude_history)
            role = Role(events, users, exclude, _vector_lists(
                spark, wh, cfg, run_date, user_models, users, exclude, b.depth, events))
            chans = channel_lists(cfg, role, neighbors, categories, b.depth)
        rows = fusion.validation_rows(chans, targets.drop("_half"), names).join(
            targets.select("user_id", "_half"), "user_id")
        # at most 2 x validation_users x channels x depth ranks: collected once, searched on
        # the driver
        cases = [(int(r["_half"]), np.asarray(r["ranks"], np.float64).reshape(-1, len(names)),
                  r["target"]) for r in rows.collect()]
        n_users = targets.count()
        targets.unpersist()
    with res.timed("weight_search"):
        found = search(cases, names, b)
        folds = {}
        if held is not None:
            for h in (0, 1):
                other = search(cases, names, b, skip=h)
                folds[h] = (other.weights, other.rr_k)
                res.details[f"weights_for_half_{h}"] = {**other.weights, "rr_k": other.rr_k}
                res.details[f"validation_users_half_{h}"] = sum(1 for c in cases if c[0] == h)
    share = 1.0 / max(n_users, 1)
    res.details.update(
        validation_users=n_users, validation_hr=round(found.hits * share, 4),
        validation_hr_alone={n: round(int(h) * share, 4)
                             for n, h in zip(names, found.alone, strict=True)},
        weight_search=found.trace)
    log.info("blend: weights %s, rr_k %s: validation HR@%d %.4f on %d users (channels alone: "
             "%s)", found.weights, found.rr_k, b.k, found.hits * share, n_users,
             res.details["validation_hr_alone"])
    return Choice((found.weights, found.rr_k), folds)


@dataclass
class Found:
    """What :func:`search` found: the weights per channel, ``rr_k``, the hits they score,
    each channel's hits alone, and the search's trace."""

    weights: dict[str, float]
    rr_k: float
    hits: float
    alone: np.ndarray
    trace: list[dict[str, object]]


def search(cases: list[tuple[int, np.ndarray, int]], names: list[str], b: BlendConfig,
           skip: int | None = None) -> Found:
    """:func:`~recemb_spark.neighbors.fusion.coordinate_search` of the weights and ``rr_k``
    over the validation ``cases`` ``(half, ranks, target)``, those of half ``skip`` left out
    (hits in the top ``blend.k``)."""
    chosen = [(ranks, target) for half, ranks, target in cases
              if half != skip and target >= 0]

    def hits_of(weights: np.ndarray, rr_ks: np.ndarray) -> np.ndarray:
        total = np.zeros(len(weights), np.int64)
        for ranks, target in chosen:
            total += fusion.fused_hits(ranks, target, weights, rr_ks, b.k)
        return total

    alone = hits_of(np.eye(len(names)), np.full(len(names), float(b.rr_k)))
    best, hits, trace = fusion.coordinate_search(hits_of, len(names), b.weight_grid,
                                                [b.rr_k, *b.rr_k_grid], b.search_rounds)
    return Found({n: float(w) for n, w in zip(names, best[:-1], strict=True)},
                 float(best[-1]), hits, alone, trace)


def channel_names(cfg: Config, user_models: list[str], neighbors: dict[str, DataFrame],
                  categories: DataFrame | None) -> list[str]:
    """The channel names :func:`channel_lists` produces for this config and these tables."""
    b = cfg.blend
    names = [f"{m}_user" for m in user_models] + [f"{m}_item" for m in neighbors]
    names.append("popular")
    if "recent" in b.channels:
        names.append("recent")
    if "category" in b.channels and categories is not None:
        names.append("category")
    return names


def heldout_lists(spark: SparkSession, wh: Warehouse, cfg: Config, run_date: str,
                  train: DataFrame, cases: DataFrame, user_models: list[str],
                  neighbors: dict[str, DataFrame], categories: DataFrame | None,
                  shared: fusion_local.Catalogue | None = None
                  ) -> tuple[DataFrame, InPlace | None]:
    """Every channel's lists for the held-out ``cases`` (:func:`holdout_cases`), from the
    training data only, ``max(evaluate.ks, blend.depth)`` deep: what the evaluation scores
    and, cut to ``blend.depth``, what the weight search reads for its sampled users (a
    user's lists do not depend on the other users asked). Built in place against ``shared``
    (:func:`shared_catalogue`; then also returned as :class:`InPlace`), else by keyed
    joins."""
    depth = max(max(cfg.evaluate.ks), cfg.blend.depth)
    role = heldout_role(spark, wh, cfg, run_date, train, cases, user_models, depth)
    local = lists_in_place(spark, cfg, role, shared, categories, depth)
    if local is not None:
        return local.lists, local
    return channel_lists(cfg, role, neighbors, categories, depth), None


def evaluate(train: DataFrame, held: Heldout, cfg: Config, names: list[str], choice: Choice,
             res: StageResult) -> None:
    """Score the blend and each channel (``names``) on every held-out pair of ``held``: the
    users of each half get the blend with the weights chosen on the other half
    (``choice.folds``)."""
    ks, cases, chans = cfg.evaluate.ks, held.cases, held.lists
    halves = cases.select("user_id", half_of(cfg.blend.seed).alias("_half"))
    assert sorted(choice.folds) == [0, 1], "a weight choice per half"
    parts = [fusion.fuse(chans.join(halves.filter(F.col("_half") == h).select("user_id"),
                                    "user_id"), weights, rr_k, max(ks))
             for h, (weights, rr_k) in sorted(choice.folds.items())]
    fused = reduce(DataFrame.unionByName, parts).persist()
    catalogue = train.select("item_id").distinct().count()
    lists = [fused.select(F.lit(MODEL).alias("list"), "user_id", "item_id", "rank"),
             chans.select(F.concat(F.lit(f"{MODEL}_"), "channel").alias("list"), "user_id",
                          "item_id", "rank")]
    if cfg.blend.weights == "auto":  # what the search bought: every channel at weight 1
        lists.append(fusion.fuse(chans, dict.fromkeys(names, 1.0), cfg.blend.rr_k, max(ks))
                     .select(F.lit(f"{MODEL}_equal").alias("list"), "user_id", "item_id",
                             "rank"))
    order = [MODEL, *([f"{MODEL}_equal"] if cfg.blend.weights == "auto" else []),
             *[f"{MODEL}_{n}" for n in names]]
    rows: dict[str, list[Any]] = {}
    for r in fusion.list_metrics(reduce(DataFrame.unionByName, lists), cases, ks,
                                 order).collect():
        rows.setdefault(r["list"], []).append(r)
    for model in order:
        by_k = sorted(rows[model], key=lambda r: r["k"])
        res.metrics.append(metric_row(model, "users", 0, by_k[0]["users"]))
        for r in by_k:
            res.metrics += [metric_row(model, "hr", r["k"], r["hr"]),
                            metric_row(model, "ndcg", r["k"], r["ndcg"])]
        res.metrics.append(metric_row(model, "coverage", ks[0],
                                      by_k[0]["items"] / max(catalogue, 1)))
    fused.unpersist()


def run(ctx: StageContext) -> None:
    """Choose the weights, evaluate the blend, write ``user_candidates`` model ``blend``."""
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    b = cfg.blend
    res.inputs.update(ratings=wh.partition_path("ratings", run_date))
    ratings = wh.read("ratings", run_date, needed_by="blend")
    user_models = []
    if "user" in b.channels:  # models with candidates and the vectors to build them again
        user_models = [m for m in wh.models("user_candidates", run_date) if m != MODEL
                       and wh.has("user_embeddings", run_date, m)
                       and wh.has("item_embeddings", run_date, m)]
    neighbors = {}
    if "item" in b.channels:
        neighbors = {m: wh.read("item_neighbors", run_date, model=m).persist()
                     for m in wh.models("item_neighbors", run_date)}
    if "graph" in b.channels and wh.has("item_graph", run_date):
        neighbors[GRAPH] = fusion.graph_neighbors(wh.read("item_graph", run_date),
                                                  b.depth).persist()
    categories = item_categories(wh, run_date) if "category" in b.channels else None
    if categories is not None:
        categories = categories.persist()
    res.inputs.update(user_candidates=user_models,
                      item_neighbors=sorted(m for m in neighbors if m != GRAPH),
                      item_graph=GRAPH in neighbors,
                      categories=categories is not None)
    holdout = (wh.read("holdout", run_date) if wh.has("holdout", run_date)
               else ratings.select("user_id", "item_id").limit(0)).persist()
    n_holdout = fingerprint(holdout).pairs
    train = without_holdout(ratings, holdout) if n_holdout else ratings
    if not n_holdout and b.weights == "auto":
        log.warning("blend: no held-out pairs for %s (the tables stage ran with "
                    "evaluate.protocol retrain, or auto with the blend off): the weights "
                    "come from a validation split every trained channel saw, and the blend "
                    "is not evaluated; run the tables stage with blend.enabled=true or "
                    "evaluate.protocol=holdout", run_date)
    # with held-out pairs (models trained without them): weights chosen on held-out users,
    # each half's blend scored with the weights of the other half. A validation split
    # inside the training data leaks into every trained channel (on taobao-head ALS's
    # fold-in found 99.6% of the validation targets and none of the held-out items)
    # the ids and neighbour tables every set of lists reads, when they fit a broadcast
    with res.timed("catalogue"):
        shared, res.details["catalogue"] = shared_catalogue(spark, cfg, ratings, neighbors)
    held, local = None, None
    if n_holdout:  # every held-out user's lists, built once: the search and the evaluation
        with res.timed("heldout_lists"):
            cases = holdout_cases(train, holdout, cfg.liked_min_rating).persist()
            chans, local = heldout_lists(spark, wh, cfg, run_date, train, cases, user_models,
                                         neighbors, categories, shared)
            held = Heldout(holdout, cases, chans.persist())
            res.details["heldout_list_rows"] = held.lists.count()
    choice = choose_weights(spark, wh, cfg, run_date, train, user_models, neighbors,
                            categories, res, held)
    weights, rr_k = choice.published
    res.details.update(weights=weights, rr_k=rr_k, channels=sorted(weights),
                       weights_chosen_on="held-out users (evaluated cross-fitted by halves)"
                       if held is not None else "validation split")
    if held is not None:
        with res.timed("evaluate"):
            evaluate(train, held, cfg, channel_names(cfg, user_models, neighbors, categories),
                     choice, res)
        held.unpersist()
        if local is not None:
            local.broadcast.unpersist()
    with res.timed("publish"):
        users = ratings.select("user_id").distinct().persist()
        n_users = users.count()
        wanted = {c for c, w in weights.items() if w > 0}
        lists = {m: wh.read("user_candidates", run_date, model=m).select(
            "user_id", "item_id", "rank") for m in user_models if f"{m}_user" in wanted}
        ranked = excluded_already(wh, run_date, lists)
        # only the channels with a weight; popularity, when it only fills, as deep as a fill
        # can reach (k items past the at most k fused)
        role = Role(ratings, users, ratings.select("user_id", "item_id"), lists, ranked,
                    rows=published_rows(ratings, cfg.liked_min_rating))
        popular_depth = None if "popular" in wanted else min(b.depth, 2 * b.k)
        published = lists_in_place(spark, cfg, role, shared, categories, b.depth, wanted,
                                   popular_depth, fusion_local.Fusion(weights, rr_k, b.k))
        if published is not None:
            top = published.lists
        else:
            chans = channel_lists(cfg, role, neighbors, categories, b.depth, wanted,
                                  popular_depth)
            top = fusion.fuse_filled(chans, weights, rr_k, b.k, "popular", fuse_partitions(
                spark, n_users * (len(wanted) + 1) * b.depth))
        res.rows["user_candidates_blend"] = wh.write(top.withColumn("method", F.lit(MODEL)),
                                                     "user_candidates", run_date, model=MODEL)
        if published is not None:
            published.broadcast.unpersist()
        written = wh.read("user_candidates", run_date, model=MODEL)
        listed = one_row(written.groupBy("user_id").count().agg(
            F.count(F.lit(1)).alias("listed"),
            F.count(F.when(F.col("count") < b.k, 1)).alias("short")))
        res.details.update(users=n_users, users_listed=int(listed["listed"]),
                           users_short=int(listed["short"]),
                           channels_published=sorted(wanted | {"popular"}),
                           user_channels_without_anti_join=sorted(ranked))
        users.unpersist()
    if res.metrics:
        res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                       stage="blend")
        log.info("blend evaluation:\n%s", format_blend(res.metrics, cfg.evaluate.ks))
    for df in (holdout, categories, *neighbors.values()):
        if df is not None:
            df.unpersist()


#: channel rows one task of the published lists' fusion aggregates at most. Measured on the
#: 5M-event log (227k users, nine channels 50 deep: 87M rows, 52M (user, item) groups): in
#: the 4 partitions of the local default (2 x cores) the aggregation spilled 9.4 GB and its
#: build took 138 s of the 251-second publish; in 32, 83 s without a spill (publish 219 s)
FUSE_ROWS_PER_PARTITION = 2_000_000


def fuse_partitions(spark: SparkSession, rows: int) -> int:
    """Partitions for fusing about ``rows`` channel rows: one per
    :data:`FUSE_ROWS_PER_PARTITION`, or 0 (keep the plan's own) when
    ``spark.sql.shuffle.partitions`` already gives that many."""
    wanted = math.ceil(rows / FUSE_ROWS_PER_PARTITION)
    current = int(spark.conf.get("spark.sql.shuffle.partitions") or 0)
    return wanted if wanted > current else 0


def format_blend(metrics: list[dict[str, Any]], ks: list[int]) -> str:
    """A small text table of the blend stage's metric rows: one line per list."""
    by: dict[str, dict[str, float]] = {}
    for m in metrics:
        by.setdefault(m["model"], {})[f"{m['metric']}@{m['k']}" if m["k"] else m["metric"]] = (
            m["value"])
    cols = [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{ks[0]}"]
    w = max(len(n) for n in by) + 2
    lines = [f"{'list':<{w}}" + "".join(f"{c:>12}" for c in cols) + f"{'users':>8}"]
    for name, vals in by.items():
        lines.append(f"{name:<{w}}" + "".join(f"{vals.get(c, float('nan')):>12.4f}"
                                              for c in cols) + f"{int(vals['users']):>8}")
    return "\n".join(lines)
