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
from ..neighbors.ivf import IvfIndex, ivf_core_seconds
from ..neighbors.topk import exact_core_seconds
from ..runner.stage import StageContext

log = logging.getLogger(__name__)


#: a method tuned short of ``ann.target_recall`` must cost less than exact by this factor to
#: be chosen by ``auto`` (it gives up recall that exact does not)
SHORT_RECALL_FACTOR = 2.0
#: ``auto``'s preference among methods of equal estimated cost
AUTO_ORDER = ("exact", "ivf", "lsh")


@dataclass
class Choice:
    """The method of one model, what was tuned for it (reused by the item search), and
    ``auto``'s estimates. ``layout``: the lsh layout and projections; ``index``: the ivf
    index tuned for item queries and the items with their lists (persisted until
    :meth:`release`)."""

    method: str
    layout: tuple[BandLayout, np.ndarray] | None = None
    index: tuple[IvfIndex, DataFrame] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Unpersist the ivf items, if any."""
        if self.index is not None:
            self.index[1].unpersist()


def auto_method(layout: BandLayout, index: IvfIndex, n_items: int, dim: int,
                target: float, broadcast: bool = False) -> tuple[str, dict[str, Any]]:
    """The method of lowest estimated core-seconds for the item self-join, and the
    estimates: exact (:func:`~recemb_spark.neighbors.topk.exact_core_seconds`), the tuned
    ivf ``index`` (:func:`~recemb_spark.neighbors.ivf.ivf_core_seconds`, on the path
    ``broadcast`` says) and the tuned lsh
    ``layout`` (:func:`~recemb_spark.neighbors.banded.lsh_core_seconds`); a method estimated
    short of ``target`` recall counts :data:`SHORT_RECALL_FACTOR` times its cost; ties go
    by :data:`AUTO_ORDER`."""
    def factor(recall: float) -> float:
        return 1.0 if recall >= target else SHORT_RECALL_FACTOR

    costs = {"exact": exact_core_seconds(n_items, n_items, dim),
             "ivf": ivf_core_seconds(index, n_items, n_items, dim, broadcast),
             "lsh": lsh_core_seconds(layout, n_items)}
    weighted = {"exact": costs["exact"], "ivf": costs["ivf"] * factor(index.est_recall),
                "lsh": costs["lsh"] * factor(layout.est_recall)}
    method = min(AUTO_ORDER, key=lambda m: (weighted[m], AUTO_ORDER.index(m)))
    estimates = {f"{m}_core_seconds_est": round(c, 1) for m, c in costs.items()}
    estimates.update(lsh_recall_est=round(layout.est_recall, 4),
                     ivf_recall_est=round(index.est_recall, 4))
    return method, estimates


def ivf_choice(spark: SparkSession, items: DataFrame, cfg: AnnConfig, n_items: int, dim: int,
               sample: ann.TuneSample | None = None,
               broadcast: bool = False) -> tuple[IvfIndex, DataFrame]:
    """The ivf index of ``items``, its lists chosen for the path ``broadcast`` says and its
    probes tuned for the item queries (on ``sample`` when given, else on a sample drawn
    here)."""
    sample = sample or ann.tune_queries(spark, items, items, cfg.k, True, n_items, dim,
                                        cfg.ivf_tune_sample, cfg.seed)
    index, assigned = ann.ivf_index(spark, items, cfg, n_items, dim, sample, n_items,
                                    broadcast)
    tuned = ann.ivf_tuned(spark, items, items, index, cfg, cfg.k, True, n_items, dim, sample)
    return tuned, assigned


def choose_method(spark: SparkSession, items: DataFrame, cfg: AnnConfig, n_items: int,
                  dim: int, broadcast: bool = False) -> Choice:
    """``ann.method`` (ivf: its index built and tuned), or for ``auto``: exact up to
    ``auto_exact_max_items`` items; above, the lsh layout and the ivf index are tuned on one
    sample and the cheapest method by estimate is chosen (:func:`auto_method`; lsh when
    ``ann.tune`` is off). ``broadcast``: whether the ivf search may broadcast the items
    (:func:`ivf_path`)."""
    if cfg.method == "ivf" and n_items:
        return Choice("ivf", index=ivf_choice(spark, items, cfg, n_items, dim,
                                              broadcast=broadcast))
    if cfg.method == "ivf":  # no items: nothing to cluster, the exact search of nothing
        return Choice("exact")
    if cfg.method != "auto":
        return Choice(cfg.method)
    if n_items <= cfg.auto_exact_max_items:
        return Choice("exact")
    if not cfg.tune:
        return Choice("lsh")
    sample = ann.tune_queries(spark, items, items, cfg.k, True, n_items, dim,
                              max(cfg.tune_sample, cfg.ivf_tune_sample), cfg.seed)
    layout = ann.item_layout(spark, items, cfg, cfg.k, n_items, dim, sample)
    index = ivf_choice(spark, items, cfg, n_items, dim, sample, broadcast)
    method, estimates = auto_method(layout[0], index[0], n_items, dim, cfg.target_recall,
                                    broadcast)
    log.info("ann auto: %s (%s)", method, estimates)
    choice = Choice(method, layout if method == "lsh" else None,
                    index if method == "ivf" else None, estimates)
    if method != "ivf":
        index[1].unpersist()
    return choice


def ivf_path(exact: str | None) -> str:
    """The ivf search's path for the exact method's ``exact`` path: ``broadcast`` when the
    item matrix may be broadcast (the one threshold, :func:`~recemb_spark.neighbors.blocks.
    choose_path`), else ``sharded``."""
    return "broadcast" if exact == "broadcast" else "sharded"


def item_neighbors(spark: SparkSession, items: DataFrame, cfg: AnnConfig, choice: Choice,
                   exact: str | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """Top-``cfg.k`` neighbours of every item by ``choice.method`` (unit vectors in);
    ``exact``: the path of the exact method (:data:`recemb_spark.neighbors.blocks.PATHS`,
    None = choose); what ``choice`` tuned is reused."""
    if choice.method == "exact":
        return (ann.exact_item_neighbors(spark, items, cfg.k, path=exact,
                                         broadcast_max_mb=cfg.broadcast_max_mb), {})
    if choice.method == "ivf":
        assert choice.index is not None  # choose_method builds it
        return ann.ivf_item_neighbors(spark, items, choice.index[1], choice.index[0], cfg.k,
                                      ivf_path(exact))
    if choice.method == "lsh":
        return ann.lsh_item_neighbors(spark, items, cfg, cfg.k, choice.layout)
    return ann.spark_lsh_item_neighbors(spark, items, cfg, cfg.k)


def users_top_k(spark: SparkSession, items: DataFrame, users: DataFrame, seen: DataFrame,
                cfg: AnnConfig, choice: Choice, n_items: int, dim: int,
                exact: str | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """Top-``cfg.user_candidates_k`` unseen items per user by ``choice.method``:
    ``(user_id, item_id, rank, score)``; ``exact`` as in :func:`item_neighbors`; ivf reuses
    the index and tunes its probes for the user queries."""
    k = cfg.user_candidates_k
    if choice.method == "exact":
        return user_candidates(spark, users, items, seen, k, "cosine", exact,
                               cfg.broadcast_max_mb), {}
    if choice.method == "ivf":
        assert choice.index is not None
        return ann.ivf_user_candidates(spark, items, choice.index[1], choice.index[0], users,
                                       seen, cfg, k, n_items, dim, ivf_path(exact))
    if choice.method == "lsh":
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
        limit = blocks.broadcast_limit(spark, a.broadcast_max_mb)  # decided once per model
        exact = blocks.choose_path(n_items, dim, n_items, limit, k=a.k)
        choice = choose_method(spark, items, a, n_items, dim, ivf_path(exact) == "broadcast")
        method = choice.method
        neighbors, stats = item_neighbors(spark, items, a, choice, exact)
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
            cands, ustats = users_top_k(spark, items, users, seen, a, choice, n_items, dim,
                                        user_exact)
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
            res.details[model].update({f"user_{key}": value for key, value in ustats.items()
                                       if isinstance(value, (int, float, str))})
            res.metrics += [metric_row(model, "user_recall", a.user_candidates_k, urecall),
                            metric_row(model, "user_seconds", 0, useconds)]
            cands.unpersist()
            users.unpersist()
        choice.release()
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
