"""`recemb run` on a generated e-commerce event log: headerless, quoted, typed events with
weights, session ids, float timestamps, a category column (side information), a long tail."""
import csv
import random

import pytest
from pyspark.sql import functions as F

from recemb_spark.cli import main
from recemb_spark.io.warehouse import Warehouse

DATE = "2026-11-06"
EVENTS = {"pv": 1, "cart": 2, "buy": 3}


def write_log(path, seed=7, users=150, categories=10, per_category=20):
    """Users browse sessions inside one category (the signal), with reloads (repeats), a few
    carts and buys, and a long tail of items seen once; one row has an unknown event."""
    rng = random.Random(seed)
    t = 1_600_000_000.0
    rows = []
    for u in range(users):
        for s in range(rng.randint(2, 4)):
            cat = rng.randrange(categories)
            for _ in range(rng.randint(2, 6)):
                item = cat * per_category + min(int(rng.expovariate(0.3)), per_category - 1)
                kind = rng.choices(list(EVENTS), [0.85, 0.1, 0.05])[0]
                t += rng.uniform(1, 60)
                rows.append((f"u{u}", f"{item}", f"c{cat}", kind, f"{t:.3f}", f"u{u}-s{s}"))
                if rng.random() < 0.15:  # a reload: the same item again
                    t += 0.5
                    rows.append((f"u{u}", f"{item}", f"c{cat}", "pv", f"{t:.3f}", f"u{u}-s{s}"))
            t += 3600
    for i in range(30):  # the tail: items seen once, in their category
        rows.append((f"u{i}", f"tail{i}", f"c{i % categories}", "pv", f"{t + i:.3f}", f"u{i}-x"))
    rows.append(("u1", "5", "c0", "share", f"{t:.3f}", "u1-s0"))
    with open(path, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    return len(rows)


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    log = root / "behavior.csv"
    n = write_log(log)
    path = str(root / "wh")
    sets = ["input.columns=[user,item,category,behavior,ts,session]", "input.user_col=user",
            "input.item_col=item", "input.ts_col=ts", "input.rating_col=null",
            "input.event_col=behavior", "input.event_weights={pv: 1, cart: 2, buy: 3}",
            "input.category_col=category", "input.session_col=session",
            "deepwalk.enabled=false", "als.max_iter=3", "als.rank=8",
            "ann.recall_sample=50", "ann.user_candidates=false", "als.candidates_k=0",
            "evaluate.protocol=holdout"]
    args = ["run", "--input", str(log), "--warehouse", path, "--run-date", DATE, "-q"]
    for s in sets:
        args += ["--set", s]
    import recemb_spark.session as session_module
    original_build, original_stop = session_module.build_session, spark.stop
    session_module.build_session = lambda *a, **k: spark
    spark.stop = lambda: None
    try:
        assert main(args) == 0
        yield Warehouse(spark, path), n
    finally:
        session_module.build_session, spark.stop = original_build, original_stop


def test_tables_from_an_event_log(run):
    wh, n = run
    tables = wh.read_manifest(DATE, "tables")
    assert tables["rows"]["read"] == n
    assert tables["details"]["rejected_by_reason"] == {"unknown_event": 1}
    ratings = wh.read("ratings", DATE)
    assert ratings.filter(F.col("signal") < F.col("rating")).count() == 0
    assert ratings.filter(F.col("signal") > F.col("rating")).count() > 0   # repeats summed
    assert set(r["rating"] for r in ratings.select("rating").distinct().collect()) <= {1.0, 2.0,
                                                                                        3.0}
    items = {r["item_id"]: r["genres"] for r in wh.read("items", DATE).collect()}
    assert items["tail3"] == ["c3"] and items["45"] == ["c2"]
    seqs = wh.read("sequences", DATE)
    # sessions are keyed by the log's session id; a reload never repeats a token
    assert seqs.count() > 300
    repeats = seqs.select(F.expr("exists(sequence(1, size(items) - 1), "
                                 "i -> items[i] = items[i - 1])").alias("r"))
    assert repeats.filter("r").count() == 0


def test_side_vectors_tail_and_cold_metrics(run):
    wh, _ = run
    emb = wh.read("item_embeddings", DATE, "item2vec")
    sources = {r["source"]: r["count"] for r in emb.groupBy("source").count().collect()}
    assert sources.get("learned", 0) > 100 and sources.get("side", 0) > 0
    details = wh.read_manifest(DATE, "item2vec")["details"]
    assert details["cold_item_vectors"] == sources["side"]
    assert details["used_max_iter"] >= 5 and "corpus_tokens" in details
    m = {(r["model"], r["metric"], r["k"]): r["value"]
         for r in wh.read("metrics", DATE, stage="evaluate").collect()}
    for model in ("popularity", "popularity_category", "item2vec", "als"):
        for seg in ("head", "tail", "cold"):
            assert 0.0 <= m[(model, f"hr_{seg}", 10)] <= 1.0
    assert m[("item2vec", "users_head", 0)] + m[("item2vec", "users_tail", 0)] == \
        m[("item2vec", "users", 0)]
    # sessions stay inside a category: the category baseline beats plain popularity
    assert m[("popularity_category", "hr", 10)] > m[("popularity", "hr", 10)]
    assert m[("item2vec", "hr", 10)] > m[("popularity", "hr", 10)]
    ann = {(r["model"], r["metric"]): r["value"]
           for r in wh.read("metrics", DATE, stage="ann").collect()}
    assert 0.0 < ann[("item2vec", "tail_coverage")] <= 1.0
    assert ("item2vec", "items_without_vector_tail") in ann
