"""The norm-bound search: exact top-k by dot product over bands of item norms, pruned."""
import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.neighbors import normbound
from recemb_spark.neighbors.exact import exact_top_k

from .test_ann import VEC

QUERIES = "query_id string, vector array<float>, exclude array<string>"


def factors(n: int, dim: int, seed: int) -> np.ndarray:
    """ALS-like item factors: directions at random, norms long-tailed (a few large)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * rng.pareto(2.0, size=(n, 1))).astype(np.float32)


def query_rows(x: np.ndarray, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    rows = [(f"u{j}", rng.normal(size=x.shape[1]).astype(np.float32).tolist(),
             [f"i{int(i)}" for i in rng.choice(len(x), 4, replace=False)]) for j in range(n)]
    rows.append(("zero", [0.0] * x.shape[1], []))  # every dot 0: ties by natural id order
    rows.append(("none", None, []))  # no vector: no row
    return rows


def test_bands_cut_by_norm_with_a_covering_bound(spark):
    x = factors(400, 6, seed=1)
    items = spark.createDataFrame([(f"i{i}", v.tolist()) for i, v in enumerate(x)], VEC)
    banded, sizes, tops, cached = normbound.norm_bands(items, 4)
    try:
        rows = banded.select("item_id", "list").collect()
        norms = np.linalg.norm(x, axis=1)
        band = {r["item_id"]: r["list"] for r in rows}
        assert len(rows) == 400 and sizes.sum() == 400 and sizes.min() > 80
        for b in range(4):  # each band's bound covers its items and every later band's
            inside = [norms[int(i[1:])] for i, v in band.items() if v >= b]
            assert max(inside) <= tops[b] * (1 + 1e-6)
        assert min(norms[int(i[1:])] for i, v in band.items() if v == 0) >= max(
            norms[int(i[1:])] for i, v in band.items() if v == 3)
    finally:
        cached.unpersist()


@pytest.mark.parametrize("k, blocks", [(10, {"query_rows": 7, "item_rows": 30}), (120, {}),
                                       (10, {"broadcast": True}), (120, {"broadcast": True})])
def test_the_pruned_search_is_the_exact_search(spark, k, blocks):
    """Same rows (ids, ranks, ties, exclusions) as the exact dot-product search, with bands
    cut into small blocks (several per band), while scoring well under all the pairs; with
    k past band 0's 100 items (no floor: every band searched) too; on either path (the
    items broadcast: the pairs scored counted by the tasks). (Default blocks: the ALS test
    below.)"""
    from recemb_spark.neighbors.nearest import materialise
    x = factors(600, 8, seed=2)
    items = spark.createDataFrame([(f"i{i}", v.tolist()) for i, v in enumerate(x)], VEC)
    queries = spark.createDataFrame(query_rows(x, 40, seed=3), QUERIES)
    got, info = materialise(*normbound.norm_top_k(spark, queries, items, k, n_bands=6,
                                                  **blocks))
    assert info["path"] == ("broadcast" if blocks.get("broadcast") else "sharded")
    want = exact_top_k(spark, queries, items, k, "dot", path="broadcast")
    assert_df_equality(got.select("query_id", "item_id", "rank"),
                       want.select("query_id", "item_id", "rank"),
                       ignore_row_order=True, ignore_nullable=True)
    scores = {(r["query_id"], r["item_id"]): r["score"] for r in got.collect()}
    q = {r[0]: np.asarray(r[1], np.float32) for r in query_rows(x, 40, seed=3) if r[1]}
    for (u, i), s in scores.items():
        assert s == pytest.approx(float(q[u] @ x[int(i[1:])]), rel=1e-4, abs=1e-5)
    assert info["queries"] == 41 and info["bands"] == 6
    if k == 10:
        assert 0.1 < info["scanned_share"] < 0.75  # the bound pruned: not every pair scored
    else:
        assert info["scanned_share"] == 1.0  # no floor: all pairs
    got.unpersist()


def test_number_of_bands_by_catalogue():
    assert normbound.n_bands_for(59_000) == normbound.SMALL_BANDS == 8
    assert normbound.n_bands_for(722_000) == normbound.LARGE_BANDS == 16
    assert normbound.n_bands_for(3) == 3 and normbound.n_bands_for(0) == 1


@pytest.mark.parametrize("broadcast_max_mb, path", [(None, "broadcast"), (0, "sharded")])
def test_als_candidates_above_the_exact_threshold_are_exact_and_pruned(spark, broadcast_max_mb,
                                                                       path):
    """auto above ann.auto_exact_max_items: ALS's top unseen items by dot product through
    the norm bound, on the path the broadcast threshold gives; recall 1 against the plain
    search, scores the dot products, histories excluded, the scanned share recorded."""
    from recemb_spark.config import load_config
    from recemb_spark.models.registry import als_candidates
    x = factors(900, 8, seed=4)
    items = spark.createDataFrame([(f"i{i}", v.tolist()) for i, v in enumerate(x)], VEC)
    rows = query_rows(x, 30, seed=5)[:-2]
    users = spark.createDataFrame([(u, v) for u, v, _ in rows],
                                  "user_id string, vector array<float>")
    # each user has seen its two best items: a truth that did not exclude them would
    # disagree with the candidates (recall < 1)
    rows = [(u, v, h + [f"i{int(i)}" for i in np.argsort(-(x @ np.asarray(v)))[:2]])
            for u, v, h in rows]
    seen = spark.createDataFrame([(u, h) for u, _, h in rows],
                                 "user_id string, items array<string>")
    cfg = load_config().replace("ann", method="auto", auto_exact_max_items=500,
                                recall_sample=12, broadcast_max_mb=broadcast_max_mb
                                ).replace("als", candidates_k=5)
    cands, details = als_candidates(spark, cfg, users, items, seen)
    assert details["candidates_method"] == "norm_bound"
    assert details["candidates_path"] == path
    assert details["candidates_recall"] == 1.0
    assert 0 < details["candidates_scanned_share"] < 1
    got = cands.collect()
    assert len(got) == 30 * 5
    vec = {u: np.asarray(v, np.float32) for u, v, _ in rows}
    for r in got:
        assert r["score"] == pytest.approx(float(vec[r["user_id"]] @ x[int(r["item_id"][1:])]),
                                           rel=1e-4, abs=1e-5)
    hist = seen.select("user_id", F.explode("items").alias("item_id"))
    assert cands.join(hist, ["user_id", "item_id"]).count() == 0
    cands.unpersist()


def test_equal_norms_leave_bands_empty_and_stay_exact(spark):
    """Every item of the same norm: one band holds them all, the others are empty and never
    searched; the rows are the exact search's."""
    rng = np.random.default_rng(6)
    x = np.zeros((200, 5), np.float32)  # two entries of +-1 each: norms exactly sqrt(2)
    for row in x:
        row[rng.choice(5, 2, replace=False)] = rng.choice([-1.0, 1.0], 2)
    items = spark.createDataFrame([(f"i{i}", v.tolist()) for i, v in enumerate(x)], VEC)
    queries = spark.createDataFrame(query_rows(x, 20, seed=7)[:-1], QUERIES)
    want = exact_top_k(spark, queries, items, 5, "dot", path="broadcast")
    for broadcast in (False, True):
        got, info = normbound.norm_top_k(spark, queries, items, 5, n_bands=4,
                                         broadcast=broadcast)
        assert_df_equality(got.select("query_id", "item_id", "rank"),
                           want.select("query_id", "item_id", "rank"),
                           ignore_row_order=True, ignore_nullable=True)
        assert sorted(info["band_sizes"]).count(0) >= 1 and sum(info["band_sizes"]) == 200
        for df in info["cached"]:
            df.unpersist()
