"""Stage ``evaluate``: HR/NDCG/coverage for every enabled model + popularity.

``evaluate.protocol: auto`` (default): retrain on logs of at most
``evaluate.retrain_max_ratings`` rating rows (unless the blend is on), holdout above, as the
tables stage resolved it. ``holdout`` (train once): score the embedding tables the model
stages wrote for the run date on the ``holdout`` pairs the tables stage took out of their
training data. ``retrain``: the leave-last-out split of every eligible user, every model
trained again on it (twice the training; for exact comparisons).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..errors import StageError
from ..evaluation.holdout import Fingerprint, fingerprint, resolve_protocol, without_holdout
from ..evaluation.popularity import popularity_segments
from ..evaluation.scoring import (
    collect_items,
    format_metrics,
    heldout_in_history,
    holdout_cases,
    leave_last_out,
    popularity_vectors,
    score_model,
    scoring_cases,
    scoring_path,
    segments_for_cases,
)
from ..interactions import build_sequences
from ..io.warehouse import Warehouse
from ..metrics import metrics_frame
from ..models.registry import TrainedModel, enabled_models, user_vectors
from ..neighbors import blocks
from ..runner.stage import StageContext, StageResult
from .embeddings import read_side

log = logging.getLogger(__name__)


def item_categories(wh: Warehouse, run_date: str):
    """``(item_id, category)``: each item's first genre/category from the items table of the
    date, or None when there is no items table or no item has one."""
    if not wh.has("items", run_date):
        return None
    items = wh.read("items", run_date).select("item_id", F.element_at("genres", 1).alias(
        "category")).filter(F.col("category").isNotNull())
    return items if items.limit(1).count() else None


def run(ctx: StageContext) -> None:
    """Score every enabled model on the same cases, as :func:`run_protocol` says."""
    if run_protocol(ctx.warehouse, ctx.config, ctx.run_date) == "retrain":
        run_retrain(ctx)
    else:
        run_holdout(ctx)


def run_protocol(wh: Warehouse, cfg: Config, run_date: str) -> str:
    """``holdout`` or ``retrain``: ``evaluate.protocol``; ``auto`` as the tables stage of
    the date resolved it (its manifest's ``details.evaluate_protocol``), or, without one,
    by :func:`~recemb_spark.evaluation.holdout.resolve_protocol` of the rating table's
    rows."""
    if cfg.evaluate.protocol != "auto":
        return cfg.evaluate.protocol
    if wh.fs.exists(wh.manifest_path(run_date, "tables")):
        chosen = wh.read_manifest(run_date, "tables").get("details", {}).get(
            "evaluate_protocol")
        if chosen in ("holdout", "retrain"):
            return str(chosen)
    return resolve_protocol(cfg, wh.read("ratings", run_date, needed_by="evaluate").count())


def _popularity(spark: SparkSession, wh: Warehouse, cfg: Config, res: StageResult,
                cases: DataFrame, train: DataFrame, catalogue: int, run_date: str) -> DataFrame:
    """Score popularity (and, with item categories, popularity within the query item's
    category) on ``cases``; return the held-out items' popularity segments (cached) that
    every model's scoring splits by."""
    ks = cfg.evaluate.ks
    with res.timed("popularity"):
        segments = segments_for_cases(cases, popularity_segments(
            train, cfg.liked_min_rating, cfg.evaluate.head_share,
            cfg.evaluate.cold_max_events)).persist()
        popularity = popularity_vectors(train, cfg.liked_min_rating).persist()
        path = scoring_path(spark, popularity, cfg.ann.broadcast_max_mb)
        res.details["popularity_scoring_path"] = path
        collected = collect_items(popularity) if path == "broadcast" else None
        try:
            res.metrics += score_model(spark, cases, popularity, ks, "popularity", catalogue,
                                       mode="constant", segments=segments, path=path,
                                       collected=collected)
            categories = item_categories(wh, run_date)
            if categories is not None:
                res.metrics += score_model(spark, cases, popularity, ks,
                                           "popularity_category", catalogue, mode="category",
                                           segments=segments, item_categories=categories,
                                           path=path, collected=collected)
        finally:
            if collected is not None:
                collected.release()
            popularity.unpersist()
    return segments


def _score_queries(spark: SparkSession, cfg: Config, res: StageResult, cases: DataFrame,
                   items: DataFrame, name: str, catalogue: int, segments: DataFrame,
                   users_for: Callable[[str], DataFrame], similarity: str) -> None:
    """Add model ``name``'s metric rows to ``res``: the item query, and with
    ``evaluate.user_query`` the user query (``users_for(path)`` gives the user vectors, for
    the scoring path chosen), on the same path (recorded as ``<name>_scoring_path``). On the
    sharded path the items are numbered once for both."""
    ks = cfg.evaluate.ks
    path = scoring_path(spark, items, cfg.ann.broadcast_max_mb)
    res.details[f"{name}_scoring_path"] = path
    numbered = blocks.number_items(items).persist() if path == "sharded" else None
    collected = collect_items(items) if path == "broadcast" else None
    try:
        res.metrics += score_model(spark, cases, items, ks, name, catalogue,
                                   segments=segments, path=path, numbered=numbered,
                                   collected=collected)
        if cfg.evaluate.user_query:
            res.metrics += score_model(spark, cases, items, ks, name, catalogue, mode="user",
                                       user_vectors=users_for(path), similarity=similarity,
                                       segments=segments, path=path, numbered=numbered,
                                       collected=collected)
    finally:
        if numbered is not None:
            numbered.unpersist()
        if collected is not None:
            collected.release()


def _stored_users(wh: Warehouse, run_date: str, name: str, needed: str,
                  _path: str) -> DataFrame:
    """The run's stored user vectors of model ``name`` (any scoring path)."""
    return wh.read("user_embeddings", run_date, model=name, needed_by=needed)


def _trained_users(trained: TrainedModel, histories: DataFrame, items: DataFrame, cfg: Config,
                   path: str) -> DataFrame:
    """User vectors of a model trained on the split, made the way the scoring ``path``
    suits (pooled by a broadcast, or by a join on the sharded path)."""
    return user_vectors(trained, histories, items, cfg,
                        "broadcast" if path == "broadcast" else "join")


def _finish(spark: SparkSession, wh: Warehouse, cfg: Config, res: StageResult,
            run_date: str) -> None:
    res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                   stage="evaluate")
    log.info("evaluation (%s, %d users):\n%s\nheld-out items already in the user's history: "
             "%.1f%% (%s)", res.details["protocol"], res.details["eligible_users"],
             format_metrics(res.metrics, cfg.evaluate.ks),
             100 * res.details["heldout_in_history"],
             "excluded from the ranking" if cfg.evaluate.exclude_history else "rankable: "
             "evaluate.exclude_history is false")


def run_holdout(ctx: StageContext) -> None:
    """Train nothing: read the holdout pairs and each model's item (and user) embedding
    tables of the run date, and score them like :func:`run_retrain` scores its models.

    A model whose stage did not exclude exactly these pairs from its training (its manifest's
    ``holdout_fingerprint``) is refused with a StageError: its figures would be flattered.
    """
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    res.inputs.update(ratings=wh.partition_path("ratings", run_date),
                      holdout=wh.partition_path("holdout", run_date))
    needed = "evaluate (evaluate.protocol: holdout)"
    ratings = wh.read("ratings", run_date, needed_by=needed)
    holdout = wh.read("holdout", run_date, needed_by=needed).persist()
    mark = fingerprint(holdout)
    n_holdout = mark.pairs
    if n_holdout == 0:
        raise StageError(f"the holdout table of {run_date} is empty: the tables stage ran with "
                         f"evaluate.enabled=false or evaluate.protocol=retrain (or auto on a "
                         f"log of at most evaluate.retrain_max_ratings rows), or no user has "
                         f"two liked items; re-run the tables stage, or evaluate with "
                         f"--set evaluate.protocol=retrain")
    with res.timed("cases"):
        train = without_holdout(ratings, holdout)
        cases = holdout_cases(train, holdout, cfg.liked_min_rating).persist()
        catalogue = train.select("item_id").distinct().count()
        res.details.update(protocol="holdout", holdout_pairs=n_holdout,
                           eligible_users=cases.count(), catalogue=catalogue,
                           heldout_in_history=heldout_in_history(cases, train))
    cached, cases = cases, scoring_cases(cases, cfg.evaluate.exclude_history)
    segments = _popularity(spark, wh, cfg, res, cases, train, catalogue, run_date)
    for spec in enabled_models(cfg):
        name = spec.model_name(cfg)
        items = wh.read("item_embeddings", run_date, model=name, needed_by=needed).persist()
        _check_trained_without(wh, run_date, spec.stage, mark)
        with res.timed(f"score_{name}"):
            _score_queries(spark, cfg, res, cases, items, name, catalogue, segments,
                           partial(_stored_users, wh, run_date, name, needed),
                           spec.user_similarity)
        res.details[f"{name}_vectors"] = items.count()
        items.unpersist()
    _finish(spark, wh, cfg, res, run_date)
    segments.unpersist()
    cached.unpersist()
    holdout.unpersist()


def _check_trained_without(wh: Warehouse, run_date: str, stage: str,
                           mark: Fingerprint) -> None:
    """StageError unless ``stage``'s manifest says it excluded the pairs of fingerprint
    ``mark`` (:func:`recemb_spark.evaluation.holdout.fingerprint`). Only a missing manifest
    (tables copied by hand) skips the check, with a warning; an unreadable one is an error."""
    if not wh.fs.exists(wh.manifest_path(run_date, stage)):
        log.warning("evaluate: no manifest of stage %s for %s; cannot check that it trained "
                    "without the held-out pairs", stage, run_date)
        return
    manifest = wh.read_manifest(run_date, stage)
    excluded = manifest.get("details", {}).get("holdout_fingerprint")
    if excluded != str(mark):
        raise StageError(f"stage {stage} of {run_date} was trained without other held-out pairs "
                         f"(fingerprint {excluded}) than the holdout table holds ({mark}): "
                         f"re-run stage {stage} after the tables stage (or evaluate with "
                         f"--set evaluate.protocol=retrain)")


def run_retrain(ctx: StageContext) -> None:
    """Split once, train every enabled model on the split, score all on the same cases."""
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    res.inputs["ratings"] = wh.partition_path("ratings", run_date)
    ratings = wh.read("ratings", run_date, needed_by="evaluate")
    with res.timed("split"):
        split = leave_last_out(ratings, cfg.liked_min_rating)
        train = split.train.persist()
        cases = split.cases.persist()
        train_sequences = build_sequences(train, cfg.sequences, cfg.context_min_rating).persist()
        catalogue = train.select("item_id").distinct().count()
        res.details.update(protocol="retrain", eligible_users=cases.count(),
                           catalogue=catalogue, train_ratings=train.count(),
                           heldout_in_history=heldout_in_history(cases, train))
    histories = cases.select("user_id", F.col("history").alias("items"))
    cached, cases = cases, scoring_cases(cases, cfg.evaluate.exclude_history)
    segments = _popularity(spark, wh, cfg, res, cases, train, catalogue, run_date)
    side = read_side(wh, run_date, cfg)
    for spec in enabled_models(cfg):
        name = spec.model_name(cfg)
        t0 = time.perf_counter()
        trained = spec.train(spark, cfg, train, train_sequences, side=side)
        items = trained.item_vectors.persist()
        n_vectors = items.count()
        res.timings[f"train_{name}"] = round(time.perf_counter() - t0, 3)
        with res.timed(f"score_{name}"):
            _score_queries(spark, cfg, res, cases, items, name, catalogue, segments,
                           partial(_trained_users, trained, histories, items, cfg),
                           trained.user_similarity)
        res.details[f"{name}_vectors"] = n_vectors
        items.unpersist()
    _finish(spark, wh, cfg, res, run_date)
    for df in (train_sequences, cached, train, segments):
        df.unpersist()
