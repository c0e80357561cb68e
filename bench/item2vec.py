"""Item2vec: Spark MLlib Word2Vec vs gensim Word2Vec vs popularity, same split, same protocol.

    python bench/item2vec.py                                          # built-in sample
    python bench/item2vec.py --input ../shared/data/ml-100k/u.data --seeds 3

MLlib runs with our defaults (conf/default.yaml) and with the tutorial's settings; gensim
(optional: pip install -e '.[bench]') runs skip-gram with negative sampling and with
hierarchical softmax at our default settings. Prints HR@10 / NDCG@10 / train seconds (mean
over seeds) and writes bench/results/item2vec_<data>.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import mllib_item2vec, popularity, prepare, score_vectors, write_json  # noqa: E402

TUTORIAL = {"vector_size": 10, "window_size": 5, "max_iter": 10, "min_count": 5,
            "num_partitions": 1, "step_size": 0.025}  # MLlib defaults for the rest


def run_gensim(p, sentences, params, seeds, hs):
    from gensim.models import Word2Vec  # optional bench dependency

    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        model = Word2Vec(sentences, vector_size=params["vector_size"],
                         window=params["window_size"], min_count=params["min_count"],
                         epochs=params["max_iter"], sg=1, hs=1 if hs else 0,
                         negative=0 if hs else 5, workers=2, seed=42 + seed)
        seconds = time.perf_counter() - t0
        rows = [(w, [float(x) for x in model.wv[w]]) for w in model.wv.index_to_key]
        vectors = p.spark.createDataFrame(rows, "item_id string, vector array<float>")
        m = score_vectors(p, vectors, [10], "gensim")
        runs.append({"seconds": seconds, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]})
    return {k: statistics.mean(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None, help="ratings file (default: built-in sample)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    p = prepare(args.input)
    ours = {k: getattr(p.cfg.item2vec, k) for k in
            ("vector_size", "window_size", "max_iter", "min_count", "num_partitions",
             "step_size")}
    results = {"popularity": dict(popularity(p, [10]), seconds=0.0)}
    results["mllib_ours"] = dict(mllib_item2vec(p, ours, args.seeds), params=ours)
    results["mllib_tutorial"] = dict(mllib_item2vec(p, TUTORIAL, args.seeds), params=TUTORIAL)
    try:
        import gensim  # noqa: F401
        # the bench's single-process baseline: sentences on the driver (never in the library)
        sentences = [r["items"] for r in p.train_sequences.select("items").collect()]
        results["gensim_sgns_ours"] = dict(run_gensim(p, sentences, ours, args.seeds, False),
                                           params=ours)
        results["gensim_hs_ours"] = dict(run_gensim(p, sentences, ours, args.seeds, True),
                                         params=ours)
        results["gensim_hs_tutorial"] = dict(run_gensim(p, sentences, TUTORIAL, args.seeds,
                                                        True), params=TUTORIAL)
    except ImportError:
        print("gensim not installed (pip install -e '.[bench]'): gensim rows skipped")
    print(f"\n{p.name}: {p.users} users, catalogue {p.catalogue}, {args.seeds} seeds")
    print(f"{'method':<22}{'HR@10':>8}{'NDCG@10':>9}{'train s':>9}")
    for name, r in results.items():
        print(f"{name:<22}{r['hr@10']:>8.4f}{r['ndcg@10']:>9.4f}{r['seconds']:>9.1f}")
    write_json(args.out or f"bench/results/item2vec_{p.name}.json",
               {"data": p.name, "users": p.users, "catalogue": p.catalogue, "seeds": args.seeds,
                "results": results})


if __name__ == "__main__":
    main()
