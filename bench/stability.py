"""Noise floor of the nightly overlap metrics: how much do top-10 neighbour lists move when
nothing changed but the seed, and when one day of events is added?

    python bench/stability.py                                          # built-in sample
    python bench/stability.py --input ../shared/data/ml-100k/u.data

The log is split by time: "yesterday" holds every event up to ``max(ts) - days``, "today"
every event (yesterday + the last ``--days`` days as the new events). For each model (our
defaults: item2vec, DeepWalk, ALS) four trainings:

* ``A``: yesterday, the default seed;  ``A2``: the same again (is a rerun deterministic?);
* ``B``: yesterday, another seed;      ``C``: today, the default seed.

and the exact top-10 cosine neighbours of each. Reported overlaps (mean of |A∩B|/10 over the
items both have, quantiles, head/tail means as the daily stage computes them):
``same_seed`` (A vs A2), ``seed`` (A vs B: the noise floor of a retraining), ``day`` (A vs C:
what a nightly run with a fixed seed sees), ``day_and_seed`` (B vs C). Also the Procrustes
residuals (before / after rotation) of each pair, as ``align.enabled`` would fit them.
Writes bench/results/stability_<data>.json.

On the built-in sample the users' histories are spread over five years, so its last day holds
only a handful of events (the run prints how many); ``--days`` widens the window.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.evaluation import daily_metrics as daily  # noqa: E402
from recemb_spark.evaluation.popularity import popularity_segments  # noqa: E402
from recemb_spark.interactions import build_sequences, clean_ratings  # noqa: E402
from recemb_spark.io import readers, sample  # noqa: E402
from recemb_spark.models import align  # noqa: E402
from recemb_spark.models.registry import model_specs  # noqa: E402
from recemb_spark.neighbors.nearest import exact_item_neighbors, normalise  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402

PAIRS = {"same_seed": ("A", "A2"), "seed": ("A", "B"), "day": ("A", "C"),
         "day_and_seed": ("B", "C")}
SEED_KEYS = {"item2vec": [("item2vec", "seed")],
             "deepwalk": [("deepwalk", "seed"), ("walks", "seed")],
             "als": [("als", "seed")]}


def with_seed(cfg, stage: str, offset: int):
    for section, key in SEED_KEYS[stage]:
        cfg = cfg.replace(section, **{key: getattr(getattr(cfg, section), key) + offset})
    return cfg


def summary(model, left, right, buckets, k):
    rows = daily.overlap_metrics(model, daily.neighbor_overlap(left["neighbors"],
                                                               right["neighbors"], k), buckets, k)
    out = {r["metric"].removeprefix("overlap_"): round(r["value"], 4) for r in rows}
    dim = align.vector_dim(left["vectors"])
    fit = align.fit_alignment(left["vectors"], right["vectors"], dim)
    out.update(procrustes_residual_before=round(fit.residual_before, 4),
               procrustes_residual_after=round(fit.residual_after, 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None, help="ratings file (default: built-in sample)")
    ap.add_argument("--days", type=float, default=1.0, help="new events: the last this many days")
    ap.add_argument("--models", default="item2vec,deepwalk,als")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override, as for recemb (repeatable)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = load_config(overrides=["spark.log_level=ERROR", *args.set])
    spark = build_session(cfg.spark, "recemb-bench-stability")
    if args.input:
        valid = readers.read_ratings(spark, cfg.input, args.input).valid
        name = Path(args.input.rstrip("/")).name
    else:
        valid, _ = sample.generate(spark, cfg.sample)
        name = "builtin-sample"
    ratings = clean_ratings(valid).persist()
    last = ratings.agg(F.max("ts")).first()[0]
    cutoff = last - dt.timedelta(days=args.days)
    data = {"yesterday": ratings.filter(F.col("ts") <= F.lit(cutoff)).persist(),
            "today": ratings}
    seqs = {d: build_sequences(r, cfg.sequences).persist() for d, r in data.items()}
    new = ratings.count() - data["yesterday"].count()
    new_liked = ratings.filter((F.col("ts") > F.lit(cutoff))
                               & (F.col("rating") >= cfg.sequences.min_rating)).count()
    print(f"{name}: {ratings.count()} ratings, {new} new in the last {args.days} day(s) "
          f"after {cutoff} ({new_liked} liked)")
    buckets = popularity_segments(ratings, cfg.sequences.min_rating, cfg.evaluate.head_share,
                                  cfg.evaluate.cold_max_events).persist()
    runs = {"A": ("yesterday", 0), "A2": ("yesterday", 0), "B": ("yesterday", 1),
            "C": ("today", 0)}
    results = {}
    wanted = args.models.split(",")
    for spec in model_specs():
        if spec.stage not in wanted:
            continue
        trained = {}
        seconds = []
        for run, (day, offset) in runs.items():
            run_cfg = with_seed(cfg, spec.stage, offset)
            t0 = time.perf_counter()
            vectors = spec.train(spark, run_cfg, data[day], seqs[day]).item_vectors.persist()
            vectors.count()
            seconds.append(time.perf_counter() - t0)
            neighbors = exact_item_neighbors(spark, normalise(vectors), args.k).persist()
            neighbors.count()
            trained[run] = {"vectors": vectors, "neighbors": neighbors}
        model = spec.model_name(cfg)
        results[model] = {pair: summary(model, trained[a], trained[b], buckets, args.k)
                          for pair, (a, b) in PAIRS.items()}
        results[model]["train_seconds_mean"] = round(sum(seconds) / len(seconds), 2)
        for t in trained.values():
            t["vectors"].unpersist()
            t["neighbors"].unpersist()
        print(f"{model:<10} top-{args.k} overlap (mean / median / head / tail):")
        for pair in PAIRS:
            r = results[model][pair]
            print(f"  {pair:<13} {r.get('mean', float('nan')):.3f} / "
                  f"{r.get('p50', float('nan')):.2f} / {r.get('head_mean', float('nan')):.3f} / "
                  f"{r.get('tail_mean', float('nan')):.3f}   Procrustes residual "
                  f"{r['procrustes_residual_before']:.3f} -> {r['procrustes_residual_after']:.3f}")
    out = args.out or str(Path(__file__).resolve().parent / "results" / f"stability_{name}.json")
    write_json(out, {"data": name, "k": args.k, "new_days": args.days,
                     "cutoff": cutoff.isoformat(), "ratings": ratings.count(),
                     "new_ratings": new, "new_liked": new_liked,
                     "head_share": cfg.daily.head_share, "models": results})
    spark.stop()


if __name__ == "__main__":
    main()
