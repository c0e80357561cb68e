import datetime as dt
import logging
import os

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.errors import ConfigError
from recemb_spark.interactions import clean_ratings
from recemb_spark.io import sample
from recemb_spark.io.readers import RATINGS_SCHEMA
from recemb_spark.models import als, blas
from recemb_spark.neighbors.exact import user_candidates

from .conftest import SMALL_SAMPLE

T0 = dt.datetime(2024, 1, 1)


def als_cfg(*overrides):
    return load_config(overrides=["als.rank=8", "als.max_iter=8", "als.checkpoint_interval=0",
                                  *overrides]).als


def test_dense_index_round_trip_with_string_ids(spark):
    df = spark.createDataFrame([("user-b",), ("10",), ("9",), ("user-a",), ("9",)],
                               "user_id string")
    index = als.dense_index(df, "user_id")
    expected = spark.createDataFrame([("9", 0), ("10", 1), ("user-a", 2), ("user-b", 3)],
                                     "user_id string, user_id_idx int")
    assert_df_equality(index, expected, ignore_row_order=True, ignore_nullable=True)


def test_dense_index_in_buckets_numbers_in_the_sorted_order(spark, monkeypatch):
    """Buckets of 7 ids (boundaries from a sample): the numbers are each id's position in
    the natural order Spark sorts by, 0..n-1 without gaps, on ids that parse in one
    language and not the other (underscores, signs, spaces, past the long range)."""
    from recemb_spark import ids as ids_module

    monkeypatch.setattr(ids_module, "BUCKET_IDS", 7)
    rng = np.random.default_rng(5)
    odd = ["1_000", "+5", " 12", "007", "7", "-3", "99999999999999999999", "", "ä", "Z"]
    values = odd + [str(v) for v in rng.integers(0, 500, 80)] + [f"u{v}" for v in range(30)]
    df = spark.createDataFrame([(v,) for v in values], "item_id string")
    got = {r["item_id"]: r["item_id_idx"]
           for r in ids_module.dense_index(df, "item_id").collect()}
    order = [r["item_id"] for r in df.distinct().orderBy(*ids_module.item_order()).collect()]
    assert got == {v: i for i, v in enumerate(order)}


@pytest.fixture(scope="module")
def small_ratings(spark):
    ratings, _ = sample.generate(spark, load_config(overrides=SMALL_SAMPLE).sample)
    return clean_ratings(ratings).persist()


def test_factors_one_vector_of_size_rank_per_id(spark, small_ratings, tmp_path):
    model, users, items = als.fit(spark, small_ratings, als_cfg(), str(tmp_path))[:3]
    user_f, item_f = als.factor_tables(model, users, items)
    assert user_f.count() == small_ratings.select("user_id").distinct().count()
    assert item_f.count() == small_ratings.select("item_id").distinct().count()
    assert item_f.filter(F.size("vector") != 8).count() == 0
    assert item_f.select("item_id").distinct().count() == item_f.count()


def test_explicit_rmse_beats_global_mean(spark, small_ratings, tmp_path):
    report = als.rmse_report(spark, small_ratings, als_cfg("als.implicit_prefs=false"),
                             str(tmp_path))
    # measured on this sample: ALS 0.80 vs global mean 1.02 (ratio 0.78)
    assert report["rmse"] < 0.9 * report["rmse_global_mean"]
    assert report["rmse_test_rows"] > 3000


def test_same_seed_same_factors(spark, small_ratings, tmp_path):
    one = als.factor_tables(*als.fit(spark, small_ratings, als_cfg(), str(tmp_path))[:3])[1]
    two = als.factor_tables(*als.fit(spark, small_ratings, als_cfg(), str(tmp_path))[:3])[1]
    assert_df_equality(one, two, ignore_row_order=True)


def test_implicit_top_k_excludes_seen_items(spark, tmp_path):
    ratings = spark.createDataFrame(
        [(u, i, 4.0, T0) for u, items in {"u1": "abc", "u2": "abd", "u3": "bcd", "u4": "acd",
                                          "u5": "abcde"}.items() for i in items],
        RATINGS_SCHEMA)
    cfg = als_cfg("als.implicit_prefs=true", "als.implicit_signal=count", "als.rank=4")
    model, users, items = als.fit(spark, ratings, cfg, str(tmp_path))[:3]
    user_f, item_f = als.factor_tables(model, users, items)
    seen = ratings.groupBy("user_id").agg(F.collect_list("item_id").alias("items"))
    cands = user_candidates(spark, user_f, item_f, seen, 3, "dot").collect()
    got = {}
    for r in cands:
        got.setdefault(r["user_id"], []).append((r["rank"], r["item_id"]))
    assert sorted(i for _, i in got["u1"]) == ["d", "e"]  # only 2 unseen items exist
    assert [i for _, i in sorted(got["u2"])][0] in "ce"
    assert "u5" not in got  # u5 has seen everything
    for _user, rows in got.items():
        assert [r for r, _ in sorted(rows)] == list(range(1, len(rows) + 1))


def test_auto_alpha_grows_with_sparsity_and_ignores_the_signal_unit():
    base = als.auto_alpha(rows=1000, signal_sum=3000.0, n_users=100, n_items=200, scale=0.8,
                          exponent=0.65)
    # density 5%: 0.8 x 20 ** 0.65 / mean signal 3 = 1.8691..., to 4 significant digits
    assert base == 1.869 == pytest.approx(0.8 * 20 ** 0.65 / 3, rel=1e-3)
    # four times the items, same pairs: four times sparser, alpha x 4 ** 0.65
    assert als.auto_alpha(1000, 3000.0, 100, 800, 0.8, 0.65) == pytest.approx(base * 4 ** 0.65,
                                                                                rel=1e-3)
    # the same pairs with the signal in another unit (x 10): the confidences stay the same
    assert als.auto_alpha(1000, 30000.0, 100, 200, 0.8, 0.65) * 10 == pytest.approx(base)
    # a sum that differs in its last bits (another partition order) gives the same alpha
    assert als.auto_alpha(1000, 3000.0 * (1 + 1e-15), 100, 200, 0.8, 0.65) == base


def test_fit_resolves_auto_alpha_from_the_table_and_uses_it(spark, small_ratings, tmp_path):
    stats = small_ratings.agg(F.count("*"), F.sum("rating"), F.countDistinct("user_id"),
                              F.countDistinct("item_id")).first()
    auto = als.fit(spark, small_ratings, als_cfg("als.alpha=0"), str(tmp_path))
    assert auto.alpha == pytest.approx(als.auto_alpha(*stats, 0.8, 0.65))
    fixed = als.fit(spark, small_ratings, als_cfg(f"als.alpha={auto.alpha}"), str(tmp_path))
    other = als.fit(spark, small_ratings, als_cfg("als.alpha=40"), str(tmp_path))
    assert fixed.alpha == auto.alpha and other.alpha == 40
    same = als.factor_tables(auto.model, auto.users, auto.items)[1]
    assert_df_equality(same, als.factor_tables(fixed.model, fixed.users, fixed.items)[1],
                       ignore_row_order=True)  # the resolved alpha is the one trained with
    differs = als.factor_tables(other.model, other.users, other.items)[1]
    joined = same.alias("a").join(differs.alias("b"), "item_id")
    assert joined.filter(F.col("a.vector") != F.col("b.vector")).count() > 0


def test_alpha_config_is_validated():
    with pytest.raises(ConfigError, match="als.alpha"):
        load_config(overrides=["als.alpha=-1"])
    with pytest.raises(ConfigError, match="als.auto_alpha_scale"):
        load_config(overrides=["als.auto_alpha_scale=0"])


def test_mllib_names_its_blas_native_exactly_where_installed(spark):
    """MLlib's BLAS is the system one exactly when a libblas.so.3 is installed (CI has none:
    the Java fallback)."""
    import ctypes.util

    name = blas.implementation(spark)
    assert name != "unknown"
    assert (name == blas.NATIVE) == bool(ctypes.util.find_library("blas"))


@pytest.fixture
def recorded_builder(monkeypatch):
    """SparkSession.builder replaced by one that records every ``config(key, value)`` in the
    returned dict and stops at ``getOrCreate`` (RuntimeError "stop here"): what
    build_session would set, without starting a JVM."""
    from pyspark.sql import SparkSession

    seen = {}

    class Builder:
        def __getattr__(self, name):
            return lambda *a, **k: self

        def config(self, key, value=None):
            seen[key] = value
            return self

        def getOrCreate(self):
            raise RuntimeError("stop here")

    monkeypatch.setattr(SparkSession, "builder", Builder())
    return seen


def test_blas_threads_reach_the_executors_only_when_set(monkeypatch, recorded_builder):
    """``spark.blas_threads`` > 0 becomes the executors' (and this process's, for the local
    driver JVM) OPENBLAS_NUM_THREADS; 0, the default, leaves both alone. Checked on the
    builder's settings, without starting a second JVM."""

    from recemb_spark import session as session_module

    seen = recorded_builder
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    for threads, expected in ((0, None), (3, "3")):
        seen.clear()
        cfg = load_config(overrides=[f"spark.blas_threads={threads}"]).spark
        with pytest.raises(RuntimeError, match="stop here"):
            session_module.build_session(cfg)
        assert seen.get(session_module.BLAS_THREADS_KEY) == expected
        assert os.environ.get("OPENBLAS_NUM_THREADS") == expected


def test_python_workers_get_a_small_address_space_by_default(monkeypatch, recorded_builder):
    """ARROW_DEFAULT_MEMORY_POOL=system and MALLOC_ARENA_MAX=2 reach the executors (and, in
    local mode, this process's environment); a value already in the environment wins."""

    from recemb_spark import session as session_module

    seen = recorded_builder
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    with pytest.raises(RuntimeError, match="stop here"):
        session_module.build_session(load_config().spark)
    assert seen["spark.executorEnv.ARROW_DEFAULT_MEMORY_POOL"] == "system"
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system"
    assert seen["spark.executorEnv.MALLOC_ARENA_MAX"] == "4"  # the environment's own


def test_native_blas_warning_once_per_process(spark, monkeypatch, caplog):
    monkeypatch.setattr(blas, "_warned", set())
    monkeypatch.setattr(blas, "implementation", lambda _spark: blas.NATIVE)
    # a CLI test in the same worker may have run setup_logging, which stops recemb_spark's
    # records at its own handler; caplog listens at the root
    monkeypatch.setattr(logging.getLogger("recemb_spark"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="recemb_spark.models.blas"):
        assert blas.warn_if_native_for_word2vec(spark) == blas.NATIVE
        assert blas.warn_if_native_for_word2vec(spark) == blas.NATIVE
    records = list({id(r): r for r in caplog.records}.values())
    assert len([r for r in records if "Word2Vec trains about 2.5x slower" in r.getMessage()]) == 1


def test_blas_threads_must_not_be_negative():
    with pytest.raises(ConfigError, match="spark.blas_threads"):
        load_config(overrides=["spark.blas_threads=-1"])


def test_auto_iterations_grow_with_the_mean_confidence_within_bounds():
    assert als.auto_iterations(4.7, 8.0, 5, 15) == 5        # dense: the floor
    assert als.auto_iterations(38.0, 8.0, 5, 15) == 5       # 4.75 -> 5
    assert als.auto_iterations(44.0, 8.0, 5, 15) == 6       # 5.5 -> 6
    assert als.auto_iterations(52.0, 8.0, 1, 15) == 7       # 6.5 -> 7: half up, not to even
    assert als.auto_iterations(88.0, 8.0, 5, 15) == 11
    assert als.auto_iterations(1e6, 8.0, 5, 15) == 15       # the ceiling
    assert als.auto_iterations(float("inf"), 8.0, 5, 15) == 15
    assert als.auto_iterations(0.0, 8.0, 5, 15) == 5        # an all-zero signal


def test_auto_iterations_are_bounded_by_the_pair_budget_above_the_floor():
    assert als.auto_iterations(1e6, 8.0, 5, 10, pairs=4_000_000, pair_budget=20_000_000) == 5
    assert als.auto_iterations(1e6, 8.0, 5, 10, pairs=2_500_000, pair_budget=20_000_000) == 8
    assert als.auto_iterations(1e6, 8.0, 5, 10, pairs=1_000_000, pair_budget=20_000_000) == 10
    assert als.auto_iterations(1e6, 8.0, 5, 10, pairs=25_000_000, pair_budget=20_000_000) == 5
    assert als.auto_iterations(52.0, 8.0, 1, 15, pairs=10, pair_budget=60) == 6   # 7 -> 6
    assert als.auto_iterations(1e6, 8.0, 5, 10, pairs=4_000_000, pair_budget=0) == 10  # off


def test_fit_resolves_auto_iterations_and_trains_with_them(spark, small_ratings, tmp_path):
    # checkpoints off (als_cfg): keep the lineage short, at most 12 iterations
    cfg = als_cfg("als.max_iter=0", "als.auto_iter_confidence=0.3", "als.auto_min_iter=2",
                  "als.auto_max_iter=12")
    auto = als.fit(spark, small_ratings, cfg, str(tmp_path))
    rows, total = als.signal_totals(small_ratings, cfg)
    assert auto.iterations == als.auto_iterations(als.four_digits(auto.alpha * total / rows),
                                                  0.3, 2, 12)
    assert 2 < auto.iterations < 12  # neither bound: the confidence decided
    same = als.fit(spark, small_ratings, als_cfg(f"als.max_iter={auto.iterations}"),
                   str(tmp_path))
    fewer = als.fit(spark, small_ratings, als_cfg(f"als.max_iter={auto.iterations - 1}"),
                    str(tmp_path))
    assert same.iterations == auto.iterations and fewer.iterations == auto.iterations - 1
    mine = als.factor_tables(auto.model, auto.users, auto.items)[1]
    assert_df_equality(mine, als.factor_tables(same.model, same.users, same.items)[1],
                       ignore_row_order=True)
    other = als.factor_tables(fewer.model, fewer.users, fewer.items)[1]
    joined = mine.alias("a").join(other.alias("b"), "item_id")
    assert joined.filter(F.col("a.vector") != F.col("b.vector")).count() > 0
    # a fixed alpha: the iterations still follow the table's confidence at that alpha
    fixed = als.fit(spark, small_ratings, als_cfg("als.alpha=1", *cfg_keys(cfg)), str(tmp_path))
    assert fixed.alpha == 1 and fixed.iterations != auto.iterations
    assert fixed.iterations == als.auto_iterations(als.four_digits(total / rows), 0.3, 2, 12)
    # the pair budget: at most budget // pairs iterations, never below the floor
    budget = als.fit(spark, small_ratings,
                     als_cfg(*cfg_keys(cfg), f"als.auto_max_pair_iterations={3 * rows}"),
                     str(tmp_path))
    assert budget.iterations == 3 < auto.iterations


def cfg_keys(cfg):
    return [f"als.max_iter={cfg.max_iter}", f"als.auto_iter_confidence={cfg.auto_iter_confidence}",
            f"als.auto_min_iter={cfg.auto_min_iter}", f"als.auto_max_iter={cfg.auto_max_iter}"]


def test_explicit_mode_auto_iterations(spark, small_ratings, tmp_path):
    fitted = als.fit(spark, small_ratings, als_cfg("als.implicit_prefs=false", "als.max_iter=0"),
                     str(tmp_path))
    assert fitted.iterations == als.EXPLICIT_AUTO_ITERATIONS


def test_iteration_config_is_validated():
    with pytest.raises(ConfigError, match="als.auto_max_iter"):
        load_config(overrides=["als.auto_min_iter=6", "als.auto_max_iter=5"])
    with pytest.raises(ConfigError, match="als.max_iter"):
        load_config(overrides=["als.max_iter=-1"])
    with pytest.raises(ConfigError, match="als.auto_iter_confidence"):
        load_config(overrides=["als.auto_iter_confidence=0"])
    with pytest.raises(ConfigError, match="als.auto_min_iter"):
        load_config(overrides=["als.auto_min_iter=0", "als.auto_max_iter=0"])
