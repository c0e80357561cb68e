import datetime as dt

import pytest
from chispa import assert_df_equality

from recemb_spark.config import load_config
from recemb_spark.errors import InputError
from recemb_spark.io import readers

UTC = dt.timezone.utc


def ts(seconds):
    return dt.datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def rejects_of(parsed):
    return sorted((r["line"], r["reason"]) for r in parsed.rejects.collect())


def valid_rows(parsed):
    return sorted(tuple(r) for r in parsed.valid.collect())


def test_movielens_csv_with_malformed_lines(spark, tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_text("userId,movieId,rating,timestamp\n"
                 "1,10,4.0,964982703\n"
                 "1,20,3.5,964982704\n"
                 "2,10,abc,964982705\n"          # bad rating
                 "2,30,5.0\n"                    # wrong field count
                 ",40,3.0,964982706\n"           # missing user
                 "3,,3.0,964982706\n"            # missing item
                 "3,50,7.5,964982707\n"          # out of range
                 "3,60,4.0,yesterday\n"          # bad timestamp
                 "\n"                            # empty line
                 "4,70,0.5,964982708\n")
    cfg = load_config().input
    parsed = readers.read_ratings(spark, cfg, str(f))
    assert parsed.format == "csv"
    assert parsed.read == 10
    assert parsed.rejected_by_reason == {"bad_rating": 1, "bad_timestamp": 1, "empty_line": 1,
                                         "missing_item_id": 1, "missing_user_id": 1,
                                         "rating_out_of_range": 1, "wrong_field_count": 1}
    assert rejects_of(parsed) == sorted([
        ("2,10,abc,964982705", "bad_rating"), ("2,30,5.0", "wrong_field_count"),
        (",40,3.0,964982706", "missing_user_id"), ("3,,3.0,964982706", "missing_item_id"),
        ("3,50,7.5,964982707", "rating_out_of_range"), ("3,60,4.0,yesterday", "bad_timestamp"),
        ("", "empty_line")])
    expected = spark.createDataFrame(
        [("1", "10", 4.0, ts(964982703)), ("1", "20", 3.5, ts(964982704)),
         ("4", "70", 0.5, ts(964982708))], readers.RATINGS_SCHEMA)
    assert_df_equality(parsed.valid, expected, ignore_row_order=True, ignore_nullable=True)
    assert all(r["source"].endswith("ratings.csv") for r in parsed.rejects.collect())
    parsed.unpersist()


def test_ml1m_dat_and_ml100k_tab(spark, tmp_path):
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n1::914\n2::3408::x::978300275\n")
    parsed = readers.read_ratings(spark, load_config().input, str(dat))
    assert parsed.format == "dat"
    assert valid_rows(parsed) == [("1", "1193", 5.0, ts(978300760)),
                                  ("1", "661", 3.0, ts(978302109))]
    assert rejects_of(parsed) == [("1::914", "wrong_field_count"),
                                  ("2::3408::x::978300275", "bad_rating")]

    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                                   "22 377 1 878887116\n")
    parsed = readers.read_ratings(spark, load_config().input, str(folder))
    assert parsed.format == "tsv" and parsed.source.endswith("u.data")
    assert valid_rows(parsed) == [("186", "302", 3.0, ts(891717742)),
                                  ("196", "242", 3.0, ts(881250949))]
    assert rejects_of(parsed) == [("22 377 1 878887116", "wrong_field_count")]


def test_generic_csv_with_column_mapping_and_millis(spark, tmp_path):
    f = tmp_path / "clicks.csv"
    f.write_text("ts;item;who;score;extra\n1700000000000;sku-1;u1;1;a\n1700000001000;sku-2;u1;2;b\n")
    cfg = load_config(overrides=["input.user_col=who", "input.item_col=item",
                                 "input.rating_col=score", "input.ts_col=ts",
                                 "input.ts_unit=milliseconds", "input.csv_delimiter=;"]).input
    parsed = readers.read_ratings(spark, cfg, str(f))
    assert parsed.rejected == 0
    assert valid_rows(parsed) == [("u1", "sku-1", 1.0, ts(1700000000)),
                                  ("u1", "sku-2", 2.0, ts(1700000001))]


def test_parquet_with_mapping_rejects_bad_values(spark, tmp_path):
    path = str(tmp_path / "events.parquet")
    spark.createDataFrame(
        [(7, "a", "4.5", "2024-01-01 10:00:00"), (8, "b", "high", "2024-01-01 11:00:00"),
         (9, None, "3.0", "2024-01-01 12:00:00"), (10, "c", "2.0", "not a time")],
        "uid long, iid string, r string, when string").write.parquet(path)
    cfg = load_config(overrides=["input.user_col=uid", "input.item_col=iid",
                                 "input.rating_col=r", "input.ts_col=when",
                                 "input.ts_unit=iso"]).input
    parsed = readers.read_ratings(spark, cfg, path)
    assert parsed.format == "parquet"
    assert valid_rows(parsed) == [("7", "a", 4.5, dt.datetime(2024, 1, 1, 10))]
    assert parsed.rejected_by_reason == {"bad_rating": 1, "bad_timestamp": 1,
                                         "missing_item_id": 1}
    lines = {r["reason"]: r["line"] for r in parsed.rejects.collect()}
    assert '"uid":8' in lines["bad_rating"] and '"r":"high"' in lines["bad_rating"]


def test_missing_column_is_a_clear_error(spark, tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_text("userId,itemId,rating,timestamp\n1,2,3.0,4\n")
    with pytest.raises(InputError, match=r"no column\(s\) \['movieId'\].*header has"):
        readers.read_ratings(spark, load_config().input, str(f))


def test_missing_path_empty_input_and_unknown_format(spark, tmp_path):
    cfg = load_config().input
    with pytest.raises(InputError, match="input path not found"):
        readers.read_ratings(spark, cfg, str(tmp_path / "nope.csv"))
    empty = tmp_path / "ratings.dat"
    empty.write_text("")
    with pytest.raises(InputError, match="is empty"):
        readers.read_ratings(spark, cfg, str(empty))
    odd = tmp_path / "ratings.xlsx"
    odd.write_text("x")
    with pytest.raises(InputError, match="cannot tell the format"):
        readers.read_ratings(spark, cfg, str(odd))


def test_reject_fraction_check(spark, tmp_path):
    f = tmp_path / "ratings.dat"
    f.write_text("1::1::5::978300760\n1::2::5::978300761\n1::3::bad::978300762\n")
    parsed = readers.read_ratings(spark, load_config().input, str(f))
    readers.check_reject_fraction(parsed, 0.5)
    with pytest.raises(InputError, match=r"1 of 3 rows rejected .*bad_rating=1"):
        readers.check_reject_fraction(parsed, 0.01)
    all_bad = tmp_path / "all_bad.dat"
    all_bad.write_text("x\ny\n")
    parsed = readers.read_ratings(spark, load_config().input, str(all_bad))
    with pytest.raises(InputError, match="all 2 rows were rejected"):
        readers.check_reject_fraction(parsed, 1.0)


def test_items_readers(spark, tmp_path):
    csv = tmp_path / "movies.csv"
    csv.write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                   '2,"American President, The (1995)",Comedy|Drama|Romance\n'
                   '3,Nothing (2000),(no genres listed)\n')
    expected = spark.createDataFrame(
        [("1", "Toy Story (1995)", ["Adventure", "Animation"]),
         ("2", "American President, The (1995)", ["Comedy", "Drama", "Romance"]),
         ("3", "Nothing (2000)", [])], readers.ITEMS_SCHEMA)
    assert_df_equality(readers.read_items(spark, str(csv), "auto", "movieId"), expected,
                       ignore_row_order=True, ignore_nullable=True)
    uitem = tmp_path / "u.item"
    flags = ["0"] * 19
    flags[3], flags[5] = "1", "1"  # Animation, Comedy
    uitem.write_bytes(("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n")
                      .encode("latin-1"))
    rows = readers.read_items(spark, str(uitem), "auto", "movieId").collect()
    assert [tuple(r) for r in rows] == [("1", "Toy Story (1995)", ["Animation", "Comedy"])]
    dat = tmp_path / "movies.dat"
    dat.write_bytes("1::Café (1995)::Drama\n".encode("latin-1"))
    rows = readers.read_items(spark, str(dat), "auto", "movieId").collect()
    assert [tuple(r) for r in rows] == [("1", "Café (1995)", ["Drama"])]


def test_quoted_csv_fields_parse(spark, tmp_path):
    """Every field quoted (pandas QUOTE_ALL, spreadsheet exports), a delimiter and a doubled
    quote inside a quoted field."""
    f = tmp_path / "ratings.csv"
    f.write_text('"userId","movieId","rating","timestamp","note"\n'
                 '"1","2","4.0","1000","plain"\n'
                 '"1","3","3.5","1001","a, b and ""c"""\n'
                 '"2","x","oops","1002",""\n')
    parsed = readers.read_ratings(spark, load_config().input, str(f))
    assert valid_rows(parsed) == [("1", "2", 4.0, ts(1000)), ("1", "3", 3.5, ts(1001))]
    assert parsed.rejected_by_reason == {"bad_rating": 1}


def test_implicit_headerless_event_log_with_weights(spark, tmp_path):
    f = tmp_path / "behavior.csv"
    f.write_text("1,10,100,pv,1511544070\n"
                 "1,11,100,buy,1511544071.5\n"     # fractional epoch seconds
                 "2,10,100,cart,1511544072\n"
                 "2,12,200,share,1511544073\n")    # not in the map: a reject
    cfg = load_config(overrides=[
        "input.columns=[user,item,category,behavior,when]", "input.user_col=user",
        "input.item_col=item", "input.ts_col=when", "input.rating_col=null",
        "input.event_col=behavior", "input.event_weights={pv: 1, cart: 2, buy: 3}",
        "input.category_col=category"]).input
    parsed = readers.read_ratings(spark, cfg, str(f))
    assert parsed.rejected_by_reason == {"unknown_event": 1}
    assert rejects_of(parsed) == [("2,12,200,share,1511544073", "unknown_event")]
    expected = spark.createDataFrame(
        [("1", "10", 1.0, ts(1511544070), "100"),
         ("1", "11", 3.0, dt.datetime(2017, 11, 24, 17, 21, 11, 500000), "100"),
         ("2", "10", 2.0, ts(1511544072), "100")],
        "user_id string, item_id string, rating double, ts timestamp, category string")
    assert_df_equality(parsed.valid, expected, ignore_row_order=True, ignore_nullable=True)


def test_tsv_with_header_and_session_ids_no_ratings(spark, tmp_path):
    f = tmp_path / "clicks.tsv"
    f.write_text("SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n3\t214832672\t1396438212\n")
    cfg = load_config(overrides=["input.user_col=SessionId", "input.item_col=ItemId",
                                 "input.ts_col=Time", "input.rating_col=null",
                                 "input.session_col=SessionId"]).input
    parsed = readers.read_ratings(spark, cfg, str(f))
    assert parsed.format == "tsv" and parsed.rejected == 0
    assert valid_rows(parsed) == [
        ("3", "214716935", 1.0, dt.datetime(2014, 4, 2, 11, 17, 46, 940000), "3"),
        ("3", "214832672", 1.0, ts(1396438212), "3")]


def test_event_log_config_and_column_errors(spark, tmp_path):
    from recemb_spark.errors import ConfigError

    with pytest.raises(ConfigError, match="input.event_weights"):
        load_config(overrides=["input.rating_col=null", "input.event_col=behavior"])
    with pytest.raises(ConfigError, match="input.event_weights"):
        load_config(overrides=["input.rating_col=null", "input.event_col=b",
                               "input.event_weights={pv: one}"])
    with pytest.raises(ConfigError, match="input.columns"):
        load_config(overrides=["input.columns=[a,b,c]"])
    f = tmp_path / "log.csv"
    f.write_text("u,i,t\n1,2,3\n")
    cfg = load_config(overrides=["input.user_col=u", "input.item_col=i", "input.ts_col=t",
                                 "input.rating_col=null", "input.session_col=sess"]).input
    with pytest.raises(InputError, match=r"no column\(s\) \['sess'\]"):
        readers.read_ratings(spark, cfg, str(f))
    cfg = load_config(overrides=["input.user_col=u", "input.item_col=i", "input.ts_col=t",
                                 "input.rating_col=null", "input.event_col=kind",
                                 "input.event_weights={pv: 1}"]).input
    with pytest.raises(InputError, match=r"no column\(s\) \['kind'\]"):
        readers.read_ratings(spark, cfg, str(f))
