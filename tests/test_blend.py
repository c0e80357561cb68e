"""The blend's channels, merge, metrics and weight search on tiny inline data."""
import datetime as dt
import math

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from recemb_spark.neighbors import fusion as blend

CH = "user_id string, channel string, item_id string, rank int"
PAIRS = "user_id string, item_id string"
RATINGS = "user_id string, item_id string, rating double, ts timestamp"


def t(day: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, 0, 0, second)


def test_liked_histories_in_time_order_without_disliked(spark):
    ratings = spark.createDataFrame(
        [("u", "b", 5.0, t(2)), ("u", "a", 4.0, t(1)), ("u", "x", 1.0, t(3)),
         ("v", "x", 1.0, t(1))], RATINGS)
    expected = spark.createDataFrame([("u", ["a", "b"])], "user_id string, items array<string>")
    assert_df_equality(blend.liked_histories(ratings, 3.5), expected, ignore_nullable=True)


def test_candidate_channel_drops_excluded_and_ranks_again(spark):
    cands = spark.createDataFrame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "a", 1)],
                                  "user_id string, item_id string, rank int")
    exclude = spark.createDataFrame([("u", "b")], PAIRS)
    expected = spark.createDataFrame([("u", "m_user", "a", 1), ("u", "m_user", "c", 2)], CH)
    got = blend.candidate_channel(cands, exclude, 2, "m_user")
    assert_df_equality(got.filter("user_id = 'u'"), expected, ignore_row_order=True,
                       ignore_nullable=True)
    assert got.filter("user_id = 'v'").count() == 1


def test_ranked_channel_reads_a_table_without_excluded_pairs_as_candidate_channel_does(spark):
    cands = spark.createDataFrame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "d", 1)],
                                  "user_id string, item_id string, rank int")
    none = spark.createDataFrame([], PAIRS)
    expected = spark.createDataFrame([("u", "m_user", "a", 1), ("u", "m_user", "b", 2),
                                      ("v", "m_user", "d", 1)], CH)
    for got in (blend.ranked_channel(cands, 2, "m_user"),
                blend.candidate_channel(cands, none, 2, "m_user")):
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_excluded_already_trusts_candidates_written_after_the_ratings(spark, tmp_path):
    from recemb_spark.io.warehouse import Warehouse
    from recemb_spark.stages.blend import excluded_already

    wh, day = Warehouse(spark, str(tmp_path)), "2026-01-01"

    def manifest(stage, status, started, finished, models=()):
        wh.write_manifest(day, stage, {
            "stage": stage, "status": status, "started_at": started, "finished_at": finished,
            "outputs": [f"user_candidates/dt={day}/model={m}" for m in models]})

    assert excluded_already(wh, day, ["a"]) == set()  # no manifests
    manifest("tables", "ok", "2026-12-07T08:00:00+00:00", "2026-12-07T08:01:00+00:00")
    manifest("ann", "ok", "2026-12-07T08:05:00+00:00", "2026-12-07T08:06:00+00:00", ["a", "b"])
    manifest("als", "ok", "2026-12-07T07:50:00+00:00", "2026-12-07T07:55:00+00:00", ["als"])
    # als ran before the ratings were written again: its lists may list newly rated items
    assert excluded_already(wh, day, ["a", "als", "c"]) == {"a"}
    manifest("ann", "failed", "2026-12-07T08:05:00+00:00", "2026-12-07T08:06:00+00:00", ["a"])
    assert excluded_already(wh, day, ["a", "als"]) == set()
    manifest("ann", "ok", "2026-12-07T08:05:00+00:00", "2026-12-07T08:06:00+00:00", ["a"])
    manifest("tables", "failed", "2026-12-07T08:00:00+00:00", "2026-12-07T08:01:00+00:00")
    assert excluded_already(wh, day, ["a"]) == set()


def test_sums_equal_but_for_their_last_bits_tie_and_the_item_id_decides(spark):
    # (0.1 + 0.2) + 0.3 and 0.1 + (0.2 + 0.3): equal sums whose floats differ in the last bit
    high, low = (0.1 + 0.2) + 0.3, 0.1 + (0.2 + 0.3)
    assert high > low
    scored = spark.createDataFrame([("u", "b", high), ("u", "a", low), ("u", "c", 0.5)],
                                   "user_id string, item_id string, score double")
    got = blend.rank_per_user(scored, 3).orderBy("rank").collect()
    assert [(r["item_id"], r["rank"]) for r in got] == [("a", 1), ("b", 2), ("c", 3)]


def test_neighbor_channel_weighs_the_latest_items_most(spark):
    histories = spark.createDataFrame([("u", ["old", "a", "b"])],
                                      "user_id string, items array<string>")
    neighbors = spark.createDataFrame(
        [("b", "x", 0.5), ("a", "y", 0.9), ("a", "x", 0.2), ("old", "z", 1.0), ("b", "a", 1.0)],
        "item_id string, neighbor_id string, similarity double")
    exclude = spark.createDataFrame([("u", "a")], PAIRS)
    # last 2 items: b (weight 1), a (weight 1/2); x = 0.5 + 0.1, y = 0.45; z too old, a seen
    expected = spark.createDataFrame([("u", "i_item", "x", 1), ("u", "i_item", "y", 2)], CH)
    got = blend.neighbor_channel(histories, neighbors, 2, exclude, 10, "i_item")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_graph_neighbors_keep_each_items_most_probable_successors(spark):
    graph = spark.createDataFrame(
        [("a", "b", 3.0, 0.6), ("a", "c", 1.0, 0.2), ("a", "d", 1.0, 0.2), ("b", "a", 1.0, 1.0)],
        "src string, dst string, weight double, prob double")
    # depth 2: a keeps b and, of the tied c / d, c (ties by dst)
    expected = spark.createDataFrame(
        [("a", "b", 0.6), ("a", "c", 0.2), ("b", "a", 1.0)],
        "item_id string, neighbor_id string, similarity double")
    assert_df_equality(blend.graph_neighbors(graph, 2), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_popularity_channels_skip_seen_items_even_past_the_depth(spark):
    liked = spark.createDataFrame(
        [(u, i) for i, n in [("p1", 4), ("p2", 3), ("p3", 2), ("p4", 1)] for u in
         [f"w{j}" for j in range(n)]], PAIRS)
    ranks = blend.popularity_ranks(liked, 10)
    assert_df_equality(ranks, spark.createDataFrame(
        [("", "p1", 1), ("", "p2", 2), ("", "p3", 3), ("", "p4", 4)],
        "group string, item_id string, rank int"), ignore_row_order=True, ignore_nullable=True)
    users = spark.createDataFrame([("u", "", 1), ("v", "", 1)],
                                  "user_id string, group string, _g int")
    exclude = spark.createDataFrame([("u", "p1"), ("u", "p2")], PAIRS)
    expected = spark.createDataFrame(
        [("u", "pop", "p3", 1), ("u", "pop", "p4", 2), ("v", "pop", "p1", 1),
         ("v", "pop", "p2", 2)], CH)
    assert_df_equality(blend.unseen_ranked(users, ranks, exclude, 2, "pop"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_category_popularity_ranks_within_the_users_category(spark):
    cats = spark.createDataFrame([("a", "red"), ("b", "red"), ("c", "red"), ("d", "blue")],
                                 "item_id string, category string")
    liked = spark.createDataFrame([("u", "a"), ("v", "b"), ("v", "c"), ("w", "c"),
                                   ("x", "d"), ("x", "c")], PAIRS)
    groups = spark.createDataFrame([("u", "red", 1)], "user_id string, group string, _g int")
    ranks = blend.popularity_ranks(liked, 10, cats)  # red: c 3, a 1, b 1; blue: d 1
    got = blend.unseen_ranked(groups, ranks, liked.filter("user_id = 'u'"), 5, "cat")
    expected = spark.createDataFrame([("u", "cat", "c", 1), ("u", "cat", "b", 2)], CH)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_recent_events_keep_the_last_days(spark):
    rows = spark.createDataFrame([("u", "a", 1.0, t(1)), ("u", "b", 1.0, t(8)),
                                  ("v", "c", 1.0, t(10))], RATINGS)
    got = blend.recent_events(rows, 2).select("item_id")
    assert sorted(r[0] for r in got.collect()) == ["b", "c"]


def test_fuse_sums_weighted_reciprocal_ranks(spark):
    channels = spark.createDataFrame(
        [("u", "A", "x", 1), ("u", "A", "y", 2), ("u", "B", "y", 1), ("u", "B", "z", 2),
         ("u", "C", "w", 1)], CH)
    # rr_k 0: x = 1, y = 1/2 + 2*1 = 2.5, z = 2/2 = 1, w: weight 0 -> left out
    got = blend.fuse(channels, {"A": 1.0, "B": 2.0, "C": 0.0}, 0.0, 2)
    expected = spark.createDataFrame([("u", "y", 1, 2.5), ("u", "x", 2, 1.0)],
                                     "user_id string, item_id string, rank int, score double")
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    with pytest.raises(ValueError, match="positive weight"):
        blend.fuse(channels, {"A": 0.0}, 0.0, 2)


def test_fuse_filled_completes_each_fused_list_from_the_fallback(spark):
    channels = spark.createDataFrame(
        [("u", "A", "x", 1), ("u", "A", "y", 2), ("u", "B", "w", 1),
         ("u", "popular", "x", 1), ("u", "popular", "p", 2), ("u", "popular", "q", 3),
         ("v", "B", "w", 1), ("v", "popular", "p", 1), ("v", "popular", "q", 2),
         ("v", "popular", "r", 3), ("v", "popular", "s", 4)], CH)
    out = "user_id string, item_id string, rank int, score double"
    # popularity only fills: u's fused x (1/1), y (1/2), then p (x is listed already); v,
    # listed by a zero-weight channel only, gets popularity's first three
    got = blend.fuse_filled(channels, {"A": 1.0, "B": 0.0, "popular": 0.0}, 0.0, 3)
    expected = spark.createDataFrame(
        [("u", "x", 1, 1.0), ("u", "y", 2, 0.5), ("u", "p", 3, 0.0),
         ("v", "p", 1, 0.0), ("v", "q", 2, 0.0), ("v", "r", 3, 0.0)], out)
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    # what fuse lists comes first, in fuse's order
    fused = blend.fuse(channels, {"A": 1.0, "B": 0.0}, 0.0, 3).collect()
    assert [(r["item_id"], r["rank"]) for r in fused] == [("x", 1), ("y", 2)]
    # popularity weighted too: fused like a channel (x 1 + 1, y 1/2 = p 1/2: tie by id, q
    # 1/3), and still the fill (v)
    got = blend.fuse_filled(channels, {"A": 1.0, "popular": 1.0}, 0.0, 3)
    expected = spark.createDataFrame(
        [("u", "x", 1, 2.0), ("u", "p", 2, 0.5), ("u", "y", 3, 0.5),
         ("v", "p", 1, 1.0), ("v", "q", 2, 0.5), ("v", "r", 3, 1 / 3)], out)
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    # spread over more partitions by user first: the same lists
    spread = blend.fuse_filled(channels, {"A": 1.0, "popular": 1.0}, 0.0, 3, partitions=5)
    assert spread.rdd.getNumPartitions() == 5
    assert_approx_df_equality(spread, expected, 1e-9, ignore_row_order=True,
                              ignore_nullable=True)
    with pytest.raises(ValueError, match="positive weight"):
        blend.fuse_filled(channels, {"popular": 0.0}, 0.0, 3)


def test_list_metrics_count_hits_within_k_and_missing_lists(spark):
    top = spark.createDataFrame(
        [("A", "u", "a", 1), ("A", "u", "b", 2), ("A", "v", "c", 3), ("A", "v", "a", 1),
         ("B", "u", "b", 1), ("X", "u", "b", 1)],
        "list string, user_id string, item_id string, rank int")
    cases = spark.createDataFrame([("u", "b"), ("v", "c"), ("w", "a")],
                                  "user_id string, heldout string")
    got = blend.list_metrics(top, cases, [2, 3], ["A", "B", "C"])
    g2, g3 = 1 / math.log2(3), 1 / math.log2(4)
    schema = "list string, k int, users long, hits long, hr double, ndcg double, items long"
    expected = spark.createDataFrame(
        # A: u's b at 2, v's c at 3, w without a list; items a, b within 2, and c within 3
        [("A", 2, 3, 1, 1 / 3, g2 / 3, 2), ("A", 3, 3, 2, 2 / 3, (g2 + g3) / 3, 3),
         ("B", 2, 3, 1, 1 / 3, 1 / 3, 1), ("B", 3, 3, 1, 1 / 3, 1 / 3, 1),
         # C lists nothing: every case a miss; X is not asked for
         ("C", 2, 3, 0, 0.0, 0.0, 0), ("C", 3, 3, 0, 0.0, 0.0, 0)], schema)
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_validation_rows_align_channels_and_target(spark):
    channels = spark.createDataFrame(
        [("u", "A", "b", 1), ("u", "B", "a", 1), ("u", "B", "b", 2), ("u", "X", "z", 1)], CH)
    targets = spark.createDataFrame([("u", "b")], PAIRS)
    row = blend.validation_rows(channels, targets, ["A", "B"]).collect()[0]
    assert row["ranks"] == [[0, 1], [1, 2]]  # candidates a, b (item order); X not a name
    assert row["target"] == 1


def test_fused_hits_match_fuse_and_break_ties_by_position():
    ranks = np.array([[0, 1], [1, 2], [2, 0]], float)  # candidates a, b, c; channels A, B
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    rr = np.zeros(3)
    # target b @1: A alone lists b first (hit); B alone lists a first (miss);
    # both: a = 1, b = 1 + 1/2, c = 1/2 (hit)
    assert blend.fused_hits(ranks, 1, weights, rr, 1).tolist() == [1, 0, 1]
    # a tie at the top: candidate a (position 0) ranks before b
    tie = np.array([[1, 0], [0, 1]], float)
    assert blend.fused_hits(tie, 1, np.array([[1.0, 1.0]]), np.zeros(1), 1).tolist() == [0]
    assert blend.fused_hits(ranks, -1, weights, rr, 3).tolist() == [0, 0, 0]
    # a channel with weight 0 does not make its items hits
    assert blend.fused_hits(np.array([[1, 0]], float), 0, np.array([[0.0, 1.0]]),
                            np.zeros(1), 5).tolist() == [0]


def test_coordinate_search_finds_the_best_weights_of_a_known_objective():
    best_w = np.array([0.0, 2.0, 1.0])

    def hits_of(weights, rr_ks):  # more hits the closer to best_w, rr_k 5 preferred
        return 100 - np.abs(weights - best_w).sum(axis=1) * 10 - np.abs(rr_ks - 5)

    got, hits, trace = blend.coordinate_search(hits_of, 3, [0.0, 1.0, 2.0], [20.0, 5.0], 3)
    assert got.tolist() == [0.0, 2.0, 1.0, 5.0]
    assert hits == 100
    assert trace[0]["start"] == [1.0, 1.0, 1.0, 20.0]


def test_coordinate_search_keeps_a_positive_weight():
    def hits_of(weights, rr_ks):  # zero weights look best, but all-zero is not allowed
        return -weights.sum(axis=1)

    got, _, _ = blend.coordinate_search(hits_of, 2, [0.0, 1.0], [10.0], 2)
    assert got[:2].max() > 0


def test_fold_in_recovers_the_factor_als_would_solve():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 3))
    hist = [0, 2, 5]
    values = np.array([1.0, 2.0, 3.0])
    # explicit: the ridge solution of y[hist] x = values with reg n
    x = blend.fold_in(y[hist], values, 0.1, 0.0, None)
    want = np.linalg.solve(y[hist].T @ y[hist] + 0.1 * 3 * np.eye(3), y[hist].T @ values)
    assert np.allclose(x, want, atol=1e-5)
    # implicit: weighted least squares over every item (preference 1 on the history, else 0)
    x = blend.fold_in(y[hist], values, 0.1, 2.0, y.T @ y)
    conf = np.ones(6)
    conf[hist] += 2.0 * values
    pref = np.zeros(6)
    pref[hist] = 1.0
    want = np.linalg.solve((y.T * conf) @ y + 0.1 * 3 * np.eye(3), (y.T * conf) @ pref)
    assert np.allclose(x, want, atol=1e-5)


def test_fold_in_users_skips_unknown_items(spark):
    items = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.0, 1.0])],
                                  "item_id string, vector array<float>")
    hist = spark.createDataFrame([("u", ["a", "zz"], [2.0, 5.0])],
                                 "user_id string, items array<string>, values array<double>")
    row = blend.fold_in_users(hist, items, 0.01, 0.0, implicit=False).collect()[0]
    assert row["user_id"] == "u"
    assert np.allclose(row["vector"], [2.0 / 1.01, 0.0])  # a alone: (1 + 0.01) x0 = 2


def test_report_lists_the_blend_beside_the_models():
    import pandas as pd

    from recemb_spark.report import gather

    m = pd.DataFrame([
        ("evaluate", "w2v", "users", 0, 10), ("evaluate", "w2v", "hr", 10, 0.4),
        ("blend", "blend", "users", 0, 10), ("blend", "blend", "hr", 10, 0.5),
        ("blend", "blend_popular", "users", 0, 10), ("blend", "blend_popular", "hr", 10, 0.1),
        ("ann", "w2v", "item_recall", 10, 0.98)],
        columns=["stage", "model", "metric", "k", "value"])
    t = gather.evaluation_table(m)
    assert list(zip(t["model"], t["query"], t["hr@10"], strict=True)) == [
        ("blend", "list", 0.5), ("blend_popular", "list", 0.1), ("w2v", "item", 0.4)]
    assert list(gather.other_metrics(m)) == ["ann"]


def test_export_plans_the_blend_lists_without_vectors(spark, tmp_path):
    from recemb_spark.config import load_config
    from recemb_spark.io.warehouse import Warehouse
    from recemb_spark.stages.export import plan

    cfg = load_config(overrides=[f"warehouse.path={tmp_path}", "export.user_candidates=true"])
    wh = Warehouse(spark, str(tmp_path))
    d = "2026-01-02"
    wh.write(spark.createDataFrame([("a", [1.0])], "item_id string, vector array<float>"),
             "item_embeddings", d, model="item2vec")
    cands = spark.createDataFrame([("u", "a", 1, 1.0, "blend")],
                                  "user_id string, item_id string, rank int, score double, "
                                  "method string")
    wh.write(cands, "user_candidates", d, model="blend")
    assert plan(wh, cfg, d) == {"item2vec": ["items"], "blend": ["user_candidates"]}
    off = load_config(overrides=[f"warehouse.path={tmp_path}"])
    assert plan(wh, off, d) == {"item2vec": ["items"]}


def test_scoring_cases_and_the_share_of_heldout_items_in_the_history(spark):
    from recemb_spark.evaluation.scoring import heldout_in_history, scoring_cases

    cases = spark.createDataFrame(
        [("u", "b", "a", ["a"]), ("v", "c", "a", ["a"])],
        "user_id string, heldout string, query string, history array<string>")
    assert scoring_cases(cases, True) is cases
    emptied = scoring_cases(cases, False).select("user_id", "history")
    assert sorted(r["history"] == [] for r in emptied.collect()) == [True, True]
    train = spark.createDataFrame([("u", "a", 4.0, t(1)), ("v", "a", 4.0, t(1)),
                                   ("v", "c", 1.0, t(2))], RATINGS)  # v had c already
    assert heldout_in_history(cases, train) == 0.5


def test_recent_categories_follow_the_latest_items(spark):
    cats = spark.createDataFrame([("a", "red"), ("b", "blue"), ("c", "red"), ("d", "green")],
                                 "item_id string, category string")
    histories = spark.createDataFrame([("u", ["d", "a", "b", "c", "x"])],
                                      "user_id string, items array<string>")
    # latest first: x (none), c red, b blue, a red (again), d green
    expected = spark.createDataFrame([("u", "red", 1), ("u", "blue", 2)],
                                     "user_id string, group string, _g int")
    assert_df_equality(blend.recent_categories(histories, cats, 2), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_held_out_users_split_in_two_disjoint_seeded_halves(spark):
    """The evaluation scores each half with the weights chosen on the other: every user in
    exactly one half, a user's pairs together, the same halves for the same seed."""
    from recemb_spark.stages.blend import half_of

    pairs = spark.createDataFrame([(f"u{i % 40}", f"i{i}") for i in range(120)],
                                  "user_id string, item_id string")

    def halves(seed):
        rows = pairs.select("user_id", half_of(seed).alias("h")).distinct().collect()
        assert len(rows) == 40  # one half per user: a user's pairs together
        return {r["user_id"]: r["h"] for r in rows}

    h = halves(42)
    assert set(h.values()) == {0, 1}
    assert 10 <= sum(h.values()) <= 30  # about half of the 40 users
    assert halves(42) == h and halves(7) != h


def test_each_half_gets_weights_chosen_on_the_other_half_only():
    """search(skip=h) never looks at half h: half 0's targets are ranked first by channel a
    only, half 1's by channel b only, so the weights for half 0 come from half 1 (b over a)
    and vice versa."""
    import dataclasses

    from recemb_spark.config import load_config
    from recemb_spark.stages.blend import search

    b = dataclasses.replace(load_config().blend, k=1)
    # two candidates per user (rows; columns: the ranks of channels a and b): a decoy at
    # position 0, which wins ties, and the target at position 1
    a_finds = np.array([[2, 1], [1, 2]], np.float64)  # a ranks the target first
    b_finds = np.array([[1, 2], [2, 1]], np.float64)  # b ranks the target first
    cases = [(0, a_finds, 1)] * 6 + [(1, b_finds, 1)] * 5
    names = ["a", "b"]
    for_half_0 = search(cases, names, b, skip=0)
    assert for_half_0.weights["b"] > for_half_0.weights["a"] and for_half_0.hits == 5
    for_half_1 = search(cases, names, b, skip=1)
    assert for_half_1.weights["a"] > for_half_1.weights["b"] and for_half_1.hits == 6
    both = search(cases, names, b)
    assert both.alone.tolist() == [6, 5] and both.hits == 6  # one channel wins on both
