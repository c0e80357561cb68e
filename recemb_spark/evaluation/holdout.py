"""The evaluation's held-out pairs for the train-once protocol (``evaluate.protocol: holdout``).

The ``tables`` stage chooses, once per run date, one ``(user_id, item_id)`` pair for each of a
seeded sample of *eligible* users (at least two liked items, rating >= ``sequences.min_rating``):
the user's last liked item, in the order :func:`recemb_spark.evaluation.scoring.leave_last_out` uses
(latest ``ts``; equal times broken by item id in natural order, the larger id counting as
later). It writes them as the ``holdout`` table and builds the sequence table from the
ratings without them; the model stages train on the ratings without them; the ``evaluate``
stage scores the very embedding tables the run writes on those pairs. The held-out items were
never seen by any model, so the figures stay honest, and nothing is trained twice.

Sample size (``evaluate.holdout_users``): ``0`` = auto = :data:`AUTO_HOLDOUT_USERS` (every
eligible user of a small log; on MovieLens-25M, 162k users and 25M ratings, 10,000 pairs are
0.04% of the events while the standard error of an HR@10 near 0.1 is ~0.003). ``N`` > 0: at
most ``N`` users. The sample is the ``N`` users with the smallest ``xxhash64(seed, user_id)``:
deterministic with the seed, independent of the partitioning, and the same users on every
run date while they stay eligible.
"""
from __future__ import annotations

from typing import NamedTuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..config import Config
from ..ids import event_struct
from ..rows import one_row

#: ``evaluate.holdout_users: 0`` (auto) holds out this many users at most.
AUTO_HOLDOUT_USERS = 10_000

HOLDOUT_SCHEMA = "user_id string, item_id string"


def resolve_protocol(cfg: Config, n_ratings: int) -> str:
    """The evaluation protocol of a run whose rating table has ``n_ratings`` rows:
    ``evaluate.protocol``, ``auto`` resolved to ``retrain`` up to
    ``evaluate.retrain_max_ratings`` rows (training twice is cheap there, and the published
    tables then use every event) unless the blend is enabled (it chooses its weights on
    held-out pairs no model saw), ``holdout`` otherwise; ``none`` with the evaluation off."""
    ev = cfg.evaluate
    if not ev.enabled:
        return "none"
    if ev.protocol != "auto":
        return ev.protocol
    return "retrain" if n_ratings <= ev.retrain_max_ratings and not cfg.blend.enabled \
        else "holdout"


def holdout_size(holdout_users: int) -> int:
    """The number of users to hold out at most for the config value (0 = auto)."""
    return holdout_users if holdout_users > 0 else AUTO_HOLDOUT_USERS


def last_liked(ratings: DataFrame, min_rating: float) -> DataFrame:
    """``(user_id, item_id)``: the last liked item of every eligible user (>= 2 liked): the
    latest ``ts``, ties by :func:`~recemb_spark.ids.item_order` (the larger id is later).

    One hash aggregation (the max of an :func:`event_struct` per user) instead of a window
    that sorts every liked row by user and time: 29 s of the 25M-rating tables stage before."""
    liked = ratings.filter(F.col("rating") >= F.lit(min_rating))
    return (liked.groupBy("user_id")
            .agg(F.max(event_struct()).alias("_last"), F.count("*").alias("_n"))
            .filter(F.col("_n") >= 2)
            .select("user_id", F.col("_last.item_id").alias("item_id")))


def sample_users(candidates: DataFrame, n_users: int, seed: int) -> DataFrame:
    """The ``n_users`` rows of ``candidates`` with the smallest ``xxhash64(seed, user_id)``
    (ties by user id): all of them when there are fewer. One row per user is assumed. Runs as
    a distributed top-N (at most ``n_users`` rows reach one partition; none reach the driver).
    """
    key = F.xxhash64(F.lit(seed), F.col("user_id"))
    return candidates.orderBy(key, "user_id").limit(n_users)


def choose_holdout(ratings: DataFrame, min_rating: float, holdout_users: int,
                   seed: int) -> DataFrame:
    """The held-out pairs ``(user_id, item_id)``: the last liked item of a seeded sample of
    :func:`holdout_size` eligible users (see the module doc). ``ratings`` is the rating table
    (one row per user and item)."""
    return sample_users(last_liked(ratings, min_rating), holdout_size(holdout_users),
                        seed).select("user_id", "item_id")


def without_holdout(ratings: DataFrame, holdout: DataFrame) -> DataFrame:
    """``ratings`` without the held-out ``(user_id, item_id)`` pairs (a left anti-join; a
    ``holdout`` table read back from Parquet is small enough for Spark to broadcast it)."""
    return ratings.join(holdout.select("user_id", "item_id"), ["user_id", "item_id"],
                        "left_anti")


class Fingerprint(NamedTuple):
    """A set of held-out pairs: how many, and the xor of their ``xxhash64(user_id, item_id)``
    (the same for the same set, whatever the order). ``str()`` is the manifests' form
    ``"<pairs>:<xor>"`` (``details.holdout_fingerprint``)."""

    pairs: int
    xor: int

    def __str__(self) -> str:
        return f"{self.pairs}:{self.xor}"


#: the fingerprint of no pairs
NO_PAIRS = Fingerprint(0, 0)


def fingerprint(holdout: DataFrame) -> Fingerprint:
    """The :class:`Fingerprint` of the ``holdout`` pairs (the evaluate stage checks that each
    model trained without exactly these)."""
    row = one_row(holdout.agg(F.count("*").alias("n"),
                              F.bit_xor(F.xxhash64("user_id", "item_id")).alias("x")))
    return Fingerprint(int(row["n"]), int(row["x"] or 0))
