"""Stages that train one embedding model and write its item and user embedding tables."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..config import Config
from ..evaluation.holdout import NO_PAIRS, fingerprint, without_holdout
from ..interactions import user_histories
from ..io.warehouse import Warehouse
from ..metrics import metrics_frame
from ..models.align import align_to_previous
from ..models.registry import model_spec, user_vectors
from ..models.side_info import side_tokens
from ..models.users import pooling_path
from ..runner.stage import StageContext, StageResult


def write_tables(wh: Warehouse, res: StageResult, tables: dict[str, tuple[DataFrame, bool]],
                 run_date: str, model: str) -> None:
    """Write a model's extra tables (per ``model`` partition or not), counting their rows."""
    for table, (df, per_model) in tables.items():
        res.rows[table] = wh.write(df, table, run_date, model=model if per_model else None)


def read_side(wh: Warehouse, run_date: str, cfg: Config) -> DataFrame | None:
    """The side-token table for the date (from the items table's genres) when
    ``side_info.enabled`` and the date has an items table with features; else None."""
    if not cfg.side_info.enabled or not wh.has("items", run_date):
        return None
    side = side_tokens(wh.read("items", run_date)).persist()
    if side.limit(1).count() == 0:
        side.unpersist()
        return None
    return side


def with_source(items: DataFrame) -> DataFrame:
    """Item vectors with the ``source`` column of ``item_embeddings``: kept when the trainer
    set it (side information), else ``'learned'``."""
    if "source" in items.columns:
        return items
    return items.withColumn("source", F.lit("learned"))


def run(ctx: StageContext) -> None:
    """A model stage (item2vec, deepwalk, als: :func:`~recemb_spark.models.registry.model_spec`
    of the stage's name): ratings + sequences of the run date -> embeddings."""
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    spec = model_spec(ctx.stage.name)
    model = spec.model_name(cfg)
    res.inputs.update(ratings=wh.partition_path("ratings", run_date),
                      sequences=wh.partition_path("sequences", run_date))
    ratings = wh.read("ratings", run_date, needed_by=spec.stage)
    sequences = wh.read("sequences", run_date, needed_by=spec.stage)
    side = read_side(wh, run_date, cfg)
    with res.timed("train"):
        train = training_ratings(wh, ratings, run_date, res)  # without the held-out pairs
        trained = spec.train(spark, cfg, train, sequences, side=side)
        trained = align_to_previous(spark, cfg, wh, model, run_date, trained)  # align.*
        items = with_source(trained.item_vectors).persist()
        res.rows["item_embeddings"] = wh.write(items, "item_embeddings", run_date,
                                               model=model)
    res.details.update(trained.details, model=model)
    with res.timed("other_tables"):
        write_tables(wh, res, trained.tables, run_date, model)
    with res.timed("users"):
        histories = user_histories(sequences).persist()
        path = None
        if trained.user_vectors is None:
            path = pooling_path(items, cfg.ann.broadcast_max_mb)
            res.details.update(user_pooling=cfg.users.pooling, user_pooling_path=path)
        res.rows["user_embeddings"] = wh.write(
            user_vectors(trained, histories, items, cfg, path), "user_embeddings", run_date,
            model=model)
        res.details["users_with_history"] = histories.count()
        if trained.user_vectors is None:  # pooled: users whose items all lack a vector
            res.details["users_without_vector"] = (res.details["users_with_history"]
                                                   - res.rows["user_embeddings"])
    if spec.stage_extras is not None:
        with res.timed("extras"):
            extra = spec.stage_extras(spark, cfg, ratings, trained)
            res.details.update(extra.details)
            write_tables(wh, res, extra.tables, run_date, model)
            res.metrics += extra.metrics
    if res.metrics:
        res.rows["metrics"] = wh.write(metrics_frame(spark, res.metrics), "metrics",
                                       run_date, stage=spec.stage)
    for df in (histories, items, side):
        if df is not None:
            df.unpersist()
    trained.release()


def training_ratings(wh: Warehouse, ratings: DataFrame, run_date: str,
                     res: StageResult) -> DataFrame:
    """``ratings`` without the run date's held-out pairs (unchanged when there are none);
    records ``details.holdout_pairs_excluded`` and ``holdout_fingerprint`` (the evaluate
    stage checks the latter)."""
    mark = NO_PAIRS
    if wh.has("holdout", run_date):
        holdout = wh.read("holdout", run_date)
        mark = fingerprint(holdout)
        if mark.pairs:
            ratings = without_holdout(ratings, holdout)
    res.details.update(holdout_pairs_excluded=mark.pairs, holdout_fingerprint=str(mark))
    return ratings
