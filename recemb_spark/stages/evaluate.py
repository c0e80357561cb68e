"""Stage ``evaluate``: leave-last-out HR/NDCG/coverage for every enabled model + popularity."""
from __future__ import annotations

import logging
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..evaluation import (
    format_metrics,
    leave_last_out,
    popularity_segments,
    popularity_vectors,
    score_model,
    segments_for_cases,
)
from ..io.warehouse import Warehouse
from ..models.registry import enabled_models, user_vectors
from ..stage import StageResult, metrics_frame
from ..tables import build_sequences
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


def run(spark: SparkSession, cfg: Config, run_date: str) -> StageResult:
    """Split once, train every enabled model on the split, score all on the same cases."""
    wh = Warehouse(spark, cfg.warehouse.path)
    ks = cfg.evaluate.ks
    res = StageResult(inputs={"ratings": wh.partition_path("ratings", run_date)})
    ratings = wh.read("ratings", run_date, needed_by="evaluate")
    with res.timed("split"):
        split = leave_last_out(ratings, cfg.liked_min_rating)
        train = split.train.persist()
        cases = split.cases.persist()
        train_sequences = build_sequences(train, cfg.sequences, cfg.liked_min_rating).persist()
        catalogue = train.select("item_id").distinct().count()
        res.details.update(eligible_users=cases.count(), catalogue=catalogue,
                           train_ratings=train.count())
        segments = segments_for_cases(cases, popularity_segments(
            train, cfg.liked_min_rating, cfg.evaluate.head_share,
            cfg.evaluate.cold_max_events)).persist()
    with res.timed("popularity"):
        popularity = popularity_vectors(train, cfg.liked_min_rating).persist()
        res.metrics += score_model(spark, cases, popularity, ks, "popularity", catalogue,
                                   mode="constant", segments=segments)
        categories = item_categories(wh, run_date)
        if categories is not None:  # popularity within the query item's category
            res.metrics += score_model(spark, cases, popularity, ks, "popularity_category",
                                       catalogue, mode="category", segments=segments,
                                       item_categories=categories)
        popularity.unpersist()
    histories = cases.select("user_id", F.col("history").alias("items"))
    side = read_side(wh, run_date, cfg)
    for spec in enabled_models(cfg):
        name = spec.model_name(cfg)
        t0 = time.perf_counter()
        trained = spec.train(spark, cfg, train, train_sequences, side=side)
        items = trained.item_vectors.persist()
        n_vectors = items.count()
        res.timings[f"train_{name}"] = round(time.perf_counter() - t0, 3)
        with res.timed(f"score_{name}"):
            res.metrics += score_model(spark, cases, items, ks, name, catalogue,
                                       segments=segments)
            if cfg.evaluate.user_query:
                users = user_vectors(trained, histories, items, cfg)
                res.metrics += score_model(spark, cases, items, ks, name, catalogue,
                                           mode="user", user_vectors=users,
                                           similarity=trained.user_similarity,
                                           segments=segments)
        res.details[f"{name}_vectors"] = n_vectors
        items.unpersist()
    res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                   stage="evaluate")
    for df in (train_sequences, cases, train, segments):
        df.unpersist()
    log.info("evaluation (leave-last-out, %d users):\n%s", res.details["eligible_users"],
             format_metrics(res.metrics, ks))
    return res
