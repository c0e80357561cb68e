"""DeepWalk / node2vec training: sequences -> item graph -> walks -> Word2Vec vectors."""
from __future__ import annotations

from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..io.warehouse import checkpoint_dir
from ..neighbors.blocks import broadcast_limit
from .graph import edge_weights, transition_probabilities
from .side_info import interleave_side_tokens, mark_once, split_vectors, with_cold_items
from .tune import tune_word2vec
from .walks import (
    alias_table_bytes,
    generate_walks,
    index_graph,
    walk_stats,
    walk_token_rows,
)
from .word2vec import train_word2vec


def walks_table(spark: SparkSession, tokens: DataFrame, nodes: DataFrame) -> DataFrame:
    """Walks with item ids, for inspection: ``(walk_id long, items array<string>)``.
    Distributed: explode, join the node table, regroup in order."""
    exploded = (tokens.withColumn("walk_id", F.monotonically_increasing_id())
                .select("walk_id", F.posexplode("items").alias("pos", "node")))
    named = exploded.join(nodes.select(F.col("node").cast("string").alias("node"), "item_id"),
                          "node")
    return (named.groupBy("walk_id")
            .agg(F.array_sort(F.collect_list(F.struct("pos", "item_id"))).alias("_w"))
            .select("walk_id", F.transform("_w", lambda e: e["item_id"]).alias("items")))


def validation_walks(spark: SparkSession, cfg: Config, ratings: DataFrame,
                     sequences: DataFrame) -> DataFrame:
    """Walks over the graph of ``sequences`` as item-id sentences ``(items)`` (for tuning)."""
    edges = edge_weights(sequences, cfg.graph, ratings)
    g = index_graph(transition_probabilities(edges, cfg.graph.min_edge_weight))
    run = generate_walks(spark, g, cfg.walks,
                         checkpoint_dir=checkpoint_dir(cfg.warehouse.path, "walks"))
    tokens = spark.createDataFrame(walk_token_rows(run.blocks), "items array<string>")
    return walks_table(spark, tokens, g.nodes).select("items").persist()


def train(spark: SparkSession, cfg: Config, ratings: DataFrame, sequences: DataFrame,
          side: DataFrame | None = None
          ) -> tuple[DataFrame, dict[str, Any], dict[str, tuple[DataFrame, bool]],
                     list[DataFrame]]:
    """Train on ``sequences`` (and ``ratings`` for rating-weighted edges); see the module doc.

    Returns plain parts (the registry wraps them): the item vectors ``(item_id, vector)``
    (cached), counts for the manifest (edges kept and dropped, nodes, strategy, walks, steps,
    vocabulary), and the extra tables by name with whether they are per model: ``item_graph``
    and, with ``walks.write_walks``, ``walks``; and the cached frames those tables come from
    (the walk tokens), for the caller to release once they are written. With ``side`` (see
    :mod:`.side_info`) side tokens follow each node in the walks and items without a learned
    vector get one from their side tokens (``source`` column).
    """
    edges = edge_weights(sequences, cfg.graph, ratings).persist()
    graph = transition_probabilities(edges, cfg.graph.min_edge_weight).persist()
    n_all, n_kept = edges.count(), graph.count()
    g = index_graph(graph)
    run = generate_walks(spark, g, cfg.walks,
                         checkpoint_dir=checkpoint_dir(cfg.warehouse.path, "walks"))
    blocks = run.blocks.persist(StorageLevel.MEMORY_AND_DISK)
    stats = walk_stats(blocks)
    tokens = spark.createDataFrame(walk_token_rows(blocks), "items array<string>").persist()
    node_ids = g.nodes.select(F.col("node").cast("string").alias("node"), "item_id")
    w2v, sample = cfg.deepwalk, cfg.deepwalk.sample
    tuned: dict[str, Any] = {}
    if w2v.tune:  # walks on the validation split's graph, as item ids
        w2v, sample, tuned = tune_word2vec(
            spark, lambda seqs: validation_walks(spark, cfg, ratings, seqs), sequences, w2v,
            sample, w2v.tune_seconds, train_word2vec)
    sentences, by_node = tokens, None
    if side is not None:  # side tokens keyed by walk node, marked by the items' events
        marked = mark_once(side, sequences, cfg.side_info.once_from)
        by_node = marked.join(node_ids, "item_id").select(
            F.col("node").alias("item_id"), *[c for c in marked.columns if c != "item_id"]
        ).persist()
        sentences = interleave_side_tokens(
            tokens, by_node, cfg.side_info.sample, cfg.walks.seed,
            broadcast_limit=broadcast_limit(spark, cfg.ann.broadcast_max_mb)).persist()
    node_vectors, vocab = train_word2vec(sentences, w2v, sample, section="deepwalk")
    if by_node is not None:
        by_node.unpersist()
    vocab.update(tuned)
    node_vectors, side_vectors = split_vectors(node_vectors)
    vectors = (node_vectors.withColumnRenamed("item_id", "node").join(node_ids, "node")
               .select("item_id", "vector"))
    if side is not None:
        vectors, counts = with_cold_items(vectors, side_vectors, side)
        vocab.update(counts)
    vectors = vectors.persist()
    details = {"edges": n_kept, "edges_below_min_weight": n_all - n_kept, "nodes": g.n_nodes,
               "walk_strategy": run.strategy, "walk_partitions": run.n_parts,
               "walks_per_node_used": run.cfg.walks_per_node if run.cfg.start == "per_node"
               else None,
               "alias_table_bytes": alias_table_bytes(g.n_nodes, g.n_edges),
               **stats, "walks_used": tokens.count(), **vocab}
    tables = {"item_graph": (graph, False)}
    if cfg.walks.write_walks:
        tables["walks"] = (walks_table(spark, tokens, g.nodes), True)
    vectors.count()
    for df in (blocks, edges, g.edges):  # graph and tokens stay cached: their tables follow
        df.unpersist()
    if sentences is not tokens:
        sentences.unpersist()
    return vectors, details, tables, [tokens]
