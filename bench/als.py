"""ALS: fit time, RMSE (explicit) and leave-last-out HR@10 / NDCG@10 for a few ranks.

    python bench/als.py                                          # built-in sample
    python bench/als.py --input ../shared/data/ml-100k/u.data --ranks 8,16,32,64

Per rank: seconds to fit on the leave-last-out training split, HR@10 / NDCG@10 with the
query item's factor (cosine) and with the user's factor (dot product), and RMSE on a 20%
random hold-out next to the global-mean baseline. Also implicit mode at the default rank.
Writes bench/results/als_<data>.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fit_and_score_als, popularity, prepare, write_json  # noqa: E402

from recemb_spark.models import als  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None)
    ap.add_argument("--ranks", default="8,16,32,64")
    args = ap.parse_args()
    p = prepare(args.input)
    pop = popularity(p, [10])
    print(f"{p.name}: {p.users} users; popularity HR@10 {pop['hr@10']:.4f}", flush=True)
    rows = []
    runs = [(int(r), False) for r in args.ranks.split(",")] + [(p.cfg.als.rank, True)]
    with tempfile.TemporaryDirectory() as ckpt:
        for rank, implicit in runs:
            cfg = p.cfg.replace("als", rank=rank, implicit_prefs=implicit).als
            row = {"rank": rank, "implicit": implicit, **fit_and_score_als(p, cfg, ckpt)}
            seconds = row["fit_seconds"]
            if not implicit:
                row.update(als.rmse_report(p.spark, p.ratings, cfg, ckpt))
            rows.append(row)
            print(f"rank {rank:>3} {'implicit' if implicit else 'explicit'}: fit "
                  f"{seconds:5.1f}s  item HR@10 {row['item_hr@10']:.4f}  user HR@10 "
                  f"{row['user_hr@10']:.4f}  RMSE {row.get('rmse', float('nan')):.4f} "
                  f"(global mean {row.get('rmse_global_mean', float('nan')):.4f})", flush=True)
    write_json(f"bench/results/als_{p.name}.json",
               {"data": p.name, "users": p.users, "popularity": pop, "runs": rows})


if __name__ == "__main__":
    main()
