import datetime as dt
import math

import numpy as np
import pytest
from chispa import assert_df_equality

from recemb_spark.evaluation.scoring import (
    format_metrics,
    heldout_ranks,
    hit_and_ndcg,
    leave_last_out,
    popularity_vectors,
    score_model,
)
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.neighbors.topk import top_k_rows


def t(minutes):
    return dt.datetime(2024, 1, 1) + dt.timedelta(minutes=minutes)


def test_leave_last_out_split(spark):
    ratings = spark.createDataFrame([
        ("u", "a", 5.0, t(1)), ("u", "b", 4.0, t(2)), ("u", "c", 2.0, t(9)),  # c not liked
        ("u", "d", 4.5, t(3)),
        ("v", "10", 4.0, t(5)), ("v", "9", 4.0, t(5)), ("v", "1", 4.0, t(4)),  # tie: 10 after 9
        ("w", "a", 5.0, t(1)), ("w", "b", 1.0, t(2)),                       # one like: not eligible
    ], RATINGS_SCHEMA)
    split = leave_last_out(ratings, 3.5)
    expected_cases = spark.createDataFrame(
        [("u", "d", "b", ["a", "b"]), ("v", "10", "9", ["1", "9"])],
        "user_id string, heldout string, query string, history array<string>")
    assert_df_equality(split.cases, expected_cases, ignore_row_order=True, ignore_nullable=True)
    kept = sorted((r["user_id"], r["item_id"]) for r in split.train.collect())
    assert kept == [("u", "a"), ("u", "b"), ("u", "c"), ("v", "1"), ("v", "9"),
                    ("w", "a"), ("w", "b")]


def test_rank_hr_ndcg_arithmetic():
    scores = np.array([[0.9, 0.5, 0.5, -np.inf, 0.1],
                       [0.1, 0.2, 0.3, 0.4, 0.5]])
    # row 0: held-out 2 ties with 1 (lower index ranks first) -> rank 2
    # row 1: held-out 4 has the best score -> rank 0
    ranks = heldout_ranks(scores, np.array([2, 4]))
    assert ranks.tolist() == [2, 0]
    hits, ndcg = hit_and_ndcg(ranks, 2)
    assert (hits, ndcg) == (1, 1.0)
    hits, ndcg = hit_and_ndcg(ranks, 3)
    assert hits == 2 and ndcg == pytest.approx(1.0 + 1.0 / math.log2(4))
    idx, best = top_k_rows(scores[:1], 3)
    assert idx.tolist() == [[0, 1, 2]] and best.tolist() == [[0.9, 0.5, 0.5]]
    idx, _ = top_k_rows(scores[:1], 5)
    assert idx.tolist() == [[0, 1, 2, 4, -1]]  # excluded (-inf) never chosen


@pytest.mark.parametrize("seed", range(5))
def test_top_k_rows_breaks_ties_at_the_boundary_by_column(seed):
    """Many equal scores straddle the k-th place: the lowest columns win, as a full stable
    sort would choose."""
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.1, 0.5, 0.9], size=(40, 300)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    idx, best = top_k_rows(scores, 25)
    want = np.lexsort((np.broadcast_to(np.arange(300), scores.shape), -scores), axis=1)[:, :25]
    assert np.array_equal(idx, want)
    assert np.array_equal(best, np.take_along_axis(scores, want, axis=1))


VEC = "item_id string, vector array<float>"
CASES = "user_id string, heldout string, query string, history array<string>"


def test_score_model_on_hand_made_geometry(spark):
    # items on the unit circle: a=0deg, b=10deg, c=90deg, d=180deg, e=95deg
    angles = {"a": 0, "b": 10, "c": 90, "d": 180, "e": 95}
    vectors = spark.createDataFrame(
        [(i, [math.cos(math.radians(d)), math.sin(math.radians(d))]) for i, d in angles.items()],
        VEC)
    cases = spark.createDataFrame([
        ("u1", "b", "a", ["a"]),         # from a: b(1.0) first -> rank 0
        ("u2", "e", "c", ["a", "c"]),    # from c: e(95) first -> rank 0
        ("u3", "d", "a", ["a", "b"]),    # from a: c, e, then d -> rank 2
        ("u4", "x", "a", ["a"]),         # held-out without vector: miss
        ("u5", "b", "y", ["y"]),         # query without vector: miss
    ], CASES)
    m = {(r["metric"], r["k"]): r["value"] for r in
         score_model(spark, cases, vectors, [1, 3], "toy", catalogue_size=5)}
    assert m[("users", 0)] == 5
    assert m[("hr", 1)] == pytest.approx(2 / 5)
    assert m[("hr", 3)] == pytest.approx(3 / 5)
    assert m[("ndcg", 3)] == pytest.approx((1 + 1 + 1 / math.log2(4)) / 5)
    assert m[("query_missing", 0)] == 1 and m[("heldout_missing", 0)] == 1
    # top-1 per scored user: b (u1), e (u2), c (u3) -> 3 of 5 catalogue items
    assert m[("coverage", 1)] == pytest.approx(3 / 5)


def test_user_query_and_popularity(spark):
    vectors = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [0.7, 0.7])],
                                    VEC)
    cases = spark.createDataFrame([("u", "b", "a", ["a"]), ("v", "a", "c", ["c"])], CASES)
    users = spark.createDataFrame([("u", [0.0, 1.0])], "user_id string, vector array<float>")
    m = {(r["metric"], r["k"]): r["value"] for r in
         score_model(spark, cases, vectors, [1], "toy", 3, mode="user", user_vectors=users)}
    assert m[("user_hr", 1)] == pytest.approx(0.5)      # u: b is nearest to (0,1); v: no vector
    assert m[("user_query_missing", 0)] == 1
    train = spark.createDataFrame([("u", "a", 5.0, t(0)), ("v", "a", 4.0, t(0)),
                                   ("w", "b", 4.0, t(0)), ("w", "c", 1.0, t(0))], RATINGS_SCHEMA)
    pop = popularity_vectors(train, 3.5)
    assert sorted((r["item_id"], r["vector"][0]) for r in pop.collect()) == [("a", 2.0),
                                                                              ("b", 1.0)]
    cases = spark.createDataFrame([("u", "b", "a", ["a"]), ("v", "a", "b", ["b"])], CASES)
    m = {(r["metric"], r["k"]): r["value"] for r in
         score_model(spark, cases, pop, [1], "popularity", 3, mode="constant")}
    assert m[("hr", 1)] == pytest.approx(1.0)  # a excluded for u -> b; b excluded for v -> a


def test_format_metrics_table():
    rows = [{"model": "popularity", "metric": "hr", "k": 10, "value": 0.05},
            {"model": "item2vec", "metric": "hr", "k": 10, "value": 0.25},
            {"model": "item2vec", "metric": "user_hr", "k": 10, "value": 0.2}]
    text = format_metrics(rows, [10])
    assert "item2vec      item         0.2500" in text and "user         0.2000" in text


def test_format_metrics_widens_for_long_names_and_baselines_have_no_query():
    rows = [{"model": "popularity_category", "metric": "hr", "k": 10, "value": 0.05},
            {"model": "item2vec", "metric": "hr", "k": 10, "value": 0.25}]
    lines = format_metrics(rows, [10]).splitlines()
    assert lines[2].split()[:3] == ["popularity_category", "-", "0.0500"]
    assert lines[3].startswith("item2vec            item ")  # one column width for all rows


def test_popularity_segments_head_tail_cold(spark):
    from recemb_spark.evaluation.popularity import popularity_segments
    from recemb_spark.evaluation.scoring import segments_for_cases

    # liked events: a 6, b 2, c 1, d 1 (10 in all); head share 0.5: a alone holds 60%
    rows = [(f"u{i}", "a", 5.0, t(i)) for i in range(6)] + [
        ("u0", "b", 4.0, t(0)), ("u1", "b", 4.0, t(0)), ("u2", "c", 4.0, t(0)),
        ("u3", "d", 4.0, t(0)), ("u4", "e", 1.0, t(0))]                 # e: never liked
    train = spark.createDataFrame(rows, RATINGS_SCHEMA)
    seg = popularity_segments(train, 3.5, head_share=0.5, cold_max_events=1)
    got = {r["item_id"]: r["segments"] for r in seg.collect()}
    assert got == {"a": ["head"], "b": ["tail"], "c": ["tail", "cold"], "d": ["tail", "cold"]}
    cases = spark.createDataFrame([("u", "e", "a", ["a"]), ("v", "a", "b", ["b"])], CASES)
    full = {r["item_id"]: r["segments"] for r in segments_for_cases(cases, seg).collect()}
    assert full == {"e": ["tail", "cold"], "a": ["head"]}


def test_score_model_by_segment_and_category_popularity(spark):
    vectors = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.9, 0.1]), ("c", [0.0, 1.0])],
                                    VEC)
    cases = spark.createDataFrame([("u", "b", "a", ["a"]), ("v", "a", "c", ["c"]),
                                   ("w", "x", "a", ["a"])], CASES)
    segments = spark.createDataFrame([("b", ["head"]), ("a", ["tail", "cold"]),
                                      ("x", ["tail", "cold"])],
                                     "item_id string, segments array<string>")
    m = {(r["metric"], r["k"]): r["value"] for r in
         score_model(spark, cases, vectors, [1], "toy", 3, segments=segments)}
    assert m[("hr", 1)] == pytest.approx(1 / 3)          # u hits; v ranks b first; w: miss
    assert m[("users_head", 0)] == 1 and m[("hr_head", 1)] == pytest.approx(1.0)
    assert m[("users_tail", 0)] == 2 and m[("hr_tail", 1)] == pytest.approx(0.0)
    assert m[("heldout_missing_cold", 0)] == 1
    # popularity within the query item's category: c is the most popular overall, but for
    # u (query a, category x) the items of category x come first -> b
    pop = spark.createDataFrame([("a", [5.0]), ("b", [2.0]), ("c", [9.0])], VEC)
    cats = spark.createDataFrame([("a", "x"), ("b", "x"), ("c", "y")],
                                 "item_id string, category string")
    two = spark.createDataFrame([("u", "b", "a", ["a"]), ("v", "a", "c", ["c"])], CASES)
    m = {(r["metric"], r["k"]): r["value"] for r in
         score_model(spark, two, pop, [1], "popularity_category", 3,
                     mode="category", item_categories=cats)}
    # u: b (a's category, a excluded); v: c excluded, nothing else in y -> a by popularity
    assert m[("hr", 1)] == pytest.approx(1.0)
    plain = {(r["metric"], r["k"]): r["value"] for r in
             score_model(spark, two, pop, [1], "popularity", 3, mode="constant")}
    assert plain[("hr", 1)] == pytest.approx(0.5)  # u: c first (miss); v: a (hit)


def test_format_metrics_prints_segments():
    rows = [{"model": "item2vec", "metric": "hr", "k": 10, "value": 0.25},
            {"model": "item2vec", "metric": "hr_head", "k": 10, "value": 0.4},
            {"model": "item2vec", "metric": "hr_tail", "k": 10, "value": 0.1},
            {"model": "item2vec", "metric": "users_head", "k": 0, "value": 30},
            {"model": "item2vec", "metric": "users_tail", "k": 0, "value": 70},
            {"model": "item2vec", "metric": "heldout_missing_tail", "k": 0, "value": 5}]
    text = format_metrics(rows, [10])
    assert "popularity" in text and "0.4000" in text and "0.1000" in text
    assert text.splitlines()[-1].split() == ["(users)", "30", "70"]
