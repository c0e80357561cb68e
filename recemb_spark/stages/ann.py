"""Stage ``ann``: item_neighbors and user_candidates per model, with recall against exact."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import AnnConfig
from ..errors import StageError
from ..evaluation.popularity import popularity_segments
from ..interactions import rated_items
from ..metrics import metric_row, metrics_frame
from ..neighbors import blocks
from ..neighbors import nearest as ann
from ..neighbors.banded import BandLayout, lsh_core_seconds
from ..neighbors.exact import user_candidates
from ..neighbors.topk import exact_core_seconds
from ..runner.stage import StageContext

log = logging.getLogger(__name__)


#: an lsh layout estimated short of ``ann.target_recall`` must cost less than exact by this
#: factor to be chosen by ``auto`` (it gives up recall that exact does not)
SHORT_RECALL_FACTOR = 2.0


@dataclass
class Choice:
    """``auto``'s decision: the method, the tuned layout (lsh, or None) and the estimates."""

    method: str
    layout: tuple[BandLayout, np.ndarray] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def auto_prefers_exact(layout: BandLayout, n_items: int, dim: int, target: float
                       ) -> tuple[bool, dict[str, Any]]:
    """Whether exact is estimated to cost no more than the tuned lsh ``layout`` for the item
    self-join (an lsh layout short of ``target`` recall counts :data:`SHORT_RECALL_FACTOR`
    times its cost), and the estimates (core-seconds)."""
    exact_s = exact_core_seconds(n_items, n_items, dim)
    lsh_s = lsh_core_seconds(layout, n_items)
    factor = 1.0 if layout.est_recall >= target else SHORT_RECALL_FACTOR
    estimates = {"exact_core_seconds_est": round(exact_s, 1),
                 "lsh_core_seconds_est": round(lsh_s, 1),
                 "lsh_recall_est": round(layout.est_recall, 4)}
    return bool(exact_s <= lsh_s * factor), estimates


def choose_method(spark: SparkSession, items: DataFrame, cfg: AnnConfig, n_items: int,
                  dim: int) -> Choice:
    """``ann.method``, or for ``auto``: exact up to ``auto_exact_max_items`` items; above, the
    layout is tuned (:func:`recemb_spark.neighbors.nearest.item_layout`) and the cheaper by
    estimate is chosen (:func:`auto_prefers_exact`; lsh when ``ann.tune`` is off)."""
    if cfg.method != "auto":
        return Choice(cfg.method)
    if n_items <= cfg.auto_exact_max_items:
        return Choice("exact")
    if not cfg.tune:
        return Choice("lsh")
    layout = ann.item_layout(spark, items, cfg, cfg.k, n_items, dim)
    exact, estimates = auto_prefers_exact(layout[0], n_items, dim, cfg.target_recall)
    log.info("ann auto: %s (%s)", "exact" if exact else "lsh", estimates)
    return Choice("exact", None, estimates) if exact else Choice("lsh", layout, estimates)


def item_neighbors(spark: SparkSession, items: DataFrame, cfg: AnnConfig, method: str,
                   exact: str | None = None,
                   layout: tuple[BandLayout, np.ndarray] | None = None
                   ) -> tuple[DataFrame, dict[str, Any]]:
    """Top-``cfg.k`` neighbours of every item by ``method`` (unit vectors in); ``exact``: the
    path of the exact method (:data:`recemb_spark.neighbors.blocks.PATHS`, None = choose);
    ``layout``: the lsh layout when already tuned."""
    if method == "exact":
        return (ann.exact_item_neighbors(spark, items, cfg.k, path=exact,
                                         broadcast_max_mb=cfg.broadcast_max_mb), {})
    if method == "lsh":
        return ann.lsh_item_neighbors(spark, items, cfg, cfg.k, layout)
    return ann.spark_lsh_item_neighbors(spark, items, cfg, cfg.k)


def users_top_k(spark: SparkSession, items: DataFrame, users: DataFrame, seen: DataFrame,
                cfg: AnnConfig, method: str,
                exact: str | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """Top-``cfg.user_candidates_k`` unseen items per user by ``method``:
    ``(user_id, item_id, rank, score)``; ``exact`` as in :func:`item_neighbors`."""
    k = cfg.user_candidates_k
    if method == "exact":
        return user_candidates(spark, users, items, seen, k, "cosine", exact,
                               cfg.broadcast_max_mb), {}
    if method == "lsh":
        return ann.lsh_user_candidates(spark, items, users, seen, cfg, k)
    return ann.spark_lsh_user_candidates(spark, items, users, seen, cfg, k)


def run(ctx: StageContext) -> None:
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    a = cfg.ann
    present = wh.models("item_embeddings", run_date)
    models = [m for m in a.models if m in present]
    if not models:
        raise StageError(f"ann: no item_embeddings for any of {a.models} at dt={run_date} "
                         f"(present: {present}); run a model stage first")
    res.inputs = {"item_embeddings": [wh.partition_path("item_embeddings", run_date, m)
                                      for m in models]}
    seen = segments = None
    for model in models:
        items = ann.normalise(wh.read("item_embeddings", run_date, model)).persist()
        n_items, dim = blocks.table_shape(items)
        t0 = time.perf_counter()
        choice = choose_method(spark, items, a, n_items, dim)
        method = choice.method
        limit = blocks.broadcast_limit(spark, a.broadcast_max_mb)  # decided once per model
        exact = blocks.choose_path(n_items, dim, n_items, limit, k=a.k)
        neighbors, stats = item_neighbors(spark, items, a, method, exact, choice.layout)
        neighbors = neighbors.withColumn("method", F.lit(method)).persist()
        res.rows[f"item_neighbors_{model}"] = wh.write(neighbors, "item_neighbors", run_date,
                                                       model=model)
        seconds = time.perf_counter() - t0
        short = (neighbors.groupBy("item_id").count().filter(F.col("count") < a.k).count()
                 + n_items - neighbors.select("item_id").distinct().count())
        sample = ann.sample_ids(items, "item_id", a.recall_sample, a.seed)
        truth_path = blocks.choose_path(n_items, dim, min(a.recall_sample, n_items), limit,
                                        k=a.k)
        truth = ann.exact_item_neighbors(spark, items, a.k, only=sample,  # ground truth
                                         path=truth_path)
        recall = ann.recall_at_k(neighbors, truth, "item_id", "neighbor_id")
        res.details[model] = {"method": method, "items": n_items, "seconds": round(seconds, 3),
                              "items_with_fewer_than_k": short, "recall_at_k": recall,
                              "broadcast_limit_mb": round(limit / 2**20, 1),
                              "recall_path": truth_path, **choice.details, **stats}
        if method == "exact":
            res.details[model]["exact_path"] = exact
        res.metrics += [metric_row(model, "item_recall", a.k, recall),
                        metric_row(model, "item_seconds", 0, seconds),
                        metric_row(model, "items_with_fewer_than_k", a.k, short)]
        if "candidate_pairs" in stats:
            res.metrics.append(metric_row(model, "candidate_pairs", 0, stats["candidate_pairs"]))
        log.info("ann %s: %s over %d items in %.1fs, recall@%d %.3f", model, method, n_items,
                 seconds, a.k, recall)
        if segments is None:
            segments = popularity_segments(
                wh.read("ratings", run_date, needed_by="ann"), cfg.liked_min_rating,
                cfg.evaluate.head_share, cfg.evaluate.cold_max_events).persist()
        tail = tail_report(segments, items, neighbors)
        res.details[model].update(tail)
        res.metrics += [metric_row(model, name, a.k if "coverage" in name else 0, value)
                        for name, value in tail.items()]
        if a.user_candidates and wh.has("user_embeddings", run_date, model):
            if seen is None:
                ratings = wh.read("ratings", run_date, needed_by="ann")
                seen = rated_items(ratings).persist()
            users = ann.normalise(wh.read("user_embeddings", run_date, model),
                                  "user_id").persist()
            n_users = users.count()
            user_exact = blocks.choose_path(n_items, dim, n_users, limit,
                                            k=a.user_candidates_k)
            t0 = time.perf_counter()
            cands, _ = users_top_k(spark, items, users, seen, a, method, user_exact)
            cands = cands.withColumn("method", F.lit(method)).persist()
            res.rows[f"user_candidates_{model}"] = wh.write(cands, "user_candidates", run_date,
                                                            model=model)
            useconds = time.perf_counter() - t0
            user_sample = ann.sample_ids(users, "user_id", a.recall_sample, a.seed)
            user_truth = blocks.choose_path(n_items, dim, min(a.recall_sample, n_users),
                                                limit, k=a.user_candidates_k)
            utruth = user_candidates(spark, users.join(user_sample, "user_id"), items, seen,
                                     a.user_candidates_k, "cosine", user_truth)
            urecall = ann.recall_at_k(cands, utruth, "user_id", "item_id")
            res.details[model].update(user_seconds=round(useconds, 3), user_recall=urecall,
                                      user_recall_path=user_truth)
            if method == "exact":
                res.details[model]["user_exact_path"] = user_exact
            res.metrics += [metric_row(model, "user_recall", a.user_candidates_k, urecall),
                            metric_row(model, "user_seconds", 0, useconds)]
            cands.unpersist()
            users.unpersist()
        neighbors.unpersist()
        items.unpersist()
    res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                   stage="ann")
    for df in (seen, segments):
        if df is not None:
            df.unpersist()


def tail_report(segments: DataFrame, items: DataFrame, neighbors: DataFrame) -> dict[str, float]:
    """Long-tail figures of one model's tables: ``tail_coverage`` (share of the tail items
    that appear in some item's neighbour list), ``head_coverage`` likewise, and the items of
    each segment without a vector (``items_without_vector_head`` / ``_tail``).
    ``segments``: :func:`popularity_segments` of the date's ratings."""
    seg = segments.select("item_id", F.element_at("segments", 1).alias("segment"))
    listed = neighbors.select(F.col("neighbor_id").alias("item_id")).distinct()
    rows = (seg.join(listed.withColumn("_listed", F.lit(1)), "item_id", "left")
            .join(items.select("item_id").withColumn("_vec", F.lit(1)), "item_id", "left")
            .groupBy("segment")
            .agg(F.count("*").alias("n"), F.count("_listed").alias("listed"),
                 F.sum(F.when(F.col("_vec").isNull(), 1).otherwise(0)).alias("missing"))
            .collect())
    out: dict[str, float] = {}
    for r in rows:
        out[f"{r['segment']}_coverage"] = r["listed"] / max(r["n"], 1)
        out[f"items_without_vector_{r['segment']}"] = int(r["missing"])
    return out
