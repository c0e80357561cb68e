"""Stage ``tables``: input -> ratings, rejects, items, sequences, and the evaluation's
held-out pairs (``holdout``), which the sequences and every model stage leave out."""
from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..evaluation.holdout import (
    HOLDOUT_SCHEMA,
    holdout_size,
    last_liked,
    resolve_protocol,
    sample_users,
    without_holdout,
)
from ..interactions import (
    aggregate_events,
    build_sessions,
    clean_ratings,
    items_from_categories,
)
from ..io import readers, sample
from ..io.warehouse import Warehouse
from ..rows import one_row
from ..runner.stage import StageContext, StageResult

log = logging.getLogger(__name__)

#: frames the size of the log are cached on local disk, never in memory: a 4 GiB local driver
#: has ~2.2 GiB of unified memory, MovieLens-25M-sized frames do not fit, and MEMORY_AND_DISK
#: first tries memory ("WARN MemoryStore: Not enough space to cache"), evicting smaller cached
#: blocks, before it spills; Parquet tables already written are read back instead
LOG_SIZED = StorageLevel.DISK_ONLY


def run(ctx: StageContext) -> None:
    """Read the input (or generate the built-in sample) and write the four base tables.

    Rejected rows are written before the reject-fraction check, so a failing run still leaves
    the evidence in ``rejects``.
    """
    spark, cfg, run_date, wh, res = ctx.spark, ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    inp = cfg.input
    with res.timed("read"):
        if inp.path:
            parsed = readers.read_ratings(spark, inp)
            valid, rejects = parsed.valid, parsed.rejects
            res.inputs = {"ratings": parsed.source, "format": parsed.format}
            res.rows.update(read=parsed.read, rejected=parsed.rejected)
            res.details["rejected_by_reason"] = parsed.rejected_by_reason
            items_path, items_fmt = inp.items or parsed.items_path, inp.items_format
            items = (readers.read_items(spark, items_path, items_fmt, inp.item_col)
                     if items_path else None)
            if items_path:
                res.inputs["items"] = items_path
        else:
            parsed = None
            valid, items = sample.generate(spark, cfg.sample)
            valid = valid.persist(LOG_SIZED)
            rejects = readers.empty_frame(spark, readers.REJECTS_SCHEMA)
            res.inputs = {"ratings": "built-in sample", "sample": vars(cfg.sample)}
            res.rows.update(read=valid.count(), rejected=0)
    with res.timed("write_rejects"):
        res.rows["rejects"] = wh.write(rejects, "rejects", run_date)
    if parsed is not None:
        readers.check_reject_fraction(parsed, inp.max_reject_fraction)
    with res.timed("ratings"):
        table = (aggregate_events(valid, inp.event_signal) if inp.path and inp.implicit
                 else clean_ratings(valid))
        res.rows["ratings"] = wh.write(table, "ratings", run_date)
        ratings = wh.read("ratings", run_date)  # read back, not cached: see LOG_SIZED
        key = "events_merged" if inp.path and inp.implicit else "duplicates_dropped"
        res.details[key] = res.rows["read"] - res.rows["rejected"] - res.rows["ratings"]
    if items is None and "category" in valid.columns:
        items = items_from_categories(valid)
        res.inputs["items"] = f"input.category_col {inp.category_col}"
    if items is not None:
        with res.timed("items"):
            items = items.dropDuplicates(["item_id"])
            res.rows["items"] = wh.write(items, "items", run_date)
    with res.timed("sequences"):
        # an implicit log's sequences come from its events (repeats, sessions), rated
        # input's from the rating table; without the evaluation's held-out pairs
        source = valid if inp.path and inp.implicit else ratings
        train = hold_out(spark, wh, cfg, ratings, run_date, res, source)  # evaluate.protocol
        sessions = build_sessions(train, cfg.sequences, cfg.context_min_rating).persist(LOG_SIZED)
        res.rows["sequences"] = wh.write(
            sessions.filter(F.col("n_items") >= cfg.sequences.min_length), "sequences", run_date)
        stats = one_row(sessions.agg(F.count("*").alias("sessions"),
                                     F.countDistinct("user_id").alias("users"),
                                     F.sum("n_items").alias("tokens")))
        res.details.update(sessions=stats["sessions"], users_with_sequences=stats["users"],
                           sequence_items=int(stats["tokens"] or 0),
                           context_min_rating=cfg.sequences.context_min_rating,
                           sequences_too_short=stats["sessions"] - res.rows["sequences"])
    for df in (sessions, valid):
        df.unpersist()
    if parsed is not None:
        parsed.unpersist()


def hold_out(spark: SparkSession, wh: Warehouse, cfg: Config, ratings: DataFrame,
             run_date: str, res: StageResult, source: DataFrame | None = None) -> DataFrame:
    """The train-once protocol's hook (:mod:`recemb_spark.evaluation.holdout`): write the
    ``holdout`` table of ``run_date`` (chosen from ``ratings``) and return what
    the sequences are built from without the held-out pairs: ``source`` (an implicit log's
    events) or the ratings. Records ``rows.holdout`` and, when holding out, the eligible users
    and the held-out share of the ratings in ``res.details``, and the evaluation protocol
    (:func:`~recemb_spark.evaluation.holdout.resolve_protocol` of ``rows.ratings``: pairs are
    held out only for ``holdout``) as ``details.evaluate_protocol``."""
    source = ratings if source is None else source
    protocol = res.details["evaluate_protocol"] = resolve_protocol(cfg, res.rows["ratings"])
    if protocol != "holdout":
        res.rows["holdout"] = wh.write(spark.createDataFrame([], HOLDOUT_SCHEMA), "holdout",
                                       run_date)
        return source
    with res.timed("holdout"):
        last = last_liked(ratings, cfg.liked_min_rating).persist()  # one row per user
        eligible = last.count()
        pairs = sample_users(last, holdout_size(cfg.evaluate.holdout_users),
                             cfg.evaluate.seed).select("user_id", "item_id")
        n = res.rows["holdout"] = wh.write(pairs, "holdout", run_date)
        last.unpersist()
    share = n / max(res.rows.get("ratings", 0), 1)
    res.details.update(holdout_eligible_users=eligible, holdout_users=n,
                       holdout_share_of_ratings=round(share, 6))
    log.info("holdout: the last liked item of %d of %d eligible users (%.3f%% of the ratings) "
             "is held out of every model", n, eligible, 100 * share)
    return without_holdout(source, wh.read("holdout", run_date))
