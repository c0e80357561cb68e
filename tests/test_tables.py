import datetime as dt

from chispa import assert_df_equality

from recemb_spark.config import load_config
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.tables import (
    build_sequences,
    build_sessions,
    clean_ratings,
    user_histories,
)

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
    expected = ratings(spark, [("u", "a", 5.0, t(10)), ("u", "b", 3.0, t(1)),
                               ("v", "a", 4.0, t(3))])
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
