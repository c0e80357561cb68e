"""Implicit ALS: HR@10 over a grid of confidence scales (alpha) and regularisation, per data shape.

    python bench/als_confidence.py --datasets ml-100k,sample,yoochoose --alphas 1,4,10,40
    python bench/als_confidence.py --input bench/_scale/log_1500000_9740u_14464i/ratings.parquet \\
        --name gen-1.5m --set input.format=parquet --set input.user_col=user_id \\
        --set input.item_col=item_id --set input.ts_col=ts --alphas 1,4,10,40

For each data set: the pipeline's leave-last-out split (``bench/common.prepare``), then per
(alpha, reg_param) one implicit ALS fit at the configured rank and iterations (``max_iter: 0``:
the auto count of :func:`recemb_spark.models.als.auto_iterations`, recorded per run) on the training
part, scored as the evaluate stage scores ALS: HR@10 / NDCG@10 with the query item's factor
(cosine) and with the user's factor (dot product), split by head / tail / cold held-out items.
Records fit seconds, the catalogue size and the mean ratings per user and per item (the data
shape a confidence rule can follow). ``--alphas auto`` fits at the default rule's alpha
(``als.alpha: 0``, :func:`recemb_spark.models.als.auto_alpha`) and records its value.
Writes ``bench/results/als_confidence_<tag>.json``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fit_and_score_als, prepare, write_json  # noqa: E402
from quality import DATASETS  # noqa: E402

from recemb_spark.models import als  # noqa: E402


def shape_of(p) -> dict[str, Any]:
    """Rows, users and items of the training part, its density and mean implicit signal."""
    rows, signal_sum = als.signal_totals(p.train, p.cfg.als)
    users = p.train.select("user_id").distinct().count()
    return {"train_rows": rows, "train_users": users, "catalogue": p.catalogue,
            "ratings_per_user": round(rows / max(users, 1), 1),
            "ratings_per_item": round(rows / max(p.catalogue, 1), 1),
            "density": rows / max(users * p.catalogue, 1),
            "signal_mean": round(signal_sum / max(rows, 1), 3),
            "auto_alpha": round(als.auto_alpha(rows, signal_sum, users, p.catalogue,
                                               p.cfg.als.auto_alpha_scale,
                                               p.cfg.als.auto_alpha_exponent), 3)}


def run_point(p, alpha: float, reg: float, ckpt: str) -> dict[str, Any]:
    """One implicit fit at ``alpha`` / ``reg`` scored by item and user query."""
    cfg = p.cfg.replace("als", implicit_prefs=True, alpha=alpha, reg_param=reg).als
    row = {"reg_param": reg, **fit_and_score_als(p, cfg, ckpt)}
    print(f"  alpha {row['alpha']:>6g} reg {reg:>5g}: fit {row['fit_seconds']:6.1f}s  item "
          f"HR@10 {row['item_hr@10']:.4f}  user HR@10 {row['user_hr@10']:.4f}", flush=True)
    return row


def run_dataset(name: str, path: str | None, overrides: list[str], alphas: list[str],
                regs: list[float]) -> dict[str, Any]:
    p = prepare(path, overrides, name=name)
    shape = shape_of(p)
    print(f"\n{name}: {p.users} users, {shape}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as ckpt:
        for a in alphas:
            alpha = 0.0 if a == "auto" else float(a)  # 0: the fit resolves it (als.auto_alpha)
            for reg in regs:
                rows.append(dict(run_point(p, alpha, reg, ckpt), auto=a == "auto"))
    best = max(rows, key=lambda r: r["item_hr@10"])
    print(f"  best item HR@10: alpha {best['alpha']:g} reg {best['reg_param']:g} "
          f"({best['item_hr@10']:.4f})", flush=True)
    p.spark.stop()
    return {"users": p.users, "shape": shape, "rank": p.cfg.als.rank,
            "max_iter": p.cfg.als.max_iter, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="", help=f"comma list of {', '.join(DATASETS)}")
    ap.add_argument("--input", help="one more data set: a ratings file or folder")
    ap.add_argument("--name", help="name of --input in the results")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config overrides for every data set")
    ap.add_argument("--alphas", default="1,4,10,40", help="comma list; 'auto': the config's rule")
    ap.add_argument("--regs", default="0.1", help="comma list of reg_param values")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    alphas = args.alphas.split(",")
    regs = [float(r) for r in args.regs.split(",")]
    jobs = [(d, *DATASETS[d]) for d in args.datasets.split(",") if d]
    if args.input:
        jobs.append((args.name or Path(args.input.rstrip("/")).name, args.input, []))
    out = {name: run_dataset(name, path, overrides + args.set, alphas, regs)
           for name, path, overrides in jobs}
    tag = args.tag or "_".join(out)
    write_json(f"bench/results/als_confidence_{tag}.json", {"sets": args.set, "datasets": out})


if __name__ == "__main__":
    main()
