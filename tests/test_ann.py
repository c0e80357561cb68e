import numpy as np
import pytest
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.neighbors import banded, topk
from recemb_spark.neighbors import nearest as ann
from recemb_spark.neighbors.exact import user_candidates

VEC = "item_id string, vector array<float>"


def clustered(n=2000, dim=16, clusters=40, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    pts = centers[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim))
    return pts / np.linalg.norm(pts, axis=1, keepdims=True)


def ann_cfg(**values):
    return load_config().replace("ann", **values).ann


@pytest.fixture(scope="module")
def points(spark):
    pts = clustered()
    df = spark.createDataFrame([(f"i{i}", [float(x) for x in v]) for i, v in enumerate(pts)], VEC)
    return pts, ann.normalise(df).persist()


def brute_force(pts, k):
    s = pts @ pts.T
    np.fill_diagonal(s, -np.inf)
    return {f"i{i}": {f"i{j}" for j in np.argsort(-s[i], kind="stable")[:k]}
            for i in range(len(pts))}


def as_sets(df, key="item_id", other="neighbor_id"):
    out = {}
    for r in df.collect():
        out.setdefault(r[key], set()).add(r[other])
    return out


def test_exact_neighbours_are_exactly_right(spark, points):
    pts, df = points
    got = ann.exact_item_neighbors(spark, df, 5)
    assert got.schema.simpleString() == \
        "struct<item_id:string,neighbor_id:string,rank:int,similarity:double>"
    assert as_sets(got) == brute_force(pts, 5)
    ranks = {}
    for r in got.collect():
        ranks.setdefault(r["item_id"], []).append((r["rank"], r["similarity"]))
    for rows in ranks.values():
        rows.sort()
        assert [r for r, _ in rows] == [1, 2, 3, 4, 5]
        # descending similarity
        assert all(a[1] >= b[1] for a, b in zip(rows, rows[1:], strict=False))


def recall(got, truth):
    return np.mean([len(got.get(i, set()) & t) / len(t) for i, t in truth.items()])


def test_banded_lsh_recall_and_the_bands_trade_off(spark, points):
    pts, df = points
    truth = brute_force(pts, 10)
    few, few_stats = ann.lsh_item_neighbors(
        spark, df, ann_cfg(bands=2, hashes_per_band=4, tune=False), 10)
    many, many_stats = ann.lsh_item_neighbors(
        spark, df, ann_cfg(bands=16, hashes_per_band=4, tune=False), 10)
    r_few, r_many = recall(as_sets(few), truth), recall(as_sets(many), truth)
    # measured: 0.93 with 2 bands, 1.00 with 16 (clusters of ~50 points, dim 16)
    assert r_many > 0.97
    assert r_many > r_few
    assert many_stats["candidate_pairs"] > few_stats["candidate_pairs"]
    rows = many.collect()
    assert all(r["item_id"] != r["neighbor_id"] for r in rows)  # no self-neighbours
    counts = many.groupBy("item_id").count().agg(F.max("count")).first()[0]
    assert counts == 10  # K respected


def test_tuned_layout_reaches_the_target_recall(spark, points):
    pts, df = points
    got, stats = ann.lsh_item_neighbors(spark, df, ann_cfg(tune=True, target_recall=0.97), 10)
    assert stats["estimated_recall"] >= 0.97
    assert stats["hashes_per_band"] * stats["bands"] <= banded.MAX_HASHES
    # measured: 0.99 on these clusters; the estimate is a 300-query sample of the same thing
    exact = brute_force(pts, 10)
    assert recall(as_sets(got), exact) > 0.95
    # a lower target never picks a costlier layout (same sample, same hash functions)
    x = pts.astype(np.float32)
    truth = np.array([[int(j[1:]) for j in sorted(exact[f"i{i}"])] for i in range(200)])
    proj = ann.brp_projections(spark, 16, banded.MAX_HASHES, 42)

    def cost(target):
        lay = banded.tune_layout(x, 2000, x[:200], x[truth], truth >= 0, proj, target)
        return lay.bands + banded.PAIR_COST * lay.est_pairs_per_query, lay.est_recall

    (low, low_recall), (high, high_recall) = cost(0.5), cost(0.97)
    assert low_recall >= 0.5 and high_recall >= 0.97
    assert low <= high
    # a cap on the candidates per query below what 0.97 needs: the best recall within it
    free = banded.tune_layout(x, 2000, x[:200], x[truth], truth >= 0, proj, 0.97)
    cap = free.est_pairs_per_query / 2
    capped = banded.tune_layout(x, 2000, x[:200], x[truth], truth >= 0, proj, 0.97, cap)
    assert capped.est_pairs_per_query <= cap < free.est_pairs_per_query
    assert 0 < capped.est_recall <= free.est_recall
    tiny = banded.tune_layout(x, 2000, x[:200], x[truth], truth >= 0, proj, 0.97, 0.0)
    assert tiny.est_pairs_per_query > 0  # none fits: the layout with the fewest candidates


def test_bucket_cap_splits_a_hot_bucket(spark):
    rng = np.random.default_rng(1)
    hot = np.tile(rng.normal(size=8), (300, 1)) + 1e-4 * rng.normal(size=(300, 8))
    rest = rng.normal(size=(100, 8))
    pts = np.vstack([hot, rest])
    df = ann.normalise(spark.createDataFrame(
        [(f"i{i}", [float(x) for x in v]) for i, v in enumerate(pts)], VEC))
    cfg = ann_cfg(bands=4, hashes_per_band=2, max_bucket_size=50, tune=False)
    got, stats = ann.lsh_item_neighbors(spark, df, cfg, 5)
    assert stats["largest_bucket"] >= 300 and stats["buckets_split"] >= 4
    # every query was scored against one chunk of at most 50 items per band
    assert stats["candidate_pairs"] <= 4 * 400 * 50
    hot_ids = {f"i{i}" for i in range(300)}
    sets = as_sets(got)
    assert all(sets[i] <= hot_ids for i in list(hot_ids)[:50])  # neighbours still correct


def test_group_items_caps_chunks_and_keeps_every_item_once():
    rng = np.random.default_rng(3)
    keys = np.concatenate([np.full(230, 7), rng.integers(0, 40, 500)]).astype(np.uint64)
    b = banded.group_items(keys, 50, np.random.default_rng(0))
    assert b.count.max() <= 50 and b.count.sum() == len(keys)
    assert sorted(b.order.tolist()) == list(range(len(keys)))
    assert b.largest >= 230 and b.split >= 1
    for i in rng.integers(0, len(keys), 50):  # item_bucket points at the chunk holding i
        j = b.item_bucket[i]
        assert i in b.order[b.start[j]:b.start[j] + b.count[j]]
    # same items, same seed -> same buckets (every task builds them identically)
    again = banded.group_items(keys, 50, np.random.default_rng(0))
    assert np.array_equal(again.order, b.order) and np.array_equal(again.keys, b.keys)


def test_brp_projections_reproduce_spark_hashes(spark):
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.linalg import Vectors
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 6))
    df = spark.createDataFrame([(Vectors.dense(v.tolist()),) for v in x], ["v"])
    model = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", numHashTables=8,
                                        bucketLength=0.3, seed=11).fit(df)
    spark_hashes = np.array([[h[0] for h in r["h"]] for r in model.transform(df).collect()])
    proj = ann.brp_projections(spark, 6, 8, 11)
    assert np.array_equal(np.floor(x @ proj.T / 0.3), spark_hashes)


def test_user_candidates_exclude_history(spark, points):
    pts, items = points
    users = spark.createDataFrame([("u1", [float(x) for x in pts[0]]),
                                   ("u2", [float(x) for x in pts[1]])],
                                  "user_id string, vector array<float>")
    exact_first = {r["item_id"] for r in user_candidates(
        spark, users.filter("user_id = 'u1'"), items,
        spark.createDataFrame([("u1", [])], "user_id string, items array<string>"), 5,
        "cosine").collect()}
    history = spark.createDataFrame([("u1", sorted(exact_first)), ("u2", ["i1"])],
                                    "user_id string, items array<string>")
    for method in ("exact", "lsh"):
        if method == "exact":
            got = user_candidates(spark, users, items, history, 5, "cosine")
        else:
            got, _ = ann.lsh_user_candidates(spark, items, ann.normalise(users, "user_id"),
                                             history, ann_cfg(), 5)
        rows = got.collect()
        assert not {r["item_id"] for r in rows if r["user_id"] == "u1"} & exact_first
        assert "i1" not in {r["item_id"] for r in rows if r["user_id"] == "u2"}
        assert sum(r["user_id"] == "u1" for r in rows) == 5


def test_recall_at_k_arithmetic(spark):
    truth = spark.createDataFrame([("a", "x"), ("a", "y"), ("b", "x"), ("b", "z")],
                                  "item_id string, neighbor_id string")
    approx = spark.createDataFrame([("a", "x"), ("a", "q"), ("b", "x"), ("b", "z"),
                                    ("c", "x"), ("c", "y")],
                                   "item_id string, neighbor_id string")
    # "c" is not in the sampled truth: its rows are left out, not counted
    assert ann.recall_at_k(approx, truth, "item_id", "neighbor_id") == pytest.approx(0.75)
    # a sampled query with no approximate list counts 0
    more = truth.union(spark.createDataFrame([("d", "x")], truth.schema))
    assert ann.recall_at_k(approx, more, "item_id", "neighbor_id") == pytest.approx(0.5)


def reference_top_k(scores, k):
    """Best k columns per row by score, ties by column, -inf never returned."""
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((cols, -scores), axis=1)[:, :k]
    vals = np.take_along_axis(scores, order, 1)
    return np.where(np.isfinite(vals), order, -1)


@pytest.mark.parametrize("n,n_q,k", [(3000, 700, 10), (2000, 1500, 40), (6, 4, 10)])
def test_stream_top_k_matches_a_full_sort_with_ties_and_exclusions(n, n_q, k):
    rng = np.random.default_rng(n)
    x = rng.integers(-3, 4, size=(n, 12)).astype(np.float32)  # integer scores: many ties
    ex_r, ex_c = rng.integers(0, n_q, 2000), rng.integers(0, n, 2000)
    scores = x[:n_q] @ x.T
    scores[ex_r, ex_c] = -np.inf
    idx, vals = topk.stream_top_k(x[:n_q], np.ascontiguousarray(x.T), k, (ex_r, ex_c),
                                  tile=256, block=300)
    want = reference_top_k(scores, k)
    assert np.array_equal(idx[:, :want.shape[1]], want)
    assert (idx[:, want.shape[1]:] == -1).all()
    got = np.take_along_axis(scores, np.maximum(idx[:, :want.shape[1]], 0), 1)
    found = want >= 0
    assert np.array_equal(np.where(found, got, 0), np.where(found, vals[:, :want.shape[1]], 0))


@pytest.mark.parametrize("scale", [1.0, 37.0])
def test_stream_top_k_scans_in_float32_but_ranks_by_exact_scores(scale):
    """Near-ties closer than float32 BLAS's error: items are copies of a few vectors nudged by
    ~1e-7, so a float32 product alone would order them by its rounding. The kernel ranks as
    exact (float64-summed) scoring does."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((8, 48)).astype(np.float32) * scale
    items = (np.repeat(base, 400, axis=0)
             * (1 + rng.standard_normal((3200, 48)) * 1e-7)).astype(np.float32)
    q = (base[rng.integers(0, 8, 300)] + rng.standard_normal((300, 48)) * 0.05).astype(np.float32)
    mt = np.ascontiguousarray(items.T)
    exact = topk.block_scores(q, mt)
    for k in (1, 25):
        idx, vals = topk.stream_top_k(q, mt, k, tile=256, block=128)
        assert np.array_equal(idx, reference_top_k(exact, k))
        assert np.array_equal(vals, np.take_along_axis(exact, idx, 1))


@pytest.mark.parametrize("k", [3, 40])
def test_stream_top_k_with_a_floor_keeps_every_entry_at_or_above_it(k):
    """A floor (the k-th best of an earlier pass, as the ivf's second pass gives it): the
    entries scoring at least the floor are exactly those of the search without one (ties
    included), rows without one (-inf) keep every entry the plain search returns, and an
    all -inf floor changes nothing."""
    rng = np.random.default_rng(k)
    x = rng.integers(-3, 4, size=(2500, 12)).astype(np.float32)  # integer scores: many ties
    q, mt = x[:600], np.ascontiguousarray(x[600:].T)
    ex_r, ex_c = rng.integers(0, 600, 900), rng.integers(0, 1900, 900)
    plain_i, plain_v = topk.stream_top_k(q, mt, k, (ex_r, ex_c), tile=256, block=128)
    scores = q @ mt
    scores[ex_r, ex_c] = -np.inf
    at = (-k - rng.integers(0, 2 * k, 600))[:, None]  # at or below each row's k-th best
    floor = np.take_along_axis(np.sort(scores, axis=1), at, 1)[:, 0].astype(np.float32)
    floor[::7] = -np.inf  # rows without a floor: the first tile's partial sort as before
    idx, vals = topk.stream_top_k(q, mt, k, (ex_r, ex_c), tile=256, block=128, floor=floor)
    kept = vals >= floor[:, None]
    assert np.array_equal(np.where(kept, idx, -1),
                          np.where(plain_v >= floor[:, None], plain_i, -1))
    assert kept[::7].sum() == (plain_i[::7] >= 0).sum()
    none_i, none_v = topk.stream_top_k(q, mt, k, (ex_r, ex_c), tile=256, block=128,
                                       floor=np.full(600, -np.inf, np.float32))
    assert np.array_equal(none_i, plain_i) and np.array_equal(none_v, plain_v)


def test_stream_top_k_with_items_sharing_one_vector_stays_exact_and_bounded():
    """Cold items with one side-information vector tie in float32 within the margin: the
    float32 scan cuts the crowded rows to their exact top-k (ties by column) instead of
    holding every tied entry."""
    rng = np.random.default_rng(9)
    shared = rng.standard_normal(16).astype(np.float32)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    items[rng.choice(3000, 1500, replace=False)] = shared
    q = (shared + rng.standard_normal((200, 16)) * 0.2).astype(np.float32)
    mt = np.ascontiguousarray(items.T)
    exact = topk.block_scores(q, mt)
    idx, vals = topk.stream_top_k(q, mt, 20, tile=256, block=64)
    assert np.array_equal(idx, reference_top_k(exact, 20))
    held = []
    top = topk.RunningTopK(64, 20, np.full(64, 1e-6, np.float32),
                           rescore=lambda r, c: np.zeros(len(r), np.float32))
    for lo in range(0, 3000, 256):  # every entry ties: the tightening must cut them
        r, c = np.divmod(np.arange(64 * 256), 256)
        top.add(r, c + lo, np.zeros(len(r), np.float32))
        held.append(len(top.result()[0]))
    assert max(held) <= (topk.CROWDED + 1) * 64 * 20 + 64 * 256
    assert top.final()[0].size == 64 * 20


def test_kth_per_row_over_signed_scores_and_short_rows():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 39, 3000)
    vals = (rng.standard_normal(3000) * 100).astype(np.float32)
    vals[:50], vals[50:100] = 0.0, -0.0  # both zeros, negative and positive scores
    rows[rows == 7] = 8  # row 7: no candidates
    rows[:3] = 39  # row 39: 3 candidates, fewer than k
    k = 10
    got = topk.kth_per_row(rows, vals, 40, k)
    for r in range(40):
        mine = np.sort(vals[rows == r])[::-1]
        want = mine[k - 1] if len(mine) >= k else -np.inf
        assert got[r] == want, r
    assert np.isneginf(got[7]) and np.isneginf(got[39])


def test_exclusions_positions_ignore_unknown_ids_and_null_lists():
    import pyarrow as pa
    ids = pa.array(["a", "b", "c"])
    lists = pa.array([["c", "x", "a"], None, [], ["b"]], pa.list_(pa.string()))
    rows, cols = topk.exclusions(lists, ids)
    assert rows.tolist() == [0, 0, 3] and cols.tolist() == [2, 0, 1]
    assert topk.positions(pa.array(["b", "zz", "a"]), ids).tolist() == [1, -1, 0]


def test_merge_top_k_unions_rows_once():
    a_i = np.array([[5, 2, -1]])
    a_v = np.array([[0.9, 0.5, -np.inf]], np.float32)
    b_i = np.array([[2, 7, 1]])
    b_v = np.array([[0.5, 0.8, 0.5]], np.float32)
    idx, vals = topk.merge_top_k(a_i, a_v, b_i, b_v, 4)
    assert idx.tolist() == [[5, 7, 1, 2]]  # 2 once; 1 and 2 tie at 0.5: lower index first
    assert vals[0].tolist() == pytest.approx([0.9, 0.8, 0.5, 0.5])


def test_banded_top_k_exact_inside_buckets_and_exclusions():
    pts = clustered(n=600, dim=8, clusters=12, noise=0.05, seed=4).astype(np.float32)
    proj = np.random.default_rng(0).normal(size=(2 * 8, 8))
    proj /= np.linalg.norm(proj, axis=1, keepdims=True)
    users = pts[:30]
    ex_q, ex_i = np.arange(30), np.arange(30)  # each user has "seen" the item it copies
    got = banded.banded_top_k(users, pts, proj, 0.5, 8, 5, 1000, 0, np.full(30, -1),
                              (ex_q, ex_i))
    assert not (got.idx == np.arange(30)[:, None]).any()  # history excluded
    scores = users @ pts.T
    found = got.idx >= 0
    rows = np.nonzero(found)[0]
    assert np.allclose(got.score[found], scores[rows, got.idx[found]], atol=1e-5)
    assert (np.diff(got.score, axis=1)[np.isfinite(got.score[:, 1:])] <= 1e-6).all()
    scores[ex_q, ex_i] = -np.inf
    truth = reference_top_k(scores, 5)
    hit = np.mean([len(set(truth[r]) & set(got.idx[r])) / 5 for r in range(30)])
    assert hit > 0.9  # 8 bands of 2 over tight clusters; measured 1.0


def test_split_bucket_chunk_of_a_query_follows_its_salt_not_its_position():
    keys = np.concatenate([np.full(230, 7), np.arange(100, 140)]).astype(np.uint64)
    b = banded.group_items(keys, 50, np.random.default_rng(0))
    q_keys = np.full(40, 7, np.uint64)
    salt = np.arange(1000, 1040, dtype=np.uint64)
    none = np.full(40, -1)
    got = banded.query_buckets(q_keys, b, none, salt, band=3)
    perm = np.random.default_rng(1).permutation(40)
    again = banded.query_buckets(q_keys[perm], b, none, salt[perm], band=3)
    assert np.array_equal(again, got[perm])
    assert len(set(got.tolist())) > 1 and (b.count[got] <= 50).all()  # spread over chunks


def test_lsh_counters_survive_a_recomputed_partition(spark, points):
    """Counters are kept per partition: running the same tasks again (here: two actions on
    an unpersisted result) replaces their entries instead of adding to the sum."""
    _, df = points
    cfg = ann_cfg(bands=4, hashes_per_band=3, tune=False)
    queries = df.select(F.col("item_id").alias("query_id"), "vector",
                        F.array().cast("array<string>").alias("exclude"))
    out, info = ann.lsh_top_k(spark, queries, df, cfg, 5, self_join=True)
    out.count()
    once = info["stats"].as_dict(1.0)
    out.count()  # every partition computed a second time
    twice = info["stats"].as_dict(1.0)
    assert once["candidate_pairs"] > 0 and twice == once
    info["broadcast"].unpersist()


def test_auto_weighs_exact_against_lsh_by_estimated_cost():
    """auto above auto_exact_max_items, with an ivf index that would probe every list (never
    cheaper than exact): exact when its estimated cost is at most the tuned lsh layout's, an
    lsh layout short of the target recall counting double."""
    from recemb_spark.neighbors.ivf import IvfIndex
    from recemb_spark.stages.ann import auto_method
    full = IvfIndex(np.zeros((8, 32), np.float32), np.ones(8), 8, 1.0, 1.0)
    # the 5M-event Taobao-shaped log's layout: 722k items, short of 0.97
    taobao = banded.BandLayout(8, 32, 0.25, est_recall=0.84, est_pairs_per_query=12_700)
    method, est = auto_method(taobao, full, 722_000, 32, 0.97)
    assert method == "exact" and est["exact_core_seconds_est"] < 2 * est["lsh_core_seconds_est"]
    assert auto_method(taobao, full, 3_000_000, 32, 0.97)[0] == "lsh"  # exact grows as n^2
    # a layout on target pays off sooner: clustered vectors, 1M items
    sharp = banded.BandLayout(6, 16, 0.09, est_recall=0.98, est_pairs_per_query=1_000)
    assert auto_method(sharp, full, 1_000_000, 32, 0.97)[0] == "lsh"
    assert auto_method(sharp, full, 20_000, 32, 0.97)[0] == "exact"


def test_auto_tunes_above_the_limit_and_keeps_the_layout(spark, points, monkeypatch):
    """auto: exact (no tuning) up to auto_exact_max_items; above it the tuned layout is
    estimated, and the choice (with the layout when lsh) and the estimates are returned."""
    from recemb_spark.stages.ann import choose_method
    _, df = points
    assert choose_method(spark, df, ann_cfg(), 2000, 16).details == {}
    assert choose_method(spark, df, ann_cfg(), 2000, 16).method == "exact"
    tuned = choose_method(spark, df, ann_cfg(auto_exact_max_items=0), 2000, 16)
    assert tuned.method == "exact"  # 2,000 items: exact is far cheaper
    assert tuned.details["lsh_core_seconds_est"] > tuned.details["exact_core_seconds_est"]
    assert "ivf_core_seconds_est" in tuned.details and tuned.details["ivf_recall_est"] > 0
    assert tuned.index is None and tuned.layout is None
    assert choose_method(spark, df, ann_cfg(method="lsh"), 2000, 16).method == "lsh"
    import recemb_spark.stages.ann as stage
    monkeypatch.setattr(stage, "auto_method", lambda *a: ("lsh", {}))
    lsh = choose_method(spark, df, ann_cfg(auto_exact_max_items=0), 2000, 16)
    assert lsh.method == "lsh" and lsh.layout is not None  # reused, not tuned twice
    assert lsh.layout[0].est_recall >= 0.97
    assert lsh.layout[1].shape == (lsh.layout[0].bands * lsh.layout[0].hashes_per_band, 16)
