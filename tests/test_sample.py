import numpy as np
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.io import sample

from .conftest import SMALL_SAMPLE


def small():
    return load_config(overrides=SMALL_SAMPLE).sample


def test_same_seed_same_data_whatever_the_partitioning(spark):
    cfg = small()
    a, items_a = sample.generate(spark, cfg)
    b, items_b = sample.generate(spark, cfg)
    assert_df_equality(a, b.repartition(7), ignore_row_order=True)
    assert_df_equality(items_a, items_b)
    other, _ = sample.generate(spark, load_config(overrides=SMALL_SAMPLE + ["sample.seed=7"])
                               .sample)
    assert other.exceptAll(a).count() > 0.9 * other.count()


def test_size_ranges_and_uniqueness(spark):
    cfg = small()
    ratings, items = sample.generate(spark, cfg)
    stats = ratings.agg(F.count("*").alias("n"), F.countDistinct("user_id").alias("users"),
                        F.countDistinct("item_id").alias("items"),
                        F.min("rating").alias("lo"), F.max("rating").alias("hi"),
                        F.mean((F.col("rating") >= 3.5).cast("double")).alias("liked")).first()
    assert abs(stats["n"] - cfg.n_ratings) < 0.02 * cfg.n_ratings
    assert stats["users"] == cfg.n_users
    assert stats["items"] > 0.9 * cfg.n_items
    assert 0.5 <= stats["lo"] and stats["hi"] <= 5.0
    assert 0.4 < stats["liked"] < 0.8
    assert ratings.select("user_id", "item_id").distinct().count() == stats["n"]
    assert items.count() == cfg.n_items
    # ratings are in half stars
    assert ratings.filter((F.col("rating") * 2) % 1 != 0).count() == 0


def _top_decile_share(spark, cfg):
    ratings, _ = sample.generate(spark, cfg)
    counts = np.sort([r["count"] for r in ratings.groupBy("item_id").count().collect()])[::-1]
    return counts[: len(counts) // 10].sum() / counts.sum()


def test_popularity_is_skewed(spark):
    skewed = _top_decile_share(spark, small())
    flat = _top_decile_share(spark, load_config(
        overrides=SMALL_SAMPLE + ["sample.popularity_exponent=0"]).sample)
    # measured: 0.27 skewed vs 0.12 flat on this small, dense sample (0.38 at default size)
    assert skewed > 0.22 and flat < 0.2 and skewed > 1.4 * flat


def test_order_carries_signal_beyond_taste():
    """Consecutive items share a cluster far more often than the same items shuffled."""
    cfg = small()
    cat = sample.make_catalogue(cfg)
    counts = sample.user_counts(cfg)
    rng = np.random.default_rng(0)
    same, shuffled, pairs = 0, 0, 0
    for u in range(100):
        items = np.array([int(r[1]) - 1 for r in sample.user_ratings(u, int(counts[u]), cat, cfg)])
        clusters = cat.cluster[items]
        perm = cat.cluster[rng.permutation(items)]
        same += int(np.sum(clusters[1:] == clusters[:-1]))
        shuffled += int(np.sum(perm[1:] == perm[:-1]))
        pairs += len(items) - 1
    # measured: 0.62 in time order vs 0.076 shuffled
    assert same / pairs > 4 * shuffled / pairs


def test_write_sample_as_movielens_files(spark, tmp_path):
    cfg = load_config(overrides=["sample.n_users=20", "sample.n_items=50",
                                 "sample.n_ratings=400"]).sample
    paths = sample.write_sample(spark, cfg, str(tmp_path / "s"))
    lines = (tmp_path / "s" / "ratings.csv").read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp"
    assert len(lines) - 1 == spark.read.parquet(paths["ratings.parquet"]).count()
    movies = (tmp_path / "s" / "movies.csv").read_text().splitlines()
    assert movies[0] == "movieId,title,genres" and len(movies) == 51
