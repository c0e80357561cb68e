"""The ivf method: k-means lists, probes tuned on a sample, a two-pass search that is exact
over the probed lists (and exact outright when every list is probed)."""
import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.neighbors import banded, ivf
from recemb_spark.neighbors import nearest as ann
from recemb_spark.neighbors.exact import exact_top_k
from recemb_spark.neighbors.topk import exact_core_seconds

from .test_ann import VEC, ann_cfg, clustered

QUERIES = "query_id string, vector array<float>, exclude array<string>"
TOPK = "query_id string, item_id string, rank int, score double"


def test_spherical_kmeans_finds_separated_clusters_and_is_seeded():
    pts = clustered(n=800, dim=8, clusters=6, noise=0.02, seed=1).astype(np.float32)
    cent = ivf.spherical_kmeans(pts, 6, seed=3)
    assert np.allclose(np.linalg.norm(cent, axis=1), 1, atol=1e-5)
    lists = ivf.nearest_lists(pts, cent, 1)[:, 0]
    truth = np.round(pts @ pts.T, 1) > 0.9  # same cluster (noise 0.02)
    same_list = lists[:, None] == lists[None, :]
    assert (same_list == truth).mean() > 0.99
    assert np.array_equal(cent, ivf.spherical_kmeans(pts, 6, seed=3))


def test_nearest_lists_best_first_ties_by_number():
    cent = np.eye(3, dtype=np.float32)
    x = np.array([[0.1, 0.9, 0.5], [0.5, 0.5, 0.0]], np.float32)
    assert ivf.nearest_lists(x, cent, 3).tolist() == [[1, 2, 0], [0, 1, 2]]
    assert ivf.nearest_lists(x, cent, 2, chunk=1).tolist() == [[1, 2], [0, 1]]
    assert ivf.nearest_lists(x, cent, 1, chunk=1).tolist() == [[1], [0]]  # tie: list 0
    rng = np.random.default_rng(3)  # the nearest alone is the first of the full order
    pts, many = rng.normal(size=(500, 4)).astype(np.float32), rng.normal(size=(9, 4))
    many = np.vstack([many, many[:2]]).astype(np.float32)  # lists 9, 10 tie with 0, 1
    assert (ivf.nearest_lists(pts, many, 1, chunk=7)[:, 0]
            == ivf.nearest_lists(pts, many, 11)[:, 0]).all()
    assert ivf.n_lists_for(722_000) == 241 and ivf.n_lists_for(10) == 1
    assert ivf.n_lists_for(10**9) == ivf.MAX_LISTS


def test_tune_probes_counts_where_the_true_neighbours_are():
    """Four lists on the axes; two queries near list 0 whose 2 true neighbours lie in lists
    0 and 1 (query a) and 0 and 2 (query b, whose probe order is 0, 2, ...)."""
    cent = np.eye(4, dtype=np.float32)
    index = ivf.IvfIndex(cent, np.array([10, 20, 30, 40]))
    q = np.array([[1, 0.5, 0.2, 0], [1, 0.2, 0.5, 0]], np.float32)
    truth = np.array([[[1, 0, 0, 0], [0, 1, 0, 0]], [[1, 0, 0, 0], [0, 0, 1, 0]]], np.float32)
    valid = np.ones((2, 2), bool)
    one = ivf.tune_probes(q, truth, valid, index, target=0.5)
    assert (one.nprobe, one.est_recall) == (1, 0.5)
    assert one.est_scanned == pytest.approx(10 / 100)
    two = ivf.tune_probes(q, truth, valid, index, target=0.9)
    assert (two.nprobe, two.est_recall) == (2, 1.0)
    assert two.est_scanned == pytest.approx(((10 + 20) + (10 + 30)) / 2 / 100)
    valid[1, 1] = False  # a missing neighbour does not count
    assert ivf.tune_probes(q, truth, valid, index, target=0.9).nprobe == 2


@pytest.fixture(scope="module")
def indexed(spark):
    pts = clustered(n=1500, dim=12, clusters=30, noise=0.2, seed=5).astype(np.float32)
    df = ann.normalise(spark.createDataFrame(
        [(f"i{i}", v.tolist()) for i, v in enumerate(pts)], VEC)).persist()
    cent = ivf.spherical_kmeans(pts[::3] / np.linalg.norm(pts[::3], axis=1, keepdims=True),
                                ivf.n_lists_for(len(pts), 100), seed=7)
    index, assigned = ivf.build_index(spark, df, cent)
    yield pts, df, index, assigned
    assigned.unpersist()
    df.unpersist()


def user_rows(pts, rng, n=40):
    """Queries with histories (the items they must never get)."""
    rows = []
    for j in range(n):
        v = pts[rng.integers(len(pts))] + 0.3 * rng.normal(size=pts.shape[1])
        rows.append((f"u{j}", v.astype(np.float32).tolist(),
                     [f"i{int(x)}" for x in rng.choice(len(pts), 5, replace=False)]))
    return rows


def assert_every_list_is_exact(spark, queries, items, index, assigned, k, **blocks):
    """ivf with every list probed returns the exact search's rows (ids and ranks); the
    search's counters. ``blocks``: ivf_top_k's query_rows / item_rows."""
    full = ivf.IvfIndex(index.centroids, index.sizes, nprobe=index.n_lists)
    got, info = ivf.ivf_top_k(spark, queries, assigned, full, k, **blocks)
    want = exact_top_k(spark, queries, items, k, "cosine", path="broadcast")
    assert_df_equality(got.select("query_id", "item_id", "rank"),
                       want.select("query_id", "item_id", "rank"),
                       ignore_row_order=True, ignore_nullable=True)
    info["broadcast"].unpersist()
    return info


def test_every_list_probed_is_the_exact_search(spark, indexed):
    pts, df, index, assigned = indexed
    assert index.n_lists == 15 and index.sizes.sum() == len(pts)
    queries = spark.createDataFrame(user_rows(pts, np.random.default_rng(2)), QUERIES)
    info = assert_every_list_is_exact(spark, queries, df, index, assigned, 8)
    assert info["queries"] == 40
    # one task per list and pass when every list's items and queries fit one block
    assert info["first_tasks"] <= 15 and info["more_tasks"] == 15 == info["item_blocks"]


def test_lists_cut_in_small_blocks_give_the_same_rows(spark, indexed):
    """A list whose items or probing queries pass the block sizes becomes several tasks
    (here blocks of 7 queries and 30 items, lists of ~100 items): the same exact rows, ties
    and the k-th score of pass 1 taken over the list's item blocks included."""
    pts, df, index, assigned = indexed
    rows = user_rows(pts, np.random.default_rng(4))
    queries = spark.createDataFrame(rows, QUERIES)
    info = assert_every_list_is_exact(spark, queries, df, index, assigned, 8, query_rows=7,
                                      item_rows=30)
    item_blocks = -(-index.sizes // 30)
    assert info["item_blocks"] == item_blocks.sum() > 3 * 15
    q = np.array([v for _, v, _ in rows], np.float32)
    nearest = ivf.nearest_lists(q / np.linalg.norm(q, axis=1, keepdims=True),
                                index.centroids, 1)[:, 0]
    first = np.bincount(nearest, minlength=15)  # pass 1: the queries of each nearest list
    assert info["first_tasks"] == int((-(-first // 7) * item_blocks).sum())
    assert info["more_tasks"] == int((-(-(40 - first) // 7) * item_blocks).sum())


def test_the_second_pass_keeps_the_top_k_of_the_probed_lists(spark, indexed):
    """With 3 probes the result is exactly the top-k over the items of each query's 3
    nearest lists (computed here in numpy), while the second pass emits far fewer
    candidates than k per probe."""
    pts, df, index, assigned = indexed
    rows = user_rows(pts, np.random.default_rng(3), n=60)
    queries = spark.createDataFrame(rows, QUERIES)
    three = ivf.IvfIndex(index.centroids, index.sizes, nprobe=3)
    k = 6
    got, info = ivf.ivf_top_k(spark, queries, assigned, three, k)
    unit = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    item_list = ivf.nearest_lists(unit, index.centroids, 1)[:, 0]
    want = []
    for qid, v, hist in rows:
        v = np.asarray(v, np.float32)
        v /= np.linalg.norm(v)
        probed = set(ivf.nearest_lists(v[None, :], index.centroids, 3)[0].tolist())
        ok = np.isin(item_list, list(probed))
        ok[[int(h[1:]) for h in hist]] = False
        s = np.where(ok, unit @ v, -np.inf)
        best = np.argsort(-s, kind="stable")[:k]
        want += [(qid, f"i{b}", r + 1) for r, b in enumerate(best)]
    assert_df_equality(got.select("query_id", "item_id", "rank"),
                       spark.createDataFrame(want, "query_id string, item_id string, rank int"),
                       ignore_row_order=True, ignore_nullable=True)
    assert info["first_candidates"] == 60 * k
    assert info["more_candidates"] < 60 * k  # of up to 60 x k x 2: the k-th score prunes
    info["broadcast"].unpersist()


@pytest.mark.parametrize("nprobe", [1, 3, 15])
def test_the_broadcast_search_returns_the_sharded_rows(spark, indexed, nprobe):
    """The items broadcast (ivf_local): the same rows, ranks and scores as the sharded
    two-pass search, histories excluded, for one probe (no second round), three, and every
    list (= the exact search)."""
    pts, df, index, assigned = indexed
    rows = user_rows(pts, np.random.default_rng(11), n=70)
    rows.append(("dup", rows[0][1], []))  # one vector twice: ties broken alike
    queries = spark.createDataFrame(rows, QUERIES)
    probed = ivf.IvfIndex(index.centroids, index.sizes, nprobe=nprobe)
    k = 7
    want, winfo = ivf.ivf_top_k(spark, queries, assigned, probed, k)
    got, info = ivf.ivf_top_k(spark, queries, assigned, probed, k, path="broadcast")
    assert info["path"] == "broadcast" and winfo["path"] == "sharded"
    got = got.persist()
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    assert got.count() == len(rows) * k
    hist = {q: set(h) for q, _, h in rows}
    assert not [r for r in got.collect() if r["item_id"] in hist[r["query_id"]]]
    got.unpersist()
    for bc in (info["broadcast"], winfo["broadcast"]):
        bc.unpersist()


def test_probe_top_k_with_lists_smaller_than_k_and_empty_lists():
    """The kernel alone: lists of 1 and 0 items, k above every list's size; the top-k of
    the probed lists' items in score order (ties by number), excluded pairs left out."""
    from recemb_spark.neighbors import ivf_local
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [1, 0]], np.float32)
    lists = np.array([0, 2, 2, 0, 3])  # list 1 is empty
    cent = np.array([[1, 0], [0.7, 0.7], [0, 1], [1, 0]], np.float32)
    items = ivf_local.listed_items([f"i{i}" for i in range(5)], np.array([4, 3, 2, 1, 0]),
                                   vectors[::-1], lists[::-1], cent)
    # row j is number 4 - j with vectors[4 - j]: number n has vectors[n] and lists[n]
    q = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    probes = np.array([[1, 3], [2, 1], [3, 0]])
    excl = (np.array([0, 2]), np.array([4, 4]))  # queries 0 and 2 never get number 4
    idx, vals, scored = ivf_local.probe_top_k(items, q, probes, 3, excl)
    # query 0: lists 1 (0 items) and 3 (1); query 1: 2 (2) and 1; query 2: 3 and 0 (2)
    assert scored == 1 + 2 + 1 + 2
    # query 0 probes lists 1 (empty) and 3 (number 4 only, excluded): nothing
    assert idx[0].tolist() == [-1, -1, -1]
    # query 1 probes list 2 first: numbers 2 (0, 1) and 1 (0.6, 0.8); then the empty list
    assert idx[1].tolist() == [2, 1, -1]
    # query 2 probes list 3 (excluded) and then list 0: numbers 0 (1, 0), 3 (0.8, 0.6)
    assert idx[2].tolist() == [0, 3, -1]
    assert vals[1, :2].tolist() == vals[2, :2].tolist() == pytest.approx([1.0, 0.8])


def test_the_number_of_lists_is_the_cheapest_rung():
    """choose_lists tries the configured list count and its halvings, each tuned on the
    queries, and keeps the cheapest by ivf_core_seconds; every probe costs a query row, so
    at this size (lists of a few items) the coarsest rung wins; without queries one rung."""
    pts = clustered(n=1500, dim=12, clusters=30, noise=0.2, seed=5).astype(np.float32)
    unit = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    rng = np.random.default_rng(8)
    q = unit[rng.choice(len(pts), 200, replace=False)] + 0.05 * rng.normal(size=(200, 12))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    top = np.argsort(-(q @ unit.T), axis=1, kind="stable")[:, :5]
    truth, valid = unit[top], np.ones((200, 5), bool)
    chosen = ivf.choose_lists(unit, 1500, q, truth, valid, 0.95, 10**6, 12, seed=3,
                              items_per_list=10)
    assert [r["lists"] for r in chosen.rungs] == [150, 75, 37, 18]
    costs = [r["core_seconds"] for r in chosen.rungs]
    assert len(chosen.centroids) == chosen.rungs[int(np.argmin(costs))]["lists"] == 18
    for r in chosen.rungs:  # each rung tuned to the target on the queries
        assert r["estimated_recall"] >= 0.95 and 1 <= r["nprobe"] <= r["lists"]
    # finer lists need more probes for the same recall
    assert chosen.rungs[0]["nprobe"] > chosen.rungs[-1]["nprobe"]
    # with the items broadcast a probe costs no row: the rung that scores least wins
    local = ivf.choose_lists(unit, 1500, q, truth, valid, 0.95, 10**6, 12, seed=3,
                             items_per_list=10, broadcast=True)
    shares = [r["estimated_scanned_share"] for r in local.rungs]
    assert len(local.centroids) == local.rungs[int(np.argmin(shares))]["lists"] != 18
    alone = ivf.choose_lists(unit, 1500, q[:0], truth[:0], valid[:0], 0.95, 0, 12, seed=3,
                             items_per_list=10)
    assert [r["lists"] for r in alone.rungs] == [150] and len(alone.centroids) == 150


def test_auto_method_by_estimated_cost():
    """The 722k-item log's measured figures: exact 417 core-s, lsh 380 at recall 0.70 (so
    760), ivf with 10 probes scanning 4.2% at 0.970 cheapest, but not when short of the
    target (counted twice); a tiny catalogue goes exact; an ivf tuned to probe every list
    loses to exact."""
    from recemb_spark.stages.ann import auto_method
    layout = banded.BandLayout(8, 32, 0.25, est_recall=0.705, est_pairs_per_query=10_600)
    index = ivf.IvfIndex(np.zeros((240, 32), np.float32), np.full(240, 3008), nprobe=10,
                         est_recall=0.970, est_scanned=0.042)
    method, est = auto_method(layout, index, 722_000, 32, 0.97)
    assert method == "ivf", est
    assert est["ivf_core_seconds_est"] < est["exact_core_seconds_est"] / 2
    short = ivf.IvfIndex(index.centroids, index.sizes, 20, 0.95, 0.08)
    assert auto_method(layout, short, 722_000, 32, 0.97)[0] == "exact"
    assert auto_method(layout, index, 2_000, 32, 0.97)[0] == "exact"
    full = ivf.IvfIndex(index.centroids, index.sizes, 240, 1.0, 1.0)
    assert auto_method(layout, full, 722_000, 32, 0.97)[0] == "exact"
    # broadcast: no cost per probe row, so cheaper than sharded, and all scoring when every
    # list is probed (exact, plus the per-query cost)
    local = auto_method(layout, index, 722_000, 32, 0.97, broadcast=True)
    assert local[0] == "ivf"
    assert local[1]["ivf_core_seconds_est"] < est["ivf_core_seconds_est"] / 2
    assert ivf.ivf_core_seconds(full, 1000, 722_000, 32, broadcast=True) == pytest.approx(
        exact_core_seconds(1000, 722_000, 32) + 1000 * ivf.BROADCAST_QUERY_SECONDS)


def test_stage_choice_builds_tunes_and_searches(spark, indexed):
    """ann.method ivf: the index built and tuned for the item queries, item neighbours and
    user candidates at the tuned recall (user probes tuned for the user queries), histories
    excluded."""
    from recemb_spark.stages.ann import choose_method, item_neighbors, users_top_k
    pts, df, _, _ = indexed
    # lists of 10 items and halvings of them: the cheapest has a few lists at this size
    cfg = ann_cfg(method="ivf", ivf_items_per_list=10, target_recall=0.95, k=5,
                  user_candidates_k=5)
    choice = choose_method(spark, df, cfg, len(pts), 12)
    try:
        assert choice.method == "ivf" and choice.index is not None
        tuned = choice.index[0]
        assert 1 <= tuned.nprobe < tuned.n_lists and tuned.est_recall >= 0.95
        nb, stats = item_neighbors(spark, df, cfg, choice)
        truth = ann.exact_item_neighbors(spark, df, 5, path="broadcast")
        recall = ann.recall_at_k(nb, truth, "item_id", "neighbor_id")
        assert recall >= 0.9 and stats["nprobe"] == tuned.nprobe
        assert nb.filter(F.col("item_id") == F.col("neighbor_id")).count() == 0
        rows = user_rows(pts, np.random.default_rng(4), n=30)
        users = ann.normalise(spark.createDataFrame([(u, v) for u, v, _ in rows],
                                                    "user_id string, vector array<float>"),
                              "user_id")
        seen = spark.createDataFrame([(u, h) for u, _, h in rows],
                                     "user_id string, items array<string>")
        cands, ustats = users_top_k(spark, df, users, seen, cfg, choice, len(pts), 12)
        assert cands.count() == 30 * 5 and ustats["nprobe"] >= 1
        hist = seen.select("user_id", F.explode("items").alias("item_id"))
        assert cands.join(hist, ["user_id", "item_id"]).count() == 0
    finally:
        choice.release()


def test_ties_rank_in_natural_id_order_as_the_exact_search(spark):
    """Duplicated vectors (identical scores) rank in natural id order ("9" before "10") on
    every path: with every list probed, ivf returns the exact search's very rows."""
    from .test_shards import topk_queries, vectors_with_ties
    m, ids, items = vectors_with_ties(spark)
    queries = topk_queries(spark, m, ids)
    unit = ann.normalise(items)
    cent = ivf.spherical_kmeans(m / np.linalg.norm(m, axis=1, keepdims=True),
                                ivf.n_lists_for(len(ids), 12), seed=1)
    index, assigned = ivf.build_index(spark, unit, cent)
    try:
        assert_every_list_is_exact(spark, queries, unit, index, assigned, 6)
    finally:
        assigned.unpersist()
