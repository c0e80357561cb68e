"""Sharded paths (item blocks x query blocks, pooling by a join) give what the broadcast
paths give, on the same inputs; and the threshold that chooses between them."""
import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from recemb_spark.evaluation.scoring import collect_items, score_model
from recemb_spark.models.users import pool_user_vectors, pooling_path
from recemb_spark.neighbors import blocks
from recemb_spark.neighbors.exact import exact_path, exact_top_k, user_candidates

VEC = "item_id string, vector array<float>"
QUERIES = "query_id string, vector array<float>, exclude array<string>"
CASES = "user_id string, heldout string, query string, history array<string>"


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 items and 5 queries: many blocks on tiny data, some of them empty."""
    monkeypatch.setattr(blocks, "item_block_rows", lambda dim: 7)
    monkeypatch.setattr(blocks, "QUERY_BLOCK_ROWS", 5)


def test_threshold_from_the_worker_memory_and_forced_by_the_key(spark):
    assert blocks.memory_bytes("512m") == 512 * 2**20 and blocks.memory_bytes("2g") == 2**31
    assert blocks.memory_bytes("1024") == 2**30  # a bare number is MiB, as Spark reads it
    conf = {"spark.executor.memory": "8g", "spark.executor.cores": "4"}
    assert blocks.worker_memory_bytes(conf, local=False, cores=2) == 2 * 2**30
    conf["spark.executor.pyspark.memory"] = "2g"  # Spark's per-worker Python limit wins
    assert blocks.worker_memory_bytes(conf, local=False, cores=2) == 2**29
    assert blocks.worker_memory_bytes({"spark.driver.memory": "4g"}, True, 2) == 4 * 2**30
    assert blocks.worker_memory_bytes({"spark.driver.memory": "2g"}, True, 2) == 2 * 2**30
    # a driver heap raised for Word2Vec does not widen the Python workers' budget
    assert blocks.worker_memory_bytes({"spark.driver.memory": "14g"}, True, 2) == 4 * 2**30
    # 4M items x dim 64 weigh 2.3 GiB in a worker; 59k items 36 MB
    assert blocks.broadcast_bytes(4_000_000, 64) == 4_000_000 * 612
    limit = 100 * 2**20
    assert blocks.choose_path(100_000, 64, 100_000, limit, k=10) == "broadcast"
    assert blocks.choose_path(1_000_000, 64, 500, limit, k=10) == "broadcast_queries"
    assert blocks.choose_path(1_000_000, 64, 1_000_000, limit, k=10) == "sharded"
    # 100k queries' vectors fit 100 MiB (61 MB), their top-50 lists do not (+560 MB)
    assert blocks.choose_path(1_000_000, 64, 100_000, limit, k=0) == "broadcast_queries"
    assert blocks.choose_path(1_000_000, 64, 100_000, limit, k=50) == "sharded"
    assert blocks.broadcast_limit(spark, 0) == 0 and blocks.broadcast_limit(spark, 2) == 2**21
    assert blocks.broadcast_limit(spark, None) == int(blocks.AUTO_SHARE * 2 * 2**30)  # 2g test


def vectors_with_ties(spark, n=60, dim=4, seed=3):
    """Items with natural-order ids ("9" before "10", strings after numbers) and several
    exact duplicates (ties that only the item order can break)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, dim)).astype(np.float32)
    m[[5, 17, 40]] = m[30]
    m[[8, 9]] = m[42]
    ids = [str(i) if i % 4 else f"s{i}" for i in range(n)]
    return m, ids, spark.createDataFrame([(ids[i], m[i].tolist()) for i in range(n)], VEC)


def topk_queries(spark, m, ids, n_q=23, seed=4):
    rng = np.random.default_rng(seed)
    rows = [(f"q{j}", (m[30] if j % 5 == 0 else rng.normal(size=m.shape[1])).astype(
        np.float32).tolist(), [ids[j], ids[30]] if j % 3 == 0 else []) for j in range(n_q)]
    rows.append(("no_vector", None, []))
    return spark.createDataFrame(rows, QUERIES)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_sharded_and_broadcast_queries_top_k_equal_the_broadcast(spark, small_blocks,
                                                                 similarity):
    m, ids, items = vectors_with_ties(spark)
    queries = topk_queries(spark, m, ids)
    want = exact_top_k(spark, queries, items, 6, similarity, path="broadcast")
    rows = want.collect()
    assert len(rows) == 23 * 6
    # the duplicates of item 30 tie: ranked by natural id order
    q0 = [r["item_id"] for r in sorted(rows, key=lambda r: r["rank"]) if r["query_id"] == "q5"]
    if similarity == "cosine":
        assert q0[:4] == ["5", "17", "30", "s40"]
    for path in ("sharded", "broadcast_queries"):
        got = exact_top_k(spark, queries, items, 6, similarity, path=path)
        assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)


def test_user_candidates_paths_agree_and_honour_histories(spark, small_blocks):
    m, ids, items = vectors_with_ties(spark, n=45)
    users = spark.createDataFrame([(f"u{j}", m[j].tolist()) for j in range(12)],
                                  "user_id string, vector array<float>")
    seen = spark.createDataFrame([(f"u{j}", [ids[j], ids[(j + 1) % 45], "unknown"])
                                  for j in range(0, 12, 2)], "user_id string, items array<string>")
    want = user_candidates(spark, users, items, seen, 45, "cosine", path="broadcast")
    got = user_candidates(spark, users, items, seen, 45, "cosine", path="sharded")
    assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True)
    assert got.filter("user_id = 'u0' and item_id in ('s0', '1')").count() == 0
    assert got.filter("user_id = 'u0'").count() == 43
    assert got.filter("user_id = 'u1'").count() == 45


def test_exact_path_follows_the_key(spark):
    m, ids, items = vectors_with_ties(spark, n=45)
    queries = topk_queries(spark, m, ids, n_q=3)
    assert exact_path(spark, queries, items, None, 5) == "broadcast"
    assert exact_path(spark, queries, items, 0, 5) == "sharded"
    fits = blocks.query_bytes(4, 4, 5) / 2**20  # 3 queries and one without a vector
    assert exact_path(spark, queries, items, fits, 5) == "broadcast_queries"
    assert exact_path(spark, queries, items, fits, 6) == "sharded"  # the top-6 lists do not


def eval_inputs(spark):
    """Items with ties (duplicates of the held-out items), cases with misses, a held-out item
    in its own history, segments and categories."""
    m, ids, items = vectors_with_ties(spark, n=45, dim=3)
    rng = np.random.default_rng(7)
    cases = []
    for j in range(26):
        h, q = ids[(3 * j + 1) % 40], ids[(5 * j + 2) % 40]
        history = [ids[(7 * j) % 40], q]
        cases.append((f"u{j}", h, q, history))
    cases += [("miss_h", "nope", ids[3], [ids[3]]), ("miss_q", ids[4], "nope", ["nope"]),
              ("self", ids[30], ids[2], [ids[30], ids[2]]), ("tie", ids[30], ids[5], [ids[5]])]
    cases = spark.createDataFrame(cases, CASES)
    users = spark.createDataFrame([(f"u{j}", rng.normal(size=3).astype(np.float32).tolist())
                                   for j in range(0, 26, 2)] + [("tie", m[30].tolist())],
                                  "user_id string, vector array<float>")
    segments = spark.createDataFrame(
        [(ids[i], ["head"] if i % 3 == 0 else ["tail", "cold"]) for i in range(0, 40, 2)],
        "item_id string, segments array<string>")
    pop = spark.createDataFrame([(ids[i], [float(i % 6)]) for i in range(40)], VEC)
    cats = spark.createDataFrame([(ids[i], ["x", "y", "", None][i % 4]) for i in range(40)],
                                 "item_id string, category string")
    return items, cases, users, segments, pop, cats


def test_sharded_scoring_gives_the_broadcast_figures_in_every_mode(spark, small_blocks):
    items, cases, users, segments, pop, cats = eval_inputs(spark)
    runs = [dict(item_vectors=items, segments=segments),
            dict(item_vectors=items, mode="user", user_vectors=users, segments=segments),
            dict(item_vectors=items, mode="user", user_vectors=users, similarity="dot"),
            dict(item_vectors=pop, mode="constant", segments=segments),
            dict(item_vectors=pop, mode="category", item_categories=cats)]
    # one collection (and one broadcast per normalisation) shared by every mode of its items
    shared = {id(items): collect_items(items), id(pop): collect_items(pop)}
    for kw in runs:
        want = score_model(spark, cases, ks=[2, 5], model="m", catalogue_size=45,
                           path="broadcast", **kw)
        got = score_model(spark, cases, ks=[2, 5], model="m", catalogue_size=45,
                          path="sharded", **kw)
        assert got == want, kw.get("mode", "item")
        once = score_model(spark, cases, ks=[2, 5], model="m", catalogue_size=45,
                           path="broadcast", collected=shared[id(kw["item_vectors"])], **kw)
        assert once == want, kw.get("mode", "item")
        values = {(r["metric"], r["k"]): r["value"] for r in want}
        if kw.get("mode", "user") == "user" and "similarity" not in kw:  # case "tie": rank 1
            hr = values[("user_hr" if kw.get("mode") == "user" else "hr", 2)]
            assert hr >= 1 / 30, kw.get("mode", "item")
    assert sorted(shared[id(items)].broadcasts) == [False, True]  # dot: raw, cosine: unit
    for c in shared.values():
        c.release()


def test_pooling_by_a_join_gives_the_broadcast_vectors(spark):
    items = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.0, 2.0]), ("c", [3.0, -3.0])],
                                  VEC)
    histories = spark.createDataFrame(
        [("u", ["a", "x", "b", "a"]), ("v", ["x", "y"]), ("w", []), ("z", None), ("t", ["c"]),
         ("s", ["b", "c", "x"])], "user_id string, items array<string>")
    for pooling in ("mean", "recency"):
        want = pool_user_vectors(histories, items, pooling, 1.5, path="broadcast")
        got = pool_user_vectors(histories, items, pooling, 1.5, path="join")
        assert_approx_df_equality(got, want, 1e-6, ignore_row_order=True)
        assert sorted(r["user_id"] for r in got.collect()) == ["s", "t", "u"]
    assert pooling_path(items, 0) == "join" and pooling_path(items, None) == "broadcast"


def item_batches(n_items, dim, per, rng):
    """Numbered item batches ``(item_idx, item_id, vector)`` of ``per`` rows."""
    import pyarrow as pa
    for s in range(0, n_items, per):
        n = min(per, n_items - s)
        m = rng.normal(size=(n, dim)).astype(np.float32)
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.arange(s, s + n)), pa.array([f"i{j}" for j in range(s, s + n)]),
             pa.array(list(m), type=pa.list_(pa.float32()))],
            names=["item_idx", "item_id", "vector"])


def test_broadcast_queries_memory_is_what_the_path_choice_counts():
    """The running top-k lists of a broadcast-queries task, measured with tracemalloc (every
    numpy allocation), stay within TOPK_SLOT_BYTES per (query, k) slot: the weight
    choose_path counts. A capped cluster run died when only the query vectors were counted."""
    import tracemalloc

    import pyarrow as pa

    from recemb_spark.neighbors.topk import unit_rows
    rng = np.random.default_rng(0)
    n_q, dim, k = 20_000, 8, 50
    q = unit_rows(rng.normal(size=(n_q, dim)).astype(np.float32))
    qids = pa.array([f"q{j}" for j in range(n_q)])
    excl = pa.array([[f"i{(j * 7) % 8000}"] for j in range(n_q)], pa.list_(pa.string()))
    batches = list(item_batches(8000, dim, 2000, rng))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = list(blocks.queries_partition_top_k(qids, q, excl, iter(batches), k, True))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert sum(b.num_rows for b in out) == n_q * k
    assert 12 * n_q * k < peak <= blocks.TOPK_SLOT_BYTES * n_q * k


def test_cogroup_blocks_spread_the_groups_in_one_shuffle_per_side(spark):
    """Partitions: at least 8 x the default parallelism (the shuffle setting when larger),
    never more than the groups; the cogroup reuses the two repartitions (no third shuffle)
    and sees every group whole."""
    parallelism = spark.sparkContext.defaultParallelism
    shuffle = int(spark.conf.get("spark.sql.shuffle.partitions"))
    many = blocks.PARALLELISM_MULTIPLE * parallelism + shuffle + 5
    assert blocks.group_partitions(spark, many) == max(shuffle, many - shuffle - 5)
    assert blocks.group_partitions(spark, 3) == 3 and blocks.group_partitions(spark, 0) == 1
    left = spark.range(60).selectExpr("id % 5 as a", "id % 3 as b", "id as x")
    right = spark.range(30).selectExpr("id % 5 as a", "id % 3 as b", "id as y")

    def sizes(lt: pa.Table, rt: pa.Table) -> pa.Table:
        key = (lt if lt.num_rows else rt).slice(0, 1)
        return pa.table({"a": key.column("a"), "b": key.column("b"),
                         "nl": pa.array([lt.num_rows], pa.int64()),
                         "nr": pa.array([rt.num_rows], pa.int64())})

    out = blocks.cogroup_blocks(left, right, ["a", "b"], 15).applyInArrow(
        sizes, "a long, b long, nl long, nr long")
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 2, plan
    assert out.rdd.getNumPartitions() == 15
    got = sorted((r["a"], r["b"], r["nl"], r["nr"]) for r in out.collect())
    assert got == [(a, b, 4, 2) for a in range(5) for b in range(3)]


def test_popularity_counted_in_spark_equals_the_counted_order(spark, monkeypatch):
    """The sharded path's popularity ranks and coverage, counted by joins and small windows
    (tie blocks of 3 items here: ties span blocks), equal :class:`OrderRanks`'s (itself
    checked against full-row scoring in test_ranks): both modes, many ties, items and
    queries without a category, held-out items in the history, duplicated history items."""
    from recemb_spark.evaluation import counted
    from recemb_spark.evaluation.ranks import OrderRanks

    monkeypatch.setattr(counted, "TIE_BLOCK", 3)
    rng = np.random.default_rng(3)
    n, n_q, k = 40, 60, 12  # k above a category's size: lists run over into the rest
    s = rng.integers(0, 5, n).astype(np.float32)
    cat = rng.integers(-1, 3, n)
    ids = [f"i{j:02d}" for j in range(n)]
    items = spark.createDataFrame(
        [(ids[j], j, float(s[j]), int(cat[j])) for j in range(n)],
        "item_id string, item_idx long, s float, cat int")
    rows, want = [], {}
    for c in range(n_q):
        h = int(rng.integers(0, n))
        hist = [int(x) for x in rng.integers(0, n, int(rng.integers(0, 8)))]
        if c % 5 == 0:
            hist.append(h)
        qc = int(rng.integers(-1, 3))
        rows.append((c, h, h in hist, qc, [ids[j] for j in hist]))
        want[c] = (h, np.unique(np.array(hist, np.int64)), qc)
    cases = spark.createDataFrame(
        rows, "_case long, h_idx long, h_excl boolean, q_cat int, history array<string>")
    assert counted.counting_applies(items)
    for category in (False, True):
        order = OrderRanks(s, cat if category else None)
        got = {r["_case"]: r["rank"]
               for r in counted.counted_ranks(cases, items, category).collect()}
        qcs = {c: (qc if category else -1) for c, (_, _, qc) in want.items()}
        assert got == {c: order.rank(h, ex, qcs[c]) for c, (h, ex, _) in want.items()}
        tops: dict[int, list[tuple[int, str]]] = {}
        for r in counted.counted_top(cases, items, k, category).collect():
            tops.setdefault(r["_case"], []).append((r["_r"], r["item_id"]))
        assert {c: [i for _, i in sorted(t)] for c, t in tops.items()} == {
            c: [ids[j] for j in order.top(k, ex, qcs[c])] for c, (_, ex, _) in want.items()}
        covered = set().union(*(order.top(k, ex, qcs[c]) for c, (_, ex, _) in want.items()))
        assert counted.counted_coverage(cases, items, k, category) == len(covered)
