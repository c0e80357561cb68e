"""DeepWalk / node2vec training: sequences -> item graph -> walks -> Word2Vec vectors."""
from __future__ import annotations

import time
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config
from .graph import edge_weights, transition_probabilities
from .walks import (
    alias_table_bytes,
    generate_walks,
    index_graph,
    walk_stats,
    walk_token_rows,
)
from .word2vec import fit_word2vec, vocabulary_report
from .word2vec_guard import check_word2vec_fits, fit_details


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


def train(spark: SparkSession, cfg: Config, ratings: DataFrame, sequences: DataFrame
          ) -> tuple[DataFrame, dict[str, Any], dict[str, tuple[DataFrame, bool]]]:
    """Train on ``sequences`` (and ``ratings`` for rating-weighted edges); see the module doc.

    Returns plain parts (the registry wraps them): the item vectors ``(item_id, vector)``
    (cached), counts for the manifest (edges kept and dropped, nodes, strategy, walks, steps,
    vocabulary), and the extra tables by name with whether they are per model: ``item_graph``
    and, with ``walks.write_walks``, ``walks``.
    """
    edges = edge_weights(sequences, cfg.graph, ratings).persist()
    graph = transition_probabilities(edges, cfg.graph.min_edge_weight).persist()
    n_all, n_kept = edges.count(), graph.count()
    g = index_graph(graph)
    run = generate_walks(spark, g, cfg.walks)
    blocks = run.blocks.persist(StorageLevel.MEMORY_AND_DISK)
    stats = walk_stats(blocks)
    tokens = spark.createDataFrame(walk_token_rows(blocks), "items array<string>").persist()
    size = check_word2vec_fits(tokens, cfg.deepwalk, section="deepwalk")
    t0 = time.perf_counter()
    node_vectors = fit_word2vec(tokens, cfg.deepwalk)
    fit = fit_details(size, time.perf_counter() - t0, cfg.deepwalk.max_iter)
    vectors = (node_vectors.withColumnRenamed("item_id", "node")
               .join(g.nodes.select(F.col("node").cast("string").alias("node"), "item_id"),
                     "node")
               .select("item_id", "vector").persist())
    vocab = vocabulary_report(tokens, node_vectors, cfg.deepwalk.min_count)
    details = {"edges": n_kept, "edges_below_min_weight": n_all - n_kept, "nodes": g.n_nodes,
               "walk_strategy": run.strategy, "walk_partitions": run.n_parts,
               "alias_table_bytes": alias_table_bytes(g.n_nodes, g.n_edges),
               **stats, "walks_used": tokens.count(), **vocab, **fit}
    tables = {"item_graph": (graph, False)}
    if cfg.walks.write_walks:
        tables["walks"] = (walks_table(spark, tokens, g.nodes), True)
    vectors.count()
    for df in (blocks, edges, g.edges):  # graph and tokens stay cached: their tables follow
        df.unpersist()
    return vectors, details, tables
