"""The Redis export against a real redis-server (started here on 127.0.0.1, stopped in a finally):
versions, the pointer switch, exact values, lookup, re-export, expiry, a cut mid-way, AUTH."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.errors import ConfigError
from recemb_spark.io.warehouse import Warehouse
from recemb_spark.serving import codec
from recemb_spark.serving.redis_store import glob_escape, version_key

from .redis_server import CuttingProxy, client, redis_server, require_redis_server

D1 = "2026-11-10"
PREFIX = "t"


@pytest.fixture
def redis_port():
    binary = require_redis_server()
    with redis_server(binary=binary) as port:
        yield port


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def export_args(wh_path, port, *extra):
    return ["--warehouse", wh_path, "-q",
            *sets(f"export.port={port}", f"export.prefix={PREFIX}", "export.models=[item2vec]",
                  *extra)]


def make_tables(spark, wh_path, run_date, n_items=120, n_users=80, dim=8, k=5, seed=0,
                drop_item=None):
    """Generated embedding / neighbour / candidate / items tables for one date (item2vec);
    returns them as plain dicts for comparison."""
    rng = np.random.default_rng(seed)
    items = [str(i) for i in range(300, 300 + n_items)] + ["é-ü 1"]
    if drop_item is not None:
        items.remove(drop_item)
    users = [f"u{u}" for u in range(n_users)]
    ivec = {i: rng.normal(size=dim).astype(np.float32) for i in items}
    uvec = {u: rng.normal(size=dim).astype(np.float32) for u in users}
    nbrs = {}
    for i in items:
        others = [j for j in rng.choice(items, size=k + 1, replace=False) if j != i][:k]
        sims = np.sort(rng.uniform(-1, 1, size=k))[::-1]
        nbrs[i] = list(zip(others, sims.tolist(), strict=True))
    cands = {u: list(zip(rng.choice(items, size=3, replace=False).tolist(),
                         sorted(rng.uniform(0, 1, size=3).tolist(), reverse=True),
                         strict=True))
             for u in users[: n_users // 2]}
    wh = Warehouse(spark, wh_path)
    wh.write(spark.createDataFrame([(i, v.tolist()) for i, v in ivec.items()],
                                   "item_id string, vector array<float>"),
             "item_embeddings", run_date, model="item2vec")
    wh.write(spark.createDataFrame([(u, v.tolist()) for u, v in uvec.items()],
                                   "user_id string, vector array<float>"),
             "user_embeddings", run_date, model="item2vec")
    # rows shuffled: the export must order each list by rank, not by row order
    nrows = [(i, j, r + 1, s, "exact") for i, lst in nbrs.items()
             for r, (j, s) in enumerate(lst)]
    rng.shuffle(nrows)
    wh.write(spark.createDataFrame(nrows, "item_id string, neighbor_id string, rank int, "
                                          "similarity double, method string"),
             "item_neighbors", run_date, model="item2vec")
    wh.write(spark.createDataFrame([(u, i, r + 1, s, "exact") for u, lst in cands.items()
                                    for r, (i, s) in enumerate(lst)],
                                   "user_id string, item_id string, rank int, score double, "
                                   "method string"),
             "user_candidates", run_date, model="item2vec")
    wh.write(spark.createDataFrame([(i, f"Movie {i} ({1990 + len(i)})", ["Drama"]) for i in items],
                                   "item_id string, title string, genres array<string>"),
             "items", run_date)
    return {"items": ivec, "users": uvec, "neighbors": nbrs, "user_candidates": cands}


def version_keys(r, model, version):
    return list(r.scan_iter(match=glob_escape(version_key(PREFIX, model, version)) + ":*",
                            count=1000))


def assert_version_holds(r, version, data, kinds=("items", "users", "neighbors")):
    """Every value of ``data`` of ``kinds`` decodes back exactly from ``version``'s keys, and
    the version holds nothing more."""
    data = {k: v for k, v in data.items() if k in kinds}
    for kind, seg in (("items", "item"), ("users", "user")):
        for key_id, vec in data.get(kind, {}).items():
            raw = r.get(version_key(PREFIX, "item2vec", version, seg, key_id))
            assert raw is not None, (kind, key_id)
            np.testing.assert_array_equal(codec.decode_vector(raw), vec)  # bit for bit
    for kind, seg in (("neighbors", "nbr"), ("user_candidates", "cand")):
        for key_id, lst in data.get(kind, {}).items():
            got = codec.decode_ranked(r.get(version_key(PREFIX, "item2vec", version, seg,
                                                        key_id)))
            assert [g[0] for g in got] == [x[0] for x in lst]
            assert [g[1] for g in got] == [float(np.float32(x[1])) for x in lst]
    expected = sum(len(v) for v in data.values()) + 2  # + meta + acks
    assert len(version_keys(r, "item2vec", version)) == expected


def manifest(wh_path, spark, run_date):
    return Warehouse(spark, wh_path).read_manifest(run_date, "export")


# --------------------------------------------------------------------------------------------


def test_codec_round_trips_and_batch_encoders_match():
    vec = np.array([0.1, -2.5, 3e-8, np.float32(1) / 3], dtype=np.float32)
    assert codec.encode_vector(vec) == vec.astype("<f4").tobytes()
    assert len(codec.encode_vector(vec)) == 16
    np.testing.assert_array_equal(codec.decode_vector(codec.encode_vector(vec)), vec)
    lst = [("318", 0.91), ("é-ü 1", 0.5), ("", -0.25)]
    value = codec.encode_ranked([i for i, _ in lst], [s for _, s in lst])
    assert value[0] == 1 and int.from_bytes(value[1:3], "little") == 3
    assert len(value) == 3 + 3 * 4 + 3 * 2 + len(b"318") + len("é-ü 1".encode())
    assert codec.decode_ranked(value) == [(i, float(np.float32(s))) for i, s in lst]
    assert codec.decode_ranked(codec.encode_ranked([], [])) == []
    with pytest.raises(ValueError):
        codec.decode_ranked(value + b"x")
    # the Arrow batch encoders (what the executors use) give the same bytes, also on a slice
    vectors = pa.array([[1.0, 2.0], [3.5, -1.0], [0.0, 9.0]], pa.list_(pa.float32()))[1:]
    assert codec.encode_vectors(vectors) == [codec.encode_vector([3.5, -1.0]),
                                             codec.encode_vector([0.0, 9.0])]
    ids = pa.array([["a", "bb"], ["318"], []], pa.list_(pa.string()))
    scores = pa.array([[0.5, 0.25], [1.0], []], pa.list_(pa.float64()))
    assert codec.encode_ranked_lists(ids, scores) == [
        codec.encode_ranked(["a", "bb"], [0.5, 0.25]), codec.encode_ranked(["318"], [1.0]),
        codec.encode_ranked([], [])]


def test_export_config_is_validated():
    cfg = load_config()
    assert cfg.export.enabled is False and cfg.export.password_env is None
    with pytest.raises(ConfigError, match="export.password_env"):
        load_config(overrides=["export.password_env=hunter2!"])
    with pytest.raises(ConfigError, match="export.prefix"):
        load_config(overrides=["export.prefix=a:b"])
    with pytest.raises(ConfigError, match="export.nope"):
        load_config(overrides=["export.nope=1"])


def test_export_writes_a_version_switches_the_pointer_and_lookup_reads_it(
        keep_spark, tmp_path, redis_port, capsys):
    wh_path = str(tmp_path / "wh")
    data = make_tables(keep_spark, wh_path, D1)
    r = client(redis_port)
    assert main(["export", "--run-date", D1, *export_args(
        wh_path, redis_port, "export.batch_size=7", "export.user_candidates=true")]) == 0
    m = manifest(wh_path, keep_spark, D1)
    version = m["details"]["version"]
    assert m["status"] == "ok" and version.startswith(D1 + ".")
    assert r.get(f"{PREFIX}:item2vec:current").decode() == version
    assert m["rows"] == {"items_item2vec": 121, "users_item2vec": 80,
                         "neighbors_item2vec": 121, "user_candidates_item2vec": 40}
    meta = {k.decode(): v.decode() for k, v in
            r.hgetall(version_key(PREFIX, "item2vec", version, "meta")).items()}
    assert meta["status"] == "complete" and meta["run_date"] == D1
    assert meta["items"] == "121" and meta["items_dim"] == "8"
    assert_version_holds(r, version, data, kinds=list(data))
    assert r.ttl(version_key(PREFIX, "item2vec", version, "item", "318")) == -1  # no expiry
    assert [v.decode() for v in r.zrange(f"{PREFIX}:item2vec:versions", 0, -1)] == [version]

    capsys.readouterr()
    assert main(["lookup", "--model", "item2vec", "--item", "318", "-k", "3",
                 *export_args(wh_path, redis_port)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == (f"items like 318 (Movie 318 (1993)) - model item2vec, "
                        f"redis version {version}:")
    expected = [f"{r_:>4}  {s:6.3f}  {j:<12}Movie {j} ({1990 + len(j)})"
                for r_, (j, s) in enumerate(data["neighbors"]["318"][:3], 1)]
    assert lines[1:] == expected
    # an unknown item, and a model never exported: one line, exit 4
    assert main(["lookup", "--item", "nope", *export_args(wh_path, redis_port)]) == 4
    assert main(["lookup", "--model", "als", "--item", "318",
                 *export_args(wh_path, redis_port)]) == 4
    assert "is not set" in capsys.readouterr().err


def test_reexport_of_a_date_replaces_it_and_old_versions_expire(keep_spark, tmp_path,
                                                                 redis_port):
    wh_path = str(tmp_path / "wh")
    r = client(redis_port)
    make_tables(keep_spark, wh_path, D1, seed=1)
    args = export_args(wh_path, redis_port, "export.retire_grace_seconds=0")
    assert main(["export", "--run-date", D1, *args]) == 0
    v1 = r.get(f"{PREFIX}:item2vec:current").decode()
    # the same date again, with other vectors and item 301 gone: a clean replacement
    data2 = make_tables(keep_spark, wh_path, D1, seed=2, drop_item="301")
    assert main(["export", "--run-date", D1, *args]) == 0
    v2 = r.get(f"{PREFIX}:item2vec:current").decode()
    assert v2 != v1 and version_keys(r, "item2vec", v1) == []
    assert_version_holds(r, v2, data2)
    assert r.get(version_key(PREFIX, "item2vec", v2, "item", "301")) is None
    assert manifest(wh_path, keep_spark, D1)["details"]["previous"] == {"item2vec": v1}

    day = dt.date.fromisoformat(D1)
    d2, d3 = (day + dt.timedelta(days=3)).isoformat(), (day + dt.timedelta(days=8)).isoformat()
    make_tables(keep_spark, wh_path, d2, seed=3)
    make_tables(keep_spark, wh_path, d3, seed=4)
    keep = export_args(wh_path, redis_port, "export.keep_days=7",
                       "export.retire_grace_seconds=120", "export.users=false",
                       "export.neighbors=false")
    assert main(["export", "--run-date", d2, *keep]) == 0  # v2 is 3 days old: kept
    v3 = r.get(f"{PREFIX}:item2vec:current").decode()
    assert r.ttl(version_key(PREFIX, "item2vec", v2, "item", "300")) == -1
    assert main(["export", "--run-date", d3, *keep]) == 0  # v2 is 8 days old now: expires
    v4 = r.get(f"{PREFIX}:item2vec:current").decode()
    assert [v.decode() for v in r.zrange(f"{PREFIX}:item2vec:versions", 0, -1)] == [v3, v4]
    assert 0 < r.ttl(version_key(PREFIX, "item2vec", v2, "item", "300")) <= 120
    assert all(0 < r.ttl(k) <= 120 for k in version_keys(r, "item2vec", v2))
    assert r.ttl(version_key(PREFIX, "item2vec", v3, "item", "300")) == -1
    assert manifest(wh_path, keep_spark, d3)["details"]["retired"]["item2vec"] == {
        v2: len(data2["items"]) + len(data2["users"]) + len(data2["neighbors"]) + 2}


def test_a_cut_mid_way_fails_and_leaves_the_previous_version_readable(
        keep_spark, tmp_path, redis_port, capsys):
    wh_path = str(tmp_path / "wh")
    r = client(redis_port)
    data1 = make_tables(keep_spark, wh_path, D1, seed=5)
    assert main(["export", "--run-date", D1, *export_args(wh_path, redis_port)]) == 0
    v1 = r.get(f"{PREFIX}:item2vec:current").decode()
    d2 = (dt.date.fromisoformat(D1) + dt.timedelta(days=1)).isoformat()
    make_tables(keep_spark, wh_path, d2, seed=6)
    capsys.readouterr()
    with CuttingProxy(redis_port, cut_after=6000) as proxy:
        rc = main(["export", "--run-date", d2,
                   *export_args(wh_path, proxy.port, "export.batch_size=10",
                                "export.retries=2")])
        assert proxy.cut.is_set(), proxy.sent
    err = capsys.readouterr().err
    assert rc == 1, err
    last = err.strip().splitlines()[-1]  # the one line the CLI ends with
    assert last.startswith("recemb: export failed: export to redis 127.0.0.1:"), err
    assert "ConnectionError" in last and "pointers still name the previous versions" in last
    # the pointer never moved; the previous version is whole
    assert r.get(f"{PREFIX}:item2vec:current").decode() == v1
    assert_version_holds(r, v1, data1)
    m = manifest(wh_path, keep_spark, d2)
    failed = m["error"].split("version ")[1].split(":")[0]
    assert m["status"] == "failed" and failed.startswith(d2)
    # it failed mid-way: part of the new version reached the server (the cleanup could not)
    left = version_keys(r, "item2vec", failed)
    assert 1 < len(left) < len(data1["items"]), (len(left), err)
    meta = r.hgetall(version_key(PREFIX, "item2vec", failed, "meta"))
    assert meta[b"status"] == b"writing"
    # the next export (straight to the server) succeeds and retires the leftovers
    assert main(["export", "--run-date", d2, *export_args(
        wh_path, redis_port, "export.retire_grace_seconds=0", "export.users=false",
        "export.neighbors=false")]) == 0
    assert version_keys(r, "item2vec", failed) == []
    assert r.get(f"{PREFIX}:item2vec:current").decode().startswith(d2)


def test_a_dropped_connection_is_reopened_and_the_export_completes(keep_spark, tmp_path,
                                                                   redis_port):
    wh_path = str(tmp_path / "wh")
    data = make_tables(keep_spark, wh_path, D1, seed=8)
    with CuttingProxy(redis_port, cut_after=5000, keep_listening=True) as proxy:
        assert main(["export", "--run-date", D1, *export_args(
            wh_path, proxy.port, "export.batch_size=10", "export.neighbors=false")]) == 0
        assert proxy.drops == 1
    r = client(redis_port)
    assert_version_holds(r, r.get(f"{PREFIX}:item2vec:current").decode(), data,
                         kinds=("items", "users"))


def test_password_comes_from_the_named_env_var_and_stays_secret(keep_spark, tmp_path,
                                                                monkeypatch, capsys, caplog):
    binary = require_redis_server()
    secret = "s3cr3t-Pa55-for-test"
    wh_path = str(tmp_path / "wh")
    data = make_tables(keep_spark, wh_path, D1, n_items=30, n_users=10, seed=7)
    with redis_server("--requirepass", secret, binary=binary) as port:
        args = export_args(wh_path, port, "export.password_env=RECEMB_TEST_REDIS_PW")
        monkeypatch.delenv("RECEMB_TEST_REDIS_PW", raising=False)
        assert main(["export", "--run-date", D1, *args]) == 2
        assert "RECEMB_TEST_REDIS_PW, which is not set" in capsys.readouterr().err
        monkeypatch.setenv("RECEMB_TEST_REDIS_PW", "wrong-password")
        assert main(["export", "--run-date", D1, *args]) == 1
        err = capsys.readouterr().err
        assert "cannot reach redis" in err and "wrong-password" not in err
        monkeypatch.setenv("RECEMB_TEST_REDIS_PW", secret)
        assert main(["export", "--run-date", D1, *args]) == 0
        r = client(port, password=secret)
        version = r.get(f"{PREFIX}:item2vec:current").decode()
        assert_version_holds(r, version, data)
        assert main(["lookup", "--item", "300", "-k", "2", *args]) == 0
        out, err = capsys.readouterr()
        assert "Movie 300" in out
        text = json.dumps(manifest(wh_path, keep_spark, D1))
        assert "RECEMB_TEST_REDIS_PW" in text and "(password from env)" in text
        for where in (text, out, err, caplog.text):
            assert secret not in where


def test_recemb_run_with_export_enabled_on_the_small_sample(keep_spark, tmp_path, redis_port,
                                                           capsys):
    """End to end on real tables: tables -> item2vec -> ann -> export (stage order), then
    lookup shows the ann stage's neighbours with the sample's titles."""
    from .conftest import SMALL_SAMPLE

    wh_path = str(tmp_path / "wh")
    args = export_args(wh_path, redis_port, *SMALL_SAMPLE, "export.enabled=true",
                       "deepwalk.enabled=false", "als.enabled=false",
                       "evaluate.enabled=false", "ann.user_candidates=false",
                       "ann.recall_sample=50", "ann.method=exact", "item2vec.max_iter=1")
    assert main(["run", "--run-date", D1, *args]) == 0
    wh = Warehouse(keep_spark, wh_path)
    m = wh.read_manifest(D1, "export")
    assert m["status"] == "ok" and set(m["details"]["kinds"]["item2vec"]) == {
        "items", "users", "neighbors"}
    assert m["rows"]["items_item2vec"] == wh.read("item_embeddings", D1, "item2vec").count()
    item = wh.read("item_neighbors", D1, "item2vec").orderBy("item_id").first()["item_id"]
    stored = [r["neighbor_id"] for r in wh.read("item_neighbors", D1, "item2vec")
              .filter(f"item_id = '{item}'").orderBy("rank").collect()]
    capsys.readouterr()
    assert main(["lookup", "--item", item, "-k", "10", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"redis version {m['details']['version']}" in lines[0] and "Sample Movie" in lines[0]
    assert [line.split()[2] for line in lines[1:]] == stored[:10]
