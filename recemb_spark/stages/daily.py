"""Stage ``daily``: today's tables next to the previous date's — neighbour-list overlap per
model, and the previous date's embeddings and neighbours scored on the events since."""
from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from ..config import Config
from ..evaluation import daily_metrics as daily
from ..evaluation.popularity import popularity_segments
from ..evaluation.scoring import popularity_vectors, score_model
from ..io.history import previous_date
from ..io.warehouse import Warehouse
from ..metrics import metrics_frame
from ..runner.stage import StageContext, StageResult

log = logging.getLogger(__name__)

NO_PREVIOUS = "no previous date"


def stability(wh: Warehouse, cfg: Config, run_date: str, res: StageResult, ratings) -> None:
    """Overlap rows for every model with item_neighbors today and on an earlier date."""
    models = wh.models("item_neighbors", run_date)
    segments = None
    for model in models:
        prev = previous_date(wh, "item_neighbors", run_date, model)
        info: dict[str, Any] = {"previous_date": prev}
        res.details.setdefault("stability", {})[model] = info
        if prev is None:
            info["skipped"] = NO_PREVIOUS
            log.info("daily %s: no item_neighbors before %s: no overlap", model, run_date)
            continue
        if segments is None:  # the evaluation's head/tail rule, on today's ratings
            segments = popularity_segments(ratings, cfg.liked_min_rating,
                                           cfg.evaluate.head_share,
                                           cfg.evaluate.cold_max_events).persist()
        with res.timed(f"overlap_{model}"):
            overlap = daily.neighbor_overlap(wh.read("item_neighbors", run_date, model),
                                             wh.read("item_neighbors", prev, model),
                                             cfg.daily.k)
            rows = daily.overlap_metrics(model, overlap, segments, cfg.daily.k)
        res.metrics += rows
        got = {r["metric"]: r["value"] for r in rows}
        info.update(items=int(got["overlap_items"]), mean=got.get("overlap_mean"))
        log.info("daily %s: top-%d overlap with %s: mean %s over %d items", model, cfg.daily.k,
                 prev, "n/a" if got.get("overlap_mean") is None else
                 f"{got['overlap_mean']:.3f}", got["overlap_items"])
    if not models:
        res.details["stability"] = {"skipped": f"no item_neighbors for {run_date}"}
    if segments is not None:
        segments.unpersist()


def forward(spark: SparkSession, wh: Warehouse, cfg: Config, run_date: str, res: StageResult,
            ratings) -> None:
    """Forward rows for popularity and every model with item_embeddings on the previous
    date (the latest earlier date with a rating table)."""
    prev = previous_date(wh, "ratings", run_date)
    info: dict[str, Any] = {"previous_date": prev}
    res.details["forward"] = info
    if prev is None:
        info["skipped"] = NO_PREVIOUS
        log.info("daily: no ratings before %s: no forward evaluation", run_date)
        return
    previous = wh.read("ratings", prev).persist()
    cutoff = daily.cutoff_of(previous)
    info["cutoff"] = None if cutoff is None else cutoff.isoformat()
    k, min_rating = cfg.daily.k, cfg.liked_min_rating
    if cutoff is None:
        info["skipped"] = f"ratings of {prev} are empty"
        previous.unpersist()
        return
    res.inputs["previous_ratings"] = wh.partition_path("ratings", prev)
    with res.timed("forward_cases"):
        cases, no_query = daily.forward_cases(previous, ratings, min_rating, cutoff)
        cases = cases.persist()
        n_cases = cases.count()
        info.update(users=n_cases, users_without_query=no_query.count())
        catalogue = previous.select("item_id").distinct().count()
    if n_cases == 0:
        info["skipped"] = f"no liked events after {info['cutoff']}"
        log.info("daily: no new liked events after %s: no forward evaluation", info["cutoff"])
    else:
        with res.timed("forward_popularity"):
            res.metrics += daily.forward_rows(score_model(
                spark, cases, popularity_vectors(previous, min_rating), [k], "popularity",
                catalogue, mode="constant"))
        for model in wh.models("item_embeddings", prev):
            with res.timed(f"forward_{model}"):
                items = wh.read("item_embeddings", prev, model)
                rows = daily.forward_rows(score_model(spark, cases, items, [k], model,
                                                      catalogue))
                if wh.has("item_neighbors", prev, model):
                    rows += daily.forward_neighbor_metrics(
                        model, cases, wh.read("item_neighbors", prev, model), k)
            res.metrics += rows
            got = {r["metric"]: r["value"] for r in rows}
            log.info("daily %s: forward HR@%d %.3f (embeddings of %s, %d users)%s", model, k,
                     got["forward_hr"], prev, n_cases,
                     f", neighbours {got['forward_neighbors_hr']:.3f}"
                     if "forward_neighbors_hr" in got else "")
    cases.unpersist()
    previous.unpersist()


def run(ctx: StageContext) -> None:
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    res.inputs["ratings"] = wh.partition_path("ratings", run_date)
    ratings = wh.read("ratings", run_date, needed_by="daily").persist()
    stability(wh, cfg, run_date, res, ratings)
    if cfg.daily.forward:
        forward(spark, wh, cfg, run_date, res, ratings)
    res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics", run_date,
                                   stage="daily")
    ratings.unpersist()
