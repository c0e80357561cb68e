"""Quality of every model on four data shapes: strict leave-last-out HR@10 / NDCG@10.

    python bench/quality.py                                   # all data sets, 3 seeds
    python bench/quality.py --datasets ml-100k,yoochoose --seeds 1 --methods item2vec,popularity
    python bench/quality.py --datasets yoochoose --set item2vec.max_iter=20 --tag iter20

Data sets: ``ml-100k`` (MovieLens ratings), ``sample`` (the built-in generator),
``yoochoose`` (short click sessions, no ratings), ``taobao`` (long pv/cart/fav/buy
histories, long tail, categories); the real ones are read from ``$RECEMB_DATA`` (default
``../shared/data`` beside the checkout) with the same settings as the README's commands.
Methods: ``popularity``; ``popularity_category`` (the items of the query item's category
first: data sets with item genres or categories); ``item2vec`` and ``deepwalk`` with our
defaults (the library's own trainers: auto settings resolved per corpus, subsampling);
``mllib_tutorial`` (MLlib Word2Vec at the tutorial's settings: dim 10, window 5, 10 epochs,
minCount 5, step 0.025, on the tutorial's corpus: each user's liked items);
``gensim_{hs,sgns}_{tutorial,ours}`` (skip-gram with hierarchical softmax / negative
sampling, at the tutorial's settings on the tutorial's corpus, and at the settings our
item2vec resolved on our corpus — every rated item, ``sequences.context_min_rating``;
needs ``pip install -e '.[bench]'``). Every eligible user counts (a held-out or query item
without a vector is a miss). Mean and standard deviation over seeds 42, 43, ...
Every score is also split by the held-out item's popularity (head / tail / cold, as the
evaluate stage splits it): ``hr_cold@10`` with ``--set side_info.enabled=false`` against the
default measures what side information does for cold items.
Writes ``bench/results/quality[_<tag>].json`` and prints one table per metric.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Prepared, metrics_dict, popularity, prepare, write_json  # noqa: E402

from recemb_spark.evaluation.scoring import score_model  # noqa: E402
from recemb_spark.models.registry import train_deepwalk, train_item2vec  # noqa: E402
from recemb_spark.models.word2vec import (  # noqa: E402
    corpus_stats,
    fit_word2vec,
    resolve_settings,
)

DATA = Path(os.environ.get("RECEMB_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))
#: name -> (input path or None for the built-in sample, config overrides): the README's commands
DATASETS: dict[str, tuple[str | None, list[str]]] = {
    "ml-100k": (str(DATA / "ml-100k" / "u.data"), []),
    "sample": (None, []),
    "yoochoose": (str(DATA / "yoochoose-100k" / "clicks.tsv"),
                  ["input.user_col=SessionId", "input.item_col=ItemId", "input.ts_col=Time",
                   "input.rating_col=null"]),
    "taobao": (str(DATA / "taobao-head" / "UserBehavior.csv"),
               ["input.columns=[user_id,item_id,category_id,behavior,timestamp]",
                "input.user_col=user_id", "input.item_col=item_id",
                "input.ts_col=timestamp", "input.rating_col=null",
                "input.event_col=behavior", "input.event_weights={pv: 1, cart: 2, fav: 2, buy: 3}",
                "input.category_col=category_id"]),
}
TUTORIAL = {"vector_size": 10, "window_size": 5, "max_iter": 10, "min_count": 5,
            "num_partitions": 1, "step_size": 0.025, "sample": 0.0}
METHODS = ["popularity", "popularity_category", "item2vec", "deepwalk", "mllib_tutorial",
           "gensim_hs_tutorial", "gensim_sgns_tutorial", "gensim_hs_ours", "gensim_sgns_ours"]


#: the held-out item's popularity segments every score is split by (evaluate.head_share,
#: evaluate.cold_max_events), as in the pipeline's metrics table
SEGMENT_KEYS = ("hr_head@10", "hr_tail@10", "hr_cold@10")


def summary_of(m: dict[str, float]) -> dict[str, float]:
    """HR@10, NDCG@10, misses and the segment HR@10 (and the segments' user counts) of one
    metrics dict."""
    out = {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"],
           "misses": m["query_missing"] + m["heldout_missing"]}
    out.update({k: m[k] for k in SEGMENT_KEYS if k in m})
    out.update({f"users_{s}": m[f"users_{s}"] for s in ("head", "tail", "cold")
                if f"users_{s}" in m})
    return out


def scored(p: Prepared, vectors, name: str) -> dict[str, float]:
    return summary_of(metrics_dict(score_model(p.spark, p.cases, vectors, [10], name,
                                               p.catalogue, segments=p.segments)))


def run_model(p: Prepared, train: Callable, seed: int, section: str) -> dict[str, Any]:
    cfg = p.cfg.replace(section, seed=seed)
    if section == "deepwalk":
        cfg = cfg.replace("walks", seed=seed)
    t0 = time.perf_counter()
    side = p.side if cfg.side_info.enabled else None
    trained = train(p.spark, cfg, p.train, p.train_sequences, side=side)
    vectors = trained.item_vectors
    vectors.count()
    seconds = time.perf_counter() - t0
    out = dict(scored(p, vectors, section), seconds=seconds,
               settings={k: v for k, v in trained.details.items()
                         if k.startswith(("used_", "tune_"))})
    trained.release()
    return out


def run_mllib_tutorial(p: Prepared, seed: int) -> dict[str, Any]:
    w2v = p.cfg.replace("item2vec", seed=seed, **TUTORIAL).item2vec
    t0 = time.perf_counter()
    vectors = fit_word2vec(p.liked_sequences, w2v).persist()  # the tutorial's corpus
    vectors.count()
    out = dict(scored(p, vectors, "mllib"), seconds=time.perf_counter() - t0)
    vectors.unpersist()
    return out


def gensim_params(p: Prepared, which: str) -> dict[str, Any]:
    if which == "tutorial":
        return TUTORIAL
    resolved = resolve_settings(p.cfg.item2vec, corpus_stats(p.train_sequences))
    return {k: getattr(resolved, k) for k in
            ("vector_size", "window_size", "max_iter", "min_count", "sample")}


def run_gensim(p: Prepared, sentences: list[list[str]], params: dict[str, Any], seed: int,
               hs: bool) -> dict[str, Any]:
    from gensim.models import Word2Vec  # optional bench dependency

    t0 = time.perf_counter()
    model = Word2Vec(sentences, vector_size=params["vector_size"],
                     window=params["window_size"], min_count=params["min_count"],
                     epochs=params["max_iter"], sg=1, hs=1 if hs else 0,
                     negative=0 if hs else 5, workers=2, seed=seed,
                     sample=params.get("sample") or 0)
    seconds = time.perf_counter() - t0
    rows = [(w, [float(x) for x in model.wv[w]]) for w in model.wv.index_to_key]
    vectors = p.spark.createDataFrame(rows, "item_id string, vector array<float>")
    return dict(scored(p, vectors, "gensim"), seconds=seconds, params=params)


def grid_points(spec: str) -> list[list[str]]:
    """``"item2vec.max_iter=5,15;item2vec.min_count=1,2"`` -> every combination as a list of
    overrides (the settings search behind the defaults)."""
    points: list[list[str]] = [[]]
    for part in filter(None, spec.split(";")):
        key, values = part.split("=", 1)
        points = [pt + [f"{key}={v}"] for pt in points for v in values.split(",")]
    return points


def run_grid(p: Prepared, points: list[list[str]], seeds: int) -> dict[str, Any]:
    """item2vec / deepwalk (by the keys' section) at every grid point, mean over seeds."""
    base = p.cfg
    out = {}
    for point in points:
        cfg = base
        for item in point:
            key, value = item.split("=", 1)
            section, name = key.split(".")
            field = type(getattr(cfg, section).__dict__[name])
            cfg = cfg.replace(section, **{name: field(value) if field is not bool
                                          else value == "true"})
        section = "deepwalk" if any(k.startswith(("deepwalk", "walks")) for k in point) \
            else "item2vec"
        p.cfg = cfg
        runs = [run_model(p, train_deepwalk if section == "deepwalk" else train_item2vec,
                          42 + s, section) for s in range(seeds)]
        label = " ".join(point) or "defaults"
        out[label] = {k: statistics.mean(r[k] for r in runs)
                      for k in ("hr@10", "ndcg@10", "misses", "seconds")}
        out[label]["settings"] = runs[0]["settings"]
        print(f"  {section} {label:<60} HR@10 {out[label]['hr@10']:.4f} NDCG@10 "
              f"{out[label]['ndcg@10']:.4f} misses {out[label]['misses']:.0f} "
              f"({out[label]['seconds']:.1f} s) {runs[0]['settings']}", flush=True)
    p.cfg = base
    return out


def run_dataset(name: str, methods: list[str], seeds: int, extra: list[str],
                grid: str = "", first_seed: int = 42) -> dict[str, Any]:
    path, overrides = DATASETS[name]
    p = prepare(path, overrides + extra, name=name)
    if grid:
        corpus = corpus_stats(p.train_sequences)
        print(f"\n{name}: {p.users} users, corpus {vars(corpus)}", flush=True)
        return {"corpus": vars(corpus), "grid": run_grid(p, grid_points(grid), seeds)}
    sentences: dict[str, list[list[str]]] = {}
    if any(m.startswith("gensim") for m in methods):
        # the bench's single-process baseline: sentences on the driver (never in the library);
        # at the tutorial's settings on the tutorial's corpus (liked items), else on ours
        for which, seqs in (("tutorial", p.liked_sequences), ("ours", p.train_sequences)):
            sentences[which] = [r["items"] for r in seqs.select("items").collect()]
    corpus = corpus_stats(p.train_sequences)
    out: dict[str, Any] = {"users": p.users, "catalogue": p.catalogue,
                           "corpus": vars(corpus), "methods": {}}
    print(f"\n{name}: {p.users} users, catalogue {p.catalogue}, corpus {vars(corpus)}",
          flush=True)
    for method in methods:
        runs = []
        for s in range(seeds if not method.startswith("popularity") else 1):
            seed = first_seed + s
            if method in ("popularity", "popularity_category"):
                if method == "popularity_category" and p.categories is None:
                    break  # no item categories in this data set
                m = popularity(p, [10], within_category=method == "popularity_category")
                r = dict(summary_of(m), misses=0, seconds=0)
            elif method == "item2vec":
                r = run_model(p, train_item2vec, seed, "item2vec")
            elif method == "deepwalk":
                r = run_model(p, train_deepwalk, seed, "deepwalk")
            elif method == "mllib_tutorial":
                r = run_mllib_tutorial(p, seed)
            else:
                _, kind, which = method.split("_")
                r = run_gensim(p, sentences[which], gensim_params(p, which), seed,
                               hs=kind == "hs")
            runs.append(r)
            print(f"  {method:<22} seed {seed}: HR@10 {r['hr@10']:.4f} NDCG@10 "
                  f"{r['ndcg@10']:.4f} misses {r['misses']:.0f} ({r['seconds']:.1f} s)",
                  flush=True)
        if not runs:
            continue
        summary = {k: statistics.mean(r[k] for r in runs)
                   for k in ("hr@10", "ndcg@10", "misses", "seconds", *SEGMENT_KEYS)
                   if k in runs[0]}
        summary.update({k: v for k, v in runs[0].items() if k.startswith("users_")})
        for k in ("hr@10", "ndcg@10", *SEGMENT_KEYS):
            if k in runs[0]:
                summary[f"{k}_std"] = statistics.pstdev(r[k] for r in runs)
        summary["runs"] = runs
        out["methods"][method] = summary
    for df in (p.train_sequences, p.liked_sequences, p.cases, p.train, p.ratings):
        df.unpersist()
    return out


def table(results: dict[str, Any], metric: str) -> str:
    names = list(results)
    methods = list(dict.fromkeys(m for r in results.values() for m in r["methods"]))
    lines = [f"{metric:<22}" + "".join(f"{n:>20}" for n in names)]
    for method in methods:
        cells = []
        for n in names:
            r = results[n]["methods"].get(method)
            std = r.get(metric + "_std") if r else None
            cells.append("-" if not r or metric not in r else
                         f"{r[metric]:.4f} ± {std:.4f}" if std is not None else
                         f"{r[metric]:.4f}")
        lines.append(f"{method:<22}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=42, help="seeds run from this one up")
    ap.add_argument("--set", action="append", default=[], help="config override (all sets)")
    ap.add_argument("--tag", default="", help="suffix of the result file")
    ap.add_argument("--grid", default="", help="settings search instead of the methods: "
                    "'item2vec.max_iter=5,15;item2vec.min_count=1,2'")
    args = ap.parse_args()
    methods = args.methods.split(",")
    results = {}
    tag = f"_{args.tag}" if args.tag else ""
    for name in args.datasets.split(","):
        results[name] = run_dataset(name, methods, args.seeds, args.set, args.grid,
                                    args.first_seed)
        if not args.grid:  # after every data set: a long run keeps what it measured
            write_json(f"bench/results/quality{tag}.json",
                       {"seeds": args.seeds, "overrides": args.set, "results": results})
    if args.grid:
        write_json(f"bench/results/quality_grid{tag}.json",
                   {"seeds": args.seeds, "grid": args.grid, "results": results})
        return
    print()
    print(table(results, "hr@10"))
    print()
    print(table(results, "ndcg@10"))
    for key in SEGMENT_KEYS:  # by the held-out item's popularity (mean over seeds)
        print()
        print(table(results, key))
    write_json(f"bench/results/quality{tag}.json",
               {"seeds": args.seeds, "overrides": args.set, "results": results})


if __name__ == "__main__":
    main()
