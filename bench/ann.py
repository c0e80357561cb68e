"""Nearest neighbours: exact vs banded LSH vs Spark's approxSimilarityJoin.

    python bench/ann.py --sizes 10000,50000 --grid "tune,4x16x0.5,6x24x0.6"
    python bench/ann.py --sizes 100000,200000 --methods exact,lsh --grid "tune,4x16x0.5,6x24x0.6"
    python bench/ann.py --sizes 1000000 --methods lsh --grid tune
    python bench/ann.py --sample --grid "tune,2x24x1.0,3x16x1.0,4x16x0.5,6x24x0.6"

Data: synthetic clustered unit vectors (dim 32, clusters of ~50 points, generated on the
executors), or real embeddings. For each size and method: wall time of the item-neighbour
table (top-10 per item, written to Parquet), recall@10 against exact top-10 on 500 sampled
items, and candidate pairs. Grid points are ``k x L x scale`` (hashes per band, bands,
bucket_scale), or ``tune`` (the layout chosen per run from a sample, ``ann.tune``). Prints
and stores the Pareto front per data set (points no other point beats on both time and
recall). Writes bench/results/ann_<label>.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.neighbors import nearest as ann  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402


def clustered_vectors(spark, n, dim=32, per_cluster=50, noise=0.15, seed=0):
    """n unit vectors around n/per_cluster random centres, made on the executors."""
    centres = np.random.default_rng(seed).normal(size=(max(1, n // per_cluster), dim))
    bc = spark.sparkContext.broadcast(centres)
    parts = max(4, n // 50000)

    def gen(part, _):
        c = bc.value
        lo, hi = part * n // parts, (part + 1) * n // parts
        rng = np.random.default_rng([seed, part])
        pts = c[rng.integers(0, len(c), hi - lo)] + noise * rng.normal(size=(hi - lo, dim))
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        for i, v in zip(range(lo, hi), pts.astype(np.float32), strict=True):
            yield f"i{i}", v.tolist()

    rdd = spark.sparkContext.parallelize(range(parts), parts).mapPartitionsWithIndex(gen)
    return spark.createDataFrame(rdd, "item_id string, vector array<float>")


def run_point(spark, items, cfg, method, truth, out_dir):
    t0 = time.perf_counter()
    stats = {}
    if method == "exact":
        nb = ann.exact_item_neighbors(spark, items, cfg.k)
    elif method == "lsh":
        nb, stats = ann.lsh_item_neighbors(spark, items, cfg, cfg.k)
    else:
        nb, stats = ann.spark_lsh_item_neighbors(spark, items, cfg, cfg.k)
    nb.write.mode("overwrite").parquet(f"{out_dir}/{method}")
    seconds = time.perf_counter() - t0
    nb.unpersist()
    written = spark.read.parquet(f"{out_dir}/{method}")
    recall = ann.recall_at_k(written, truth, "item_id", "neighbor_id")
    return {"method": method, "seconds": round(seconds, 2), "recall@10": round(recall, 4),
            "candidate_pairs": stats.get("candidate_pairs"),
            "buckets_split": stats.get("buckets_split"),
            "bucket_length": stats.get("bucket_length"),
            "layout": (f"{stats['hashes_per_band']}x{stats['bands']}" if "bands" in stats
                       else None),
            "estimated_recall": stats.get("estimated_recall")}


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row of the same data set beats on both seconds and recall."""
    front = []
    for r in rows:
        beaten = any(o is not r and o["data"] == r["data"] and o["seconds"] <= r["seconds"]
                     and o["recall@10"] >= r["recall@10"]
                     and (o["seconds"], o["recall@10"]) != (r["seconds"], r["recall@10"])
                     for o in rows)
        if not beaten:
            front.append(r)
    return sorted(front, key=lambda r: (r["data"], r["seconds"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--methods", default="exact,lsh,spark_lsh")
    ap.add_argument("--grid", default="tune,4x16x0.5,5x24x0.5,6x24x0.6")
    ap.add_argument("--spark-lsh-max", type=int, default=10000,
                    help="run spark_lsh only up to this size (it explodes beyond)")
    ap.add_argument("--spark-lsh-threshold", type=float, default=0.7)
    ap.add_argument("--sample", action="store_true",
                    help="use the built-in sample's item2vec embeddings instead")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base = load_config(overrides=["spark.log_level=ERROR"])
    spark = build_session(base.spark, "recemb-bench-ann")
    results = []
    datasets = []
    if args.sample:
        from common import prepare

        from recemb_spark.models.word2vec import fit_word2vec
        p = prepare(None)
        datasets.append(("builtin-sample-item2vec",
                         fit_word2vec(p.train_sequences, p.cfg.item2vec)))
    else:
        datasets += [(f"clustered-{n}", clustered_vectors(spark, n))
                     for n in map(int, args.sizes.split(","))]
    for label, raw in datasets:
        items = ann.normalise(raw).persist()
        n = items.count()
        cfg0 = base.replace("ann", spark_lsh_threshold=args.spark_lsh_threshold).ann
        sample = ann.sample_ids(items, "item_id", 500, 0)
        truth = ann.exact_item_neighbors(spark, items, 10, only=sample).persist()
        truth.count()
        with tempfile.TemporaryDirectory() as tmp:
            for method in args.methods.split(","):
                if method == "spark_lsh" and n > args.spark_lsh_max:
                    continue
                points = args.grid.split(",") if method == "lsh" else [None]
                for point in points:
                    cfg = cfg0
                    if point == "tune":
                        cfg = base.replace("ann", tune=True).ann
                    elif point:
                        k, bands, scale = point.split("x")
                        cfg = base.replace("ann", hashes_per_band=int(k), bands=int(bands),
                                           bucket_scale=float(scale), tune=False).ann
                    row = dict(run_point(spark, items, cfg, method, truth, tmp), data=label,
                               items=n, point=point)
                    results.append(row)
                    print(f"{label:<28}{method:<10}{point or '':<12}{row['seconds']:>8.1f}s "
                          f"recall {row['recall@10']:.3f}  pairs {row['candidate_pairs']}"
                          f"  layout {row['layout']} est. {row['estimated_recall']}",
                          flush=True)
        items.unpersist()
        truth.unpersist()
    front = pareto(results)
    print("Pareto front (time, recall):")
    for r in front:
        print(f"  {r['data']:<28}{r['method']:<10}{r['point'] or '':<12}{r['seconds']:>8.1f}s "
              f"recall {r['recall@10']:.3f}")
    write_json(args.out or f"bench/results/ann_{datasets[0][0]}.json",
               {"results": results, "pareto": front})


if __name__ == "__main__":
    main()
