"""Recall and scanned share of the ivf lists against the number of probes, on real vectors.

    python bench/ivf_probe.py --vectors <warehouse>/item_embeddings/dt=<date>/model=item2vec \
        --tag taobao5m-item2vec

Reads one model's item vectors (Parquet: item_id, vector), trains the centroids as the ivf
method does (:func:`recemb_spark.neighbors.ivf.spherical_kmeans` on a seeded sample of
``TRAIN_SAMPLE`` rows), assigns every item to its nearest list, and for ``--queries`` sampled
items compares their exact top-``k`` (numpy, all items) with the lists each query probes:
per ``nprobe``, the recall (query-level probing, as ``ivf_top_k`` searches) and the mean share
of the items scored; also the recall if a query probed the lists nearest to its own list's
centroid instead (a design that would need no merge; measured to be much worse). Writes
``bench/results/ivf_probe_<tag>.json``. numpy only, no Spark; holds the vectors in memory.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from common import write_json  # noqa: E402

from recemb_spark.neighbors import ivf  # noqa: E402

PROBES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", required=True, help="a Parquet folder of item_id, vector")
    ap.add_argument("--items-per-list", type=int, action="append", default=None)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    table = pq.read_table(args.vectors, columns=["vector"])
    v = table.column("vector").combine_chunks().flatten().to_numpy().astype(np.float32)
    v = v.reshape(table.num_rows, -1)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    n, dim = v.shape
    rng = np.random.default_rng(args.seed)
    qi = rng.choice(n, args.queries, replace=False)
    scores = v[qi] @ v.T
    scores[np.arange(len(qi)), qi] = -np.inf
    truth = np.argpartition(-scores, args.k, axis=1)[:, :args.k]
    result: dict = {"vectors": args.vectors, "items": n, "dim": dim, "k": args.k,
                    "queries": len(qi), "layouts": []}
    for per in args.items_per_list or [ivf.ITEMS_PER_LIST, 10_000]:
        t0 = time.perf_counter()
        sample = v[rng.choice(n, min(n, ivf.TRAIN_SAMPLE), replace=False)]
        cent = ivf.spherical_kmeans(sample, ivf.n_lists_for(n, per), args.seed)
        train_s = time.perf_counter() - t0
        lists = ivf.nearest_lists(v, cent, 1)[:, 0]
        sizes = np.bincount(lists, minlength=len(cent))
        qpos = ivf.probe_positions(v[qi], cent)
        cpos = ivf.probe_positions(cent, cent)
        true_q = np.take_along_axis(qpos, lists[truth], 1)
        true_c = cpos[lists[qi][:, None], lists[truth]]
        order = np.argsort(qpos, axis=1)
        rows = []
        for p in PROBES:
            if p > len(cent):
                break
            rows.append({"nprobe": p, "recall": round(float((true_q < p).mean()), 4),
                         "recall_list_probe": round(float((true_c < p).mean()), 4),
                         "scanned_share": round(float(sizes[order[:, :p]].sum(1).mean() / n),
                                                4)})
        layout = {"items_per_list": per, "lists": len(cent), "train_seconds": round(train_s, 1),
                  "largest_list": int(sizes.max()), "smallest_list": int(sizes.min()),
                  "probes": rows}
        print(layout, flush=True)
        result["layouts"].append(layout)
    write_json(str(ROOT / "bench" / "results" / f"ivf_probe_{args.tag}.json"), result)


if __name__ == "__main__":
    main()
