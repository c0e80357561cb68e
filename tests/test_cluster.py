"""A real Spark standalone cluster: master + two workers (1 core, 1 GiB each) on 127.0.0.1.

The project is packaged as the README tells users (``python -m zipfile -c recemb_spark.zip
recemb_spark/``, defaults inside), ``jobs/pipeline.py`` is submitted with
``spark-submit --master spark://127.0.0.1:<port> --py-files recemb_spark.zip``, and its tables
are compared with a local-mode run (the test session, same seed and partition counts).

What is equal, and why (measured, see the README): ratings, sequences, items and item_graph
come from seeded, order-independent transformations and are equal row for row. ALS item and
user factors are bit-equal too: ALS partitions users and items into the configured number of
blocks, initialises each block from the seed and sorts the ratings inside its blocks by id, so
every float sum runs in the same order on any cluster. MLlib Word2Vec (item2vec, DeepWalk) is
not: it gathers its corpus into one partition and trains by SGD in the order the rows arrive,
and on a cluster the shuffle blocks come from two executors in a fetch order that varies
(measured: vectors differ by up to 0.4 (item2vec) / 1.6 (deepwalk) per coordinate). For
those we check the same rows (ids, dimensions) and HR@10 / NDCG@10 within noise.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyspark
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recemb_spark.cli import main
from recemb_spark.io.warehouse import Warehouse

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
DATE = "2026-11-20"
SAMPLE = ["sample.n_users=200", "sample.n_items=150", "sample.n_ratings=8000",
          "walks.walks_per_node=3", "walks.num_partitions=4", "als.max_iter=5", "als.rank=8",
          "ann.recall_sample=50", "ann.user_candidates_k=10", "als.candidates_k=5",
          "evaluate.user_query=false", "ann.enabled=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME")}
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_NO_DAEMONIZE="1")
    return env


def wait_for(predicate, what: str, timeout: float, procs) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        for p, log in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[2]} exited ({p.returncode}): "
                                   f"{log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def stop_all(procs) -> None:
    """SIGTERM each process group (JVMs, their executors and Python workers), then SIGKILL."""
    for p, _ in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p, _ in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.time() + 15
    for p, _ in procs:
        while True:  # the group outlives its leader while executors wind down
            try:
                os.killpg(p.pid, signal.SIGKILL if time.time() > deadline - 10 else 0)
            except ProcessLookupError:
                break
            if time.time() > deadline:
                raise AssertionError(f"process group {p.pid} still alive")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """``spark://127.0.0.1:<port>`` of a running master with two registered 1-core workers."""
    base = tmp_path_factory.mktemp("standalone")
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []

    def start(name, *args):
        log = base / f"{name}.log"
        p = subprocess.Popen([spark_class, *args], stdout=log.open("w"),
                             stderr=subprocess.STDOUT, env=cluster_env(), cwd=base,
                             start_new_session=True)  # own process group: killed as a whole
        procs.append((p, log))
        return log

    try:
        master_log = start("master", "org.apache.spark.deploy.master.Master",
                           "--host", "127.0.0.1", "--port", str(port),
                           "--webui-port", str(free_port()))
        wait_for(lambda: "I have been elected leader" in master_log.read_text(),
                 "master", 240, procs)
        for i in (1, 2):
            (base / f"work{i}").mkdir()
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker",
                  "--host", "127.0.0.1", "--port", str(free_port()),
                  "--webui-port", str(free_port()), "--cores", "1", "--memory", "1g",
                  "--work-dir", str(base / f"work{i}"), url)
        wait_for(lambda: master_log.read_text().count("Registering worker") == 2,
                 "two workers", 240, procs)
        yield url, base
    finally:
        stop_all(procs)


def package(out: Path) -> Path:
    """The README's packaging command, run from the repository root."""
    zip_path = out / "recemb_spark.zip"
    subprocess.run([sys.executable, "-m", "zipfile", "-c", str(zip_path), "recemb_spark/"],
                   cwd=ROOT, check=True)
    with zipfile.ZipFile(zip_path) as z:  # the declared defaults travel with the code
        assert "recemb_spark/config/sections.py" in z.namelist()
    return zip_path


def test_pipeline_on_a_standalone_cluster_equals_local_mode(standalone, spark, keep_spark,
                                                            tmp_path):
    t0 = time.perf_counter()
    url, base = standalone
    zip_path = package(tmp_path)
    parallelism = spark.sparkContext.defaultParallelism  # the local run's partition counts
    shuffle = spark.conf.get("spark.sql.shuffle.partitions")
    sets = [x for item in SAMPLE for x in ("--set", item)]
    cluster_wh = tmp_path / "cluster_wh"
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", url,
              "--py-files", str(zip_path), "--driver-memory", "1g",
              "--executor-memory", "768m", "--total-executor-cores", "2",
              "--conf", f"spark.pyspark.python={sys.executable}",
              "--conf", f"spark.default.parallelism={parallelism}",
              "--conf", f"spark.sql.shuffle.partitions={shuffle}",
              "--conf", "spark.ui.enabled=false",
              str(ROOT / "jobs" / "pipeline.py"),
              "--warehouse", str(cluster_wh), "--run-date", DATE, *sets]
    proc = subprocess.run(submit, capture_output=True, text=True, env=cluster_env(),
                          cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert f"master={url}" in out  # the session ran on the cluster
    assert f"{zip_path}/recemb_spark" in out  # ... with the library from the zip
    executors = [p for p in (base / "work1").rglob("stderr")] + \
        [p for p in (base / "work2").rglob("stderr")]
    assert len({p.parent.parent.name for p in executors}) == 1  # one app ...
    assert len(executors) == 2  # ... with an executor on each worker
    cluster_t = time.perf_counter() - t0

    local_wh = tmp_path / "local_wh"
    assert main(["run", "--warehouse", str(local_wh), "--run-date", DATE, "-q", *sets]) == 0
    run = json.loads((cluster_wh / "_manifests" / f"dt={DATE}" / "run.json").read_text())
    assert run["status"] == "ok"
    assert json.loads((cluster_wh / "_manifests" / f"dt={DATE}" / "tables.json").read_text()
                      )["master"] == url

    cl, lo = Warehouse(spark, str(cluster_wh)), Warehouse(spark, str(local_wh))
    for table in ("ratings", "items", "sequences", "item_graph"):
        assert_df_equality(cl.read(table, DATE), lo.read(table, DATE), ignore_row_order=True)
    for table in ("item_embeddings", "user_embeddings"):  # ALS: deterministic, see above
        assert_df_equality(cl.read(table, DATE, "als"), lo.read(table, DATE, "als"),
                           ignore_row_order=True)
    for model in ("item2vec", "deepwalk"):  # Word2Vec: same rows, other floats
        for table, key in (("item_embeddings", "item_id"), ("user_embeddings", "user_id")):
            c = cl.read(table, DATE, model).select(key, F.size("vector").alias("dim"))
            lc = lo.read(table, DATE, model).select(key, F.size("vector").alias("dim"))
            assert_df_equality(c, lc, ignore_row_order=True)

    def quality(wh):
        return {(r["model"], r["metric"]): r["value"]
                for r in wh.read("metrics", DATE, stage="evaluate").collect()
                if r["k"] == 10 and r["metric"] in ("hr", "ndcg")}

    qc, ql = quality(cl), quality(lo)
    assert qc.keys() == ql.keys() and ("item2vec", "hr") in qc
    assert qc[("popularity", "hr")] == ql[("popularity", "hr")]  # no training: exact
    for key in qc:  # 200 users: one binomial standard error of HR@10 is ~0.035
        assert abs(qc[key] - ql[key]) <= 0.1, (key, qc[key], ql[key])
    print(f"cluster run {cluster_t:.1f}s (incl. packaging), test {time.perf_counter() - t0:.1f}s;"
          f" HR@10 cluster/local: " + ", ".join(
              f"{m} {qc[(m, 'hr')]:.3f}/{ql[(m, 'hr')]:.3f}" for m, k in sorted(qc) if k == "hr"))
