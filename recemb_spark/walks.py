"""Distributed random walks on the item graph (DeepWalk / node2vec), on RDDs.

Nodes get dense integer ids ``0..N-1``. Node ``v`` belongs to walk partition ``v % P``. For
each partition, :class:`AdjacencyBlock` holds the out-edges of its nodes in CSR form with a
Vose alias table per node (O(1) sampling of ``P(dst | src)``). The ``join`` strategy builds its
blocks on the executors and never brings the graph to the driver.

Two strategies generate the walks:

``broadcast``
    One block for the whole graph (P = 1), built from the edge columns fetched over Arrow
    (bounded by ``broadcast_max_mb``) and broadcast once; every partition of start nodes
    advances all its walkers a step at a time with vectorised numpy. No shuffle per step.
    node2vec second-order walks run here, by rejection sampling (KnightKing): propose from
    the first-order alias table, accept with ``f / max(f)`` where ``f`` is ``1/p`` to return,
    ``1`` to stay near the previous node and ``1/q`` to move away. No per-edge tables.

``join``
    For graphs too big for one executor: the adjacency stays partitioned by node and
    persisted; each step only the walkers move. Walkers travel as numpy blocks, split by the
    partition of their current node, shuffled with ``partitionBy``, and paired with the
    adjacency block of the same partition by ``RDD.zip`` (one block per partition on both
    sides), so the adjacency is never re-shuffled. Each step is persisted and materialised;
    the lineage is cut (``localCheckpoint``) every ``checkpoint_every`` steps.

A walk stops early at a node without out-edges. Walks are ``int32`` node-id paths padded with
``-1`` (half the bytes of int64 to shuffle in the join strategy). Randomness: one generator
per (seed, partition[, step]): the same seed and partition count give the same walks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .config import WalksConfig
from .tables import dense_index

# --------------------------------------------------------------------------------------------
# alias tables and the adjacency


def vose_alias(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: ``(accept, alias)`` for sampling ``k ~ probs`` as
    ``k = j if u < accept[j] else alias[j]`` with ``j`` uniform."""
    n = len(probs)
    scaled = np.asarray(probs, dtype=np.float64) * (n / float(np.sum(probs)))
    accept = np.ones(n, dtype=np.float32)
    alias = np.arange(n, dtype=np.int32)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    return accept, alias  # leftovers keep accept = 1 (numerical slack)


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
              prob: np.ndarray) -> "AdjacencyBlock":
        rows = max(0, (n_nodes - part + n_parts - 1) // n_parts)
        order = np.lexsort((dst, src))
        src, dst, prob = src[order], dst[order], prob[order]
        counts = np.bincount((src - part) // n_parts, minlength=rows)
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        accept = np.ones(len(dst), dtype=np.float32)
        alias = np.zeros(len(dst), dtype=np.int32)
        for r in np.nonzero(counts > 1)[0]:
            lo, hi = indptr[r], indptr[r + 1]
            accept[lo:hi], alias[lo:hi] = vose_alias(prob[lo:hi])
        return AdjacencyBlock(part, n_parts, indptr, dst.astype(np.int32), accept, alias)

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One first-order step from each node in ``cur`` (all in this block): the next
        node, or -1 where ``cur`` has no out-edges."""
        rows = cur // self.n_parts
        start = self.indptr[rows]
        deg = self.indptr[rows + 1] - start
        u, v = rng.random(len(cur)), rng.random(len(cur))
        j = np.minimum((u * deg).astype(np.int64), np.maximum(deg - 1, 0))
        pos = np.minimum(start + j, max(len(self.dst) - 1, 0))
        if len(self.dst) == 0:
            return np.full(len(cur), -1, dtype=np.int32)
        pick = np.where(v < self.accept[pos], j, self.alias[pos])
        nxt = self.dst[np.minimum(start + pick, len(self.dst) - 1)]
        return np.where(deg > 0, nxt, np.int32(-1)).astype(np.int32)


class EdgeSet:
    """Membership test for directed edges (node2vec's "is x a neighbour of prev")."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, n_nodes: int):
        self.n = np.int64(max(n_nodes, 1))
        self.keys = np.sort(src.astype(np.int64) * self.n + dst.astype(np.int64))

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(len(a), dtype=bool)
        keys = a.astype(np.int64) * self.n + b.astype(np.int64)
        idx = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[idx] == keys


def node2vec_step(block: AdjacencyBlock, edges: EdgeSet, cur: np.ndarray, prev: np.ndarray,
                  p: float, q: float, rng: np.random.Generator) -> np.ndarray:
    """One second-order step by rejection sampling (see the module doc)."""
    out = np.full(len(cur), -1, dtype=np.int32)
    pending = np.arange(len(cur))
    f_max = max(1.0 / p, 1.0, 1.0 / q)
    while pending.size:
        cand = block.step(cur[pending], rng)
        dead = cand < 0
        pending = pending[~dead]
        cand = cand[~dead]
        if not pending.size:
            break
        pv = prev[pending]
        f = np.where(cand == pv, 1.0 / p, np.where(edges.contains(pv, cand), 1.0, 1.0 / q))
        accepted = rng.random(pending.size) * f_max < f
        out[pending[accepted]] = cand[accepted]
        pending = pending[~accepted]
    return out


def walk_from(block: AdjacencyBlock, starts: np.ndarray, length: int, rng: np.random.Generator,
              p: float = 1.0, q: float = 1.0, edges: Optional[EdgeSet] = None) -> np.ndarray:
    """Walks of up to ``length`` nodes from each start (``block`` covers every node):
    an ``(len(starts), length)`` int32 matrix padded with -1 after a dead end."""
    paths = np.full((len(starts), length), -1, dtype=np.int32)
    paths[:, 0] = starts
    alive = np.arange(len(starts))
    second_order = p != 1.0 or q != 1.0
    for t in range(1, length):
        if not alive.size:
            break
        cur = paths[alive, t - 1]
        if second_order and t >= 2:
            nxt = node2vec_step(block, edges, cur, paths[alive, t - 2], p, q, rng)
        else:
            nxt = block.step(cur, rng)
        paths[alive, t] = nxt
        alive = alive[nxt >= 0]
    return paths


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
    named = ends.groupBy("item_id").agg(F.sum("weight").alias("freq"))
    nodes = (dense_index(named, "item_id").join(named, "item_id")
             .select(F.col("item_id_idx").cast("long").alias("node"), "item_id", "freq")
             .persist())
    n_nodes = nodes.count()
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

    def to_arrays(rows: Iterator) -> Iterator[tuple[int, tuple]]:
        data = np.array([(r["src"], r["dst"], r["prob"]) for r in rows], dtype=np.float64)
        if len(data) == 0:
            return
        src = data[:, 0].astype(np.int64)
        owner = src % n_parts
        for part in np.unique(owner):
            m = owner == part
            yield int(part), (src[m], data[m, 1].astype(np.int64), data[m, 2])

    def build(parts: Iterator[tuple[int, tuple]], index: int) -> Iterator[AdjacencyBlock]:
        chunks = [c for _, c in parts]
        cat = (lambda i, dt: np.concatenate([c[i] for c in chunks]) if chunks
               else np.zeros(0, dt))
        yield AdjacencyBlock.build(index, n_parts, n_nodes, cat(0, np.int64),
                                   cat(1, np.int64), cat(2, np.float64))

    keyed = g.edges.rdd.mapPartitions(to_arrays).partitionBy(n_parts, lambda k: k)
    return keyed.mapPartitionsWithIndex(lambda i, it: build(it, i), preservesPartitioning=True)


def alias_table_bytes(n_nodes: int, n_edges: int) -> int:
    """Memory of the alias tables of a graph (indptr + dst + accept + alias)."""
    return 8 * (n_nodes + 1) + n_edges * (8 + 4 + 4)


def choose_strategy(cfg: WalksConfig, g: IndexedGraph) -> str:
    """``broadcast`` when the tables fit ``broadcast_max_mb`` (or node2vec is asked), else
    ``join`` — unless the config names one."""
    if cfg.strategy != "auto":
        return cfg.strategy
    fits = alias_table_bytes(g.n_nodes, g.n_edges) <= cfg.broadcast_max_mb * 2**20
    return "broadcast" if fits or cfg.second_order else "join"


def _starts(cfg: WalksConfig, part: int, n_parts: int, n_nodes: int,
            cdf: Optional[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    if cfg.start == "per_node":
        return np.repeat(np.arange(part, n_nodes, n_parts, dtype=np.int64), cfg.walks_per_node)
    share = cfg.num_walks // n_parts + (1 if part < cfg.num_walks % n_parts else 0)
    picks = np.searchsorted(cdf, rng.random(share) * cdf[-1], side="right")
    return np.minimum(picks, n_nodes - 1).astype(np.int64)


def start_cdf(g: IndexedGraph, cfg: WalksConfig) -> Optional[np.ndarray]:
    """Cumulative start weights by node (``start: frequency``; O(n_nodes) floats), or None."""
    if cfg.start != "frequency":
        return None
    freq = np.zeros(g.n_nodes)
    for r in g.nodes.select("node", "freq").collect():  # one float per node: catalogue-sized
        freq[r["node"]] = r["freq"]
    return np.cumsum(freq)


@dataclass
class WalkRun:
    """The walks (an RDD of int32 path matrices, one per block of walkers) and what ran."""

    blocks: RDD
    strategy: str
    n_parts: int


def generate_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig,
                   strategy: Optional[str] = None) -> WalkRun:
    """Walks on ``g`` by ``strategy`` (default: :func:`choose_strategy`)."""
    strategy = strategy or choose_strategy(cfg, g)
    n_parts = cfg.num_partitions or 2 * spark.sparkContext.defaultParallelism
    cdf = start_cdf(g, cfg)
    if strategy == "broadcast":
        return WalkRun(_broadcast_walks(spark, g, cfg, n_parts, cdf), strategy, n_parts)
    if cfg.second_order:
        raise ValueError("node2vec walks (p or q != 1) need walks.strategy broadcast")
    return WalkRun(_join_walks(spark, g, cfg, n_parts, cdf), strategy, n_parts)


def _broadcast_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig, n_parts: int,
                     cdf: Optional[np.ndarray]) -> RDD:
    sc = spark.sparkContext
    # The one block passes through the driver once to be broadcast: alias_table_bytes() of
    # it, bounded by walks.broadcast_max_mb. The edge columns come over Arrow (no Row
    # objects: 1M edges in ~2 s where Row-by-Row conversion took ~8 s).
    cols = g.edges.select("src", "dst", "prob").toArrow()
    block = AdjacencyBlock.build(0, 1, g.n_nodes,
                                 *(cols.column(i).to_numpy().astype(t) for i, t in
                                   enumerate((np.int64, np.int64, np.float64))))
    edges = None
    if cfg.second_order:
        src = np.repeat(np.arange(len(block.indptr) - 1), np.diff(block.indptr))
        edges = EdgeSet(src, block.dst, g.n_nodes)
    bc = sc.broadcast((block, edges, cdf))
    n_nodes = g.n_nodes

    def run(part: int, _: Iterator) -> Iterator[np.ndarray]:
        blk, edge_set, cdf_ = bc.value
        rng = np.random.default_rng([cfg.seed, part])
        starts = _starts(cfg, part, n_parts, n_nodes, cdf_, rng)
        for lo in range(0, len(starts), 65536):  # bounded memory per block of walkers
            yield walk_from(blk, starts[lo:lo + 65536], cfg.walk_length, rng, cfg.p, cfg.q,
                            edge_set)

    return sc.parallelize(range(n_parts), n_parts).mapPartitionsWithIndex(run)


def _join_walks(spark: SparkSession, g: IndexedGraph, cfg: WalksConfig, n_parts: int,
                cdf: Optional[np.ndarray]) -> RDD:
    sc = spark.sparkContext
    adjacency = adjacency_blocks(g, n_parts).persist(StorageLevel.MEMORY_AND_DISK)
    adjacency.count()
    n_nodes, length = g.n_nodes, cfg.walk_length
    bc_cdf = sc.broadcast(cdf)

    def init(part: int, _: Iterator) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([cfg.seed, part])
        starts = _starts(cfg, part, n_parts, n_nodes, bc_cdf.value, rng)
        paths = np.full((len(starts), length), -1, dtype=np.int32)
        paths[:, 0] = starts
        yield paths

    def route(paths: np.ndarray, t: int) -> Iterator[tuple[int, np.ndarray]]:
        """Split a block of live walkers by the partition of their node at step t - 1."""
        owner = paths[:, t - 1] % n_parts
        for part in np.unique(owner):
            yield int(part), paths[owner == part]

    def gather(it: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
        chunks = [c for _, c in it]
        yield np.concatenate(chunks) if chunks else np.zeros((0, length), np.int32)

    keep = StorageLevel.MEMORY_AND_DISK  # spill, never drop: a dropped block means recomputing
    empty = np.zeros((0, length), np.int32)

    def first(part: int, it: Iterator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for paths in init(part, it):
            yield empty, paths

    # state: one element per partition, (walks finished so far, live walkers); the finished
    # walks never move, only the live walkers travel to the partition of their current node
    state = sc.parallelize(range(n_parts), n_parts).mapPartitionsWithIndex(first).persist(keep)
    for t in range(1, length):
        moved = state.flatMap(lambda s, t=t: route(s[1], t)) \
            .partitionBy(n_parts, lambda k: k).mapPartitions(gather)
        last = t == length - 1

        def advance(part: int, items: Iterator, t: int = t,
                    last: bool = last) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            rng = np.random.default_rng([cfg.seed, part, t])
            for (blk, paths), (finished, _) in items:
                if len(paths):
                    paths[:, t] = blk.step(paths[:, t - 1], rng)
                alive = paths[:, t] >= 0
                if last:
                    yield np.concatenate([finished, paths]), empty
                else:
                    yield np.concatenate([finished, paths[~alive]]), paths[alive]

        # adjacency block i meets the walkers now at nodes of partition i, and partition i's
        # finished walks (one element per partition on all three sides)
        nxt = adjacency.zip(moved).zip(state).mapPartitionsWithIndex(advance).persist(keep)
        if t % cfg.checkpoint_every == 0 or last:
            nxt.localCheckpoint()  # cut the lineage
        nxt.count()  # one job per step
        state.unpersist()
        state = nxt
    adjacency.unpersist()
    return state.map(lambda s: s[0]).filter(len)


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
