import datetime as dt

import pytest
from chispa import assert_df_equality

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.errors import ConfigError
from recemb_spark.interactions import (
    aggregate_events,
    build_sequences,
    build_sessions,
    clean_ratings,
    items_from_categories,
    user_histories,
)
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.io.warehouse import Warehouse

SEQ_SCHEMA = ("user_id string, items array<string>, n_items int, ts_start timestamp, "
              "ts_end timestamp")


def t(minutes):
    return dt.datetime(2024, 1, 1) + dt.timedelta(minutes=minutes)


def seq_cfg(*overrides):
    return load_config(overrides=list(overrides)).sequences


def ratings(spark, rows):
    return spark.createDataFrame(rows, RATINGS_SCHEMA)


def test_clean_ratings_keeps_latest_duplicate(spark):
    df = ratings(spark, [("u", "a", 2.0, t(0)), ("u", "a", 5.0, t(10)), ("u", "b", 3.0, t(1)),
                         ("v", "a", 1.0, t(3)), ("v", "a", 4.0, t(3))])
    expected = spark.createDataFrame(
        [("u", "a", 5.0, t(10), 5.0), ("u", "b", 3.0, t(1), 3.0), ("v", "a", 4.0, t(3), 4.0)],
        RATINGS_SCHEMA + ", signal double")
    assert_df_equality(clean_ratings(df), expected, ignore_row_order=True, ignore_nullable=True)


def test_sequences_order_ties_threshold_and_min_length(spark):
    df = ratings(spark, [
        ("u", "c", 4.0, t(5)), ("u", "a", 5.0, t(1)),
        ("u", "z", 3.5, t(3)), ("u", "b", 4.5, t(3)),   # tie at t(3): b before z
        ("u", "x", 3.0, t(2)),                          # below 3.5: not liked
        ("w", "a", 5.0, t(0)),                          # one liked item: shorter than 2
        ("w", "b", 1.0, t(1))])
    expected = spark.createDataFrame(
        [("u", ["a", "b", "z", "c"], 4, t(1), t(5))], SEQ_SCHEMA)
    assert_df_equality(build_sequences(df, seq_cfg()), expected, ignore_nullable=True)
    # the short one exists as a session but is filtered from the sequence table
    assert build_sessions(df, seq_cfg()).count() == 2


def test_session_split_and_max_length(spark):
    df = ratings(spark, [("u", "a", 4.0, t(0)), ("u", "b", 4.0, t(10)), ("u", "c", 4.0, t(100)),
                         ("u", "d", 4.0, t(105)), ("u", "e", 4.0, t(300))])
    expected = spark.createDataFrame(
        [("u", ["a", "b"], 2, t(0), t(10)), ("u", ["c", "d"], 2, t(100), t(105))], SEQ_SCHEMA)
    got = build_sequences(df, seq_cfg("sequences.session_gap_minutes=30"))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    # cap to the latest 3 (c, d, e), then split: [c, d] and [e] (dropped: shorter than 2)
    got = build_sequences(df, seq_cfg("sequences.session_gap_minutes=30",
                                      "sequences.max_length=3"))
    expected = spark.createDataFrame([("u", ["c", "d"], 2, t(100), t(105))], SEQ_SCHEMA)
    assert_df_equality(got, expected, ignore_nullable=True)
    # min_length 1 keeps single-item sessions; a higher threshold keeps fewer items
    assert build_sequences(df, seq_cfg("sequences.session_gap_minutes=30",
                                       "sequences.min_length=1")).count() == 3


def test_user_histories_concatenate_sessions_in_order(spark):
    seqs = spark.createDataFrame([("u", ["c", "d"], 2, t(100), t(105)),
                                  ("u", ["a", "b"], 2, t(0), t(10))], SEQ_SCHEMA)
    expected = spark.createDataFrame([("u", ["a", "b", "c", "d"])],
                                     "user_id string, items array<string>")
    assert_df_equality(user_histories(seqs), expected, ignore_nullable=True)


EVENTS_SCHEMA = RATINGS_SCHEMA + ", session_id string"


def test_aggregate_events_strongest_rating_latest_time_summed_signal(spark):
    ev = ratings(spark, [("u", "a", 1.0, t(0)), ("u", "a", 3.0, t(5)), ("u", "a", 1.0, t(9)),
                         ("u", "b", 2.0, t(1))])
    schema = RATINGS_SCHEMA + ", signal double"
    expected = spark.createDataFrame([("u", "a", 3.0, t(9), 5.0), ("u", "b", 2.0, t(1), 2.0)],
                                     schema)
    assert_df_equality(aggregate_events(ev), expected, ignore_row_order=True,
                       ignore_nullable=True, ignore_column_order=True)
    counted = {r["item_id"]: r["signal"] for r in aggregate_events(ev, "count").collect()}
    assert counted == {"a": 3.0, "b": 1.0}
    assert {r["item_id"]: r["signal"] for r in aggregate_events(ev, "max").collect()} == \
        {"a": 3.0, "b": 2.0}


def test_event_sequences_by_session_id_with_repeats_collapsed(spark):
    ev = spark.createDataFrame([
        ("u", "a", 1.0, t(0), "s1"), ("u", "a", 1.0, t(1), "s1"),   # a reload: one token
        ("u", "b", 1.0, t(2), "s1"), ("u", "a", 1.0, t(3), "s1"),   # a comes back: kept
        ("u", "c", 1.0, t(4), "s2"), ("u", "d", 1.0, t(400), "s2")], EVENTS_SCHEMA)
    expected = spark.createDataFrame(
        [("u", ["a", "b", "a"], 3, t(0), t(3)), ("u", ["c", "d"], 2, t(4), t(400))], SEQ_SCHEMA)
    got = build_sequences(ev, seq_cfg(), min_rating=float("-inf"))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    kept = build_sequences(ev, seq_cfg("sequences.collapse_repeats=false"),
                           min_rating=float("-inf"))
    assert sorted(r["n_items"] for r in kept.collect()) == [2, 4]
    # a gap split works inside a session: s2's events are 396 minutes apart
    split = build_sessions(ev, seq_cfg("sequences.session_gap_minutes=60"),
                           min_rating=float("-inf"))
    assert sorted(r["n_items"] for r in split.collect()) == [1, 1, 3]


def test_items_from_categories_takes_the_most_frequent(spark):
    ev = spark.createDataFrame([("u", "a", 1.0, t(0), "x"), ("v", "a", 1.0, t(0), "y"),
                                ("w", "a", 1.0, t(0), "y"), ("u", "b", 1.0, t(0), "z"),
                                ("u", "c", 1.0, t(0), None)],
                               RATINGS_SCHEMA + ", category string")
    got = {r["item_id"]: (r["title"], r["genres"]) for r in items_from_categories(ev).collect()}
    assert got == {"a": (None, ["y"]), "b": (None, ["z"])}


def test_sequences_hold_every_rated_item_and_the_holdout_stays_liked(keep_spark, tmp_path):
    """The tables stage on rated input: the sequences (training context) hold every rated
    item by default, only the liked ones with ``sequences.context_min_rating=3.5``; the
    held-out item is the last *liked* one either way, and never in the sequences."""
    f = tmp_path / "u.data"  # user, item, rating, epoch seconds (MovieLens 100K layout)
    rows = []
    for u in range(1, 5):
        rows += [(u, 1, 5, 100), (u, 2, 2, 200), (u, 3, 4, 300), (u, 4, 1, 400), (u, 5, 3, 500)]
    f.write_text("".join(f"{u}\t{i}\t{r}\t{ts}\n" for u, i, r, ts in rows))
    wh = Warehouse(keep_spark, str(tmp_path / "wh"))
    args = ["--input", str(f), "--warehouse", str(tmp_path / "wh"), "-q",
            "--set", "evaluate.holdout_users=10", "--set", "evaluate.protocol=holdout"]

    assert main(["tables", "--run-date", "2026-11-01", *args]) == 0
    seqs = {r["user_id"]: r["items"] for r in wh.read("sequences", "2026-11-01").collect()}
    # item 3 (the last liked) is held out; 2, 4 and 5 (rated 1..3) are context
    assert seqs == {str(u): ["1", "2", "4", "5"] for u in range(1, 5)}
    held = {(r["user_id"], r["item_id"]) for r in wh.read("holdout", "2026-11-01").collect()}
    assert held == {(str(u), "3") for u in range(1, 5)}
    details = wh.read_manifest("2026-11-01", "tables")["details"]
    assert details["sequence_items"] == 16 and details["context_min_rating"] is None

    assert main(["tables", "--run-date", "2026-11-02", *args,
                 "--set", "sequences.context_min_rating=3.5"]) == 0
    seqs = {r["user_id"]: r["items"] for r in wh.read("sequences", "2026-11-02").collect()}
    assert seqs == {}  # one liked item left per user: shorter than sequences.min_length
    assert main(["tables", "--run-date", "2026-11-03", *args,
                 "--set", "sequences.context_min_rating=2", "--set", "sequences.min_length=1"]) == 0
    seqs = {r["user_id"]: r["items"] for r in wh.read("sequences", "2026-11-03").collect()}
    assert seqs == {str(u): ["1", "2", "5"] for u in range(1, 5)}


def test_context_min_rating_cannot_exceed_the_liked_threshold():
    with pytest.raises(ConfigError, match="sequences.context_min_rating"):
        load_config(overrides=["sequences.context_min_rating=4", "sequences.min_rating=3.5"])
    assert load_config(overrides=["sequences.context_min_rating=2"]).context_min_rating == 2.0
    assert load_config().context_min_rating == float("-inf")
    implicit = load_config(overrides=["input.rating_col=null", "sequences.context_min_rating=3"])
    assert implicit.context_min_rating == float("-inf")  # every event of a click log
