"""The Taobao-shaped log on a real standalone cluster with capped executors.

    python bench/catalog_cluster.py --log <dir>/log_5000000e_722000i_250000u_s42/UserBehavior.csv \
        --workdir /work/catalog_cluster --tag 5m

Starts a master and two 1-core workers on 127.0.0.1 (``tests/standalone.py``, as the cluster
tests do), packages the project as the README says, and spark-submits ``jobs/pipeline.py``
with the README's taobao flags (``bench/catalog.py``'s) and the defaults, every executor
capped: ``--executor-memory`` (JVM heap) and ``spark.executor.pyspark.memory`` (each Python
worker; one per executor, as executors have one core). Polls the memory of the driver
(spark-submit's process tree) and of each worker's tree (the executor JVM and its Python
workers), stops every process in a ``finally``, and writes
``bench/results/catalog_cluster_<tag>.json``: exit code, per-stage seconds, the peaks, HR@10
and the ann stage's method and recall. Generate the log first with ``bench/catalog.py``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from catalog import TAOBAO_FLAGS, lsh_recall  # noqa: E402
from common import write_json  # noqa: E402
from scale import RUN_DATE, Monitor, read_manifests, summarise  # noqa: E402

from tests.standalone import SPARK_HOME, cluster_env, package, running_cluster  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True, help="a generated UserBehavior.csv")
    ap.add_argument("--workdir", required=True, help="cluster logs, the warehouse, run.log")
    ap.add_argument("--executor-memory", default="1536m")
    ap.add_argument("--python-memory", default="1g", help="spark.executor.pyspark.memory")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--tag", default="5m")
    ap.add_argument("--resume", action="store_true",
                    help="keep the stages a previous run of this workdir finished (recemb run "
                         "--resume); their seconds in the result are that run's")
    args = ap.parse_args()
    work = Path(args.workdir)
    (work / "cluster").mkdir(parents=True, exist_ok=True)
    warehouse = work / "wh"
    result: dict = {"log": args.log, "resumed": args.resume,
                    "executor_memory": args.executor_memory,
                    "python_memory": args.python_memory, "driver_memory": args.driver_memory,
                    "workers": "2 x 1 core"}
    with running_cluster(work / "cluster", workers=2, memory="2g") as cluster:
        zip_path = package(work)
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
               "--py-files", str(zip_path), "--driver-memory", args.driver_memory,
               "--executor-memory", args.executor_memory, "--total-executor-cores", "2",
               "--conf", "spark.executor.cores=1",
               "--conf", f"spark.executor.pyspark.memory={args.python_memory}",
               "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", "spark.ui.enabled=false",
               str(ROOT / "jobs" / "pipeline.py"), "--input", args.log, *TAOBAO_FLAGS,
               "--warehouse", str(warehouse), "--run-date", RUN_DATE,
               *[x for s in args.set for x in ("--set", s)],
               *(["--resume"] if args.resume else [])]
        result["command"] = " ".join(cmd)
        print("running:", result["command"], flush=True)
        with open(work / "run.log", "w") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=cluster_env(), cwd=work, start_new_session=True)
            driver = Monitor(proc.pid).start()
            executors = [Monitor(w.pid).start() for w in cluster.workers]
            try:
                result["rc"] = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                result["total_seconds"] = round(time.perf_counter() - t0, 1)
                result["driver_memory_peaks"] = driver.stop()
                result["worker_memory_peaks"] = [m.stop() for m in executors]
    manifests = read_manifests(warehouse)
    result.update(summarise(manifests), lsh_recall=lsh_recall(manifests))
    print({k: result[k] for k in ("rc", "total_seconds", "stages", "hr10")}, flush=True)
    write_json(str(ROOT / "bench" / "results" / f"catalog_cluster_{args.tag}.json"), result)


if __name__ == "__main__":
    main()
