"""The sharded (keyed-join) banded LSH against the broadcast path, and its parts."""
import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.neighbors import lsh_join
from recemb_spark.neighbors import nearest as ann

from .test_ann import VEC, as_sets, brute_force, clustered, recall

USERS = "user_id string, vector array<float>"
HISTORY = "user_id string, items array<string>"


def ann_cfg(**values):
    return load_config().replace("ann", **values).ann


def frame(spark, pts, prefix="i", schema=VEC):
    return spark.createDataFrame([(f"{prefix}{i}", [float(x) for x in v])
                                  for i, v in enumerate(pts)], schema)


@pytest.fixture(scope="module")
def points(spark):
    pts = clustered(n=1500, seed=7)
    return pts, ann.normalise(frame(spark, pts)).persist()


def test_lsh_path_switches_on_the_broadcast_bytes():
    limit = ann.lsh_broadcast_bytes(8192, 32)
    assert limit == 8192 * 32 * ann.LSH_BYTES_PER_ITEM_DIM
    assert ann.lsh_path(8192, 32, limit) == "broadcast"
    assert ann.lsh_path(8193, 32, limit) == "sharded"
    assert ann.lsh_path(8192, 33, limit) == "sharded"  # wider vectors weigh more
    assert ann.lsh_path(1, 8, 0) == "sharded"
    assert ann.lsh_path(0, 32, limit) == "sharded"  # nothing to broadcast


def test_sharded_item_neighbours_match_the_broadcast_path(spark, points):
    """Same hash functions, no split bucket: the same candidates, so the same neighbours
    (up to float ties) and the same counters."""
    pts, df = points
    truth = brute_force(pts, 10)
    got = {}
    for mb in (64, 0):
        cfg = ann_cfg(bands=6, hashes_per_band=4, tune=False, broadcast_max_mb=mb)
        nb, stats = ann.lsh_item_neighbors(spark, df, cfg, 10)
        got[stats["path"]] = (as_sets(nb), stats, nb.collect())
    (b_sets, b_stats, _), (s_sets, s_stats, rows) = got["broadcast"], got["sharded"]
    assert b_stats["buckets_split"] == s_stats["buckets_split"] == 0
    assert s_stats["candidate_pairs"] == b_stats["candidate_pairs"] > 0
    assert s_stats["largest_bucket"] == b_stats["largest_bucket"]
    same = np.mean([b_sets.get(i) == s_sets.get(i) for i in truth])
    assert same > 0.99  # measured: all but a tie or two
    r_b, r_s = recall(b_sets, truth), recall(s_sets, truth)
    assert abs(r_b - r_s) <= 0.01 and r_s > 0.8
    assert all(r["item_id"] != r["neighbor_id"] for r in rows)
    ranks: dict[str, list] = {}
    for r in rows:
        ranks.setdefault(r["item_id"], []).append((r["rank"], r["similarity"]))
    for lst in ranks.values():
        lst.sort()
        assert [r for r, _ in lst] == list(range(1, len(lst) + 1)) and len(lst) <= 10
        assert all(a[1] >= b[1] for a, b in zip(lst, lst[1:], strict=False))
        assert all(abs(s - p) < 1e-5 or s <= p for (_, p), (_, s) in zip(lst, lst[1:],
                                                                          strict=False))


def test_sharded_tuned_layout_is_the_broadcast_one(spark, points):
    pts, df = points
    truth = brute_force(pts, 10)
    stats = {}
    for mb in (64, 0):
        nb, st = ann.lsh_item_neighbors(spark, df, ann_cfg(tune=True, broadcast_max_mb=mb),
                                        10)
        stats[st["path"]] = st, recall(as_sets(nb), truth)
    (b, r_b), (s, r_s) = stats["broadcast"], stats["sharded"]
    for key in ("hashes_per_band", "bands", "bucket_length", "estimated_recall"):
        assert b[key] == s[key]
    assert s["estimated_recall"] >= 0.97 and abs(r_b - r_s) <= 0.01


def test_sharded_cuts_a_hot_bucket_and_counts_it(spark):
    rng = np.random.default_rng(1)
    hot = np.tile(rng.normal(size=8), (300, 1)) + 1e-4 * rng.normal(size=(300, 8))
    pts = np.vstack([hot, rng.normal(size=(100, 8))])
    df = ann.normalise(frame(spark, pts))
    cfg = ann_cfg(bands=4, hashes_per_band=2, max_bucket_size=50, tune=False,
                  broadcast_max_mb=0)
    got, stats = ann.lsh_item_neighbors(spark, df, cfg, 5)
    assert stats["path"] == "sharded"
    assert stats["largest_bucket"] >= 300 and stats["buckets_split"] >= 4
    # uncut, the hot bucket alone would cost 4 bands x 300 x 300 scores; cut into 6 chunks of
    # about 50 (hashed: not exactly 50), about 4 x 300 x 50
    assert 4 * 300 * 30 < stats["candidate_pairs"] <= 4 * 400 * 100
    hot_ids = {f"i{i}" for i in range(300)}
    sets = as_sets(got)
    assert all(sets[i] <= hot_ids and len(sets[i]) == 5 for i in hot_ids)


def test_sharded_user_candidates_exclude_history_like_the_broadcast_path(spark, points):
    pts, items = points
    users = ann.normalise(frame(spark, pts[:40] + 0.05, "u", USERS), "user_id")
    seen = {f"u{u}": [f"i{u}", f"i{u + 1}", "not-an-item"] for u in range(0, 40, 2)}
    history = spark.createDataFrame(list(seen.items()), HISTORY)
    out = {}
    for mb in (64, 0):
        cfg = ann_cfg(bands=6, hashes_per_band=4, tune=False, broadcast_max_mb=mb)
        got, stats = ann.lsh_user_candidates(spark, items, users, history, cfg, 5)
        out[stats["path"]] = as_sets(got, "user_id", "item_id")
    for user, items_seen in seen.items():
        assert not out["sharded"][user] & set(items_seen)
    assert out["sharded"] == out["broadcast"]
    assert all(len(s) == 5 for s in out["sharded"].values())


def test_sharded_handles_empty_queries_and_empty_items(spark, points):
    _, items = points
    cfg = ann_cfg(tune=True, broadcast_max_mb=0)
    no_users = spark.createDataFrame([], USERS)
    no_history = spark.createDataFrame([], HISTORY)
    got, stats = ann.lsh_user_candidates(spark, items, no_users, no_history, cfg, 5)
    assert got.count() == 0 and stats["candidate_pairs"] == 0
    no_items = spark.createDataFrame([], VEC)
    got, stats = ann.lsh_item_neighbors(spark, no_items, cfg, 5)
    assert got.count() == 0 and stats["candidate_pairs"] == 0


def sorted_rows(groups, dim, self_join, rng):
    """Rows of ROWS_SCHEMA as a sorted Arrow table: ``groups`` lists (items, queries) counts."""
    cols = {c: [] for c in ("band", "key", "chunk", "role", "id", "vector", "exclude", "size")}
    for g, (n_items, n_queries) in enumerate(groups):
        for role, n in ((0, n_items), (1, 0 if self_join else n_queries)):
            for j in range(n):
                cols["band"].append(g % 3)
                cols["key"].append(g // 3)
                cols["chunk"].append(0)
                cols["role"].append(role)
                cols["id"].append(f"{'iq'[role]}{j}")  # unique in a group, not across
                cols["vector"].append(rng.normal(size=dim).astype(np.float32).tolist())
                cols["exclude"].append(["i1", "i4"] if role else None)
                cols["size"].append(0)
    types = {"band": pa.int32(), "key": pa.int64(), "chunk": pa.int32(), "role": pa.int32(),
             "id": pa.string(), "vector": pa.list_(pa.float32()),
             "exclude": pa.list_(pa.string()), "size": pa.int64()}
    return pa.table({c: pa.array(v, types[c]) for c, v in cols.items()})


def brute_groups(table, k, self_join):
    """Sorted ``(query id, item id)`` pairs: every query's best k items of its group, by a
    full sort of the group's scores."""
    rows = table.to_pylist()
    out = []
    for qi, q in enumerate(rows):
        if not self_join and q["role"] != 1 or self_join and q["role"] != 0:
            continue
        g = (q["band"], q["key"], q["chunk"])
        cands = [(float(np.dot(q["vector"], r["vector"])), r["id"])
                 for ri, r in enumerate(rows)
                 if (r["band"], r["key"], r["chunk"]) == g and r["role"] == 0
                 and not (self_join and ri == qi)
                 and not (not self_join and r["id"] in q["exclude"])]
        cands.sort(reverse=True)
        out += [(q["id"], i) for _, i in cands[:k]]
    return sorted(out)


def as_triples(rows):
    """Candidate rows as sorted ``(query id, item id, score)`` (scores from differently
    batched multiplies differ in the last bits)."""
    return sorted(zip(rows.column("query_id").to_pylist(), rows.column("item_id").to_pylist(),
                      rows.column("score").to_pylist(), strict=True))


@pytest.mark.parametrize("self_join", [True, False])
def test_score_stream_carries_groups_across_batch_boundaries(self_join):
    rng = np.random.default_rng(3)
    groups = [(4, 3), (1, 2), (0, 2), (9, 5), (2, 0), (12, 1), (3, 3), (1, 1)]
    table = sorted_rows(groups, 6, self_join, rng)
    k = 3
    whole, pairs, largest = lsh_join.score_sorted(table, k, self_join)
    for size in (1, 4, 7, 100):
        totals = [0, 0]
        parts = list(lsh_join.score_stream(iter(table.to_batches(max_chunksize=size)), k,
                                           self_join, totals))
        assert parts, size
        got, want = as_triples(pa.Table.from_batches(parts)), as_triples(whole)
        assert [t[:2] for t in got] == [t[:2] for t in want], size
        assert np.allclose([t[2] for t in got], [t[2] for t in want], atol=1e-5)
        assert totals == [pairs, largest]
    assert largest == 12
    assert pairs == sum(n * (n if self_join else q) for n, q in groups)
    # every query's candidates are its group's exact best k
    got = sorted(zip(whole.column("query_id").to_pylist(), whole.column("item_id").to_pylist(),
                     strict=True))
    assert got == brute_groups(table, k, self_join)
    assert not (not self_join and {"i1", "i4"} & set(whole.column("item_id").to_pylist()))
    if self_join:
        assert all(r["query_id"] != r["item_id"] for r in whole.to_pylist())


def test_merge_bands_keeps_the_best_k_distinct_items(spark):
    cands = spark.createDataFrame(
        [("q", "a", 0.5), ("q", "a", 0.5), ("q", "b", 0.9), ("q", "c", 0.7), ("q", "d", 0.7),
         ("r", "a", 0.1)], lsh_join.CANDIDATES_SCHEMA)
    got = lsh_join.merge_bands(cands, 3, 2)
    want = spark.createDataFrame(
        [("q", "b", 1, 0.9), ("q", "c", 2, 0.7), ("q", "d", 3, 0.7), ("r", "a", 1, 0.1)],
        lsh_join.TOPK_SCHEMA)
    rounded = got.withColumn("score", F.round("score", 5))
    assert_df_equality(rounded, want, ignore_row_order=True, ignore_nullable=True)


def test_few_queries_top_k_is_exact_and_skips_the_excluded_items(spark, points):
    """Each query's exclusion list (its own id, or a user's history: here the query's own id
    and its three nearest items for the second query) is never returned."""
    pts, df = points
    x = pts.astype(np.float32)
    q = x[[3, 50, 700]]
    s = q @ x.T
    near = [f"i{j}" for j in np.argsort(-s[1], kind="stable")[:4]]
    vecs, valid, names = lsh_join.few_queries_top_k(spark, q, [["i3"], near, ["i700"]], df, 6)
    s[[0, 2], [3, 700]] = -np.inf
    s[1, [int(n[1:]) for n in near]] = -np.inf
    for r in range(3):
        want = [f"i{j}" for j in np.argsort(-s[r], kind="stable")[:6]]
        assert names[r] == want
        assert valid[r].all()
        assert np.allclose(vecs[r], x[[int(w[1:]) for w in want]], atol=1e-6)
    vecs, valid, names = lsh_join.few_queries_top_k(spark, q[:1], None, df.limit(2), 5)
    assert valid[0].sum() == 2 and not valid[0, 2:].any() and len(names[0]) == 2
