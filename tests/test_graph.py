import datetime as dt

from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.models.graph import GRAPH_SCHEMA, build_item_graph, edge_weights

SEQ = "user_id string, items array<string>, n_items int, ts_start timestamp, ts_end timestamp"
D0 = dt.datetime(2024, 1, 1)


def graph_cfg(*overrides):
    return load_config(overrides=list(overrides)).graph


def seqs(spark):
    return spark.createDataFrame([
        ("u", ["a", "b", "c"], 3, D0, D0),
        ("v", ["a", "b"], 2, D0, D0 + dt.timedelta(days=30)),
        ("w", ["b", "a", "d"], 3, D0, D0 + dt.timedelta(days=30)),
    ], SEQ)


def test_counts_and_probabilities(spark):
    expected = spark.createDataFrame([
        ("a", "b", 2.0, 2 / 3), ("a", "d", 1.0, 1 / 3),
        ("b", "c", 1.0, 0.5), ("b", "a", 1.0, 0.5)], GRAPH_SCHEMA)
    got = build_item_graph(seqs(spark), graph_cfg())
    assert_approx_df_equality(got, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
    sums = got.groupBy("src").agg(F.sum("prob").alias("s")).collect()
    assert all(abs(r["s"] - 1.0) < 1e-12 for r in sums)


def test_min_edge_weight_and_undirected(spark):
    got = build_item_graph(seqs(spark), graph_cfg("graph.min_edge_weight=2"))
    expected = spark.createDataFrame([("a", "b", 2.0, 1.0)], GRAPH_SCHEMA)
    assert_df_equality(got, expected, ignore_nullable=True)
    und = edge_weights(seqs(spark), graph_cfg("graph.undirected=true"))
    weights = {(r["src"], r["dst"]): r["weight"] for r in und.collect()}
    assert weights[("a", "b")] == 3.0 and weights[("b", "a")] == 3.0
    assert weights[("d", "a")] == 1.0 and weights[("c", "b")] == 1.0


def test_rating_and_recency_weighting(spark):
    ratings = spark.createDataFrame([("u", "b", 5.0, D0), ("u", "c", 4.0, D0),
                                     ("v", "b", 3.5, D0), ("w", "a", 4.5, D0),
                                     ("w", "d", 4.0, D0)], RATINGS_SCHEMA)
    w = {(r["src"], r["dst"]): r["weight"] for r in
         edge_weights(seqs(spark), graph_cfg("graph.weighting=rating"), ratings).collect()}
    assert w == {("a", "b"): 8.5, ("b", "c"): 4.0, ("b", "a"): 4.5, ("a", "d"): 4.0}
    w = {(r["src"], r["dst"]): r["weight"] for r in edge_weights(
        seqs(spark), graph_cfg("graph.weighting=recency",
                               "graph.recency_half_life_days=30")).collect()}
    # u's sequence ended 30 days before the newest: its pairs weigh 0.5
    assert w == {("a", "b"): 1.5, ("b", "c"): 0.5, ("b", "a"): 1.0, ("a", "d"): 1.0}
