"""Search MLlib Word2Vec settings for item2vec: held-out quality per training second.

    python bench/item2vec_search.py                                   # built-in sample
    python bench/item2vec_search.py --input ../shared/data/ml-100k/u.data --seeds 3

Coordinate search around a base point (one parameter varied at a time), each point trained
with several seeds on the same leave-last-out split. Prints HR@10 / NDCG@10 / train seconds
per point and writes JSON (bench/results/item2vec_search_<data>.json).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import mllib_item2vec, popularity, prepare, write_json  # noqa: E402

BASE = {"vector_size": 32, "window_size": 5, "max_iter": 5, "min_count": 2,
        "num_partitions": 1, "step_size": 0.025}
AXES = {"vector_size": [16, 64, 100], "window_size": [2, 3, 10], "max_iter": [1, 10, 20],
        "min_count": [1, 5], "num_partitions": [2], "step_size": [0.05, 0.1]}
TUTORIAL = {"vector_size": 10, "window_size": 5, "max_iter": 10, "min_count": 5,
            "num_partitions": 1, "step_size": 0.025}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--extra", default="", help="more points: 'k=v,k=v;k=v' (each from BASE)")
    ap.add_argument("--only-extra", action="store_true", help="skip the coordinate axes")
    args = ap.parse_args()
    p = prepare(args.input)
    pop = popularity(p, [10])
    print(f"{p.name}: {p.users} users, catalogue {p.catalogue}; popularity HR@10 "
          f"{pop['hr@10']:.4f} NDCG@10 {pop['ndcg@10']:.4f}", flush=True)
    points = [("tutorial", TUTORIAL), ("base", BASE)]
    if not args.only_extra:
        for axis, values in AXES.items():
            points += [(f"{axis}={v}", dict(BASE, **{axis: v})) for v in values]
    for spec in filter(None, args.extra.split(";")):
        kv = dict(x.split("=") for x in spec.split(","))
        point = dict(BASE, **{k: type(BASE[k])(v) for k, v in kv.items()})
        points.append((spec, point))
    results = []
    for label, params in points:
        row = {"label": label, "params": params, **mllib_item2vec(p, params, args.seeds)}
        results.append(row)
        print(f"{label:<20} HR@10 {row['hr@10']:.4f}  NDCG@10 {row['ndcg@10']:.4f}  "
              f"train {row['seconds']:5.1f}s  misses {row['misses']:.0f}", flush=True)
    write_json(args.out or f"bench/results/item2vec_search_{p.name}.json",
               {"data": p.name, "users": p.users, "catalogue": p.catalogue, "popularity": pop,
                "seeds": args.seeds, "points": results})


if __name__ == "__main__":
    main()
