"""End-to-end scale: `recemb run` at several log sizes, per-stage seconds, memory and quality.

    python bench/scale.py --sizes 1500000 6000000 25000000          # built-in generator
    python bench/scale.py --input ~/data/ml-25m                       # one run on a file
    python bench/scale.py --sizes 200000 --set walks.walks_per_node=5 # any --set passes through

For each size the built-in generator (``recemb sample --out``) writes a log shaped like
MovieLens-25M scaled down: ``size / --ratings-per-user`` users (154: 25M ratings over 162k
users) and ``--items-at-25m x (size / 25M) ** --item-exponent`` items (59,047 at 25M). Logs are
kept under ``--workdir`` and reused. Then ``python -m recemb_spark.cli run`` runs as a
subprocess (default config + ``--set``), with nothing else of ours in the process, and this
script records:

* ``total_seconds`` (wall time of the subprocess) and each stage's seconds and step timings
  (from the manifests), with ``ratings`` (rows of the rating table);
* the peak RSS of the whole process tree, of the Python driver and of the JVM (``/proc``,
  polled every 0.5 s), the peak used JVM heap (``jstat -gc`` every 2 s: S0U+S1U+EU+OU) and the
  JVM's GC seconds (GCT);
* per Word2Vec fit (item2vec, deepwalk): tokens, seconds and training tokens/s
  (``tokens x epochs / seconds``) from the manifest details;
* HR@10 (item and user query) per model, the protocol and the number of evaluated users.

Writes ``bench/results/scale_<tag>.json`` (``--tag``, default the sizes or the input name)
and prints a Markdown table (one row per size). The run's log is kept beside its warehouse.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

RUN_DATE = "2026-01-01"
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------
# memory of a process tree


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def _is_jvm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return False
    return bool(cmd) and cmd[0].endswith(b"java") and b"org.apache.spark.deploy.SparkSubmit" in cmd


def _jstat_heap(pid: int) -> tuple[float, float, float] | None:
    """(used, capacity) heap in MiB and the JVM's total GC seconds so far (``GCT``) from
    ``jstat -gc``, or None."""
    try:
        out = subprocess.run(["jstat", "-gc", str(pid)], capture_output=True, text=True,
                             timeout=20).stdout.split("\n")
        head, vals = out[0].split(), [float(v) for v in out[1].split()]
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
        return None
    g = dict(zip(head, vals, strict=False))
    used = sum(g.get(k, 0.0) for k in ("S0U", "S1U", "EU", "OU"))
    cap = sum(g.get(k, 0.0) for k in ("S0C", "S1C", "EC", "OC"))
    return used / 1024, cap / 1024, g.get("GCT", 0.0)


def _is_worker(pid: int) -> bool:
    """True for one of Spark's Python workers (``pyspark.daemon`` / ``pyspark.worker``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd


class Monitor:
    """Polls the memory of a process tree until stopped; keeps the peaks (MiB): the tree, the
    driver's Python, the JVM (RSS and, by jstat, heap and GC time), and Spark's Python workers
    (the largest single worker, and the largest sum at one time — forked workers share pages
    with the daemon, so the sum overcounts)."""

    def __init__(self, root: int):
        self.root = root
        self.peak = {"tree_rss_mb": 0.0, "driver_python_rss_mb": 0.0, "jvm_rss_mb": 0.0,
                     "jvm_heap_used_mb": 0.0, "jvm_heap_capacity_mb": 0.0,
                     "jvm_gc_seconds": 0.0,  # the last GCT seen: GC time up to ~2 s before exit
                     "python_worker_rss_mb": 0.0, "python_workers_sum_rss_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.jstat_ok = False

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peak.items()}

    def _loop(self) -> None:
        last_jstat = 0.0
        while not self._stop.wait(0.5):
            pids = _tree(self.root)
            rss = {p: _rss(p) for p in pids}
            jvms = [p for p in pids if _is_jvm(p)]
            self._max("tree_rss_mb", sum(rss.values()) / 2**20)
            self._max("driver_python_rss_mb", rss.get(self.root, 0) / 2**20)
            workers = [rss[p] / 2**20 for p in pids if _is_worker(p)]
            if workers:
                self._max("python_worker_rss_mb", max(workers))
                self._max("python_workers_sum_rss_mb", sum(workers))
            if jvms:
                self._max("jvm_rss_mb", sum(rss.get(p, 0) for p in jvms) / 2**20)
                if time.monotonic() - last_jstat >= 2.0:
                    last_jstat = time.monotonic()
                    heap = _jstat_heap(jvms[0])
                    if heap:
                        self.jstat_ok = True
                        self._max("jvm_heap_used_mb", heap[0])
                        self._max("jvm_heap_capacity_mb", heap[1])
                        self._max("jvm_gc_seconds", heap[2])

    def _max(self, key: str, value: float) -> None:
        self.peak[key] = max(self.peak[key], value)


# --------------------------------------------------------------------------------------------
# logs and runs


def shape(size: int, args: argparse.Namespace) -> tuple[int, int]:
    """(users, items) of a generated log of ``size`` ratings."""
    users = max(10, round(size / args.ratings_per_user))
    items = max(50, round(args.items_at_25m * (size / 25_000_000) ** args.item_exponent))
    return users, items


def make_log(size: int, args: argparse.Namespace, env: dict[str, str]) -> Path:
    users, items = shape(size, args)
    out = Path(args.workdir) / f"log_{size}_{users}u_{items}i"
    if (out / "ratings.parquet" / "_SUCCESS").exists():
        return out
    cmd = [sys.executable, "-m", "recemb_spark.cli", "sample", "--out", str(out), "-q",
           "--set", f"sample.n_ratings={size}", "--set", f"sample.n_users={users}",
           "--set", f"sample.n_items={items}", "--set", f"spark.driver_memory={args.driver_memory}"]
    print(f"generating {size:,} ratings ({users:,} users x {items:,} items) -> {out}", flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return out


def read_manifests(warehouse: Path) -> dict[str, dict[str, Any]]:
    """The run date's stage manifests (and ``run``), only the stages the last ``recemb run``
    ran when its summary is there: a manifest left by an earlier single-stage command (e.g.
    ``recemb blend`` on the same warehouse) is not this run's."""
    folder = warehouse / "_manifests" / f"dt={RUN_DATE}"
    found = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    ran = {s.get("stage") for s in found.get("run", {}).get("stages", [])}
    if not ran:
        return found
    return {name: m for name, m in found.items() if name == "run" or name in ran}


def summarise(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Stage seconds, Word2Vec throughput, ALS's confidence scale and HR@10 from a run's
    manifests."""
    out: dict[str, Any] = {
        "stages": {s: m.get("seconds") for s, m in manifests.items()},
        "status": {s: m.get("status") for s, m in manifests.items()},
        "stage_timings": {s: m.get("timings", {}) for s, m in manifests.items()},
    }
    tables = manifests.get("tables", {})
    out["ratings"] = tables.get("rows", {}).get("ratings")
    out["holdout_users"] = tables.get("rows", {}).get("holdout")
    w2v = {}
    for stage in ("item2vec", "deepwalk"):
        d = manifests.get(stage, {}).get("details", {})
        if "word2vec_tokens" in d:
            w2v[stage] = {k: d.get(f"word2vec_{k}") for k in
                          ("tokens", "vocabulary", "seconds", "tokens_per_s",
                           "driver_bytes_estimate")}
            w2v[stage]["epochs"] = d.get("used_max_iter",
                                         manifests[stage]["parameters"][stage]["max_iter"])
    out["word2vec"] = w2v
    out["als_alpha"] = manifests.get("als", {}).get("details", {}).get("alpha")
    out["als_iterations"] = manifests.get("als", {}).get("details", {}).get("iterations")
    out["als_blas"] = manifests.get("als", {}).get("details", {}).get("blas")
    ev = manifests.get("evaluate", {})
    hr: dict[str, dict[str, float]] = {}
    for m in ev.get("metrics", []):
        if m["k"] == 10 and m["metric"] in ("hr", "user_hr"):
            hr.setdefault(m["model"], {})["user" if m["metric"] == "user_hr" else "item"] = \
                round(m["value"], 4)
    out["hr10"] = hr
    out["evaluate"] = {k: ev.get("details", {}).get(k) for k in ("protocol", "eligible_users")}
    return out


def monitored_run(name: str, cmd: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` (a ``recemb`` command) with its output in ``work/run.log`` while
    :class:`Monitor` samples its process tree: ``command``, ``rc``, ``total_seconds``,
    ``memory`` (the peaks), ``jstat`` (whether jstat answered) and ``log``."""
    print(f"running {name}: {' '.join(cmd)}", flush=True)
    with open(work / "run.log", "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        monitor = Monitor(proc.pid).start()
        rc = proc.wait()
        total = time.perf_counter() - t0
        peaks = monitor.stop()
    return {"command": " ".join(cmd), "rc": rc, "total_seconds": round(total, 1),
            "memory": peaks, "jstat": monitor.jstat_ok, "log": str(work / "run.log")}


def run_once(input_args: list[str], name: str, args: argparse.Namespace,
             env: dict[str, str]) -> dict[str, Any]:
    work = Path(args.workdir) / f"run_{name}"
    warehouse = work / "wh"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "recemb_spark.cli", "run", *input_args, "--run-date", RUN_DATE,
           "--warehouse", str(warehouse), "--set", f"spark.driver_memory={args.driver_memory}"]
    for item in args.set:
        cmd += ["--set", item]
    result = {"name": name, **monitored_run(name, cmd, work, env),
              **summarise(read_manifests(warehouse))}
    print(row(result), flush=True)
    return result


def row(r: dict[str, Any]) -> str:
    s = r["stages"]
    hr = r["hr10"]
    cells = [f"{r.get('ratings') or 0:,}", f"{r['total_seconds']:.0f}"]
    cells += [f"{s.get(k):.0f}" if s.get(k) is not None else "-"
              for k in ("tables", "item2vec", "deepwalk", "als", "evaluate", "ann")]
    cells += [f"{r['memory']['tree_rss_mb'] / 1024:.2f}",
              f"{r['memory']['jvm_heap_used_mb'] / 1024:.2f}"]
    cells += [f"{r['word2vec'].get(m, {}).get('tokens_per_s') or 0:,.0f}"
              for m in ("item2vec", "deepwalk")]
    cells += [f"{hr.get(m, {}).get('item', float('nan')):.3f}"
              for m in ("popularity", "item2vec", "deepwalk", "als")]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| ratings | total s | tables | item2vec | deepwalk | als | evaluate | ann "
          "| peak RSS GiB | peak heap GiB | item2vec tok/s | deepwalk tok/s "
          "| HR@10 pop | item2vec | deepwalk | als |\n" + "|---" * 16 + "|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[],
                    help="ratings per generated log (ignored with --input)")
    ap.add_argument("--input", help="run once on this file or folder instead of generating")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="passed to every `recemb run` (repeatable)")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "_scale"),
                    help="where logs, warehouses and run logs go (reused)")
    ap.add_argument("--driver-memory", default="4g", help="spark.driver_memory of every run")
    ap.add_argument("--ratings-per-user", type=float, default=154.0)
    ap.add_argument("--items-at-25m", type=int, default=59_047)
    ap.add_argument("--item-exponent", type=float, default=0.5)
    ap.add_argument("--tag", help="results file suffix (default: sizes or the input's name)")
    args = ap.parse_args()
    if not args.input and not args.sizes:
        ap.error("give --sizes N [N ...] or --input PATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    if args.input:
        runs.append(run_once(["--input", args.input], Path(args.input.rstrip("/")).name,
                             args, env))
        tag = args.tag or Path(args.input.rstrip("/")).name
    else:
        for size in args.sizes:
            log = make_log(size, args, env)
            users, items = shape(size, args)
            inp = ["--input", str(log / "ratings.parquet"), "--format", "parquet",
                   "--set", "input.user_col=user_id", "--set", "input.item_col=item_id",
                   "--set", "input.ts_col=ts"]
            result = run_once(inp, f"{size}", args, env)
            result["generated"] = {"ratings": size, "users": users, "items": items}
            runs.append(result)
        tag = args.tag or "-".join(str(s) for s in args.sizes)
    from common import write_json

    print(HEADER)
    for r in runs:
        print(row(r))
    write_json(str(ROOT / "bench" / "results" / f"scale_{tag}.json"),
               {"run_date": RUN_DATE, "sets": args.set, "driver_memory": args.driver_memory,
                "runs": runs})


if __name__ == "__main__":
    main()
