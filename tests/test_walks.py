import collections

import numpy as np
import pytest

from recemb_spark.config import load_config
from recemb_spark.models.alias import alias_probabilities, alias_tables
from recemb_spark.models.graph import transition_probabilities
from recemb_spark.models.walks import (
    AdjacencyBlock,
    EdgeSet,
    alias_table_bytes,
    choose_strategy,
    gather_walkers,
    generate_walks,
    index_graph,
    node2vec_step,
    start_nodes,
    task_memory_bytes,
    walk_memory,
    walk_stats,
    within_budget,
)

# A small weighted graph: d is a dead end.
EDGES = [("a", "b", 3.0), ("a", "c", 1.0), ("b", "c", 1.0), ("b", "a", 2.0),
         ("c", "a", 1.0), ("c", "d", 1.0), ("c", "b", 2.0)]
PROB = {("a", "b"): 0.75, ("a", "c"): 0.25, ("b", "c"): 1 / 3, ("b", "a"): 2 / 3,
        ("c", "a"): 0.25, ("c", "d"): 0.25, ("c", "b"): 0.5}
# chi-square critical values at p = 0.001 for 1 and 2 degrees of freedom
CRIT = {1: 10.83, 2: 13.82}


def walks_cfg(**values):
    base = dict(walks_per_node=1500, walk_length=8, num_partitions=3, seed=11)
    base.update(values)
    return load_config().replace("walks", **base).walks


@pytest.fixture(scope="module")
def graph(spark):
    df = spark.createDataFrame(EDGES, "src string, dst string, weight double")
    g = index_graph(transition_probabilities(df))
    names = {r["node"]: r["item_id"] for r in g.nodes.collect()}
    return g, names


def all_paths(run):
    return np.concatenate(run.blocks.collect())


def transitions(paths, names):
    counts = collections.Counter()
    for path in paths:
        for a, b in zip(path[:-1], path[1:], strict=False):
            if b >= 0:
                counts[(names[a], names[b])] += 1
    return counts


def chi_square(counts, expected_prob):
    """Per source node: the statistic against expected_prob, and its degrees of freedom."""
    out = {}
    for src in {s for s, _ in expected_prob}:
        dsts = [d for s, d in expected_prob if s == src]
        n = sum(counts[(src, d)] for d in dsts)
        stat = sum((counts[(src, d)] - n * expected_prob[(src, d)]) ** 2
                   / (n * expected_prob[(src, d)]) for d in dsts)
        out[src] = (stat, len(dsts) - 1, n)
    return out


def test_alias_tables_sample_the_distribution():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    accept, alias = alias_tables(np.array([0, 4]), probs)
    rng = np.random.default_rng(0)
    j = rng.integers(0, 4, 200_000)
    k = np.where(rng.random(200_000) < accept[j], j, alias[j])
    assert np.allclose(np.bincount(k, minlength=4) / 200_000, probs, atol=0.005)


def test_alias_tables_are_exact_on_many_awkward_rows():
    """Empty rows, single entries, ties at the mean, hubs and tiny weights, all at once: the
    tables reproduce every row's distribution (up to float32 accept values)."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        deg = rng.integers(0, 12, 40)
        deg[rng.random(40) < 0.1] = 150
        indptr = np.concatenate([[0], np.cumsum(deg)])
        w = rng.choice([1.0, 2.0, 5.0], indptr[-1]) * rng.random(indptr[-1]) ** 3
        w[rng.random(len(w)) < 0.3] = 1.0  # equal weights: entries exactly at the row mean
        row = np.repeat(np.arange(40), deg)
        prob = w / np.bincount(row, weights=w, minlength=40)[row]
        accept, alias = alias_tables(indptr, prob)
        assert ((alias >= 0) & (alias < deg[row])).all()
        assert np.abs(alias_probabilities(indptr, accept, alias) - prob).max() < 1e-6


@pytest.mark.parametrize("strategy", ["broadcast", "join"])
def test_walks_follow_edge_probabilities(spark, graph, strategy):
    g, names = graph
    run = generate_walks(spark, g, walks_cfg(strategy=strategy))
    assert run.strategy == strategy
    paths = all_paths(run)
    counts = transitions(paths, names)
    assert set(counts) <= set(PROB), "a walk used an edge that does not exist"
    for src, (stat, dof, n) in chi_square(counts, PROB).items():
        assert n > 1000 and stat < CRIT[dof], (src, stat)
    # the same statistic rejects a slightly wrong distribution: the test has power
    wrong = {**PROB, ("a", "b"): 0.7, ("a", "c"): 0.3}
    assert chi_square(counts, wrong)["a"][0] > CRIT[1]


def test_dead_ends_stop_walks(spark, graph):
    g, names = graph
    paths = all_paths(generate_walks(spark, g, walks_cfg(strategy="broadcast")))
    d = [k for k, v in names.items() if v == "d"][0]
    for path in paths:
        n = int((path >= 0).sum())
        assert (path[:n] >= 0).all() and (path[n:] < 0).all()
        if n < len(path):
            assert path[n - 1] == d  # only the dead end stops a walk early
    assert all(int((p >= 0).sum()) == 1 for p in paths if p[0] == d)
    stats = walk_stats(generate_walks(spark, g, walks_cfg(strategy="join")).blocks)
    assert stats["walks"] == 4 * 1500 and stats["walks_stopped_early"] > 0


def test_both_strategies_agree(spark, graph):
    g, names = graph
    a = transitions(all_paths(generate_walks(spark, g, walks_cfg(strategy="broadcast"))), names)
    b = transitions(all_paths(generate_walks(spark, g, walks_cfg(strategy="join"))), names)
    for src in "abc":
        na = sum(v for (s, _), v in a.items() if s == src)
        nb = sum(v for (s, _), v in b.items() if s == src)
        for (s, d) in PROB:
            if s == src:
                assert abs(a[(s, d)] / na - b[(s, d)] / nb) < 0.03


def test_same_seed_same_walks(spark, graph):
    g, _ = graph
    for strategy in ("broadcast", "join"):
        cfg = walks_cfg(strategy=strategy, walks_per_node=50)
        one = all_paths(generate_walks(spark, g, cfg))
        two = all_paths(generate_walks(spark, g, cfg))
        assert np.array_equal(one, two)  # the same walks in the same order
        other = all_paths(generate_walks(spark, g, walks_cfg(strategy=strategy,
                                                             walks_per_node=50, seed=12)))
        assert not np.array_equal(np.sort(one, axis=0), np.sort(other, axis=0))


@pytest.mark.parametrize("strategy", ["broadcast", "join"])
def test_frequency_starts(spark, graph, strategy):
    g, names = graph
    run = generate_walks(spark, g, walks_cfg(start="frequency", num_walks=3000,
                                             strategy=strategy))
    starts = collections.Counter(names[p[0]] for p in all_paths(run))
    assert sum(starts.values()) == 3000
    # out-weights: a 4, b 3, c 4, d 0 -> d never starts, a and c about equally
    assert starts["d"] == 0 and abs(starts["a"] - starts["c"]) < 200 and starts["b"] > 600


def block_and_edges():
    # triangle 0-1-2 plus 3 reachable from 1 only; unit weights
    src = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    dst = np.array([1, 2, 0, 2, 3, 0, 1, 1])
    prob = np.array([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 0.5, 0.5, 1.0])
    block = AdjacencyBlock.build(0, 1, 4, src, dst, prob)
    return block, EdgeSet(block)


def test_node2vec_p_q_one_is_first_order():
    block, edges = block_and_edges()
    rng = np.random.default_rng(3)
    cur, prev = np.full(60_000, 1), np.full(60_000, 0)
    came_by = edges.find(prev, cur)[0]
    second = np.bincount(node2vec_step(block, edges, cur, prev, came_by, 1.0, 1.0, rng)[0],
                         minlength=4)
    first = np.bincount(block.step(cur, np.random.default_rng(4)), minlength=4)
    assert np.allclose(second / 60_000, [1 / 3, 0, 1 / 3, 1 / 3], atol=0.01)
    assert np.allclose(first / 60_000, second / 60_000, atol=0.012)


def test_p_and_q_move_the_return_frequency():
    block, edges = block_and_edges()
    cur, prev = np.full(60_000, 1), np.full(60_000, 0)

    def freqs(p, q):
        nxt, _ = node2vec_step(block, edges, cur, prev, edges.find(prev, cur)[0], p, q,
                               np.random.default_rng(5))
        return np.bincount(nxt, minlength=4) / len(nxt)

    base, low_p, high_p, high_q = freqs(1, 1), freqs(0.25, 1), freqs(4, 1), freqs(1, 4)
    # from 1 (came from 0): return to 0, stay near 0 with 2 (0->2 is an edge), or go out to 3
    assert low_p[0] > base[0] + 0.2 and high_p[0] < base[0] - 0.15
    assert high_q[3] < base[3] - 0.2  # q > 1 keeps the walk local: fewer moves out to 3
    # exact targets: weights (1/p, 1, 1/q) for (0, 2, 3)
    assert np.allclose(low_p[[0, 2, 3]], [4 / 6, 1 / 6, 1 / 6], atol=0.01)


@pytest.mark.parametrize("p,q", [(0.25, 2.0), (0.5, 0.5), (4.0, 1.0), (1.0, 4.0)])
def test_node2vec_step_matches_the_second_order_distribution(p, q):
    """Weighted out-edges of 1 (0: 0.5, 2: 0.3, 3: 0.2), arriving from 0 (2 is 0's
    neighbour): the next node follows P(x | 1) * f(x) exactly (chi-square, 2 dof), including
    a return weight 1/p above the envelope (p < 1), which is drawn apart."""
    src = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    dst = np.array([1, 2, 0, 2, 3, 0, 1, 1])
    prob = np.array([0.5, 0.5, 0.5, 0.3, 0.2, 0.5, 0.5, 1.0])
    block = AdjacencyBlock.build(0, 1, 4, src, dst, prob)
    n = 100_000
    edges = EdgeSet(block)
    cur, prev = np.full(n, 1), np.full(n, 0)
    nxt, taken = node2vec_step(block, edges, cur, prev, edges.find(prev, cur)[0], p, q,
                               np.random.default_rng(2))
    assert np.array_equal(edges.keys[taken], cur * 4 + nxt)  # the edge taken is reported
    counts = np.bincount(nxt, minlength=4)[[0, 2, 3]]
    want = np.array([0.5 / p, 0.3, 0.2 / q])
    want = n * want / want.sum()
    assert counts.sum() == n
    assert ((counts - want) ** 2 / want).sum() < CRIT[2]
    first_order = n * np.array([0.5, 0.3, 0.2])  # and it is not simply the first order
    assert ((counts - first_order) ** 2 / first_order).sum() > 100


def test_node2vec_walks_on_spark(spark, graph):
    g, names = graph
    cfg = walks_cfg(strategy="auto", p=0.25, q=1.0)
    run = generate_walks(spark, g, cfg)
    assert run.strategy == "broadcast"
    returns = sum(1 for p in all_paths(run) for i in range(2, len(p))
                  if p[i] >= 0 and p[i] == p[i - 2])
    base = sum(1 for p in all_paths(generate_walks(spark, g, walks_cfg(strategy="broadcast")))
               for i in range(2, len(p)) if p[i] >= 0 and p[i] == p[i - 2])
    assert returns > 1.3 * base


def test_frequency_starts_are_drawn_per_partition_and_reproducible(spark, graph):
    g, _ = graph
    cfg = walks_cfg(start="frequency", num_walks=500)
    first = start_nodes(spark, g, cfg, 3).glom().collect()
    assert len(first) == 3 and all(len(p) == 1 for p in first)  # one array per partition
    # partition i starts only at its own nodes, and the shares add up to num_walks
    assert all(np.all(arr % 3 == i) for i, (arr,) in enumerate(first))
    assert sum(len(arr) for (arr,) in first) == 500
    again = start_nodes(spark, g, cfg, 3).glom().collect()
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other = start_nodes(spark, g, walks_cfg(start="frequency", num_walks=500, seed=5), 3)
    assert not all(np.array_equal(a[0], b[0])
                   for a, b in zip(first, other.glom().collect(), strict=True))


def test_strategy_follows_the_memory_the_tables_need():
    cfg = walks_cfg(strategy="auto")
    nodes, edges = 700_000, 4_500_000  # the 5M-event Taobao-shaped log: ~78 MB of tables
    gib = 2**30
    roomy = walk_memory(nodes, edges, 4 * gib, 2 * gib)
    assert roomy.task_need == alias_table_bytes(nodes, edges)
    assert choose_strategy(cfg, nodes, edges, roomy) == "broadcast"
    # a task with 256 MiB (e.g. spark.executor.pyspark.memory=1g over 4 cores) cannot hold
    # a copy within its share; nor can a 256 MiB driver build the block
    assert choose_strategy(cfg, nodes, edges, walk_memory(nodes, edges, 4 * gib,
                                                          gib // 4)) == "join"
    assert choose_strategy(cfg, nodes, edges, walk_memory(nodes, edges, gib // 4,
                                                          2 * gib)) == "join"
    # the configured cap still applies, and a named strategy is taken as it is
    assert choose_strategy(walks_cfg(strategy="auto", broadcast_max_mb=10), nodes, edges,
                           roomy) == "join"
    assert choose_strategy(walks_cfg(strategy="broadcast"), nodes, edges,
                           walk_memory(nodes, edges, 1, 1)) == "broadcast"
    # node2vec needs the broadcast tables whatever the size
    assert choose_strategy(walks_cfg(strategy="auto", p=0.5), nodes, edges,
                           walk_memory(nodes, edges, 1, 1)) == "broadcast"


def test_task_memory_comes_from_the_executor_settings():
    gib = 2**30
    assert task_memory_bytes({"spark.master": "local[4]"}, 3 * gib) == 3 * gib
    assert task_memory_bytes({"spark.master": "spark://h:7077", "spark.executor.memory": "8g",
                              "spark.executor.cores": "4"}, gib) == 2 * gib
    assert task_memory_bytes({"spark.master": "yarn"}, gib) == gib  # executor default 1g
    assert task_memory_bytes({"spark.master": "yarn", "spark.executor.memory": "8g",
                              "spark.executor.pyspark.memory": "2g",
                              "spark.executor.cores": "4", "spark.task.cpus": "2"},
                             gib) == gib
    assert task_memory_bytes({"spark.master": "local[2]",
                              "spark.executor.pyspark.memory": "512m"}, 4 * gib) == gib // 2


def test_token_budget_lowers_walks_per_node_but_keeps_one_per_node():
    cfg = walks_cfg(walks_per_node=10, walk_length=20, max_tokens=25_000_000)
    assert within_budget(cfg, 100_000) == cfg  # 20M tokens: inside the budget
    assert within_budget(cfg, 500_000).walks_per_node == 2  # 25M / (500k x 20)
    assert within_budget(cfg, 3_000_000).walks_per_node == 1  # over even at one walk each
    assert within_budget(walks_cfg(walks_per_node=10, max_tokens=0), 10**7).walks_per_node == 10
    freq = walks_cfg(start="frequency", num_walks=50_000, walk_length=20, max_tokens=100_000)
    assert within_budget(freq, 10).num_walks == 5_000


def test_walk_run_follows_the_budget(spark, graph):
    g, _ = graph  # 4 nodes x walk_length 8: 32 tokens per walk per node
    run = generate_walks(spark, g, walks_cfg(walks_per_node=50, max_tokens=32 * 7))
    assert run.cfg.walks_per_node == 7
    assert len(all_paths(run)) == 4 * 7


def test_join_walkers_are_ordered_by_id_whatever_order_the_shuffle_delivers():
    """A retried join-strategy task gets the same walkers in the same order (and so draws the
    same steps) even when the shuffle hands it the pieces in another order."""
    rng = np.random.default_rng(3)
    pieces = [(p, (rng.integers(0, 9, (n, 4)).astype(np.int32),
                   (np.int64(p) << 40) + np.arange(n, dtype=np.int64)))
              for p, n in ((0, 5), (1, 3), (2, 0), (3, 7))]
    first_paths, first_ids = next(gather_walkers(pieces, 4))
    for order in ([3, 1, 0, 2], [2, 3, 1, 0]):
        paths, ids = next(gather_walkers([pieces[i] for i in order], 4))
        assert np.array_equal(paths, first_paths) and np.array_equal(ids, first_ids)
    assert np.all(np.diff(first_ids) > 0) and len(first_ids) == 15
    paths, ids = next(gather_walkers([], 4))
    assert paths.shape == (0, 4) and ids.shape == (0,)
