"""Random-walk throughput: Spark broadcast / join strategies, node2vec, a single-process
driver loop (the tutorial's approach, written here only) and pecanpy.

    python bench/walks.py --graph sample --repeat 3
    python bench/walks.py --graph powerlaw --nodes 100000 --edges 1000000 --scales 1,4,16 --repeat 3

Steps/s = edges traversed / wall seconds of the walk job (building and broadcasting the
alias tables included; indexing the graph reported separately). Walk length 20.
Writes bench/results/walks_<graph>.json.
"""
from __future__ import annotations

import argparse
import bisect
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402

from recemb_spark.config import load_config  # noqa: E402
from recemb_spark.interactions import build_sequences, clean_ratings  # noqa: E402
from recemb_spark.io import sample  # noqa: E402
from recemb_spark.logs import setup_logging  # noqa: E402
from recemb_spark.models.graph import build_item_graph, transition_probabilities  # noqa: E402
from recemb_spark.models.walks import generate_walks, index_graph, walk_stats  # noqa: E402
from recemb_spark.session import build_session  # noqa: E402


def powerlaw_edges(n_nodes: int, n_edges: int, seed: int = 0):
    """A directed power-law graph: lognormal out-degrees, Zipf-popular destinations."""
    rng = np.random.default_rng(seed)
    deg = rng.lognormal(0, 1.0, n_nodes)
    deg = np.maximum(1, np.round(deg / deg.sum() * n_edges)).astype(np.int64)
    src = np.repeat(np.arange(n_nodes), deg)
    pop = 1.0 / (rng.permutation(n_nodes) + 1.0) ** 0.8
    dst = np.searchsorted(np.cumsum(pop), rng.random(len(src)) * pop.sum())
    dst = np.minimum(dst, n_nodes - 1)
    keep = src != dst
    pairs = np.unique(np.stack([src[keep], dst[keep]], axis=1), axis=0)
    weight = rng.integers(1, 6, len(pairs)).astype(float)
    return pairs[:, 0], pairs[:, 1], weight


def driver_loop(src, dst, weight, n_walks, length, seed=0):
    """The tutorial's way: transition lists in a dict on one process, one step at a time
    (with bisect on cumulative weights rather than the tutorial's linear scan)."""
    table: dict[int, tuple[list[int], list[float]]] = {}
    order = np.argsort(src, kind="stable")
    for s, d, w in zip(src[order], dst[order], weight[order], strict=True):
        nbrs, cum = table.setdefault(int(s), ([], []))
        nbrs.append(int(d))
        cum.append((cum[-1] if cum else 0.0) + float(w))
    nodes = list(table)
    rnd = random.Random(seed)
    t0, steps = time.perf_counter(), 0
    for _ in range(n_walks):
        cur = rnd.choice(nodes)
        for _ in range(length - 1):
            entry = table.get(cur)
            if entry is None:
                break
            nbrs, cum = entry
            cur = nbrs[bisect.bisect_right(cum, rnd.random() * cum[-1])]
            steps += 1
    return steps, time.perf_counter() - t0


def pecanpy_walks(src, dst, weight, n_nodes, walks_per_node, length, p=1.0, q=1.0):
    try:
        from pecanpy import pecanpy
    except ImportError:
        return None
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.edg")
        np.savetxt(path, np.stack([src, dst, weight], axis=1), fmt=["%d", "%d", "%.1f"],
                   delimiter="\t")
        t0 = time.perf_counter()
        g = pecanpy.SparseOTF(p=p, q=q, workers=2, verbose=False, extend=False)
        g.read_edg(path, weighted=True, directed=True)
        walks = g.simulate_walks(num_walks=walks_per_node, walk_length=length - 1)
        seconds = time.perf_counter() - t0
    steps = sum(len(w) - 1 for w in walks)
    return steps, seconds


def spark_walks(spark, g, cfg, repeat=1, **values):
    """Walk statistics and the median wall seconds of ``repeat`` runs (all runs listed)."""
    wcfg = cfg.replace("walks", **values).walks
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run = generate_walks(spark, g, wcfg)
        stats = walk_stats(run.blocks)
        runs.append(round(time.perf_counter() - t0, 2))
    return stats, float(np.median(runs)), runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default="sample", choices=["sample", "powerlaw"])
    ap.add_argument("--nodes", type=int, default=100000)
    ap.add_argument("--edges", type=int, default=1000000)
    ap.add_argument("--scales", default="1,4,16", help="walks per node for each run")
    ap.add_argument("--join-max-scale", type=int, default=4)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1,
                    help="Spark runs per point; the median is reported (this VM's timings "
                         "vary by up to 2x between runs)")
    args = ap.parse_args()
    setup_logging()
    cfg = load_config(overrides=["spark.log_level=ERROR", f"walks.walk_length={args.length}"])
    spark = build_session(cfg.spark, "recemb-bench-walks")
    t0 = time.perf_counter()
    if args.graph == "sample":
        ratings, _ = sample.generate(spark, cfg.sample)
        graph = build_item_graph(build_sequences(clean_ratings(ratings), cfg.sequences),
                                 cfg.graph).persist()
        rows = graph.select("src", "dst", "weight").collect()
        ids = {v: i for i, v in enumerate(sorted({r[0] for r in rows} | {r[1] for r in rows}))}
        src = np.array([ids[r[0]] for r in rows])
        dst = np.array([ids[r[1]] for r in rows])
        weight = np.array([r[2] for r in rows])
    else:
        src, dst, weight = powerlaw_edges(args.nodes, args.edges)
        df = spark.createDataFrame(
            [(f"n{s}", f"n{d}", float(w)) for s, d, w in zip(src, dst, weight, strict=True)],
            "src string, dst string, weight double")
        graph = transition_probabilities(df).persist()
    g = index_graph(graph)
    index_seconds = time.perf_counter() - t0
    print(f"graph {args.graph}: {g.n_nodes} nodes, {g.n_edges} edges "
          f"(built and indexed in {index_seconds:.1f}s)", flush=True)
    results = []

    def report(name, steps, seconds, **extra):
        row = {"method": name, "steps": steps, "seconds": round(seconds, 2),
               "steps_per_s": round(steps / seconds), **extra}
        results.append(row)
        print(f"{name:<34}{steps:>12,d} steps {seconds:8.1f}s {row['steps_per_s']:>12,d} "
              f"steps/s", flush=True)

    n_walks = min(g.n_nodes * 4, 200000)
    steps, seconds = driver_loop(src, dst, weight, n_walks, args.length)
    report(f"driver loop (1 process, {n_walks} walks)", steps, seconds)
    for scale in map(int, args.scales.split(",")):
        stats, seconds, runs = spark_walks(spark, g, cfg, args.repeat, strategy="broadcast",
                                           walks_per_node=scale)
        report(f"spark broadcast x{scale}", stats["steps"], seconds, walks_per_node=scale,
               runs=runs)
        if scale <= args.join_max_scale:
            stats, seconds, runs = spark_walks(spark, g, cfg, 1, strategy="join",
                                               walks_per_node=scale)
            report(f"spark join x{scale}", stats["steps"], seconds, walks_per_node=scale,
                   runs=runs)
    scale = int(args.scales.split(",")[min(1, len(args.scales.split(",")) - 1)])
    stats, seconds, runs = spark_walks(spark, g, cfg, args.repeat, strategy="broadcast",
                                       walks_per_node=scale, p=0.5, q=2.0)
    report(f"spark node2vec p=0.5 q=2 x{scale}", stats["steps"], seconds, walks_per_node=scale,
           runs=runs)
    pec = pecanpy_walks(src, dst, weight, g.n_nodes, scale, args.length)
    if pec:
        report(f"pecanpy SparseOTF x{scale} (full call)", pec[0], pec[1], walks_per_node=scale)
    else:
        print("pecanpy not installed (pip install -e '.[bench]'): skipped")
    write_json(f"bench/results/walks_{args.graph}.json",
               {"graph": args.graph, "nodes": g.n_nodes, "edges": g.n_edges,
                "walk_length": args.length, "index_seconds": index_seconds,
                "results": results})


if __name__ == "__main__":
    main()
