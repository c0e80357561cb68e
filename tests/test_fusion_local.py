"""The blend's lists built in place (broadcast catalogue) against the keyed joins: the same
channel rows and the same fused lists on small generated data, and the kernel's edge cases."""
import datetime as dt
import random

import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.config import load_config
from recemb_spark.neighbors import fusion, fusion_local
from recemb_spark.stages import blend

RATINGS = "user_id string, item_id string, rating double, ts timestamp"


def world(spark, seed=3, n_users=40, n_items=30):
    """Ratings (repeats, disliked rows, equal times), two neighbour tables with tied
    similarities, one ranked and one unranked candidate table, and categories (some items
    without)."""
    rnd = random.Random(seed)
    items = [f"i{j}" for j in range(n_items)]
    t0 = dt.datetime(2026, 1, 1)
    ratings = [(f"u{u}", rnd.choice(items[: 5 + u % 20]), float(rnd.choice([1, 4, 5])),
                t0 + dt.timedelta(days=rnd.randrange(12), seconds=rnd.randrange(3)))
               for u in range(n_users) for _ in range(rnd.randrange(1, 9))]
    ratings += [("heavy", i, 5.0, t0) for i in items[:-3]]  # sees nearly everything
    neighbors = {}
    for name in ("m1", "graph"):
        rows = [(a, b, float(rnd.choice([0.5, 0.25, 0.125, 0.75])))
                for a in items for b in rnd.sample(items, 6) if a != b]
        neighbors[name] = spark.createDataFrame(
            rows, "item_id string, neighbor_id string, similarity float")
    users = sorted({r[0] for r in ratings})

    def candidates(skip_rated):
        rated = {(r[0], r[1]) for r in ratings}
        rows = []
        for u in users:
            pool = [i for i in rnd.sample(items, 15) if not (skip_rated and (u, i) in rated)]
            rows += [(u, i, r + 1) for r, i in enumerate(pool)]
        return spark.createDataFrame(rows, "user_id string, item_id string, rank int")

    cats = spark.createDataFrame([(i, f"c{j % 4}") for j, i in enumerate(items) if j % 7],
                                 "item_id string, category string")
    return (spark.createDataFrame(ratings, RATINGS), neighbors,
            {"m1": candidates(True), "m2": candidates(False)}, cats)


def config(*sets):
    return load_config(overrides=["blend.last_items=2", "blend.categories=2",
                                  "blend.recent_days=3", *sets])


def test_in_place_lists_are_the_keyed_lists(spark):
    cfg = config()
    ratings, neighbors, lists, cats = world(spark)
    users = ratings.select("user_id").distinct()
    role = blend.Role(ratings, users, ratings.select("user_id", "item_id"), lists, {"m1"},
                      rows=blend.published_rows(ratings, cfg.liked_min_rating))
    keyed = blend.channel_lists(cfg, role, neighbors, cats, 6, popular_depth=8).persist()
    shared, weighed = blend.shared_catalogue(spark, cfg, ratings, neighbors)
    assert weighed["in_place"] and weighed["items"] == 30
    local = blend.lists_in_place(spark, cfg, role, shared, cats, 6, popular_depth=8)
    assert local is not None
    assert sorted(r[0] for r in keyed.select("channel").distinct().collect()) == [
        "category", "graph_item", "m1_item", "m1_user", "m2_user", "popular", "recent"]
    assert_df_equality(local.lists, keyed, ignore_row_order=True, ignore_nullable=True)
    # fused and filled: a zero weight, popularity only filling (popularity weighted: below)
    weights = {"m1_user": 1.0, "m2_user": 0.0, "m1_item": 2.0, "graph_item": 0.5,
               "category": 1.0, "recent": 0.25, "popular": 0.0}
    expected = fusion.fuse_filled(keyed, weights, 5.0, 5, "popular")
    got = blend.lists_in_place(spark, cfg, role, shared, cats, 6, popular_depth=8,
                               fused=fusion_local.Fusion(weights, 5.0, 5))
    assert got is not None
    assert_approx_df_equality(got.lists, expected, 1e-12, ignore_row_order=True,
                              ignore_nullable=True)
    # the heavy user rated all but three items, which nobody rated: none of its own
    heavy = {r["item_id"] for r in got.lists.filter("user_id = 'heavy'").collect()}
    assert heavy and heavy <= {"i27", "i28", "i29"}
    keyed.unpersist()


def test_in_place_lists_of_held_out_users_and_wanted_channels(spark):
    """The evaluation's role (exclude = the case's history) and a subset of the channels,
    without categories; above the threshold the keyed path is the caller's."""
    ratings, neighbors, lists, _ = world(spark, seed=8, n_users=25)
    train = ratings.filter(F.col("ts") < F.lit(dt.datetime(2026, 1, 9)))  # rows of 8 days
    cases = blend.published_rows(train, 3.5).filter("size(history) > 0").select(
        "user_id", "history")
    cfg = config("blend.channels=[user,item,popular]")
    exclude = cases.selectExpr("user_id", "explode(history) item_id")
    rows = cases.selectExpr("user_id", "history", "history exclude")
    mine = {m: lst.join(cases.select("user_id"), "user_id") for m, lst in lists.items()}
    role = blend.Role(train, cases.select("user_id"), exclude, mine, rows=rows)
    wanted = {"m2_user", "graph_item", "popular"}
    keyed = blend.channel_lists(cfg, role, neighbors, None, 4, wanted)
    # the shared part from every rating, popularity from the training rows only
    shared, _ = blend.shared_catalogue(spark, cfg, ratings, neighbors)
    local = blend.lists_in_place(spark, cfg, role, shared, None, 4, wanted)
    assert local is not None
    assert_df_equality(local.lists, keyed, ignore_row_order=True, ignore_nullable=True)
    above, weighed = blend.shared_catalogue(spark, config("ann.broadcast_max_mb=0.001"),
                                            ratings, neighbors)
    assert above is None and not weighed["in_place"] and weighed["items"] > 0
    assert blend.lists_in_place(spark, cfg, role, above, None, 4) is None


def test_kernel_edge_cases():
    ids = pa.array(["a", "b", "c", "d"])
    cat = fusion_local.Catalogue(
        ids, {"n_item": fusion_local.csr_of(np.array([0, 0, 1]), np.array([1, 2, 2], np.int32),
                                            4, np.array([1, 2, 2]), np.array([0.5, 0.5, 1.0]))},
        {"popular": np.array([3, 2, 1, 0])})
    plan = fusion_local.Plan(("m_user",), ("n_item",), ("popular",), False, 2, 2, 2, 1)
    batch = pa.RecordBatch.from_pydict({
        "user_id": ["x", "y", "z"],
        # x: latest a (neighbours b, c at 0.5), before it b (c at 1.0 / 2): c 1.0, b 0.5;
        # y: no history; z: an unknown item
        "history": [["b", "a"], None, ["zz"]],
        "exclude": [["d"], [], None],
        "m_user": [["d", "zz", "a", "b", "c"], [], ["c"]]})
    rows = fusion_local.channel_rows(batch, cat, plan)
    got = sorted(zip(rows.user.tolist(), rows.channel.tolist(), rows.item.tolist(),
                     rows.rank.tolist(), strict=True))
    assert got == [(0, 0, 0, 1), (0, 0, 1, 2),  # user list: d excluded, zz unknown
                   (0, 1, 1, 2), (0, 1, 2, 1),  # neighbours of a and b
                   (0, 2, 1, 2), (0, 2, 2, 1),  # popular past the excluded d
                   (1, 2, 2, 2), (1, 2, 3, 1),
                   (2, 0, 2, 1), (2, 2, 2, 2), (2, 2, 3, 1)]
    u, i, r, s = fusion_local.fuse_rows(rows, plan.names, {"m_user": 1.0, "n_item": 1.0},
                                        0.0, 3, "popular", 4)
    # x: a 1/1 (user), b 1/2 (user) + 1/2 (item), c 1/1 (item): a tie at 1, by id
    assert list(zip(u.tolist(), i.tolist(), r.tolist(), strict=True))[:3] == [
        (0, 0, 1), (0, 1, 2), (0, 2, 3)]
    assert s[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # y: popularity fills (score 0) in its order; z: c fused, then d from popularity
    assert [(a, b, c) for a, b, c in zip(u.tolist(), i.tolist(), s.tolist(), strict=True)
            if a > 0] == [(1, 3, 0.0), (1, 2, 0.0), (2, 2, 1.0), (2, 3, 0.0)]
    # popularity weighted: fused like a channel and still the fill; x: a 1 + 0, b 1 + 1/2,
    # c 1 + 1; y: d 1, c 1/2
    u, i, r, s = fusion_local.fuse_rows(rows, plan.names, {"m_user": 1.0, "n_item": 1.0,
                                                           "popular": 1.0}, 0.0, 3, "popular", 4)
    assert list(zip(u.tolist(), i.tolist(), s.tolist(), strict=True))[:5] == [
        (0, 2, 2.0), (0, 1, 1.5), (0, 0, 1.0), (1, 3, 1.0), (1, 2, 0.5)]
    with pytest.raises(ValueError, match="positive weight"):
        fusion_local.fuse_rows(rows, plan.names, {"popular": 0.0}, 0.0, 3, "popular", 4)
