"""Wiring of the train-once protocol's held-out pairs (see :mod:`recemb_spark.holdout`).

Two hooks: the ``tables`` stage writes the ``holdout`` table and builds the sequences from
the ratings without it (:func:`hold_out`); every model stage trains on the ratings without
it (:func:`training_ratings`). The table of the run date is the one source of truth: with
``evaluate.enabled: false`` or ``protocol: retrain`` the tables stage writes it empty (so a
re-run never leaves stale pairs behind), and the model stages exclude whatever it holds.
"""
from __future__ import annotations

import logging
from typing import Optional

from pyspark.sql import DataFrame, SparkSession

from ..config import Config
from ..evaluation.holdout import (
    HOLDOUT_SCHEMA,
    fingerprint,
    holdout_size,
    last_liked,
    sample_users,
    without_holdout,
)
from ..io.warehouse import Warehouse
from ..runner.stage import StageResult

log = logging.getLogger(__name__)


def hold_out(spark: SparkSession, wh: Warehouse, cfg: Config, ratings: DataFrame,
             run_date: str, res: StageResult, source: Optional[DataFrame] = None) -> DataFrame:
    """Write the ``holdout`` table of ``run_date`` (chosen from ``ratings``) and return what
    the sequences are built from without the held-out pairs: ``source`` (an implicit log's
    events) or the ratings. Records ``rows.holdout`` and, when holding out, the eligible users
    and the held-out share of the ratings in ``res.details``."""
    source = ratings if source is None else source
    if not cfg.evaluate.holds_out:
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


def training_ratings(wh: Warehouse, ratings: DataFrame, run_date: str,
                     res: StageResult) -> DataFrame:
    """``ratings`` without the run date's held-out pairs (unchanged when there are none);
    records ``details.holdout_pairs_excluded`` and ``holdout_fingerprint`` (the evaluate
    stage checks the latter)."""
    n, mark = 0, "0:0"
    if wh.has("holdout", run_date):
        holdout = wh.read("holdout", run_date)
        mark = fingerprint(holdout)
        n = int(mark.split(":")[0])
        if n:
            ratings = without_holdout(ratings, holdout)
    res.details.update(holdout_pairs_excluded=n, holdout_fingerprint=mark)
    return ratings
