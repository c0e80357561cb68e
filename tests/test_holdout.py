"""The train-once protocol: which pairs are held out, and the evaluate stage scoring the run's
own tables on them (end to end through the CLI, in-process)."""
import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.evaluation.holdout import (
    AUTO_HOLDOUT_USERS,
    choose_holdout,
    fingerprint,
    holdout_size,
    resolve_protocol,
)
from recemb_spark.evaluation.scoring import holdout_cases, leave_last_out
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.io.warehouse import Warehouse


def t(minutes):
    return dt.datetime(2024, 1, 1) + dt.timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def ratings(spark):
    """60 eligible users: u<i> likes i1..i3 at increasing times, the last one tied with i2 for
    every third user (ties: the larger id is later), plus a later rating that is not liked; one
    user with a single like (not eligible)."""
    rows = []
    for u in range(60):
        tie = u % 3 == 0
        rows += [(f"u{u}", "1", 4.0, t(u)), (f"u{u}", "2", 5.0, t(u + 10)),
                 (f"u{u}", "10" if tie else "3", 4.5, t(u + 10 if tie else u + 20)),
                 (f"u{u}", "4", 2.0, t(u + 30))]
    rows += [("lonely", "1", 5.0, t(1)), ("lonely", "2", 1.0, t(2))]
    return spark.createDataFrame(rows, RATINGS_SCHEMA).persist()


def pairs(df):
    return sorted((r["user_id"], r["item_id"]) for r in df.collect())


def test_every_eligible_user_below_the_auto_size_with_the_latest_liked_item(ratings):
    assert holdout_size(0) == AUTO_HOLDOUT_USERS and holdout_size(7) == 7
    chosen = pairs(choose_holdout(ratings, 3.5, 0, seed=1))
    expected = sorted((f"u{u}", "10" if u % 3 == 0 else "3") for u in range(60))
    assert chosen == expected
    assert pairs(choose_holdout(ratings, 3.5, 1000, seed=1)) == expected


def test_a_seeded_sample_of_the_requested_size(ratings):
    ten = pairs(choose_holdout(ratings, 3.5, 10, seed=7))
    assert len(ten) == 10 and len({u for u, _ in ten}) == 10
    assert ten == pairs(choose_holdout(ratings, 3.5, 10, seed=7))   # deterministic
    latest = {f"u{u}": "10" if u % 3 == 0 else "3" for u in range(60)}
    assert all(latest[u] == i for u, i in ten)
    assert fingerprint(choose_holdout(ratings, 3.5, 10, seed=7).repartition(3)) == \
        fingerprint(choose_holdout(ratings, 3.5, 10, seed=7)) != \
        fingerprint(choose_holdout(ratings, 3.5, 10, seed=8))
    twenty = pairs(choose_holdout(ratings, 3.5, 20, seed=7))
    assert set(ten) <= set(twenty)                       # the sample grows by the same order
    other = pairs(choose_holdout(ratings, 3.5, 10, seed=8))
    assert other != ten                                  # the seed decides who
    # independent of the partitioning
    assert pairs(choose_holdout(ratings.repartition(7), 3.5, 10, seed=7)) == ten


def test_holdout_cases_match_leave_last_out_when_every_user_is_held_out(ratings):
    split = leave_last_out(ratings, 3.5)
    heldout = choose_holdout(ratings, 3.5, 0, seed=1)
    assert_df_equality(holdout_cases(split.train, heldout, 3.5), split.cases,
                       ignore_row_order=True, ignore_nullable=True)
    some = choose_holdout(ratings, 3.5, 5, seed=3)
    cases = holdout_cases(split.train, some, 3.5).collect()
    assert sorted(c["user_id"] for c in cases) == sorted(r["user_id"] for r in some.collect())
    assert all(c["query"] == c["history"][-1] for c in cases)


TINY = ["sample.n_users=200", "sample.n_items=300", "sample.n_ratings=12000",
        "deepwalk.enabled=false", "ann.enabled=false", "als.max_iter=3", "als.rank=8",
        "als.candidates_k=5", "item2vec.max_iter=2", "evaluate.holdout_users=50",
        "evaluate.protocol=holdout"]


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def test_evaluate_scores_the_run_tables_on_the_held_out_pairs(keep_spark, tmp_path):
    path = str(tmp_path / "wh")
    args = ["--warehouse", path, "-q", *sets(*TINY)]
    assert main(["run", "--run-date", "2026-11-10", *args]) == 0
    wh = Warehouse(keep_spark, path)
    day = "2026-11-10"
    holdout = wh.read("holdout", day)
    assert holdout.count() == 50 and holdout.select("user_id").distinct().count() == 50
    tables = wh.read_manifest(day, "tables")
    assert tables["rows"]["holdout"] == 50 and tables["details"]["holdout_users"] == 50
    assert tables["details"]["holdout_eligible_users"] > 150
    # no model saw a held-out pair: not in the sequences, not in ALS's training
    seq_pairs = wh.read("sequences", day).select("user_id", F.explode("items").alias("item_id"))
    assert seq_pairs.join(holdout, ["user_id", "item_id"]).count() == 0
    for stage in ("item2vec", "als"):
        assert wh.read_manifest(day, stage)["details"]["holdout_pairs_excluded"] == 50
    # the held-out item is the user's latest liked rating
    ratings = wh.read("ratings", day)
    assert pairs(holdout) == pairs(choose_holdout(ratings, 3.5, 50, seed=42))
    ev = wh.read_manifest(day, "evaluate")
    assert ev["details"]["protocol"] == "holdout" and ev["details"]["eligible_users"] == 50
    assert not any(k.startswith("train_") for k in ev["timings"])  # nothing trained again
    m = {(r["model"], r["metric"], r["k"]): r["value"]
         for r in wh.read("metrics", day, stage="evaluate").collect()}
    for model in ("popularity", "item2vec", "als"):
        assert m[(model, "users", 0)] == 50 and 0 <= m[(model, "hr", 10)] <= 1
    assert ("als", "user_hr", 10) in m and ("item2vec", "user_hr", 10) in m
    # a new holdout without re-trained models: the evaluation refuses to score stale tables
    assert main(["tables", "--run-date", day, *args, "--set", "evaluate.seed=9"]) == 0
    assert main(["evaluate", "--run-date", day, *args, "--set", "evaluate.seed=9"]) == 4
    # the retrain protocol still runs on the same date (and trains again)
    assert main(["evaluate", "--run-date", day, *args,
                 "--set", "evaluate.protocol=retrain"]) == 0
    ev = wh.read_manifest(day, "evaluate")
    assert ev["details"]["protocol"] == "retrain" and "train_item2vec" in ev["timings"]


def test_auto_protocol_by_the_rating_rows_and_the_blend():
    auto = load_config()
    assert auto.evaluate.protocol == "auto" and auto.evaluate.retrain_max_ratings == 1_000_000
    assert resolve_protocol(auto, 1_000_000) == "retrain"
    assert resolve_protocol(auto, 1_000_001) == "holdout"
    # the blend chooses its weights on held-out pairs no model saw
    assert resolve_protocol(auto.replace("blend", enabled=True), 10) == "holdout"
    assert resolve_protocol(auto.replace("evaluate", protocol="holdout"), 10) == "holdout"
    assert resolve_protocol(auto.replace("evaluate", protocol="retrain"), 10**9) == "retrain"
    assert resolve_protocol(auto.replace("evaluate", enabled=False), 10) == "none"


def test_auto_retrains_a_small_log_and_holds_out_a_large_one(keep_spark, tmp_path):
    """evaluate.protocol auto end to end: the tables stage resolves it from the rating rows
    and says so in its manifest; the evaluate stage (a separate command) follows it. Below
    the threshold nothing is held out, the published ALS saw every rating and the evaluation
    trains again; above it (threshold lowered to 100 rows) the tables stage holds out."""
    path = str(tmp_path / "wh")
    auto = [s for s in TINY if not s.startswith("evaluate.protocol")] + [
        "item2vec.enabled=false"]
    args = ["--warehouse", path, "-q", *sets(*auto)]
    wh = Warehouse(keep_spark, path)
    small, large = "2026-11-11", "2026-11-12"
    assert main(["tables", "--run-date", small, *args]) == 0
    assert main(["als", "--run-date", small, *args]) == 0
    assert main(["evaluate", "--run-date", small, *args]) == 0
    tables = wh.read_manifest(small, "tables")
    assert tables["details"]["evaluate_protocol"] == "retrain"
    assert tables["rows"]["holdout"] == 0 == wh.read("holdout", small).count()
    assert wh.read_manifest(small, "als")["details"]["holdout_pairs_excluded"] == 0
    ev = wh.read_manifest(small, "evaluate")
    assert ev["details"]["protocol"] == "retrain" and "train_als" in ev["timings"]
    assert ev["details"]["eligible_users"] > 150  # every eligible user, a separate split
    lowered = [*args, "--set", "evaluate.retrain_max_ratings=100"]
    assert main(["tables", "--run-date", large, *lowered]) == 0
    tables = wh.read_manifest(large, "tables")
    assert tables["details"]["evaluate_protocol"] == "holdout"
    assert tables["rows"]["holdout"] == 50 == wh.read("holdout", large).count()
    # (evaluate then scores the run's tables on them: the test above)
