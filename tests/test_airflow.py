"""The scheduler DAG (examples/airflow/recemb_daily.py) run by a real Apache Airflow.

Airflow lives in its own virtualenv (its dependency pins must not touch the project's), built
once under ``~/.cache/recemb-airflow-venv/<version>`` (``RECEMB_AIRFLOW_VENV`` overrides the
folder) with ``pip install apache-airflow==<version>`` constrained by the versions in
``examples/airflow/constraints-<python>.txt``. Each test module gets a fresh ``AIRFLOW_HOME``
(sqlite, ``airflow db migrate``), and ``airflow dags test`` runs the DAG, whose task runs this
project's CLI through the project's interpreter (``RECEMB_CMD``).

Two DAG runs, one of them a real pipeline run on the built-in sample:

- the run date's lock is held by a live process: the first try exits 5 and is retried; the
  holder ends (the test kills it as soon as the try reports exit 5), the second try takes the
  stale lock over, runs ``recemb run --resume`` to the end, and the warehouse has the date;
- the input does not exist: the try exits 3 and the task fails at once, with retries left.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recemb_spark.io.warehouse import Warehouse
from recemb_spark.runner.lock import RunLock, lock_path

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_VERSION = "3.3.2"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
CONSTRAINTS = ROOT / "examples" / "airflow" / f"constraints-{PY}.txt"
DAG_ID = "recemb_daily"
RETRIES = 2
# the cluster test's small sample with one model (item2vec; the others' stages run the same
# way and are the cluster test's), without the ann stage
SAMPLE = ["sample.n_users=200", "sample.n_items=150", "sample.n_ratings=8000",
          "deepwalk.enabled=false", "als.enabled=false", "evaluate.user_query=false",
          "ann.enabled=false", "evaluate.protocol=holdout"]


def airflow_venv() -> Path:
    """The virtualenv holding Airflow, built if it is not there (or was left half-built)."""
    base = Path(os.environ.get("RECEMB_AIRFLOW_VENV",
                               Path.home() / ".cache" / "recemb-airflow-venv"))
    venv = base / f"{AIRFLOW_VERSION}-py{PY}"
    done = venv / ".installed"  # written last: a half-built venv is built again
    if done.exists():
        return venv
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check", f"apache-airflow=={AIRFLOW_VERSION}"]
    if CONSTRAINTS.exists():
        pip += ["-c", str(CONSTRAINTS)]
    proc = subprocess.run(pip, capture_output=True, text=True)
    assert proc.returncode == 0, f"pip install apache-airflow failed: {proc.stderr[-3000:]}"
    done.write_text(f"apache-airflow=={AIRFLOW_VERSION}\n")
    print(f"built {venv} in {time.perf_counter() - t0:.0f} s")
    return venv


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """(airflow executable, environment, AIRFLOW_HOME) with a migrated sqlite database."""
    venv = airflow_venv()
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "examples" / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # the project's interpreter runs the CLI (Airflow's venv does not have the project)
        RECEMB_CMD=f"{sys.executable} -m recemb_spark.cli",
        RECEMB_RETRIES=str(RETRIES),
        RECEMB_RETRY_DELAY_SECONDS="2",
    )
    exe = str(venv / "bin" / "airflow")
    proc = subprocess.run([exe, "db", "migrate"], env=env, cwd=home, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return exe, env, home


def dags_test(airflow, run_date: str, conf: dict, log: Path, on_line=None) -> int:
    """Run ``airflow dags test`` for one logical date; its output goes to ``log``, each line
    also to ``on_line``; return its exit code."""
    exe, env, home = airflow
    with subprocess.Popen([exe, "dags", "test", DAG_ID, run_date, "-c", json.dumps(conf)],
                          env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", start_new_session=True) as proc, \
            log.open("w") as out:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                if on_line is not None:
                    on_line(line)
            return proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def task_tries(home: Path, run_date: str) -> tuple[str, int, int, list[str]]:
    """(final state, try number, max tries, states of the earlier tries) of the DAG's task in
    the run of ``run_date``, from Airflow's database."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute("select run_id from dag_run where dag_id = ? and "
                               "logical_date like ?", (DAG_ID, f"{run_date}%")).fetchone()
        state, try_number, max_tries = db.execute(
            "select state, try_number, max_tries from task_instance where dag_id = ? and "
            "run_id = ?", (DAG_ID, run_id)).fetchone()
        earlier = [r[0] for r in db.execute(
            "select state from task_instance_history where dag_id = ? and run_id = ? "
            "order by try_number", (DAG_ID, run_id))]
    return state, try_number, max_tries, earlier


def test_locked_date_is_retried_and_the_retry_runs_the_pipeline(airflow, spark, tmp_path):
    run_date = "2026-11-20"
    wh = tmp_path / "wh"
    holder = subprocess.Popen(["sleep", "600"])  # a live process "running" the date
    try:
        lock = RunLock(Warehouse(spark, str(wh)), run_date, max_age_hours=24)
        lock.info["pid"] = holder.pid
        lock.acquire()  # the real lock file, naming the holder
        tries = []

        def on_line(line: str) -> None:
            if "recemb exited" in line:
                tries.append(line)
                if "recemb exited 5" in line and holder.poll() is None:
                    holder.kill()  # the holder ends while Airflow waits to retry
                    holder.wait()

        t0 = time.perf_counter()
        log = tmp_path / "dags_test.log"
        rc = dags_test(airflow, run_date, {"warehouse": str(wh), "sets": SAMPLE}, log, on_line)
        seconds = time.perf_counter() - t0
    finally:
        holder.kill()
        holder.wait()
    text = log.read_text()
    assert rc == 0, text[-5000:]
    assert len(tries) == 2 and "recemb exited 5" in tries[0] and "recemb exited 0" in tries[1], \
        tries
    assert f"run date {run_date} of warehouse {wh} is locked by" in text
    assert "took over the stale run lock" in text
    assert f"run --resume --run-date {run_date} --warehouse {wh}" in text
    assert task_tries(airflow[2], run_date) == ("success", 2, RETRIES, ["failed"])

    manifests = wh / "_manifests" / f"dt={run_date}"
    run = json.loads((manifests / "run.json").read_text())
    assert run["status"] == "ok", run
    assert not Path(lock_path(Warehouse(spark, str(wh)), run_date)).exists()  # released
    w = Warehouse(spark, str(wh))
    for table in ("ratings", "sequences"):
        assert w.read(table, run_date).count() > 0, table
    assert w.read("item_embeddings", run_date, "item2vec").count() > 0
    assert w.read("metrics", run_date, stage="evaluate").count() > 0
    print(f"airflow dags test: lock held, retried, pipeline run: {seconds:.0f} s")


def test_bad_input_fails_at_once_with_retries_left(airflow, tmp_path):
    run_date = "2026-11-21"
    log = tmp_path / "dags_test.log"
    missing = tmp_path / "no_such_ratings.csv"
    rc = dags_test(airflow, run_date, {"warehouse": str(tmp_path / "wh"),
                                       "input": str(missing)}, log)
    text = log.read_text()
    assert rc != 0
    assert text.count("recemb exited") == 1 and "recemb exited 3" in text, text[-5000:]
    assert f"input path not found: {missing}" in text
    assert "AirflowFailException" in text
    assert task_tries(airflow[2], run_date) == ("failed", 1, RETRIES, [])
