"""Train once vs retrain: the two evaluation protocols on the same data, side by side.

    python bench/protocols.py                                        # built-in sample
    python bench/protocols.py --input ../shared/data/ml-100k/u.data

Runs ``recemb run`` twice as a subprocess (``ann`` off), once with ``evaluate.protocol:
holdout`` (the run's own tables scored on the held-out pairs) and once with ``retrain`` (a
leave-last-out split, every model trained again), and prints HR@10 / NDCG@10 (item and user
query) per model for both, with the evaluate stage's seconds. With every eligible user held
out (``holdout_users`` auto on a small log) both protocols train on the same rows: ALS and
DeepWalk give the same figures; item2vec differs only by MLlib Word2Vec's dependence on the
order of its sentences (a table read back from Parquet vs. one computed in the stage), i.e.
by its run-to-run noise. Writes ``bench/results/protocols_<data>.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import ROOT, read_manifests, run_once  # noqa: E402


def figures(manifests: dict) -> dict:
    ev = manifests["evaluate"]
    out = {"evaluate_seconds": ev["seconds"], "users": ev["details"]["eligible_users"],
           "timings": ev["timings"], "metrics": {}}
    for m in ev["metrics"]:
        if m["k"] == 10 and m["metric"] in ("hr", "ndcg", "user_hr", "user_ndcg"):
            out["metrics"].setdefault(m["model"], {})[m["metric"]] = round(m["value"], 4)
    return out


def main() -> None:
    import os

    from common import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None)
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "_scale"))
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    name = Path(args.input.rstrip("/")).name if args.input else "builtin-sample"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = {}
    for protocol in ("holdout", "retrain"):
        opts = SimpleNamespace(workdir=args.workdir, driver_memory="4g",
                               set=["ann.enabled=false", f"evaluate.protocol={protocol}",
                                    *args.set])
        inp = ["--input", args.input] if args.input else []
        run = run_once(inp, f"protocols_{name}_{protocol}", opts, env)
        wh = Path(args.workdir) / f"run_protocols_{name}_{protocol}" / "wh"
        results[protocol] = {"command": run["command"], "total_seconds": run["total_seconds"],
                             **figures(read_manifests(wh))}
    print(f"{'model':<12}{'metric':<11}{'holdout':>9}{'retrain':>9}")
    for model, vals in results["holdout"]["metrics"].items():
        for metric, v in vals.items():
            other = results["retrain"]["metrics"].get(model, {}).get(metric, float("nan"))
            print(f"{model:<12}{metric:<11}{v:>9.4f}{other:>9.4f}")
    write_json(str(ROOT / "bench" / "results" / f"protocols_{name}.json"),
               {"data": name, "runs": results})


if __name__ == "__main__":
    main()
