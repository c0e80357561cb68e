"""Distributed random walks on the item graph (DeepWalk / node2vec), on RDDs.

Nodes get dense integer ids ``0..N-1``. Node ``v`` belongs to walk partition ``v % P``. For
each partition, :class:`AdjacencyBlock` holds the out-edges of its nodes in CSR form with an
alias table per node (O(1) sampling of ``P(dst | src)``; all rows built at once by
:func:`recemb_spark.models.alias.alias_tables`). The ``join`` strategy builds its blocks on the
executors and never brings the graph to the driver.

Two strategies generate the walks:

``broadcast``
    One block for the whole graph (P = 1), built from the edge columns fetched over Arrow
    and broadcast once: chosen by ``auto`` only when the tables are below ``broadcast_max_mb``
    and the driver (building them) and one task (holding a copy) have room for them
    (:func:`choose_strategy`); every partition of start nodes
    advances all its walkers a step at a time with vectorised numpy. No shuffle per step.
    node2vec second-order walks run here, by rejection sampling (KnightKing): propose from
    the first-order alias table, accept with weight ``f``: ``1/p`` to return, ``1`` to stay
    near the previous node, ``1/q`` to move away (a large return weight is folded out of the
    envelope, see :func:`node2vec_step`). No per-edge tables.

``join``
    For graphs too big for one executor: the adjacency stays partitioned by node and
    persisted; each step only the walkers move. Walkers travel as numpy blocks, split by the
    partition of their current node, shuffled with ``partitionBy``, and paired with the
    adjacency block of the same partition by ``RDD.zip`` (one block per partition on both
    sides), so the adjacency is never re-shuffled. Each step is persisted and materialised;
    the lineage is cut every ``checkpoint_every`` steps (``localCheckpoint`` in local mode, a
    reliable checkpoint on a cluster). Each partition orders the walkers it receives by
    walker id before drawing their steps, whatever order the shuffle delivered them in.

A walk stops early at a node without out-edges. Walks are ``int32`` node-id paths padded with
``-1`` (half the bytes of int64 to shuffle in the join strategy). Start nodes come from
:func:`start_nodes` (an RDD, one array per partition: nothing per node on the driver).
Randomness: one generator per (seed, partition[, step]): the same seed and partition count give
the same walks, in the same order, and a retried or recomputed task reproduces its walks.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import WalksConfig
from ..ids import dense_index
from .alias import alias_probabilities, alias_tables, csr_rows

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# the adjacency (alias tables per node)


@dataclass
class AdjacencyBlock:
    """Out-edges of the nodes ``v`` with ``v % n_parts == part``, row ``v // n_parts``.

    ``indptr`` (rows + 1), then per edge ``dst`` (node id), ``accept`` and ``alias`` (the
    alias is an index within the row). Rows list destinations in increasing order.
    """

    part: int
    n_parts: int
    indptr: np.ndarray
    dst: np.ndarray
    accept: np.ndarray
    alias: np.ndarray

    @staticmethod
    def build(part: int, n_parts: int, n_nodes: int, src: np.ndarray, dst: np.ndarray,
              prob: np.ndarray) -> AdjacencyBlock:
        rows = max(0, (n_nodes - part + n_parts - 1) // n_parts)
        order = np.argsort(src * np.int64(max(n_nodes, 1)) + dst, kind="stable")
        src, dst, prob = src[order], dst[order], prob[order]
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount((src - part) // n_parts, minlength=rows), out=indptr[1:])
        accept, alias = alias_tables(indptr, prob)
        return AdjacencyBlock(part, n_parts, indptr, dst.astype(np.int32), accept, alias)

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One first-order step from each node in ``cur`` (all in this block): the next
        node, or -1 where ``cur`` has no out-edges."""
        return self.step_edges(cur, rng)[0]

    def step_edges(self, cur: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`step`, and the position in ``dst`` of the edge taken (-1 at a dead end).
        One uniform per walker picks both the slot (the integer part of it times the
        degree) and the coin (the fraction)."""
        if len(self.dst) == 0:
            return np.full(len(cur), -1, dtype=np.int32), np.full(len(cur), -1, np.int64)
        rows = cur // self.n_parts if self.n_parts > 1 else cur
        start = self.indptr[rows]
        deg = self.indptr[rows + 1] - start
        x = rng.random(len(cur)) * deg
        j = x.astype(np.int64)
        coin = x - j
        j = np.minimum(j, np.maximum(deg - 1, 0))
        last = len(self.dst) - 1
        slot = np.minimum(start + j, last)
        edge = np.minimum(start + np.where(coin < self.accept[slot], j, self.alias[slot]), last)
        dead = deg == 0
        return np.where(dead, np.int32(-1), self.dst[edge]), np.where(dead, -1, edge)


class EdgeSet:
    """The edges of a one-block adjacency (``n_parts == 1``) as sorted ``src * n + dst`` keys
    (positions as in ``block.dst``), with ``P(dst | src)`` per edge read back from the alias
    tables and the position of each edge's reverse (-1 if none): node2vec's "is ``b`` a
    neighbour of ``a``" and "how likely is the way back". 16 bytes per edge."""

    def __init__(self, block: AdjacencyBlock):
        rows = len(block.indptr) - 1
        src = csr_rows(block.indptr)
        self.n = np.int64(max(rows, 1))
        self.keys = src * self.n + block.dst  # rows list dst in increasing order: sorted
        self.prob = alias_probabilities(block.indptr, block.accept,
                                        block.alias).astype(np.float32)
        idx, found = self.find(block.dst, src)
        self.rev = np.where(found, idx, -1).astype(np.int32)

    def find(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position of each edge ``a -> b`` in ``keys`` and whether it exists."""
        if len(self.keys) == 0:
            return np.zeros(len(a), np.int64), np.zeros(len(a), dtype=bool)
        keys = a.astype(np.int64) * self.n + b.astype(np.int64)
        order = np.argsort(keys)  # sorted needles: ~3x faster searches (cache locality)
        idx = np.empty(len(keys), np.int64)
        idx[order] = np.searchsorted(self.keys, keys[order])
        np.minimum(idx, len(self.keys) - 1, out=idx)
        return idx, self.keys[idx] == keys

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.find(a, b)[1]

    def back(self, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For edges ``a -> b`` (positions, -1 for none): the position of ``b -> a`` (-1 if
        none) and ``P(a | b)`` (0 if none)."""
        rev = np.where(edge >= 0, self.rev[np.maximum(edge, 0)] if len(self.rev) else -1, -1)
        prob = np.where(rev >= 0, self.prob[np.maximum(rev, 0)] if len(self.prob) else 0, 0)
        return rev, prob


def node2vec_step(block: AdjacencyBlock, edges: EdgeSet, cur: np.ndarray, prev: np.ndarray,
                  came_by: np.ndarray, p: float, q: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One second-order step by rejection sampling from each ``cur``, reached from ``prev``
    by the edge at position ``came_by``: the next node (-1 where ``cur`` has no out-edges)
    and the edge taken, distributed as ``P(x | cur) * f(x)`` with ``f = 1/p`` for
    ``x = prev``, 1 for a neighbour of ``prev`` and ``1/q`` otherwise.

    Proposals come from the first-order alias table under an envelope ``h * P(x | cur)``,
    ``h = max(1, 1/q)``. A return weight ``1/p`` above ``h`` is not covered by raising the
    envelope (that would reject most proposals when p is small) but by its excess
    ``a = P(prev | cur) * (1/p - h)``, drawn directly with probability ``a / (h + a)`` per round
    (KnightKing's outlier folding). The neighbour test runs only for proposals whose
    acceptance depends on it."""
    out = np.full(len(cur), -1, dtype=np.int32)
    out_edge = np.full(len(cur), -1, dtype=np.int64)
    back_w, out_w = 1.0 / p, 1.0 / q
    h = max(1.0, out_w)
    spike = back_w > h
    if spike:
        back_edge, back_prob = edges.back(came_by)
        extra = back_prob * (back_w - h)
    else:
        h = max(h, back_w)
    sure, unsure = min(1.0, out_w), max(1.0, out_w)  # a non-return x: f in {1, 1/q}
    pending = np.arange(len(cur))
    while pending.size:
        if spike:
            a = extra[pending]
            home = rng.random(pending.size) * (h + a) < a
            chosen = pending[home]
            out[chosen], out_edge[chosen] = prev[chosen], back_edge[chosen]
            pending = pending[~home]
        cand, cand_edge = block.step_edges(cur[pending], rng)
        live = cand >= 0
        pending, cand, cand_edge = pending[live], cand[live], cand_edge[live]
        if not pending.size:
            break
        pv = prev[pending]
        u = rng.random(pending.size) * h
        is_back = cand == pv
        ok = np.where(is_back, u < min(back_w, h), u < sure)
        check = np.flatnonzero(~is_back & (u >= sure) & (u < unsure))
        if check.size:
            near = edges.contains(pv[check], cand[check])
            ok[check] = u[check] < np.where(near, 1.0, out_w)
        out[pending[ok]], out_edge[pending[ok]] = cand[ok], cand_edge[ok]
        pending = pending[~ok]
    return out, out_edge


def walk_from(block: AdjacencyBlock, starts: np.ndarray, length: int, rng: np.random.Generator,
              p: float = 1.0, q: float = 1.0, edges: EdgeSet | None = None) -> np.ndarray:
    """Walks of up to ``length`` nodes from each start (``block`` covers every node):
    an ``(len(starts), length)`` int32 matrix padded with -1 after a dead end."""
    steps = np.full((length, len(starts)), -1, dtype=np.int32)  # a step = one contiguous row
    steps[0] = starts
    alive: np.ndarray | None = None  # None while every walker is alive
    cur = steps[0]
    prev: np.ndarray | None = None  # the previous step's nodes, from t = 2 on
    edge: np.ndarray | None = None  # the edges taken to cur, second order only
    second_order = p != 1.0 or q != 1.0
    for t in range(1, length):
        if second_order and t >= 2:
            assert edges is not None and prev is not None and edge is not None
            nxt, edge = node2vec_step(block, edges, cur, prev, edge, p, q, rng)
        elif second_order:
            nxt, edge = block.step_edges(cur, rng)
        else:
            nxt = block.step(cur, rng)
        if alive is None:
            steps[t] = nxt
        else:
            steps[t, alive] = nxt
        live = nxt >= 0
        if not live.all():
            alive = np.flatnonzero(live) if alive is None else alive[live]
            if not alive.size:
                break
            cur, nxt = cur[live], nxt[live]
            edge = edge[live] if edge is not None else None
        prev, cur = cur, nxt
    return np.ascontiguousarray(steps.T)


# --------------------------------------------------------------------------------------------
# Spark side


@dataclass
class IndexedGraph:
    """The graph with dense node ids: ``nodes (node long, item_id string)``,
    ``edges (src long, dst long, prob double)``, ``n_nodes``, ``n_edges`` and the
    ``frequency`` column source (``nodes.freq``: out-weight, used for frequency starts)."""

    nodes: DataFrame
    edges: DataFrame
    n_nodes: int
    n_edges: int


def index_graph(graph: DataFrame) -> IndexedGraph:
    """Number the nodes of ``graph (src, dst, weight, prob)`` 0..N-1 in natural item order."""
    ends = graph.select(F.col("src").alias("item_id"), "weight").unionByName(
        graph.select(F.col("dst").alias("item_id"), F.lit(0.0).alias("weight")))
    named = ends.groupBy("item_id").agg(F.sum("weight").alias("freq")).persist()
    index = dense_index(named, "item_id")
    nodes = (index.join(named, "item_id")
             .select(F.col("item_id_idx").cast("long").alias("node"), "item_id", "freq")
             .persist())
    n_nodes = nodes.count()
    index.unpersist()
    named.unpersist()
    ids = nodes.select("node", "item_id")
    edges = (graph.join(ids.withColumnRenamed("node", "src_id").withColumnRenamed("item_id",
                                                                                  "src"), "src")
             .join(ids.withColumnRenamed("node", "dst_id").withColumnRenamed("item_id", "dst"),
                   "dst")
             .select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"), "prob")
             .persist())
    return IndexedGraph(nodes, edges, n_nodes, edges.count())


def adjacency_blocks(g: IndexedGraph, n_parts: int) -> RDD:
    """RDD of ``n_parts`` elements, element ``i`` = the :class:`AdjacencyBlock` of partition
    ``i`` (built on the executors). Not persisted."""
    n_nodes = g.n_nodes

    def to_arrays(rows: Iterable[Any]) -> Iterator[tuple[int, tuple]]:
        data = np.array([(r["src"], r["dst"], r["prob"]) for r in rows], dtype=np.float64)
        if len(data) == 0:
            return
        src = data[:, 0].astype(np.int64)
        owner = src % n_parts
        for part in np.unique(owner):
            m = owner == part
            yield int(part), (src[m], data[m, 1].astype(np.int64), data[m, 2])

    def build(parts: Iterable[tuple[int, tuple]], index: int) -> Iterator[AdjacencyBlock]:
        chunks = [c for _, c in parts]

        def cat(i: int, dt: type) -> np.ndarray:
            return np.concatenate([c[i] for c in chunks]) if chunks else np.zeros(0, dt)
        yield AdjacencyBlock.build(index, n_parts, n_nodes, cat(0, np.int64),
                                   cat(1, np.int64), cat(2, np.float64))

    keyed = g.edges.rdd.mapPartitions(to_arrays).partitionBy(n_parts, lambda k: k)
    return keyed.mapPartitionsWithIndex(lambda i, it: build(it, i), preservesPartitioning=True)


def alias_table_bytes(n_nodes: int, n_edges: int) -> int:
    """Memory of the alias tables of a graph (indptr + dst + accept + alias)."""
    return 8 * (n_nodes + 1) + n_edges * (8 + 4 + 4)


#: bytes per edge the driver holds while building the one block of the broadcast strategy:
#: the Arrow columns fetched (src, dst, prob: 24), their int64 / float64 copies (24), the sort
#: order and sorted copies (32) and the tables (16)
DRIVER_BYTES_PER_EDGE = 96
#: share of a task's (or the driver's) memory the broadcast tables may take: the rest is for
#: the walkers, Spark's own buffers and the other tasks' data
BROADCAST_MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class WalkMemory:
    """What :func:`choose_strategy` compares: the bytes the broadcast strategy needs on the
    driver (building the block) and in every Python worker (its copy of the tables), and the
    bytes each may use."""

    driver_need: int
    task_need: int
    driver_has: int
    task_has: int

    @property
    def fits(self) -> bool:
        return (self.driver_need <= BROADCAST_MEMORY_SHARE * self.driver_has
                and self.task_need <= BROADCAST_MEMORY_SHARE * self.task_has)


def task_memory_bytes(conf: dict[str, str], driver_heap: int) -> int:
    """The memory one Python task may count on: ``spark.executor.pyspark.memory`` when set
    (the Python workers' own limit), else ``spark.executor.memory`` (default 1g; the driver's
    heap in local mode, where the executor is the driver) — divided by the tasks that run at
    once in an executor (``spark.executor.cores`` / ``spark.task.cpus``; 1 in local mode,
    whose Python workers are separate processes outside the JVM heap)."""
    from .word2vec_guard import parse_memory

    local = conf.get("spark.master", "local").startswith("local")
    if conf.get("spark.executor.pyspark.memory"):
        total = parse_memory(conf["spark.executor.pyspark.memory"])
    elif local:
        total = driver_heap
    else:
        total = parse_memory(conf.get("spark.executor.memory", "1g"))
    if local:
        return total
    tasks = max(1, int(conf.get("spark.executor.cores", "1"))
                // max(1, int(conf.get("spark.task.cpus", "1"))))
    return total // tasks


def walk_memory(n_nodes: int, n_edges: int, driver_heap: int, task_bytes: int) -> WalkMemory:
    """The broadcast strategy's needs for a graph of ``n_nodes`` and ``n_edges`` against a
    driver heap and a per-task memory (bytes)."""
    return WalkMemory(8 * (n_nodes + 1) + n_edges * DRIVER_BYTES_PER_EDGE,
                      alias_table_bytes(n_nodes, n_edges), driver_heap, task_bytes)


def choose_strategy(cfg: WalksConfig, n_nodes: int, n_edges: int,
                    memory: WalkMemory | None = None) -> str:
    """The strategy to run, unless the config names one: ``broadcast`` when the alias tables
    are below ``broadcast_max_mb`` and ``memory`` (see :func:`walk_memory`; None: not checked)
    says the driver and a task have room for them, else ``join``. node2vec (second-order)
    walks need ``broadcast``: they take it whatever the size (a warning says so)."""
    if cfg.strategy != "auto":
        return cfg.strategy
    fits = (alias_table_bytes(n_nodes, n_edges) <= cfg.broadcast_max_mb * 2**20
            and (memory is None or memory.fits))
    if not fits and cfg.second_order:
        log.warning("walks: node2vec needs the broadcast strategy although its tables "
                    "(%.0f MiB) exceed what a task should hold; give executors more memory",
                    alias_table_bytes(n_nodes, n_edges) / 2**20)
    return "broadcast" if fits or cfg.second_order else "join"


def spark_walk_memory(spark: SparkSession, g: IndexedGraph) -> WalkMemory:
    """:func:`walk_memory` for ``g`` on the running session's driver heap and task memory."""
    from .word2vec_guard import driver_heap_bytes

    heap = driver_heap_bytes(spark)
    conf = dict(spark.sparkContext.getConf().getAll())
    return walk_memory(g.n_nodes, g.n_edges, heap, task_memory_bytes(conf, heap))


def _draw_starts(nodes: np.ndarray, freq: np.ndarray, share: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``share`` nodes drawn with probability proportional to ``freq`` (with replacement)."""
    if share <= 0 or len(nodes) == 0:
        return np.zeros(0, np.int64)
    cdf = np.cumsum(freq)
    picks = np.searchsorted(cdf, rng.random(share) * cdf[-1], side="right")
    return nodes[np.minimum(picks, len(nodes) - 1)].astype(np.int64)


def start_nodes(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig,
                n_parts: int) -> RDD:
    """RDD of ``n_parts`` partitions, partition ``i`` one int64 array: the start nodes of
    walk partition ``i``. ``per_node``: ``walks_per_node`` starts at each node ``v`` with
    ``v % n_parts == i``. ``frequency``: ``num_walks`` starts drawn by node frequency without
    the nodes passing through the driver: the ``num_walks`` are split among the node
    partitions by their total frequency (``n_parts`` sums collected, one multinomial draw with
    the seed), then each partition draws its share from its own nodes with the generator of
    ``(seed, partition, 0)`` (the walks use ``(seed, partition[, step])``). Deterministic in
    (seed, n_parts): a retried task draws the same starts."""
    sc = spark.sparkContext
    n_nodes, per = g.n_nodes, cfg.walks_per_node
    if cfg.start == "per_node":
        def every(part: int, _: Iterable[Any]) -> Iterable[np.ndarray]:
            yield np.repeat(np.arange(part, n_nodes, n_parts, dtype=np.int64), per)
        return sc.parallelize(range(n_parts), n_parts).mapPartitionsWithIndex(every)
    part_of = F.pmod(F.col("node"), F.lit(n_parts))
    sums = {r["_p"]: r["_w"] for r in g.nodes.groupBy(part_of.alias("_p"))
            .agg(F.sum("freq").alias("_w")).collect()}  # n_parts floats
    weights = np.array([max(float(sums.get(i) or 0.0), 0.0) for i in range(n_parts)])
    if weights.sum() <= 0:
        weights = np.ones(n_parts)
    shares = np.random.default_rng([cfg.seed, n_parts]).multinomial(
        cfg.num_walks, weights / weights.sum())
    seed = cfg.seed

    def draw(part: int, rows: Iterable[Any]) -> Iterable[np.ndarray]:
        pairs = np.array([(r[1][0], r[1][1]) for r in rows], dtype=np.float64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")  # the same order whatever the shuffle
        nodes, freq = pairs[order, 0].astype(np.int64), np.maximum(pairs[order, 1], 0.0)
        yield _draw_starts(nodes, freq, int(shares[part]),
                           np.random.default_rng([seed, part, 0]))  # not a walk's generator

    keyed = g.nodes.select("node", "freq").rdd.map(
        lambda r: (int(r["node"]) % n_parts, (int(r["node"]), float(r["freq"] or 0.0))))
    return keyed.partitionBy(n_parts, lambda k: k).mapPartitionsWithIndex(draw)


@dataclass
class WalkRun:
    """The walks (an RDD of int32 path matrices, one per block of walkers) and what ran:
    the strategy, the partitions and the settings (after :func:`within_budget`)."""

    blocks: RDD
    strategy: str
    n_parts: int
    cfg: WalksConfig


def within_budget(cfg: WalksConfig, n_nodes: int) -> WalksConfig:
    """``cfg`` with ``walks_per_node`` (start ``per_node``) or ``num_walks`` (``frequency``)
    lowered so that walks x ``walk_length`` stays within ``cfg.max_tokens`` (0: no cap);
    never below one walk per node, or one walk."""
    if not cfg.max_tokens:
        return cfg
    if cfg.start == "per_node":
        fit = cfg.max_tokens // max(n_nodes * cfg.walk_length, 1)
        per = min(cfg.walks_per_node, max(1, fit))
        return dataclasses.replace(cfg, walks_per_node=per)
    walks = min(cfg.num_walks, max(1, cfg.max_tokens // cfg.walk_length))
    return dataclasses.replace(cfg, num_walks=walks)


def generate_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig,
                   strategy: str | None = None, checkpoint_dir: str | None = None) -> WalkRun:
    """Walks on ``g`` by ``strategy`` (default: :func:`choose_strategy` on the session's
    memory, :func:`spark_walk_memory`), as many as ``cfg.max_tokens`` allows
    (:func:`within_budget`; the run's ``cfg`` is returned in :attr:`WalkRun.cfg`).
    ``checkpoint_dir``: where the join strategy checkpoints on a cluster (see
    :func:`_join_walks`)."""
    budget = within_budget(cfg, g.n_nodes)
    if budget != cfg:
        log.info("walks: %d nodes x %d walks x %d steps would pass walks.max_tokens=%d: "
                 "%s", g.n_nodes, cfg.walks_per_node, cfg.walk_length, cfg.max_tokens,
                 f"{budget.walks_per_node} walk(s) per node" if cfg.start == "per_node"
                 else f"{budget.num_walks} walks")
    cfg = budget
    strategy = strategy or choose_strategy(cfg, g.n_nodes, g.n_edges,
                                           spark_walk_memory(spark, g))
    n_parts = cfg.num_partitions or 2 * spark.sparkContext.defaultParallelism
    starts = start_nodes(spark, g, cfg, n_parts)
    if strategy == "broadcast":
        return WalkRun(_broadcast_walks(spark, g, cfg, n_parts, starts), strategy, n_parts,
                       cfg)
    if cfg.second_order:
        raise ValueError("node2vec walks (p or q != 1) need walks.strategy broadcast")
    return WalkRun(_join_walks(spark, g, cfg, n_parts, starts, checkpoint_dir), strategy,
                   n_parts, cfg)


def _broadcast_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig, n_parts: int,
                     starts: RDD) -> RDD:
    sc = spark.sparkContext
    # The one block passes through the driver once to be broadcast: alias_table_bytes() of
    # it, bounded by walks.broadcast_max_mb and by the driver's and a task's memory
    # (choose_strategy). The edge columns come over Arrow (no Row
    # objects: 1M edges in ~2 s where Row-by-Row conversion took ~8 s).
    t0 = time.perf_counter()
    cols = g.edges.select("src", "dst", "prob").toArrow()
    t1 = time.perf_counter()
    block = AdjacencyBlock.build(0, 1, g.n_nodes,
                                 *(cols.column(i).to_numpy().astype(t) for i, t in
                                   enumerate((np.int64, np.int64, np.float64))))
    edges = EdgeSet(block) if cfg.second_order else None
    bc = sc.broadcast((block, edges))
    log.info("walks: %d edges fetched in %.1fs, alias tables built and broadcast in %.1fs",
             len(block.dst), t1 - t0, time.perf_counter() - t1)

    def run(part: int, it: Iterable[Any]) -> Iterable[np.ndarray]:
        blk, edge_set = bc.value
        rng = np.random.default_rng([cfg.seed, part])
        for first in it:
            for lo in range(0, len(first), 65536):  # bounded memory per block of walkers
                yield walk_from(blk, first[lo:lo + 65536], cfg.walk_length, rng, cfg.p, cfg.q,
                                edge_set)

    return starts.mapPartitionsWithIndex(run)


def _join_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig, n_parts: int,
                starts: RDD, checkpoint_dir: str | None = None) -> RDD:
    """Walks that travel: adjacency block ``i`` stays in partition ``i``, and at each step
    every live walker moves (a shuffle) to the partition of its current node.

    Retry-safe: every walker carries an id (its start partition and position there), each
    partition sorts the walkers it receives by id before drawing their steps from the
    generator of ``(seed, partition, step)``, so a recomputed partition (a retried task, a
    lost executor's cached blocks) draws exactly what the first attempt drew whatever order
    the shuffle delivered its pieces in. Every ``checkpoint_every`` steps the lineage is cut:
    in local mode by ``localCheckpoint`` (its blocks die only with the process, and so would
    the run), on a cluster by a reliable ``checkpoint`` to ``checkpoint_dir`` (local
    checkpoint blocks die with their executor and could not be recomputed); without a
    directory the lineage is kept and a lost partition is recomputed from the start."""
    t0 = time.perf_counter()
    adjacency = adjacency_blocks(g, n_parts).persist(StorageLevel.MEMORY_AND_DISK)
    adjacency.count()
    length = cfg.walk_length
    sc = spark.sparkContext
    local = (sc.master or "").startswith("local")
    if not local and checkpoint_dir:
        sc.setCheckpointDir(checkpoint_dir)
    reliable = not local and bool(sc.getCheckpointDir())
    log.info("walks: join strategy, %d partitions: adjacency blocks cached in %.1fs; lineage "
             "cut every %d steps by %s", n_parts, time.perf_counter() - t0,
             cfg.checkpoint_every, "checkpoints to " + str(sc.getCheckpointDir()) if reliable
             else "local checkpoints" if local else "nothing (no checkpoint directory)")

    keep = StorageLevel.MEMORY_AND_DISK  # spill, never drop: a dropped block means recomputing
    empty = np.zeros((0, length), np.int32)
    no_ids = np.zeros(0, np.int64)

    def first(part: int, it: Iterable[np.ndarray]) -> Iterator[Walkers]:
        start = np.concatenate(list(it) or [no_ids])
        paths = np.full((len(start), length), -1, dtype=np.int32)
        paths[:, 0] = start
        ids = (np.int64(part) << np.int64(40)) + np.arange(len(start), dtype=np.int64)
        yield empty, paths, ids

    # state: one element per partition, (walks finished so far, live walkers, their ids); the
    # finished walks never move, only the live walkers travel to the partition of their node
    state = starts.mapPartitionsWithIndex(first).persist(keep)
    for t in range(1, length):
        moved = (state.flatMap(partial(route_walkers, t=t, n_parts=n_parts))
                 .partitionBy(n_parts, lambda k: k)
                 .mapPartitions(partial(gather_walkers, length=length)))
        last = t == length - 1

        def advance(part: int, items: Iterable[Any], t: int = t,
                    last: bool = last) -> Iterator[Walkers]:
            rng = np.random.default_rng([cfg.seed, part, t])
            for (blk, (paths, ids)), (finished, _, _) in items:
                if len(paths):
                    paths[:, t] = blk.step(paths[:, t - 1], rng)
                alive = paths[:, t] >= 0
                if last:
                    yield np.concatenate([finished, paths]), empty, no_ids
                else:
                    yield np.concatenate([finished, paths[~alive]]), paths[alive], ids[alive]

        # adjacency block i meets the walkers now at nodes of partition i, and partition i's
        # finished walks (one element per partition on all three sides)
        nxt = adjacency.zip(moved).zip(state).mapPartitionsWithIndex(advance).persist(keep)
        if t % cfg.checkpoint_every == 0 or last:
            if reliable:
                nxt.checkpoint()  # written by the next job
            elif local:
                nxt.localCheckpoint()  # cut the lineage
        nxt.count()  # one job per step
        state.unpersist()
        state = nxt
    adjacency.unpersist()
    return state.map(lambda s: s[0]).filter(lambda walks: len(walks) > 0)


#: one partition's walkers in the join strategy: (finished walks, live walks, live walker ids)
Walkers = tuple[np.ndarray, np.ndarray, np.ndarray]


def route_walkers(s: Walkers, t: int, n_parts: int) -> Iterator[tuple[int, tuple]]:
    """Split a partition's live walkers by the partition of their node at step ``t - 1``:
    ``(partition, (paths, ids))`` pieces."""
    _, paths, ids = s
    owner = paths[:, t - 1] % n_parts
    for part in np.unique(owner):
        mine = owner == part
        yield int(part), (paths[mine], ids[mine])


def gather_walkers(it: Iterable[tuple[int, tuple]], length: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pieces one partition received, as one ``(paths, ids)`` ordered by walker id: the
    same arrays whatever order the pieces arrived in."""
    pieces = [piece for _, piece in it]
    if not pieces:
        yield np.zeros((0, length), np.int32), np.zeros(0, np.int64)
        return
    paths = np.concatenate([p for p, _ in pieces])
    ids = np.concatenate([i for _, i in pieces])
    order = np.argsort(ids, kind="stable")
    yield paths[order], ids[order]


def walk_token_rows(blocks: RDD) -> RDD:
    """Walks with at least two nodes as rows ``(tokens,)`` of node ids as strings."""
    def rows(paths: np.ndarray) -> Iterator[tuple[list[str]]]:
        for path in paths:
            n = int(np.count_nonzero(path >= 0))
            if n >= 2:
                yield ([str(v) for v in path[:n]],)
    return blocks.flatMap(rows)


def walk_stats(blocks: RDD) -> dict[str, int]:
    """Walks, steps (edges traversed) and walks that stopped at a dead end."""
    def stats(paths: np.ndarray) -> tuple[int, int, int]:
        n = (paths >= 0).sum(axis=1)
        return len(paths), int(np.maximum(n - 1, 0).sum()), int((n < paths.shape[1]).sum())
    walks, steps, early = blocks.map(stats).fold((0, 0, 0), lambda a, b: (a[0] + b[0],
                                                                           a[1] + b[1],
                                                                           a[2] + b[2]))
    return {"walks": walks, "steps": steps, "walks_stopped_early": early}
