"""Catalog tables, queried through the real spark-sql command line of the installed Spark.

The pipeline runs in a subprocess: Hive support needs a SparkContext of its own (the test
session has none), and the embedded Derby metastore admits one process at a time.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest

from recemb_spark.errors import ConfigError
from recemb_spark.io import catalog

ROOT = Path(__file__).resolve().parents[1]
SPARK_SQL = Path(pyspark.__file__).parent / "bin" / "spark-sql"
TINY = ["sample.n_users=60", "sample.n_items=50", "sample.n_ratings=1500",
        "item2vec.max_iter=1", "deepwalk.enabled=false", "als.enabled=false",
        "evaluate.enabled=false", "ann.enabled=false", "spark.driver_memory=1g",
        "spark.master=local[1]", "catalog.enabled=true"]


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT), PYSPARK_PYTHON=sys.executable,
                SPARK_LOCAL_IP="127.0.0.1")


#: runs ``recemb run`` once per (run date, extra settings) in one process: the CLI's own
#: ``main``, each run building "its" session through ``build_session`` — the first one built
#: (Hive support, the warehouse's metastore) serves them all, stopped after the last; a
#: process and a metastore start per run cost ~60 s of the suite
RUNS_SCRIPT = """
import json, sys
import recemb_spark.session as session_module
from recemb_spark.cli import main
build, built = session_module.build_session, []
def build_once(*a, **k):
    if not built:
        spark = build(*a, **k)
        built.append((spark, spark.stop))
        spark.stop = lambda: None
    return built[0][0]
session_module.build_session = build_once
out = []
for args in json.loads(sys.argv[1]):
    code = main(args)
    wh, run_date = args[args.index("--warehouse") + 1], args[args.index("--run-date") + 1]
    with open(f"{wh}/_manifests/dt={run_date}/run.json") as f:
        out.append({"code": code, "manifest": json.load(f)})
if built:
    built[0][1]()
print(json.dumps(out))
"""


def recemb_runs(wh: Path, runs: list[tuple[str, list[str]]]) -> list[dict]:
    """``recemb run`` of each ``(run_date, extra settings)`` in turn (one process, see
    :data:`RUNS_SCRIPT`); every run must exit 0. Returns each run's manifest as it was
    when that run ended."""
    argv = [["run", "-q", "--warehouse", str(wh), "--run-date", run_date,
             *[x for item in (*TINY, *extra) for x in ("--set", item)]]
            for run_date, extra in runs]
    proc = subprocess.run([sys.executable, "-c", RUNS_SCRIPT, json.dumps(argv)],
                          capture_output=True, text=True, env=env(), cwd=wh.parent, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [d["code"] for d in done] == [0] * len(runs), proc.stderr[-3000:]
    return [d["manifest"] for d in done]


def spark_sql(wh: Path, query: str) -> list[list[str]]:
    """Rows printed by ``spark-sql -S -e query`` with the metastore settings of the README."""
    confs = [x for k, v in catalog.metastore_options(str(wh)).items()
             for x in ("--conf", f"{k}={v}")]
    proc = subprocess.run(
        [str(SPARK_SQL), *confs, "--conf", "spark.ui.enabled=false", "--master", "local[1]",
         "--driver-java-options", f"-Dderby.system.home={wh / '_metastore'}", "-S", "-e", query],
        capture_output=True, text=True, env=env(), cwd=wh.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line.split("\t") for line in proc.stdout.splitlines() if line.strip()]


def test_tables_in_the_catalog_after_runs_and_a_rerun(tmp_path):
    wh = tmp_path / "wh"
    # the second date on another sample, then a re-run of the first on a smaller one: its
    # partitions are replaced, the other date's kept
    first, second, rerun = recemb_runs(wh, [("2026-11-01", []), ("2026-11-02", ["sample.seed=7"]),
                                            ("2026-11-01", ["sample.n_users=40"])])
    rows = {s["stage"]: s["rows"] for s in rerun["stages"]}
    before = {s["stage"]: s["rows"] for s in first["stages"]}
    assert rows["item2vec"]["item_embeddings"] != 0 and rows["tables"] != before["tables"]
    expected_second = {s["stage"]: s["rows"] for s in second["stages"]}

    d2 = "dt = '2026-11-02'"
    out = spark_sql(wh, (
        "SELECT count(*) FROM recemb.item_embeddings WHERE dt = '2026-11-01' "
        "AND model = 'item2vec';"
        "SELECT dt, count(*) FROM recemb.ratings GROUP BY dt ORDER BY dt;"
        "SHOW PARTITIONS recemb.user_embeddings;"
        f"SELECT 'items', count(*) FROM recemb.items WHERE {d2} UNION ALL "
        f"SELECT 'rejects', count(*) FROM recemb.rejects WHERE {d2} UNION ALL "
        f"SELECT 'sequences', count(*) FROM recemb.sequences WHERE {d2} UNION ALL "
        f"SELECT 'user_embeddings', count(*) FROM recemb.user_embeddings WHERE {d2};"
        "DESCRIBE TABLE EXTENDED recemb.sequences"))
    assert out[0] == [str(rows["item2vec"]["item_embeddings"])]
    assert out[1:3] == [["2026-11-01", str(rows["tables"]["ratings"])],
                        ["2026-11-02", str(expected_second["tables"]["ratings"])]]
    assert out[3:5] == [["dt=2026-11-01/model=item2vec"], ["dt=2026-11-02/model=item2vec"]]
    assert sorted(out[5:9]) == [
        ["items", str(expected_second["tables"]["items"])], ["rejects", "0"],
        ["sequences", str(expected_second["tables"]["sequences"])],
        ["user_embeddings", str(expected_second["item2vec"]["user_embeddings"])]]
    described = {r[0].strip(): r[1].strip() for r in out[9:] if len(r) >= 2}
    assert described["Type"] == "EXTERNAL" and described["Provider"] == "parquet"
    assert described["Location"] == f"file:{wh}/sequences"
    assert not (tmp_path / "derby.log").exists()  # Derby's log stays in the metastore folder


def test_metastore_settings():
    opts = catalog.metastore_options("./wh")
    assert opts["spark.hadoop.javax.jdo.option.ConnectionURL"] == (
        f"jdbc:derby:;databaseName={os.path.abspath('wh')}/_metastore/metastore_db;create=true")
    with pytest.raises(ConfigError, match="needs a local warehouse"):
        catalog.metastore_options("hdfs://nn/warehouse")
    assert catalog.uses_external_metastore(
        {"spark.hadoop.hive.metastore.uris": "thrift://metastore:9083"})
    assert catalog.uses_external_metastore({"spark.sql.catalogImplementation": "hive"})
    assert not catalog.uses_external_metastore({"spark.master": "yarn"})
