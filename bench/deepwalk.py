"""DeepWalk / node2vec quality and time on the leave-last-out split, and user pooling.

    python bench/deepwalk.py
    python bench/deepwalk.py --input ../shared/data/ml-100k/u.data

Points: Word2Vec settings on the walks (MLlib defaults vs item2vec's measured defaults),
walks per node, node2vec p/q. For the default point, user-vector queries with mean and
recency pooling. Writes bench/results/deepwalk_<data>.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import metrics_dict, popularity, prepare, score_vectors, write_json  # noqa: E402

from recemb_spark.evaluation.scoring import score_model  # noqa: E402
from recemb_spark.models.registry import train_deepwalk  # noqa: E402
from recemb_spark.models.users import pool_user_vectors  # noqa: E402

POINTS = {
    "w2v mllib defaults (step 0.025, window 5)": [],
    "w2v step 0.1 window 10": ["deepwalk.step_size=0.1", "deepwalk.window_size=10"],
    "w2v step 0.1 window 5": ["deepwalk.step_size=0.1"],
    "step 0.1, 20 walks/node": ["deepwalk.step_size=0.1", "walks.walks_per_node=20"],
    "step 0.1, node2vec p=0.5 q=2": ["deepwalk.step_size=0.1", "walks.p=0.5", "walks.q=2.0"],
    "step 0.1, node2vec p=2 q=0.5": ["deepwalk.step_size=0.1", "walks.p=2.0", "walks.q=0.5"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None)
    args = ap.parse_args()
    p = prepare(args.input)
    pop = popularity(p, [10])
    print(f"{p.name}: {p.users} users; popularity HR@10 {pop['hr@10']:.4f}", flush=True)
    histories = p.cases.select("user_id", F.col("history").alias("items"))
    rows = []
    for label, overrides in POINTS.items():
        cfg = p.cfg
        for o in overrides:
            section, rest = o.split(".", 1)
            key, value = rest.split("=")
            cfg = cfg.replace(section, **{key: type(getattr(getattr(cfg, section), key))(
                float(value) if "." in value else int(value))})
        t0 = time.perf_counter()
        trained = train_deepwalk(p.spark, cfg, p.train, p.train_sequences)
        seconds = time.perf_counter() - t0
        m = score_vectors(p, trained.item_vectors, [10], "deepwalk")
        row = {"point": label, "seconds": round(seconds, 1), "hr@10": m["hr@10"],
               "ndcg@10": m["ndcg@10"], "walks": trained.details["walks"],
               "steps": trained.details["steps"]}
        if not rows:  # user pooling on the first point
            for pooling, half in (("mean", 10.0), ("recency", 10.0), ("recency", 3.0),
                                  ("recency", 1.0)):
                users = pool_user_vectors(histories, trained.item_vectors, pooling, half)
                u = metrics_dict(score_model(p.spark, p.cases, trained.item_vectors, [10],
                                             "deepwalk", p.catalogue, mode="user",
                                             user_vectors=users))
                row[f"user_hr@10 {pooling} {half}"] = u["user_hr@10"]
        rows.append(row)
        print(f"{label:<44} HR@10 {row['hr@10']:.4f} NDCG@10 {row['ndcg@10']:.4f} "
              f"{seconds:6.1f}s " + " ".join(f"{k}={v:.4f}" for k, v in row.items()
                                             if k.startswith("user_")), flush=True)
    write_json(f"bench/results/deepwalk_{p.name}.json",
               {"data": p.name, "users": p.users, "popularity": pop, "points": rows})


if __name__ == "__main__":
    main()
