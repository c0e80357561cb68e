"""Banded LSH: the broadcast path against the sharded keyed join, on the same vectors.

    python bench/lsh_shards.py --sizes 200000,1000000
    python bench/lsh_shards.py --sizes 1000000 --paths sharded --out bench/results/x.json

Data: synthetic clustered unit vectors (dim 32, clusters of ~50 points, generated on the
executors: bench/ann.py's generator). For each size and path (``ann.broadcast_max_mb``
forced huge or 0), the tuned layout (``ann.tune``, the same for both paths): wall time of the
item-neighbour table (top-10 per item, written to Parquet), recall@10 against exact top-10 on
500 sampled items, the counters, and the peak resident memory of the Python workers (the
largest single worker and the largest sum at one time, polled every 0.2 s from /proc over the
descendants of this session's JVM; workers are not reused, so each task's worker is
measured alone). Writes bench/results/lsh_shards.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ann import clustered_vectors  # noqa: E402  (bench/ann.py)
from common import write_json  # noqa: E402
from scale import _rss, _tree  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.neighbors import nearest as ann  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402


def python_rss(root: int) -> list[int]:
    """Resident bytes of every Python process below ``root`` (the JVM): the Spark workers."""
    out = []
    for pid in _tree(root)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"python" not in f.read():
                    continue
        except OSError:
            continue
        out.append(_rss(pid))
    return out


class Peak:
    """Polls the Python workers' RSS in a thread: the largest worker, the largest total."""

    def __init__(self, jvm_pid: int) -> None:
        self.jvm, self.worker, self.total = jvm_pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = python_rss(self.jvm)
            if rss:
                self.worker = max(self.worker, max(rss))
                self.total = max(self.total, sum(rss))
            time.sleep(0.2)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--paths", default="broadcast,sharded")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--out", default="bench/results/lsh_shards.json")
    args = ap.parse_args()
    # a fresh Python worker per task: a reused worker keeps the memory of earlier jobs (the
    # exact truth's broadcast matrix measured 1.5 GB at 200k), which is not this path's
    os.environ["PYSPARK_SUBMIT_ARGS"] = "--conf spark.python.worker.reuse=false pyspark-shell"
    base = load_config(overrides=["spark.log_level=ERROR",
                                  f"spark.driver_memory={args.driver_memory}"])
    spark = build_session(base.spark, "recemb-bench-lsh-shards")
    jvm = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]
    results = []
    for n in map(int, args.sizes.split(",")):
        items = ann.normalise(clustered_vectors(spark, n)).persist()
        items.count()
        sample = ann.sample_ids(items, "item_id", 500, 0)
        truth = ann.exact_item_neighbors(spark, items, 10, only=sample).persist()
        truth.count()
        with tempfile.TemporaryDirectory() as tmp:
            for path in args.paths.split(","):
                mb = 1e9 if path == "broadcast" else 0.0
                cfg = base.replace("ann", tune=True, broadcast_max_mb=mb).ann
                t0 = time.perf_counter()
                with Peak(jvm) as peak:
                    nb, stats = ann.lsh_item_neighbors(spark, items, cfg, 10)
                    nb.write.mode("overwrite").parquet(f"{tmp}/{path}")
                seconds = time.perf_counter() - t0
                nb.unpersist()
                written = spark.read.parquet(f"{tmp}/{path}")
                recall = ann.recall_at_k(written, truth, "item_id", "neighbor_id")
                row = {"items": n, "dim": 32, "path": stats["path"],
                       "seconds": round(seconds, 1), "recall@10": round(recall, 4),
                       "peak_worker_rss_mb": round(peak.worker / 2**20),
                       "peak_workers_total_rss_mb": round(peak.total / 2**20),
                       "layout": f"{stats['hashes_per_band']}x{stats['bands']}",
                       **{k: stats[k] for k in ("candidate_pairs", "buckets_split",
                                                "largest_bucket", "bucket_length",
                                                "estimated_recall")}}
                results.append(row)
                print(row, flush=True)
        items.unpersist()
        truth.unpersist()
    write_json(args.out, {"results": results,
                          "note": "2 shared cores, other sessions running: timings are "
                                  "under load, not benchmarks"})
    spark.stop()


if __name__ == "__main__":
    main()
