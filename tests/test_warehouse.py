from chispa import assert_df_equality

from recemb_spark.io.warehouse import Warehouse


def test_rerun_replaces_only_its_date(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    day1 = spark.createDataFrame([("a", 1)], "k string, v int")
    day2 = spark.createDataFrame([("b", 2), ("c", 3)], "k string, v int")
    assert wh.write(day1, "t", "2026-01-01") == 1
    assert wh.write(day2, "t", "2026-01-02") == 2
    # re-run day 2 with different data: exactly one copy of day 2, day 1 untouched
    assert wh.write(spark.createDataFrame([("d", 4)], "k string, v int"), "t", "2026-01-02") == 1
    expected = spark.createDataFrame([("a", 1, "2026-01-01"), ("d", 4, "2026-01-02")],
                                     "k string, v int, dt string")
    assert_df_equality(wh.read_table("t"), expected, ignore_row_order=True,
                       ignore_nullable=True)
    # an empty re-run empties that date (dynamic overwrite alone would leave the old rows)
    assert wh.write(day1.limit(0), "t", "2026-01-02") == 0
    assert wh.read_table("t").count() == 1 and wh.read("t", "2026-01-02").count() == 0


def test_model_partitions_are_independent(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    df = spark.createDataFrame([("i", [1.0])], "item_id string, vector array<float>")
    wh.write(df, "emb", "2026-01-01", model="m1")
    wh.write(df.union(df), "emb", "2026-01-01", model="m2")
    wh.write(df, "emb", "2026-01-01", model="m1")
    assert wh.models("emb", "2026-01-01") == ["m1", "m2"]
    counts = {r["model"]: r["count"] for r in wh.read_table("emb").groupBy("model").count()
              .collect()}
    assert counts == {"m1": 1, "m2": 2}


def test_manifest_round_trip(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    path = wh.write_manifest("2026-01-01", "tables", {"rows": {"ratings": 3}})
    assert path.endswith("_manifests/dt=2026-01-01/tables.json")
    assert wh.read_manifest("2026-01-01", "tables") == {"rows": {"ratings": 3}}
