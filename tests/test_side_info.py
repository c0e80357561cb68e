"""Frequent-token subsampling, corpus-adaptive Word2Vec settings and side information."""
import math

import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.models.side_info import (
    cold_item_vectors,
    interleave_side_tokens,
    side_tokens,
    split_vectors,
)
from recemb_spark.models.subsample import drop_tokens, keep_probabilities, subsample_sentences
from recemb_spark.models.word2vec import Corpus, corpus_stats, resolve_settings, train_word2vec

VEC = "item_id string, vector array<float>"


def w2v_cfg(**values):
    return load_config().replace("item2vec", **values).item2vec


def test_keep_probabilities_follow_mikolov(spark):
    counts = spark.createDataFrame([("a", 900), ("b", 90), ("c", 10)], "item_id string, count long")
    keep = keep_probabilities(counts, 0.01, 1000)            # threshold 10 occurrences
    assert set(keep) == {"a", "b"}                           # c is at the threshold: kept
    assert keep["a"] == pytest.approx((math.sqrt(90) + 1) / 90)
    assert keep["b"] == pytest.approx((math.sqrt(9) + 1) / 9)


def test_subsampling_is_seeded_and_drops_only_frequent_tokens(spark):
    rows = [(["a"] * 50 + ["b", "c"],), (["a", "b"] * 20,)]
    s = spark.createDataFrame(rows, "items array<string>")
    keep = {"a": 0.2}
    once = subsample_sentences(s, keep, seed=1).collect()
    again = subsample_sentences(s, keep, seed=1).collect()
    assert [r["items"] for r in once] == [r["items"] for r in again]
    tokens = [t for r in once for t in r["items"]]
    assert tokens.count("b") == 21 and tokens.count("c") == 1   # never dropped
    assert 5 <= tokens.count("a") <= 25                          # ~0.2 of 70
    other = subsample_sentences(s, keep, seed=2).collect()
    assert [r["items"] for r in other] != [r["items"] for r in once]


def test_drop_tokens_draws_per_row_key_and_position():
    lists = pa.array([["a"] * 50 + ["b", "c"], None, [], ["a", "b"] * 20],
                     pa.list_(pa.string()))
    keys = np.array([1, 2, 3, 4], np.uint64)
    out = drop_tokens(lists, keys, pa.array(["a"]), np.array([0.2])).to_pylist()
    assert out[1] is None and out[2] == []                   # null and empty rows stay
    for before, after in zip(lists.to_pylist(), out, strict=True):
        if before:  # other tokens all kept, in order; "a" thinned
            assert [t for t in after if t != "a"] == [t for t in before if t != "a"]
    assert 5 <= sum(r.count("a") for r in out if r) <= 25   # ~0.2 of 70
    # the draw travels with the row: a slice of the batch drops the same tokens
    assert drop_tokens(lists.slice(1), keys[1:], pa.array(["a"]),
                       np.array([0.2])).to_pylist() == out[1:]
    other = drop_tokens(lists, keys + np.uint64(9), pa.array(["a"]), np.array([0.2]))
    assert other.to_pylist() != out


def test_auto_settings_follow_the_corpus():
    cfg = w2v_cfg(max_iter=0, min_count=0, step_size=0.0)
    small_tail = resolve_settings(cfg, Corpus(sentences=3000, tokens=12_000, vocabulary=5000,
                                              singletons=3000))
    big = resolve_settings(cfg, Corpus(sentences=160_000, tokens=15_000_000, vocabulary=59_000,
                                       singletons=2000))
    assert small_tail.max_iter > big.max_iter == 1  # 15M tokens: one epoch fits 25M updates
    # large corpora: within the update budget (at least one epoch)
    mid = resolve_settings(cfg, Corpus(sentences=10_000, tokens=2_900_000, vocabulary=14_000,
                                       singletons=0))
    assert mid.max_iter == 5  # 14.5M updates: the usual floor of 5 epochs
    wide = resolve_settings(cfg, Corpus(sentences=160_000, tokens=12_000_000,
                                        vocabulary=59_000, singletons=0))
    assert wide.max_iter == 2  # the budget allows 2
    thin = resolve_settings(cfg, Corpus(sentences=160_000, tokens=12_000_000,
                                        vocabulary=200_000, singletons=0))
    assert thin.max_iter == 2  # 60 tokens per item: the budget decides, not the catalogue
    huge = resolve_settings(cfg, Corpus(sentences=10**6, tokens=60_000_000,
                                        vocabulary=3_000_000, singletons=0))
    assert huge.max_iter == 1
    below = resolve_settings(cfg, Corpus(sentences=5_000, tokens=900_000, vocabulary=9_000,
                                         singletons=0))
    # partitions: 2 from 5M token updates (big 15M x 1, wide 12M x 2, mid 2.9M x 5), 1 below
    # (0.9M x 5 = 4.5M; small_tail)
    assert (big.num_partitions, wide.num_partitions, mid.num_partitions,
            below.num_partitions, small_tail.num_partitions) == (2, 2, 2, 1, 1)
    assert small_tail.min_count == 1 and big.min_count == 2
    assert small_tail.step_size < big.step_size
    fixed = resolve_settings(w2v_cfg(max_iter=7, min_count=3, step_size=0.05, num_partitions=3),
                             Corpus(1, 1, 1, 1))
    assert (fixed.max_iter, fixed.min_count, fixed.step_size, fixed.num_partitions) == (
        7, 3, 0.05, 3)


def test_train_word2vec_records_corpus_and_resolved_settings(spark):
    s = spark.createDataFrame([(["a", "b", "c", "a", "b"],), (["b", "c", "x"],)],
                              "items array<string>")
    assert corpus_stats(s) == Corpus(sentences=2, tokens=8, vocabulary=4, singletons=1)
    vectors, details = train_word2vec(s, w2v_cfg(vector_size=4, max_iter=0, min_count=0),
                                      sample=0.2)
    assert details["corpus_tokens"] == 8 and details["used_max_iter"] >= 5
    assert details["used_min_count"] == 1 and details["items_with_vector"] == vectors.count()
    assert details["tokens_after_subsampling"] <= 8
    assert details["used_num_partitions"] == 1  # 8 tokens: far below the parallel threshold
    assert details["word2vec_repeatable"] is True  # one partition in local mode
    two, d2 = train_word2vec(s, w2v_cfg(vector_size=4, max_iter=2, min_count=1,
                                        num_partitions=2))
    assert d2["used_num_partitions"] == 2 and two.count() == 4
    assert d2["word2vec_repeatable"] is False  # two partitions share one array


def test_trained_vectors_are_shipped_in_small_slices(spark, monkeypatch):
    """MLlib's vectors come back as a driver-local table that Spark ships inside its tasks:
    they go out in slices of VECTOR_SLICE_BYTES (here 192 B: 60 items x dim 8 in 30 slices,
    where the default parallelism would make 2), and the setting is restored after."""
    from recemb_spark.models import word2vec
    monkeypatch.setattr(word2vec, "VECTOR_SLICE_BYTES", 2 * (4 * 8 + 64))
    rng = np.random.default_rng(0)
    s = spark.createDataFrame([([f"i{j}" for j in rng.integers(0, 60, 12)],)
                               for _ in range(300)], "items array<string>")
    vectors, details = train_word2vec(s, w2v_cfg(vector_size=8, max_iter=1, min_count=1))
    assert details["items_with_vector"] == 60
    assert vectors.rdd.getNumPartitions() == word2vec.vector_slices(60, 8) == 30
    assert spark.conf.get("spark.sql.leafNodeDefaultParallelism", None) is None


def test_side_tokens_interleave_after_their_items(spark):
    items = spark.createDataFrame([("a", "A", ["Drama", "War"]), ("b", "B", []),
                                   ("c", "C", ["Drama"])],
                                  "item_id string, title string, genres array<string>")
    side = side_tokens(items)
    assert sorted((r["item_id"], r["side"]) for r in side.collect()) == [
        ("a", ["side:Drama", "side:War"]), ("c", ["side:Drama"])]
    s = spark.createDataFrame([(["a", "b", "c"],), (["c", "a"],)], "items array<string>")
    got = sorted(r["items"] for r in interleave_side_tokens(s, side, 0.0, 1).collect())
    assert got == [["a", "side:Drama", "side:War", "b", "c", "side:Drama"],
                   ["c", "side:Drama", "a", "side:Drama", "side:War"]]


def test_cold_items_get_the_normalised_mean_of_their_side_vectors(spark):
    vectors = spark.createDataFrame([("a", [1.0, 0.0]), ("side:x", [2.0, 0.0]),
                                     ("side:y", [0.0, 3.0])], VEC)
    items, side_vecs = split_vectors(vectors)
    assert [r["item_id"] for r in items.collect()] == ["a"]
    side = spark.createDataFrame([("a", ["side:x"]), ("new", ["side:x", "side:y"]),
                                  ("unknown", ["side:z"])], "item_id string, side array<string>")
    cold = cold_item_vectors(side, side_vecs, items)
    h = 1 / math.sqrt(2)
    expected = spark.createDataFrame([("new", [h, h])], VEC)
    assert_approx_df_equality(cold, expected, 1e-6, ignore_nullable=True)


def test_validation_split_never_uses_the_last_item(spark):
    from recemb_spark.models.tune import validation_split

    seqs = spark.createDataFrame(
        [("u", ["a", "b"], 2, None, None), ("u", ["c", "d", "e"], 3, None, None),
         ("v", ["a", "b", "c"], 3, None, None)],
        "user_id string, items array<string>, n_items int, ts_start timestamp, "
        "ts_end timestamp")
    import datetime as dt
    seqs = seqs.withColumn("ts_start", F.when(F.array_contains("items", "c") &
                                              (F.col("user_id") == "u"),
                                              F.lit(dt.datetime(2024, 1, 2)))
                           .otherwise(F.lit(dt.datetime(2024, 1, 1))))
    train, cases = validation_split(seqs)
    got = {r["user_id"]: (r["heldout"], r["query"], r["history"]) for r in cases.collect()}
    # u's history a b c d e: e is the evaluation's, d validates, c queries
    assert got == {"u": ("d", "c", ["a", "b", "c"])}
    assert sorted(r["items"] for r in train.collect()) == [["a", "b"], ["a", "b", "c"]]


def test_tune_reports_every_point_and_keeps_the_best(spark, monkeypatch):
    from recemb_spark.models import tune

    rows = [(f"u{i}", [f"{i % 7}", f"{(i + 1) % 7}", f"{(i + 2) % 7}", f"{(i + 3) % 7}",
                       f"{(i + 4) % 7}"], 5, None, None) for i in range(40)]
    seqs = spark.createDataFrame(rows, "user_id string, items array<string>, n_items int, "
                                       "ts_start timestamp, ts_end timestamp")
    monkeypatch.setattr(tune, "GRID", [{}, {"window_size": 2}, {"sample": 0.01}])
    cfg = w2v_cfg(vector_size=4, max_iter=2, min_count=1, step_size=0.025)
    chosen, sample, report = tune.tune_word2vec(spark, lambda s: s, seqs, cfg, 0.0, 600.0,
                                                train_word2vec)
    assert [p["point"] for p in report["tune_points"]] == [{}, {"window_size": 2},
                                                           {"sample": 0.01}]
    best = max(report["tune_points"], key=lambda p: p["hr@10"])
    assert report["tune_chosen"] == best["point"] and report["tune_cases"] == 40
    assert chosen.window_size == best["point"].get("window_size", cfg.window_size)
    assert sample == best["point"].get("sample", 0.0)
    # a spent budget still runs the configured point, and only it
    _, _, report = tune.tune_word2vec(spark, lambda s: s, seqs, cfg, 0.0, 0.0, train_word2vec)
    assert len(report["tune_points"]) == 1 and report["tune_skipped"] == 2
