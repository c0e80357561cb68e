"""Other ways to fuse the blend's channels, on the held-out users the blend stage chose its
weights on: is the weighted reciprocal-rank fusion what limits the blend?

    python bench/blend.py --datasets ml-100k,sample,yoochoose,taobao --seeds 2   # warehouses
    python bench/fusion_variants.py --datasets ml-100k,sample,yoochoose,taobao --seeds 2

For each (data set, seed) warehouse that ``bench/blend.py`` left under ``--workdir``, this
re-runs ``recemb blend`` in a subprocess with the stage's weight search wrapped, so that the
validation cases it searched (each held-out user's candidates: their rank in every channel,
0 = not listed, and which one is the held-out item) are saved beside the warehouse. Then, on
those cases, every variant is fitted on one half of the users and scored (HR@10) on the
other, both ways, as the stage's own evaluation is cross-fitted:

* ``search``: the stage's coordinate search of the weights and rr_k (what it publishes);
* ``equal``: every channel at weight 1, rr_k 20;
* ``bagged``: the search on 5 bootstrap samples of the half, the weights averaged;
* ``softmax``: a learned score, one weight per (channel, rank bucket 1 / 2 / 3 / 4-5 /
  6-10 / 11-20 / 21-50), fitted by a softmax over each user's candidates (the held-out
  item's log-likelihood, L2 of ``10 / users``);
* ``softmax_rrf_prior``: the same, pulled (L2 ``15 / users``) towards equal-weight RRF;
* ``ceiling``: the share of users whose held-out item some channel lists at all.

Prints one row per data set (means over seeds) and writes
``bench/results/fusion_variants[_<tag>].json``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blend import SEEDED  # noqa: E402
from common import write_json  # noqa: E402
from quality import DATASETS  # noqa: E402
from scale import RUN_DATE  # noqa: E402

from recemb_spark.config import BlendConfig  # noqa: E402
from recemb_spark.neighbors import fusion  # noqa: E402
from recemb_spark.stages.blend import search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: the stage's defaults: what it searches and publishes (k, grid, rr_k values, rounds)
BLEND = BlendConfig()
K = BLEND.k
#: rank buckets of the learned score: [1], [2], [3], [4, 5], [6, 10], [11, 20], [21, 50]
EDGES = np.array([1, 2, 3, 4, 6, 11, 21, 51])
MIDDLES = np.array([1, 2, 3, 4.5, 8, 15.5, 35.5])
Cases = list[tuple[np.ndarray, int]]


def capture(out: str, cli_args: list[str]) -> int:
    """Run the CLI in this process with ``stages.blend.search`` wrapped: its first call's
    cases (every validation user) are pickled to ``out``."""
    from recemb_spark import cli
    from recemb_spark.stages import blend

    original = blend.search

    def recording(cases: Any, names: list[str], b: Any, skip: int | None = None) -> Any:
        if skip is None and not os.path.exists(out):
            with open(out, "wb") as f:
                pickle.dump({"cases": cases, "names": names}, f)
        return original(cases, names, b, skip=skip)

    blend.search = recording  # type: ignore[assignment]
    return cli.main(cli_args)


def buckets(ranks: np.ndarray) -> np.ndarray:
    """(candidates, channels x buckets) 0/1 features of the ranks (0 = not listed)."""
    b = np.searchsorted(EDGES, ranks, side="right") - 1  # -1 for 0, 7 past 50
    onehot = (b[:, :, None] == np.arange(len(MIDDLES))[None, None, :]).astype(np.float64)
    return onehot.reshape(len(ranks), -1)


def fit_softmax(cases: Cases, l2_per_user: float, prior: bool, iters: int = 300,
                lr: float = 0.05) -> np.ndarray:
    """Bucket weights maximising the held-out items' softmax log-likelihood (Adam), L2 of
    ``l2_per_user / users`` towards 0 or, with ``prior``, towards equal-weight RRF (scaled
    by the best of a few factors)."""
    data = [(buckets(r), t) for r, t in cases if t >= 0]
    if not data:
        return np.zeros(0)
    channels = cases[0][0].shape[1]
    w0 = np.zeros(data[0][0].shape[1])
    if prior:
        base = np.tile(1.0 / (20.0 + MIDDLES), channels)

        def nll(w: np.ndarray) -> float:
            total = 0.0
            for x, t in data:
                s = x @ w
                total -= s[t] - s.max() - np.log(np.exp(s - s.max()).sum())
            return total

        w0 = min((a * base for a in (5, 10, 20, 40, 80)), key=nll)
    l2 = l2_per_user / len(data)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for it in range(1, iters + 1):
        g = l2 * (w - w0) * len(data)
        for x, t in data:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            g += x.T @ p - x[t]
        g /= len(data)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= lr * (m / (1 - 0.9 ** it)) / (np.sqrt(v / (1 - 0.999 ** it)) + 1e-8)
    return w


def linear_hits(cases: Cases, w: np.ndarray) -> int:
    """Users whose held-out item the bucket weights ``w`` rank in the top K (ties: the
    candidate first in item-id order, as the fusion breaks them)."""
    hits = 0
    for r, t in cases:
        if t < 0:
            continue
        s = buckets(r) @ w
        ahead = (s > s[t]) | ((s == s[t]) & (np.arange(len(s)) < t))
        hits += int(ahead.sum() < K)
    return hits


def rrf_hits(cases: Cases, w: np.ndarray, rr_k: float) -> int:
    return sum(int(fusion.fused_hits(r, t, w[None], np.array([rr_k]), K)[0]) for r, t in cases)


def rrf_search(cases: Cases, names: list[str]) -> tuple[np.ndarray, float]:
    """The stage's own weight search (:func:`recemb_spark.stages.blend.search`, the default
    ``blend`` settings) on ``cases``: the weights in ``names`` order and rr_k."""
    found = search([(0, r, t) for r, t in cases], names, BLEND)
    return np.array([found.weights[n] for n in names]), found.rr_k


def bagged(cases: Cases, names: list[str], seed: int, n: int = 5) -> tuple[np.ndarray, float]:
    """:func:`rrf_search` on ``n`` bootstrap samples of ``cases``: the weights (each set
    scaled to a maximum of 1) averaged, the median rr_k."""
    rng = np.random.default_rng(seed)
    found = [rrf_search([cases[i] for i in rng.integers(0, len(cases), len(cases))], names)
             for _ in range(n)]
    return (np.mean([w / max(w.max(), 1e-12) for w, _ in found], axis=0),
            float(np.median([k for _, k in found])))


def variants(path: Path) -> dict[str, Any]:
    """Every variant's cross-fitted HR@K on one warehouse's cases."""
    with open(path, "rb") as f:
        saved = pickle.load(f)
    names = saved["names"]
    halves: dict[int, Cases] = {0: [], 1: []}
    for half, ranks, target in saved["cases"]:
        halves[int(half)].append((ranks, int(target)))
    users = len(halves[0]) + len(halves[1])
    channels = len(names)
    hits = {"search": 0, "equal": 0, "bagged": 0, "softmax": 0, "softmax_rrf_prior": 0}
    for h in (0, 1):
        fit_on, score_on = halves[1 - h], halves[h]
        w, rr_k = rrf_search(fit_on, names)
        hits["search"] += rrf_hits(score_on, w, rr_k)
        hits["equal"] += rrf_hits(score_on, np.ones(channels), 20.0)
        w, rr_k = bagged(fit_on, names, seed=h)
        hits["bagged"] += rrf_hits(score_on, w, rr_k)
        hits["softmax"] += linear_hits(score_on, fit_softmax(fit_on, 10.0, prior=False))
        hits["softmax_rrf_prior"] += linear_hits(score_on, fit_softmax(fit_on, 15.0,
                                                                       prior=True))
    everyone = halves[0] + halves[1]
    alone = {n: rrf_hits(everyone, np.eye(channels)[i], 20.0) / users
             for i, n in enumerate(names)}
    best = max(alone, key=lambda n: alone[n])
    return {"users": users, **{k: v / users for k, v in hits.items()},
            "ceiling": sum(1 for _, t in everyone if t >= 0) / users,
            "best_channel": best, "best": alone[best], "channels": alone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml-100k,sample,yoochoose,taobao")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "_blend"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    out: dict[str, Any] = {"runs": {}, "summary": []}
    keys = ["search", "equal", "bagged", "softmax", "softmax_rrf_prior", "ceiling", "best"]
    for name in args.datasets.split(","):
        runs = []
        for seed in range(42, 42 + args.seeds):
            warehouse = Path(args.workdir) / f"{name}_s{seed}" / "wh"
            if not warehouse.exists():
                sys.exit(f"no warehouse {warehouse}: run bench/blend.py for {name} first")
            cases = warehouse.parent / "blend_cases.pkl"
            if not cases.exists():
                path, overrides = DATASETS[name]
                cli_args = ["blend", "--run-date", RUN_DATE, "--warehouse", str(warehouse),
                            "--set", "blend.enabled=true"]
                if path is not None:
                    cli_args += ["--input", path]
                for item in [*overrides, *(f"{s}.seed={seed}" for s in SEEDED)]:
                    cli_args += ["--set", item]
                rc = subprocess.run([sys.executable, __file__, "--capture", str(cases), "--",
                                     *cli_args], cwd="/tmp").returncode
                if rc != 0 or not cases.exists():
                    sys.exit(f"recemb blend on {warehouse} failed (exit {rc})")
            runs.append({"seed": seed, **variants(cases)})
            print(name, seed, {k: round(v, 4) for k, v in runs[-1].items()
                               if isinstance(v, float)}, flush=True)
        out["runs"][name] = runs
        row = {"dataset": name, **{k: statistics.mean(r[k] for r in runs) for k in keys}}
        out["summary"].append(row)
    print(f"{'data':10} " + " ".join(f"{k:>18}" for k in keys))
    for row in out["summary"]:
        print(f"{row['dataset']:10} " + " ".join(f"{row[k]:18.4f}" for k in keys))
    suffix = f"_{args.tag}" if args.tag else ""
    write_json(str(ROOT / "bench" / "results" / f"fusion_variants{suffix}.json"), out)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--capture":
        sys.exit(capture(sys.argv[2], sys.argv[4:]))
    main()
