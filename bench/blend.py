"""The blended candidate list against every channel alone: `recemb run` with the blend stage.

    python bench/blend.py                                      # every data set, 3 seeds
    python bench/blend.py --datasets taobao,generated --seeds 1 --tag tail

Data sets: ``bench/quality.py``'s four with the README's settings (``ml-100k``, ``sample``,
``yoochoose``, ``taobao``: the taobao-head log) and ``generated``: a Taobao-shaped log of
``--generated-events`` events from ``bench/catalog.py`` (categories, a long tail, sessions;
written once under ``--workdir``). Each (data set, seed) is one
``python -m recemb_spark.cli run --set blend.enabled=true`` as a subprocess, with every
model's seed (item2vec, deepwalk, walks, als, ann, blend) set to the seed (42, 43, ...); the
held-out pairs stay the same. From the warehouse this script reads the blend stage's metrics
(HR@10 / NDCG@10 of ``blend``, of ``blend_equal`` — every channel at weight 1 — and of each
channel alone, ``blend_<channel>``, all on the same held-out pairs) and its manifest (the
weights and rr_k chosen on the held-out users, the evaluation cross-fitted by halves; users
listed and short of ``blend.k``; the stage's seconds against the run's) and the run's memory
peaks (driver JVM heap and RSS, largest Python worker).

Prints one row per data set (means over seeds): the blend, the best single channel (and which),
popularity, and the two ratios the targets are stated in — blend / best channel (>= 1.1) and
blend / popularity (>= 1). Writes ``bench/results/blend[_<tag>].json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog import Shape, write_log  # noqa: E402
from common import write_json  # noqa: E402
from quality import DATASETS  # noqa: E402
from scale import RUN_DATE, monitored_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDED = ("item2vec", "deepwalk", "walks", "als", "ann", "blend")
#: the blend stage's own lists: not channels
NOT_CHANNELS = ("blend", "blend_equal")


def blend_metrics(warehouse: Path) -> dict[str, dict[str, float]]:
    """``list -> {"hr@10": .., "ndcg@10": .., "users": ..}`` from the blend stage's metrics."""
    table = pq.read_table(warehouse / "metrics" / f"dt={RUN_DATE}" / "stage=blend")
    out: dict[str, dict[str, float]] = {}
    for r in table.to_pylist():
        key = f"{r['metric']}@{r['k']}" if r["k"] else r["metric"]
        out.setdefault(r["model"], {})[key] = r["value"]
    return out


def summary(metrics: dict[str, dict[str, float]], k: int = 10) -> dict[str, Any]:
    """The blend's HR@k, the best channel's (name and value), popularity's, and the ratios."""
    hr = {m: v[f"hr@{k}"] for m, v in metrics.items() if f"hr@{k}" in v}
    channels = {m[len("blend_"):]: v for m, v in hr.items() if m not in NOT_CHANNELS}
    best = max(channels, key=lambda c: channels[c])
    popular = channels.get("popular", float("nan"))
    return {"blend": hr["blend"], "blend_equal": hr.get("blend_equal"), "best_channel": best,
            "best": channels[best], "popular": popular,
            "vs_best": hr["blend"] / channels[best] if channels[best] else float("inf"),
            "vs_popular": hr["blend"] / popular if popular else float("inf"),
            "channels": channels}


def run_one(name: str, seed: int, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One `recemb run` of data set ``name`` with the model seeds at ``seed``; its figures."""
    work = Path(args.workdir) / f"{name}_s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    warehouse = work / "wh"
    path, overrides = dataset(name, args)
    cmd = [sys.executable, "-m", "recemb_spark.cli", "run", "--run-date", RUN_DATE,
           "--warehouse", str(warehouse), "--set", "blend.enabled=true"]
    if path is not None:
        cmd += ["--input", path]
    for item in [*overrides, *(f"{s}.seed={seed}" for s in SEEDED), *args.set]:
        cmd += ["--set", item]
    run = monitored_run(f"{name} seed {seed}", cmd, work, env)
    if run["rc"] != 0:
        tail = (work / "run.log").read_text(errors="replace").splitlines()[-10:]
        return {"dataset": name, "seed": seed, "rc": run["rc"], "log_tail": tail}
    manifests = warehouse / "_manifests" / f"dt={RUN_DATE}"
    blend = json.loads((manifests / "blend.json").read_text())
    total = json.loads((manifests / "run.json").read_text()).get("seconds")
    d = blend.get("details", {})
    return {"dataset": name, "seed": seed, "rc": 0, **summary(blend_metrics(warehouse)),
            "weights": d.get("weights"), "rr_k": d.get("rr_k"),
            "validation_hr": d.get("validation_hr"), "users": d.get("users"),
            "users_listed": d.get("users_listed"), "users_short": d.get("users_short"),
            "blend_seconds": blend.get("seconds"), "run_seconds": total,
            "memory": run["memory"]}


def dataset(name: str, args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(input path or None for the built-in sample, config overrides) of a data set; the
    generated log is written on first use."""
    if name != "generated":
        return DATASETS[name]
    shape = Shape.of(args.generated_events)
    log = Path(args.workdir) / f"log_{shape.events}e_{shape.items}i" / "UserBehavior.csv"
    if not log.exists():
        print(f"generating {shape} -> {log}", flush=True)
        write_log(shape, log)
    return str(log), DATASETS["taobao"][1]


def mean_row(runs: list[dict]) -> dict[str, Any]:
    """Means over the seeds that finished (and their standard deviations)."""
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {"dataset": runs[0]["dataset"], "seeds_ok": 0}
    out: dict[str, Any] = {"dataset": ok[0]["dataset"], "seeds_ok": len(ok)}
    for key in ("blend", "best", "popular", "vs_best", "vs_popular"):
        vals = [r[key] for r in ok]
        out[key] = statistics.mean(vals)
        out[f"{key}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    out["best_channel"] = sorted({r["best_channel"] for r in ok})
    out["covered"] = all(r["users_short"] == 0 and r["users_listed"] == r["users"] for r in ok)
    out["blend_share"] = statistics.mean(r["blend_seconds"] / r["run_seconds"] for r in ok
                                         if r["run_seconds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="ml-100k,sample,yoochoose,taobao,generated")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 42, 43, ... per data set")
    ap.add_argument("--generated-events", type=int, default=500_000,
                    help="events of the generated Taobao-shaped log (items and users by "
                         "Taobao's ratios: 72k items and 25k users at 500k)")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "_blend"),
                    help="warehouses, run logs and the generated log")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="passed to every run (repeatable)")
    ap.add_argument("--tag", help="results file suffix")
    args = ap.parse_args()
    names = args.datasets.split(",")
    unknown = [n for n in names if n != "generated" and n not in DATASETS]
    if unknown:
        ap.error(f"unknown data sets {unknown}; known: {[*DATASETS, 'generated']}")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = {n: [run_one(n, 42 + s, args, env) for s in range(args.seeds)] for n in names}
    rows = [mean_row(r) for r in runs.values()]
    print("| data | blend HR@10 | best channel | its HR@10 | popularity | blend / best | "
          "blend / popularity | every user listed | blend share of the run |")
    print("|---" * 9 + "|")
    for r in rows:
        if not r["seeds_ok"]:
            print(f"| {r['dataset']} | failed |" + " |" * 7)
            continue
        print(f"| {r['dataset']} | {r['blend']:.4f} ± {r['blend_sd']:.4f} | "
              f"{', '.join(r['best_channel'])} | {r['best']:.4f} | {r['popular']:.4f} | "
              f"{r['vs_best']:.3f} | {r['vs_popular']:.2f} | {r['covered']} | "
              f"{r['blend_share']:.0%} |")
    path = ROOT / "bench" / "results" / f"blend{'_' + args.tag if args.tag else ''}.json"
    write_json(str(path), {"sets": args.set, "seeds": args.seeds, "summary": rows,
                           "runs": runs})


if __name__ == "__main__":
    main()
