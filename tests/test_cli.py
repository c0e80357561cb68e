"""The command line end to end (in-process on the test session), and one real spark-submit."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recemb_spark.cli import main
from recemb_spark.io.warehouse import Warehouse

from .conftest import SMALL_SAMPLE

ROOT = Path(__file__).resolve().parents[1]


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def test_tables_on_builtin_sample_writes_partitions_and_manifest(keep_spark, tmp_path):
    wh_path = str(tmp_path / "wh")
    rc = main(["tables", "--run-date", "2026-11-01", "--warehouse", wh_path, "-q",
               *sets(*SMALL_SAMPLE)])
    assert rc == 0
    wh = Warehouse(keep_spark, wh_path)
    manifest = wh.read_manifest("2026-11-01", "tables")
    assert manifest["status"] == "ok" and manifest["inputs"]["ratings"] == "built-in sample"
    for table in ("ratings", "sequences", "rejects", "items"):
        assert wh.read(table, "2026-11-01").count() == manifest["rows"][table]
    assert manifest["rows"]["rejects"] == 0 and manifest["rows"]["ratings"] > 20000
    assert manifest["parameters"]["sequences"]["min_rating"] == 3.5
    assert manifest["seconds"] > 0 and set(manifest["timings"]) >= {"read", "sequences"}


def write_csv(path, bad_lines, good_lines=20):
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"{u},{i},4.0,{1000 + 10 * i}" for u in (1, 2) for i in range(good_lines // 2)]
    rows += bad_lines
    path.write_text("\n".join(rows) + "\n")


def test_malformed_input_counts_rejects_and_fails_over_threshold(keep_spark, tmp_path, capsys):
    f = tmp_path / "ratings.csv"
    write_csv(f, ["3,1,nope,1000", "3,2,4.0"])
    wh_path = str(tmp_path / "wh")
    rc = main(["tables", "--input", str(f), "--warehouse", wh_path, "--run-date", "2026-11-02"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "2 of 22 rows rejected" in err and "bad_rating=1" in err and "Traceback" not in err
    wh = Warehouse(keep_spark, wh_path)
    rejects = sorted((r["line"], r["reason"]) for r in wh.read("rejects", "2026-11-02").collect())
    assert rejects == [("3,1,nope,1000", "bad_rating"), ("3,2,4.0", "wrong_field_count")]
    assert wh.read_manifest("2026-11-02", "tables")["status"] == "failed"
    # the same file passes with a tolerant threshold, and the rejects are still counted
    rc = main(["tables", "--input", str(f), "--warehouse", wh_path, "--run-date", "2026-11-02",
               "--set", "input.max_reject_fraction=0.2"])
    assert rc == 0
    manifest = wh.read_manifest("2026-11-02", "tables")
    assert manifest["rows"]["rejected"] == 2 and manifest["rows"]["ratings"] == 20
    assert manifest["details"]["rejected_by_reason"] == {"bad_rating": 1, "wrong_field_count": 1}


def test_missing_and_empty_input_exit_3(keep_spark, tmp_path, capsys):
    wh = str(tmp_path / "wh")
    assert main(["tables", "--input", str(tmp_path / "none.csv"), "--warehouse", wh]) == 3
    assert "input path not found" in capsys.readouterr().err
    empty = tmp_path / "ratings.csv"
    empty.write_text("userId,movieId,rating,timestamp\n")
    assert main(["tables", "--input", str(empty), "--warehouse", wh]) == 3
    assert "is empty" in capsys.readouterr().err
    wrong = tmp_path / "x.csv"
    wrong.write_text("user,item,stars,time\n1,2,3,4\n")
    assert main(["tables", "--input", str(wrong), "--warehouse", wh]) == 3
    assert "has no column(s)" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("spark-submit") is None, reason="spark-submit not on PATH")
def test_spark_submit_job_entry_point(tmp_path):
    """The thin job file runs under spark-submit unchanged (the cluster path)."""
    f = tmp_path / "ratings.dat"
    f.write_text("".join(f"{u}::{i}::4::{1000 + i}\n" for u in range(1, 6) for i in range(1, 9)))
    wh = tmp_path / "wh"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run(
        ["spark-submit", "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.sql.shuffle.partitions=2",  # Spark's 200 are for clusters
         str(ROOT / "jobs" / "stage.py"), "tables", "--input", str(f), "--warehouse", str(wh),
         "--run-date", "2026-11-03"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((wh / "_manifests" / "dt=2026-11-03" / "tables.json").read_text())
    assert manifest["master"] == "local[1]"  # spark-submit's master, not ours
    assert manifest["rows"]["ratings"] == 40 and manifest["rows"]["sequences"] == 5


def test_failure_context_names_the_running_jvms_driver_memory(spark):
    """The out-of-memory hint's "(now ...)" is what the running driver was started with, not
    the configured value (a JVM that was already up, or conf files, can differ)."""
    from recemb_spark.cli import _failure_context
    from recemb_spark.config import load_config

    cfg = load_config(overrides=["spark.driver_memory=7g"])
    assert _failure_context(cfg, spark).driver_memory == "2g"  # the test session's
    assert _failure_context(cfg, None).driver_memory == "7g"  # no JVM: the configured one
