"""Nightly runs: neighbour overlap, popularity buckets, forward cases, Procrustes alignment,
retention, and three consecutive dates through the CLI."""
import datetime as dt

import numpy as np
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.evaluation import daily_metrics as daily
from recemb_spark.evaluation.popularity import popularity_segments
from recemb_spark.io import sample
from recemb_spark.io.history import (
    apply_retention,
    previous_date,
    table_dates,
    warehouse_tables,
)
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.io.warehouse import Warehouse
from recemb_spark.models import align

NB = "item_id string, neighbor_id string, rank int, similarity double"


def nb_rows(lists):
    return [(item, n, r + 1, 1.0 - r / 10) for item, ns in lists.items()
            for r, n in enumerate(ns)]


def t(day, minute=0):
    return dt.datetime(2026, 1, day) + dt.timedelta(minutes=minute)


def test_neighbor_overlap_on_hand_made_lists(spark):
    today = spark.createDataFrame(nb_rows({"a": ["b", "c", "d"], "b": ["a", "c", "x"],
                                           "c": ["a", "b", "d"], "new": ["a", "b", "c"]}), NB)
    prev = spark.createDataFrame(nb_rows({"a": ["c", "b", "e"], "b": ["y", "z", "w"],
                                          "c": ["d", "a", "q", "b"], "gone": ["a", "b", "c"]}),
                                 NB)
    # k = 3: c's 4th previous neighbour (b) is outside the previous top 3; "new" and "gone"
    # are on one date only
    expected = spark.createDataFrame([("a", 2 / 3), ("b", 0.0), ("c", 2 / 3)],
                                     "item_id string, overlap double")
    assert_approx_df_equality(daily.neighbor_overlap(today, prev, 3), expected, 1e-9,
                              ignore_row_order=True, ignore_nullable=True)


def test_popularity_segments_and_overlap_metrics(spark):
    # liked events: a 5, b 3, c 1, d 1 (10 in all); e only disliked. head_share 0.5: a (0 before
    # it) and b (5 before it, 5 < 5 is false -> tail). head_share 0.6: a, b (5 < 6).
    # head_share 0.85: a, b, c (8 < 8.5) but not d (9): the tie c/d is broken by item id;
    # e has no liked event: not listed (the overlap counts it as tail)
    rows = [(f"u{i}", "a", 5.0, t(1, i)) for i in range(5)]
    rows += [(f"u{i}", "b", 4.0, t(1, i)) for i in range(3)]
    rows += [("u0", "c", 4.0, t(2)), ("u1", "d", 4.0, t(2)), ("u2", "e", 1.0, t(2))]
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    b50 = popularity_segments(ratings, 3.5, 0.5, cold_max_events=1)
    expected = spark.createDataFrame([("a", ["head"]), ("b", ["tail"]), ("c", ["tail", "cold"]),
                                      ("d", ["tail", "cold"])],
                                     "item_id string, segments array<string>")
    assert_df_equality(b50, expected, ignore_row_order=True, ignore_nullable=True)
    b60 = popularity_segments(ratings, 3.5, 0.6, cold_max_events=0)
    assert {r["item_id"]: r["segments"] for r in b60.collect()} == {
        "a": ["head"], "b": ["head"], "c": ["tail"], "d": ["tail"]}

    b85 = popularity_segments(ratings, 3.5, 0.85, cold_max_events=0)
    assert sorted(r["item_id"] for r in b85.collect() if r["segments"][0] == "head") == [
        "a", "b", "c"]

    overlap = spark.createDataFrame([("a", 1.0), ("b", 0.5), ("c", 0.0), ("z", 0.25)],
                                    "item_id string, overlap double")
    m = {r["metric"]: r["value"] for r in daily.overlap_metrics("m", overlap, b60, 10)}
    assert m["overlap_items"] == 4 and m["overlap_head_items"] == 2
    assert m["overlap_mean"] == pytest.approx(1.75 / 4)
    assert m["overlap_head_mean"] == pytest.approx(0.75)
    assert m["overlap_tail_mean"] == pytest.approx(0.125)  # c and z (not rated: tail)
    assert m["overlap_p50"] in (0.25, 0.5) and m["overlap_p10"] == 0.0
    assert m["overlap_p90"] == 1.0


def test_forward_cases_and_neighbor_scoring(spark):
    prev = spark.createDataFrame([
        ("u", "a", 5.0, t(1, 1)), ("u", "b", 4.0, t(1, 2)), ("u", "c", 1.0, t(1, 3)),
        ("v", "a", 2.0, t(1, 1)),                                   # v: nothing liked
        ("w", "c", 4.0, t(1, 5)),
    ], RATINGS_SCHEMA)
    cutoff = daily.cutoff_of(prev)
    assert cutoff == t(1, 5)
    today = prev.union(spark.createDataFrame([
        ("u", "d", 4.0, t(2, 2)), ("u", "e", 5.0, t(2, 1)),         # first new like: e
        ("u", "a", 5.0, t(2, 3)),                                   # re-rated known item: no target
        ("v", "d", 4.0, t(2, 1)),                                   # no query
        ("w", "f", 2.0, t(2, 1)),                                   # not liked: not a case
        ("x", "d", 5.0, t(2, 1)),                                   # new user: no query
    ], RATINGS_SCHEMA))
    cases, no_query = daily.forward_cases(prev, today, 3.5, cutoff)
    expected = spark.createDataFrame([("u", "e", "b", ["a", "b", "c"])],
                                     "user_id string, heldout string, query string, "
                                     "history array<string>")
    got = cases.withColumn("history", F.array_sort("history"))
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert sorted(r["user_id"] for r in no_query.collect()) == ["v", "x"]

    # b's list: a (known, skipped), c (known, skipped), x, e -> e served at position 2
    nb = spark.createDataFrame(nb_rows({"b": ["a", "c", "x", "e"]}), NB)
    m = {(r["metric"], r["k"]): r["value"] for r in
         daily.forward_neighbor_metrics("m", cases, nb, 2)}
    assert m[("forward_neighbors_hr", 2)] == 1.0
    assert m[("forward_neighbors_ndcg", 2)] == pytest.approx(1 / np.log2(3))
    m1 = {(r["metric"], r["k"]): r["value"] for r in
          daily.forward_neighbor_metrics("m", cases, nb, 1)}
    assert m1[("forward_neighbors_hr", 1)] == 0.0


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_procrustes_recovers_a_known_rotation():
    rng = np.random.default_rng(7)
    d, n = 16, 400
    y = rng.normal(size=(n, d))
    q = random_rotation(rng, d)
    x = y @ q + rng.normal(scale=0.01, size=(n, d))          # today = yesterday rotated + noise
    halves = align.block_sums(x[:150], y[:150]) + align.block_sums(x[150:], y[150:])
    fit = align.fit_rotation(halves)
    assert np.allclose(fit.rotation, q.T, atol=0.01)
    assert np.allclose(fit.rotation @ fit.rotation.T, np.eye(d), atol=1e-9)
    assert fit.shared_items == n
    assert fit.residual_before > 1.0 and fit.residual_after < 0.02
    direct = np.linalg.norm(x @ fit.rotation - y) / np.linalg.norm(y)
    assert fit.residual_after == pytest.approx(direct, rel=1e-6)


def test_alignment_on_spark_rotates_items_onto_the_previous_date(spark):
    rng = np.random.default_rng(3)
    d = 8
    y = rng.normal(size=(60, d)).astype(np.float32)
    q = random_rotation(rng, d)
    x = (y @ q).astype(np.float32)
    prev = spark.createDataFrame([(f"i{i}", y[i].tolist()) for i in range(50)],
                                 "item_id string, vector array<float>")  # 50 shared of 60
    today = spark.createDataFrame([(f"i{i}", x[i].tolist()) for i in range(60)],
                                  "item_id string, vector array<float>").repartition(3)
    fit = align.fit_alignment(today, prev, d)
    assert fit.shared_items == 50 and fit.residual_after < 1e-4
    rotated = align.rotate(spark, today, fit.rotation)
    got = {r["item_id"]: np.array(r["vector"]) for r in rotated.collect()}
    assert len(got) == 60
    for i in range(60):  # also the items yesterday did not have
        assert np.allclose(got[f"i{i}"], y[i], atol=1e-4)


def test_retention_removes_exactly_the_old_partitions(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    one = spark.createDataFrame([("a", 1)], "k string, v int")
    dates = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-05", "2026-01-06"]
    for d in dates:
        wh.write(one, "ratings", d)
        wh.write(one, "item_embeddings", d, model="m")
        wh.write_manifest(d, "tables", {"d": d})
    wh.write(one, "metrics", "2026-01-02", stage="daily")
    wh.write(one, "ratings", "2026-01-07")                   # later than the run: kept
    removed = apply_retention(wh, "2026-01-05", 2)          # keep 2026-01-03 onwards
    assert removed.dates == ["2026-01-01", "2026-01-02"]
    assert removed.partitions == {"item_embeddings": 2, "metrics": 1, "ratings": 2}
    assert removed.manifests == 2
    assert table_dates(wh, "ratings") == ["2026-01-03", "2026-01-05", "2026-01-06",
                                          "2026-01-07"]
    assert table_dates(wh, "item_embeddings", "m") == ["2026-01-03", "2026-01-05",
                                                       "2026-01-06"]
    assert table_dates(wh, "metrics") == []
    assert table_dates(wh, "_manifests") == ["2026-01-03", "2026-01-05", "2026-01-06"]
    assert previous_date(wh, "ratings", "2026-01-05") == "2026-01-03"
    assert wh.read("ratings", "2026-01-05").count() == 1
    # days = 1 keeps the day before and the run date itself
    again = apply_retention(wh, "2026-01-05", 1)
    assert again.dates == ["2026-01-03"] and again.manifests == 1
    assert table_dates(wh, "ratings") == ["2026-01-05", "2026-01-06", "2026-01-07"]


DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
SIM = ["sample.n_users=200", "sample.n_items=300", "sample.n_ratings=12000"]
FAST = ["deepwalk.enabled=false", "evaluate.enabled=false", "als.rank=8", "als.max_iter=3",
        "als.candidates_k=0", "ann.models=[item2vec,als]", "ann.user_candidates=false",
        "ann.recall_sample=50", "item2vec.vector_size=16", "item2vec.max_iter=2",
        "align.enabled=true", "align.min_shared_items=20", "spark.log_level=ERROR"]


def sets(items):
    return [x for item in items for x in ("--set", item)]


def day_inputs(spark, folder):
    """Three cumulative input files (day 1, days 1-2, days 1-3): each user's first 80% of
    events (in time order) fall on day 1, the next 10% on day 2, the rest on day 3, so that
    most users come back every day."""
    ratings, _ = sample.generate(spark, load_config(overrides=SIM).sample)
    order = Window.partitionBy("user_id").orderBy("ts", "item_id")
    share = F.percent_rank().over(order)
    day = F.when(share < 0.8, 0).when(share < 0.9, 1).otherwise(2)
    events = (ratings.withColumn("day", day)
              .select(F.col("user_id").alias("userId"), F.col("item_id").alias("movieId"),
                      "rating", (F.lit(1_790_000_000) + F.col("day") * 86_400
                                 + F.row_number().over(order)).alias("timestamp"), "day")
              .persist())
    paths = []
    for i in range(3):
        path = str(folder / f"day{i + 1}.parquet")
        events.filter(F.col("day") <= i).drop("day").coalesce(1).write.parquet(path)
        paths.append(path)
    events.unpersist()
    return paths


def test_three_consecutive_nightly_runs(keep_spark, tmp_path):
    spark = keep_spark
    inputs = day_inputs(spark, tmp_path)
    wh_path = str(tmp_path / "wh")
    wh = Warehouse(spark, wh_path)

    def run(run_date, path, *extra):
        return main(["run", "-q", "--run-date", run_date, "--input", path, "--warehouse",
                     wh_path, *sets(SIM + FAST + list(extra))])

    assert run(DATES[0], inputs[0]) == 0
    first = wh.read_manifest(DATES[0], "daily")
    assert first["status"] == "ok"
    assert first["details"]["forward"]["skipped"] == "no previous date"
    assert first["details"]["stability"]["item2vec"]["skipped"] == "no previous date"
    assert wh.read("metrics", DATES[0], stage="daily").count() == 0
    assert wh.read_manifest(DATES[0], "item2vec")["details"]["align"]["applied"] is False
    assert run(DATES[1], inputs[1]) == 0
    assert run(DATES[2], inputs[2], "warehouse.retention_days=1") == 0  # drops DATES[0]

    for run_date in DATES[1:]:
        rows = wh.read("metrics", run_date, stage="daily").collect()
        got = {(r["model"], r["metric"]): r["value"] for r in rows}
        for model in ("item2vec", "als"):
            assert got[(model, "overlap_items")] > 100, (run_date, model)
            for metric in ("overlap_mean", "overlap_p50", "overlap_head_mean",
                           "overlap_tail_mean", "forward_hr", "forward_ndcg",
                           "forward_neighbors_hr", "forward_neighbors_ndcg"):
                assert 0.0 <= got[(model, metric)] <= 1.0, (run_date, model, metric)
            assert got[(model, "forward_users")] > 20
        assert 0.0 <= got[("popularity", "forward_hr")] <= 1.0
        # alignment: fitted on the previous date's items, residual reduced
        for stage in ("item2vec", "als"):
            info = wh.read_manifest(run_date, stage)["details"]["align"]
            assert info["applied"] and info["previous_date"] < run_date
            assert info["shared_items"] > 100
            assert info["residual_after"] < info["residual_before"]
    details = wh.read_manifest(DATES[2], "daily")["details"]
    assert details["forward"]["previous_date"] == DATES[1]
    assert details["stability"]["item2vec"]["previous_date"] == DATES[1]

    # retention ran last on DATES[2] and removed DATES[0] everywhere
    kept = wh.read_manifest(DATES[2], "retention")
    assert kept["status"] == "ok" and kept["details"]["dates_removed"] == [DATES[0]]
    assert kept["rows"]["manifests_removed"] == 1
    tables = warehouse_tables(wh)
    assert {"ratings", "sequences", "item_embeddings", "item_neighbors", "metrics"} <= set(tables)
    assert kept["details"]["partitions_by_table"] == {t: 1 for t in tables}
    assert kept["rows"]["partitions_removed"] == len(tables)
    for table in tables + ["_manifests"]:
        assert table_dates(wh, table) == DATES[1:], table
    assert table_dates(wh, "_manifests") == DATES[1:]
    # a failing run removes nothing
    assert run("2026-11-05", str(tmp_path / "missing.csv"), "warehouse.retention_days=1") == 3
    assert table_dates(wh, "ratings") == DATES[1:]
