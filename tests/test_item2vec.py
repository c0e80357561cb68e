import random

import numpy as np
import pyarrow as pa
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.models import users
from recemb_spark.models.users import pool_user_vectors
from recemb_spark.models.word2vec import fit_word2vec, vocabulary_report

VEC = "item_id string, vector array<float>"
USERS = "user_id string, vector array<float>"


def w2v_cfg(**values):
    return load_config().replace("item2vec", **values).item2vec


def sentences(spark):
    rows = [(["a", "b", "c", "a", "b", "c"],), (["b", "c", "a", "b"],), (["a", "b", "rare"],),
            (["c", "a", "b", "c"],)]
    return spark.createDataFrame(rows, "items array<string>")


def test_vectors_schema_size_and_min_count(spark):
    s = sentences(spark)
    vectors = fit_word2vec(s, w2v_cfg(vector_size=8, min_count=2, max_iter=2))
    assert vectors.schema.simpleString() == "struct<item_id:string,vector:array<float>>"
    rows = {r["item_id"]: r["vector"] for r in vectors.collect()}
    assert set(rows) == {"a", "b", "c"}  # "rare" occurs once < min_count
    assert all(len(v) == 8 for v in rows.values())
    assert vocabulary_report(s, vectors, 2) == {"items_in_sentences": 4, "items_with_vector": 3,
                                                "items_below_min_count": 1}


def test_same_seed_same_vectors(spark):
    s = sentences(spark)
    cfg = w2v_cfg(vector_size=8, min_count=1, max_iter=3, seed=7)
    a, b = fit_word2vec(s, cfg), fit_word2vec(s, cfg)
    assert_df_equality(a, b, ignore_row_order=True)
    other = fit_word2vec(s, w2v_cfg(vector_size=8, min_count=1, max_iter=3, seed=8))
    assert other.exceptAll(a).count() > 0


def test_mean_and_recency_pooling(spark):
    vectors = spark.createDataFrame([("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [2.0, 2.0])],
                                    VEC)
    histories = spark.createDataFrame(
        [("u", ["a", "b", "c"]), ("v", ["x", "b"]), ("w", ["x", "y"])],
        "user_id string, items array<string>")
    expected = spark.createDataFrame([("u", [1.0, 1.0]), ("v", [0.0, 1.0])], USERS)
    assert_approx_df_equality(pool_user_vectors(histories, vectors, "mean"), expected, 1e-6,
                              ignore_row_order=True, ignore_nullable=True)
    # half_life 1: weights 1/4, 1/2, 1 for a, b, c (oldest to latest)
    wa, wb, wc = 0.25, 0.5, 1.0
    total = wa + wb + wc
    u = [(wa * 1 + wc * 2) / total, (wb * 1 + wc * 2) / total]
    expected = spark.createDataFrame([("u", u), ("v", [0.0, 1.0])], USERS)
    got = pool_user_vectors(histories, vectors, "recency", half_life=1.0)
    assert_approx_df_equality(got, expected, 1e-6, ignore_row_order=True, ignore_nullable=True)
    # "w" knows no item: no row
    assert got.filter(F.col("user_id") == "w").count() == 0


def test_auto_step_size_follows_corpus_size(spark):
    from recemb_spark.models.word2vec import (
        AUTO_STEP_MIN_TOKENS,
        LARGE_STEP,
        SMALL_STEP,
        resolve_step_size,
    )

    small = sentences(spark)  # 18 tokens
    assert resolve_step_size(w2v_cfg(step_size=0.0), small) == SMALL_STEP
    assert resolve_step_size(w2v_cfg(step_size=0.07), small) == 0.07  # explicit wins
    n = AUTO_STEP_MIN_TOKENS // 10
    large = spark.range(n).select(F.array_repeat(F.col("id").cast("string"), 10).alias("items"))
    assert resolve_step_size(w2v_cfg(step_size=0.0), large) == LARGE_STEP


def test_pooling_matches_a_plain_python_reference(spark):
    """Random histories (repeats, unknown items, an empty and a null history) against the
    definition, computed in plain Python; chunks of a few tokens give the same vectors."""
    rng = random.Random(3)
    vecs = {f"i{k}": [float(np.float32(rng.uniform(-1, 1))) for _ in range(4)]
            for k in range(30)}  # float32 values, as the table stores them
    hist = [(f"u{n}", [f"i{rng.randrange(40)}" for _ in range(rng.randrange(1, 12))])
            for n in range(60)] + [("empty", []), ("null", None)]
    vectors = spark.createDataFrame(list(vecs.items()), VEC)
    histories = spark.createDataFrame(hist, "user_id string, items array<string>")

    def reference(items, half_life):
        n, acc, total = len(items), [0.0] * 4, 0.0
        for p, item in enumerate(items):
            if item in vecs:
                w = 0.5 ** ((n - 1 - p) / half_life)
                acc, total = [a + w * v for a, v in zip(acc, vecs[item], strict=True)], total + w
        return [a / total for a in acc] if total else None

    expected = spark.createDataFrame(
        [(u, reference(items or [], 2.0)) for u, items in hist if reference(items or [], 2.0)],
        USERS)
    got = pool_user_vectors(histories, vectors, "recency", half_life=2.0)
    assert_approx_df_equality(got, expected, 1e-5, ignore_row_order=True, ignore_nullable=True)
    # the numpy kernel on one Arrow batch, and on the same rows in chunks of three users
    batch = histories.toArrow().combine_chunks().to_batches()[0]
    ids = sorted(vecs)
    m = np.array([vecs[k] for k in ids], np.float32)
    whole = users._pool(batch, m, pa.array(ids), True, 2.0)
    parts = [users._pool(batch.slice(lo, 3), m, pa.array(ids), True, 2.0)
             for lo in range(0, batch.num_rows, 3)]
    assert pa.Table.from_batches(parts).to_pylist() == pa.Table.from_batches([whole]).to_pylist()
    assert users._rows_per_chunk(batch) == batch.num_rows  # small batches stay whole
