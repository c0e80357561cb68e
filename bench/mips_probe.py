"""How many items an inner-product (ALS) top-k search must score, on real factors (numpy only).

    python bench/mips_probe.py --warehouse /work/catalog_bench/run_5000000e_722000i/wh \\
        --run-date 2026-01-01 --model als --k 50 --lists 30 60 120 240

Reads the model's item and user vectors of the date (Parquet, no Spark), samples ``--queries``
users (seeded) and reports, against their exact top-``k`` by dot product:

* **norm bound**: an item ``x`` can only enter a user's top-k if ``|q| |x|`` reaches the k-th
  best score, so the items the exact search must score are those of norm >= kth / |q| (the
  mean, median and p90 share); and the same with the k-th score taken from the
  ``--block``-item block of largest norms only (what a first pass can know);
* **ivf on the inner-product transform** (the items scaled by the largest norm and extended
  to unit length, the users extended by 0: what ``ann`` does for ALS): for each list count,
  the probes and scanned share reaching recall 0.9 / 0.95 / 0.97 (k-means on a sample of
  100k items, ``neighbors/ivf.py``).

Writes ``bench/results/mips_probe[_<tag>].json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_json  # noqa: E402

from recemb_spark.neighbors import ivf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def vectors(warehouse: str, table: str, run_date: str, model: str) -> np.ndarray:
    """The float32 vectors of one model's table of the date."""
    t = pq.read_table(f"{warehouse}/{table}/dt={run_date}/model={model}", columns=["vector"])
    v = t.column("vector").combine_chunks()
    return v.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(t), -1)


def top_k(q: np.ndarray, x: np.ndarray, k: int, chunk: int = 100) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Each query's exact top-``k`` item positions and its k-th best score, by chunks of
    ``chunk`` queries (one ``chunk x items`` score block in memory)."""
    idx, kth = np.zeros((len(q), k), np.int64), np.zeros(len(q), np.float32)
    for r0 in range(0, len(q), chunk):
        s = q[r0:r0 + chunk] @ x.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        idx[r0:r0 + chunk] = part
        kth[r0:r0 + chunk] = np.take_along_axis(s, part, 1).min(axis=1)
    return idx, kth


def shares(need: np.ndarray, n_items: int) -> dict[str, float]:
    return {"mean": round(float(need.mean()) / n_items, 4),
            "median": round(float(np.median(need)) / n_items, 4),
            "p90": round(float(np.quantile(need, 0.9)) / n_items, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--run-date", required=True)
    ap.add_argument("--model", default="als")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--block", type=int, default=16384, help="items in the first norm block")
    ap.add_argument("--lists", type=int, nargs="*", default=[30, 60, 120, 240])
    ap.add_argument("--bands", type=int, nargs="*", default=[8, 16, 32, 64, 128],
                    help="norm bands (equal item counts) of the pruned exact search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag")
    args = ap.parse_args()
    x = vectors(args.warehouse, "item_embeddings", args.run_date, args.model)
    u = vectors(args.warehouse, "user_embeddings", args.run_date, args.model)
    rng = np.random.default_rng(args.seed)
    q = u[rng.choice(len(u), min(args.queries, len(u)), replace=False)]
    xn, qn = np.linalg.norm(x, axis=1), np.linalg.norm(q, axis=1)
    order = np.argsort(-xn, kind="stable")
    top, kth = top_k(q, x, args.k)
    need = (qn[:, None] * xn[None, :] >= kth[:, None]).sum(axis=1)
    _, kth0 = top_k(q, x[order[:args.block]], args.k)
    need0 = (qn[:, None] * xn[None, :] >= kth0[:, None]).sum(axis=1)
    out: dict = {"items": len(x), "users": len(u), "dim": x.shape[1], "k": args.k,
                 "queries": len(q),
                 "norm_quantiles": [round(float(v), 4) for v in
                                    np.quantile(xn, [0, 0.5, 0.9, 0.99, 1])],
                 "norm_bound_share": shares(need, len(x)),
                 "norm_bound_share_first_block": shares(need0, len(x)), "ivf": [],
                 "bands": []}
    for n_bands in args.bands:
        # what neighbors/normbound.py does: bands of equal counts by norm, the k-th score of
        # band 0 as the floor, every other band whose largest norm x |q| reaches it
        cuts = np.linspace(0, len(x), n_bands + 1).astype(np.int64)
        tops = xn[order[cuts[:-1]]]
        _, floor = top_k(q, x[order[:cuts[1]]], min(args.k, int(cuts[1])))
        needed = qn[:, None] * tops[None, 1:] >= floor[:, None]
        scanned = (cuts[1] + (needed * np.diff(cuts)[None, 1:]).sum(axis=1)) / len(x)
        out["bands"].append({"bands": n_bands, "scanned_share": shares(scanned * len(x),
                                                                         len(x)),
                             "probes_mean": round(float(1 + needed.sum(axis=1).mean()), 2)})
        print(f"{n_bands} norm bands: {scanned.mean():.1%} of the items scored (p90 "
              f"{np.quantile(scanned, 0.9):.1%}), {1 + needed.sum(axis=1).mean():.1f} bands "
              f"per query", flush=True)
    m = float(xn.max()) or 1.0
    aug = np.hstack([x / m, np.sqrt(np.maximum(0, 1 - (xn / m) ** 2))[:, None]]
                    ).astype(np.float32)
    qa = np.hstack([q / np.maximum(qn, 1e-12)[:, None], np.zeros((len(q), 1))]
                   ).astype(np.float32)
    train = aug[rng.choice(len(aug), min(ivf.TRAIN_SAMPLE, len(aug)), replace=False)]
    for n_lists in args.lists:
        cent = ivf.spherical_kmeans(train, n_lists, 7)
        assign = ivf.nearest_lists(aug, cent, 1)[:, 0]
        index = ivf.IvfIndex(cent, np.bincount(assign, minlength=len(cent)))
        for target in (0.9, 0.95, 0.97):
            tuned = ivf.tune_probes(qa, aug[top], np.ones(top.shape, bool), index, target)
            out["ivf"].append({"lists": len(cent), "target": target, "nprobe": tuned.nprobe,
                               "scanned_share": round(tuned.est_scanned, 4)})
            print(f"ivf {len(cent)} lists, recall {target}: {tuned.nprobe} probes, "
                  f"{tuned.est_scanned:.1%} of the items scored", flush=True)
    print(f"norm bound: {out['norm_bound_share']} of the items must be scored "
          f"(first-block floor: {out['norm_bound_share_first_block']})")
    write_json(str(ROOT / "bench" / "results" /
                   f"mips_probe{'_' + args.tag if args.tag else ''}.json"), out)


if __name__ == "__main__":
    main()
