"""ALS's user candidates alone, on a warehouse whose ALS stage already ran (Spark, local).

    python bench/als_candidates.py --warehouse /work/catalog_bench/run_5000000e_722000i/wh \\
        --run-date 2026-01-01 --tag 5m

Reads ALS's user and item vectors of the date and the ratings without the held-out pairs
(what the ALS stage searched with), runs ``als_candidates`` as the stage does (the code of
the checkout it is started from: the method the package chooses) with ``--set`` overrides,
writes the table to a scratch path and reports seconds, the method and its counters
(scanned share, tasks, recall on the sample). Writes ``bench/results/als_candidates[_<tag>]
.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--run-date", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--tag")
    args = ap.parse_args()
    from recemb_spark.config import load_config
    from recemb_spark.evaluation.holdout import without_holdout
    from recemb_spark.interactions import rated_items
    from recemb_spark.io.warehouse import Warehouse
    from recemb_spark.models.registry import als_candidates
    from recemb_spark.session import build_session

    cfg = load_config(overrides=[f"warehouse.path={args.warehouse}", *args.set])
    spark = build_session(cfg.spark)
    wh = Warehouse(spark, cfg.warehouse.path)
    d = args.run_date
    ratings = without_holdout(wh.read("ratings", d), wh.read("holdout", d))
    users = wh.read("user_embeddings", d, model="als")
    items = wh.read("item_embeddings", d, model="als")
    seen = rated_items(ratings)
    t0 = time.perf_counter()
    cands, details = als_candidates(spark, cfg, users, items, seen)
    scratch = f"{args.warehouse}/../als_candidates_bench"
    cands.write.mode("overwrite").parquet(scratch)
    seconds = round(time.perf_counter() - t0, 1)
    out = {"warehouse": args.warehouse, "run_date": d, "set": args.set, "seconds": seconds,
           "rows": spark.read.parquet(scratch).count(), "items": items.count(),
           "users": users.count(), "details": details}
    print(f"als_candidates: {seconds} s, {details}", flush=True)
    write_json(str(ROOT / "bench" / "results" /
                   f"als_candidates{'_' + args.tag if args.tag else ''}.json"), out)
    spark.stop()


if __name__ == "__main__":
    main()
