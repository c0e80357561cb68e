"""Exact top-K: broadcast vs sharded vs broadcast-queries, time and peak Python-worker RSS.

    python bench/exact_shards.py --items 1000000 --queries 20000 --dim 32

Random normal vectors (items and queries) are generated on the executors with fixed seeds.
Each path runs in its own process (fresh Python workers, so one path's broadcast does not
inflate the next one's RSS) with ``exact_top_k(..., path=...)``, top-``k`` for every query,
persisted and counted. Reported per path: seconds, the peak RSS of any Python worker (this
run's ``pyspark.daemon`` processes, /proc sampled every 0.1 s), the driver's peak RSS, and a
checksum of the result rows (count, sum of row hashes mod a prime), which must be equal for
all paths. Writes bench/results/exact_shards.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402

PATHS = ["broadcast", "sharded", "broadcast_queries"]


def rss_of(pid: int) -> int:
    """Resident bytes of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def python_workers() -> list[int]:
    """Pids of this process's PySpark daemon and its forked workers (descendants of this
    process only: other sessions on the machine run their own)."""
    parent, cmd = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd[int(name)] = f.read()
        except (OSError, IndexError, ValueError):
            continue
    me, out = os.getpid(), []
    for pid, line in cmd.items():
        if b"pyspark.daemon" not in line:
            continue
        p, seen = parent.get(pid), 0
        while p and p != me and seen < 20:
            p, seen = parent.get(p), seen + 1
        if p == me:
            out.append(pid)
    return out


class Sampler(threading.Thread):
    """Peak RSS of any single Python worker while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0, False

    def run(self) -> None:
        while not self.stop:
            for pid in python_workers():
                self.peak = max(self.peak, rss_of(pid))
            time.sleep(0.1)


def vectors(spark, n: int, dim: int, seed: int, id_col: str, parts: int):
    from pyspark.sql import functions as F

    return (spark.range(n, numPartitions=parts)
            .select(F.col("id").cast("string").alias(id_col),
                    F.array(*[F.randn(seed + j) for j in range(dim)]).cast("array<float>")
                    .alias("vector")))


def run_one(args: argparse.Namespace) -> dict:
    from pyspark.sql import functions as F

    from recemb_spark.config import load_config
    from recemb_spark.neighbors.exact import exact_top_k
    from recemb_spark.session import build_session

    cfg = load_config(overrides=[f"spark.driver_memory={args.driver_memory}",
                                 "spark.shuffle_partitions=8"])
    spark = build_session(cfg.spark, "bench-exact-shards")
    try:
        items = vectors(spark, args.items, args.dim, 1000, "item_id",
                        max(4, args.items // 100_000)).persist()
        queries = (vectors(spark, args.queries, args.dim, 5000, "query_id", 4)
                   .withColumn("exclude", F.array(F.col("query_id"))).persist())
        items.count(), queries.count()
        sampler = Sampler()
        sampler.start()
        t0 = time.perf_counter()
        out = exact_top_k(spark, queries, items, args.k, "cosine", path=args.path).persist()
        n = out.count()
        seconds = time.perf_counter() - t0
        sampler.stop = True
        sampler.join()
        check = out.agg(F.sum(F.pmod(F.xxhash64("query_id", "item_id", "rank", "score"),
                                     F.lit(1_000_000_007))).alias("h")).collect()[0]["h"]
        return {"path": args.path, "seconds": round(seconds, 1), "rows": n,
                "checksum": int(check or 0),
                "peak_python_worker_rss_mb": round(sampler.peak / 2**20, 1),
                "driver_python_peak_rss_mb": round(peak_self() / 2**20, 1)}
    finally:
        spark.stop()


def peak_self() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--path", help=argparse.SUPPRESS)  # one run, in a child process
    ap.add_argument("--out", default="bench/results/exact_shards.json")
    args = ap.parse_args()
    if args.path:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    runs = []
    for path in args.paths.split(","):
        cmd = [sys.executable, __file__, "--path", path, "--items", str(args.items),
               "--queries", str(args.queries), "--dim", str(args.dim), "--k", str(args.k),
               "--driver-memory", args.driver_memory]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            print(done.stderr[-3000:])
            raise SystemExit(f"path {path} failed (exit {done.returncode})")
        runs.append(json.loads(lines[-1][len("RESULT "):]))
        print(runs[-1], flush=True)
        same = len({(r["rows"], r["checksum"]) for r in runs}) == 1  # written after each path
        write_json(args.out, {"items": args.items, "queries": args.queries, "dim": args.dim,
                              "k": args.k, "runs": runs, "identical_results": same,
                              "note": "2 shared cores under load from other jobs: timings "
                                      "are indicative only"})


if __name__ == "__main__":
    main()
