"""Where the sharded banded-LSH self-join spends its time: scoring the buckets against merging
each item's candidates over the bands.

    python bench/lsh_profile.py --vectors <warehouse>/item_embeddings/dt=<date>/model=item2vec \
        --items 200000

Takes ``--items`` vectors of a Parquet ``(item_id, vector)`` table (a seeded hash sample),
tunes the layout as ``ann`` does, then runs the sharded self-join twice, writing to Spark's
``noop`` sink: once without the merge over bands (the scored candidates only), once whole.
Prints and writes bench/results/lsh_profile.json (wall seconds; run it on a quiet machine).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.neighbors import lsh_join  # noqa: E402
from recemb_spark.neighbors import nearest as ann  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", required=True, help="Parquet (item_id, vector array<float>)")
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lsh_profile.json"))
    args = ap.parse_args()
    cfg = load_config(overrides=["spark.log_level=ERROR"])
    spark = build_session(cfg.spark)
    items = ann.normalise(spark.read.parquet(args.vectors).select("item_id", "vector")
                          .orderBy(F.xxhash64("item_id")).limit(args.items)).persist()
    n = items.count()
    dim = len(items.first()["vector"])
    a = cfg.ann
    t0 = time.perf_counter()
    layout, proj = ann.item_layout(spark, items, a, a.k, n, dim)
    result = {"vectors": args.vectors, "items": n, "dim": dim, "bands": layout.bands,
              "hashes_per_band": layout.hashes_per_band,
              "est_pairs_per_query": round(layout.est_pairs_per_query),
              "tune_seconds": round(time.perf_counter() - t0, 1)}
    merge = lsh_join.merge_bands
    for label, merging in (("score_seconds", lambda c, k, p: c), ("score_and_merge_seconds",
                                                                    merge)):
        lsh_join.merge_bands = merging
        acc = spark.sparkContext.accumulator({}, ann.PerPartition())
        plan = lsh_join.sharded_top_k(spark, None, items, proj, layout.bucket_length,
                                      layout.bands, a.k, a.max_bucket_size, a.seed, n, acc)
        t0 = time.perf_counter()
        plan.out.write.format("noop").mode("overwrite").save()
        result[label] = round(time.perf_counter() - t0, 1)
        plan.hot.unpersist()
        print(label, result[label], flush=True)
    lsh_join.merge_bands = merge
    pairs = n * layout.est_pairs_per_query
    cores = spark.sparkContext.defaultParallelism // 2 or 1  # local[*]: 2 per core
    result["score_ns_per_pair_core"] = round(cores * result["score_seconds"] / pairs * 1e9, 1)
    print(result)
    write_json(args.out, result)
    spark.stop()


if __name__ == "__main__":
    main()
