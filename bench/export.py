"""Redis export throughput: the export stage (executors, pipelined MSET batches) vs the
tutorial's one-SET-at-a-time loop on the driver, both against a local redis-server.

    python bench/export.py                       # 50k and 500k items (dim 32) + the built-in sample
    python bench/export.py --sizes 50000 --no-sample

For each size: random item vectors (dim 32) are written to a temporary warehouse as
item_embeddings; the export stage writes them (items only) to a redis-server this script
starts on a free port of 127.0.0.1 (no persistence) and stops at the end, after one
unmeasured warm-up export of 5,000 vectors (Python workers start once per run). Reported:
vectors/s of the write job (``write``) and of the whole stage (``stage``: counting, the
write, verification, the pointer switch). The baseline is the tutorial's approach —
``collect()`` to the driver, then ``SET item:<id> <json vector>`` one key per round trip — timed
on a subset (``--baseline-rows``, default 20,000; its rate does not depend on the table size)
in the same run. The sample case runs the tables, item2vec and ann stages on the built-in
sample, then exports item vectors, user vectors and neighbour lists.
Writes bench/results/export_<label>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from common import write_json  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.io.warehouse import Warehouse  # noqa: E402
from recemb_spark.runner.pipeline import run_pipeline  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402
from tests.redis_server import REDIS_SERVER, redis_server  # noqa: E402

DATE = "2026-01-01"


def random_vectors(spark, n, dim=32, seed=0):
    """n random float32 vectors, made on the executors: (item_id, vector)."""
    parts = max(2, n // 100_000)

    def gen(part, _):
        lo, hi = part * n // parts, (part + 1) * n // parts
        rng = np.random.default_rng([seed, part])
        for i, v in zip(range(lo, hi), rng.normal(size=(hi - lo, dim)).astype(np.float32),
                        strict=True):
            yield f"i{i}", v.tolist()

    rdd = spark.sparkContext.parallelize(range(parts), parts).mapPartitionsWithIndex(gen)
    return spark.createDataFrame(rdd, "item_id string, vector array<float>")


def one_set_at_a_time(spark, wh, model, port, rows):
    """The tutorial's export: collect the table to the driver, then one SET per vector
    (JSON text), each its own round trip. Returns (rows, seconds, vectors/s)."""
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    t0 = time.perf_counter()
    data = wh.read("item_embeddings", DATE, model).limit(rows).collect()
    for row in data:
        r.set(f"tutorial:{model}:item:{row['item_id']}", json.dumps(row["vector"]))
    seconds = time.perf_counter() - t0
    r.close()
    return len(data), seconds, len(data) / seconds


def export_items(spark, cfg, port, model, kinds=("items",)):
    """Run the export stage for ``model``; return its result (the stage's own timings)."""
    flags = {k: (k in kinds) for k in ("items", "users", "neighbors", "user_candidates")}
    run_cfg = cfg.replace("export", port=port, models=[model], prefix="bench",
                          retire_grace_seconds=0, **flags)
    t0 = time.perf_counter()
    res = run_pipeline(spark, run_cfg, DATE, stages=["export"])["export"]
    return res, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50000,500000")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--no-sample", action="store_true", help="skip the built-in sample case")
    ap.add_argument("--baseline-rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=None, help="export.batch_size")
    ap.add_argument("--label", default=None)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-export-")
    overrides = ["spark.log_level=ERROR", f"warehouse.path={tmp}/wh"]
    if args.batch_size:
        overrides.append(f"export.batch_size={args.batch_size}")
    cfg = load_config(overrides=overrides)
    spark = build_session(cfg.spark, "recemb-bench-export")
    wh = Warehouse(spark, cfg.warehouse.path)
    results = []
    try:
        with redis_server(binary=REDIS_SERVER) as port:
            # warm-up, not measured: Python workers and the JVM's first jobs start once per run
            wh.write(random_vectors(spark, 5000, args.dim), "item_embeddings", DATE,
                     model="warmup")
            export_items(spark, cfg, port, "warmup")
            for n in [int(s) for s in args.sizes.split(",") if s]:
                model = f"random{n}"
                wh.write(random_vectors(spark, n, args.dim), "item_embeddings", DATE,
                         model=model)
                res, stage_s = export_items(spark, cfg, port, model)
                tp = res.details["throughput"][f"{model}.items"]
                b_rows, b_s, b_rate = one_set_at_a_time(spark, wh, model, port,
                                                        min(n, args.baseline_rows))
                point = {"case": f"{n} items, dim {args.dim}", "vectors": n,
                         "write_seconds": tp["seconds"],
                         "write_vectors_per_s": round(n / tp["seconds"]),
                         "stage_seconds": round(stage_s, 3),
                         "stage_vectors_per_s": round(n / stage_s),
                         "partitions": tp["partitions"],
                         "one_set_rows": b_rows, "one_set_seconds": round(b_s, 3),
                         "one_set_vectors_per_s": round(b_rate),
                         "speedup_write": round(n / tp["seconds"] / b_rate, 1),
                         "speedup_stage": round(n / stage_s / b_rate, 1)}
                results.append(point)
                print(json.dumps(point))
            if not args.no_sample:
                scfg = cfg.replace("deepwalk", enabled=False).replace("als", enabled=False)
                scfg = scfg.replace("ann", models=["item2vec"], user_candidates=False)
                run_pipeline(spark, scfg, DATE, stages=["tables", "item2vec", "ann"])
                res, stage_s = export_items(spark, scfg, port, "item2vec",
                                            kinds=("items", "users", "neighbors"))
                keys = sum(v for k, v in res.rows.items())
                write_s = sum(t["seconds"] for t in res.details["throughput"].values())
                b_rows, b_s, b_rate = one_set_at_a_time(spark, wh, "item2vec", port,
                                                        args.baseline_rows)
                point = {"case": "built-in sample (item2vec items, users, neighbour lists)",
                         "vectors": keys, "rows": res.rows, "write_seconds": round(write_s, 3),
                         "write_vectors_per_s": round(keys / write_s),
                         "stage_seconds": round(stage_s, 3),
                         "stage_vectors_per_s": round(keys / stage_s),
                         "one_set_rows": b_rows, "one_set_seconds": round(b_s, 3),
                         "one_set_vectors_per_s": round(b_rate),
                         "speedup_write": round(keys / write_s / b_rate, 1),
                         "speedup_stage": round(keys / stage_s / b_rate, 1)}
                results.append(point)
                print(json.dumps(point))
    finally:
        spark.stop()
    print(f"\n{'case':<58} {'write v/s':>10} {'stage v/s':>10} {'1-SET v/s':>10} {'x':>6}")
    for p in results:
        print(f"{p['case']:<58} {p['write_vectors_per_s']:>10} {p['stage_vectors_per_s']:>10} "
              f"{p['one_set_vectors_per_s']:>10} {p['speedup_write']:>6}")
    label = args.label or "_".join(str(p["vectors"]) for p in results)
    write_json(str(ROOT / "bench" / "results" / f"export_{label}.json"),
               {"bench": "export", "dim": args.dim, "redis_server": REDIS_SERVER,
                "results": results})


if __name__ == "__main__":
    main()
