"""Catalogue scale: generate Taobao-shaped implicit logs and run `recemb run` on them.

    python bench/catalog.py generate --events 5000000 --items 722000 --out /tmp/cat/log.csv
    python bench/catalog.py run --events 5000000 --items 722000 --workdir /tmp/cat --tag 5m
    python bench/catalog.py run --events 5000000 20000000 --items 722000 3000000 --tag both
    python bench/catalog.py run --events 2000000 --set spark.driver_memory=1g   # any --set

The generated log is shaped like Taobao's UserBehavior.csv (no header,
``user_id,item_id,category_id,behavior,timestamp``):

* every item belongs to one category (category sizes head-heavy); each item has a fixed event
  count: about half the items are seen once, the rest 2 + a lognormal draw (a head of
  popular items), scaled so that the counts add up to the events asked for — so the log has
  exactly ``--items`` distinct items;
* the occurrences of a category's items are laid out along a line (each item at a random place,
  each occurrence jittered around it) and cut into sessions of ~6 events: a session browses
  one category and, within it, items that are near each other (the co-occurrence signal the
  embeddings learn, beyond the category);
* each user has 1-4 favourite categories (drawn by category size); a session of category ``c``
  goes to a user who likes ``c``; sessions start uniformly over 9 days (Taobao's
  2017-11-25..12-03), events within a session ~40 s apart;
* behaviours pv / cart / fav / buy with probabilities 0.895 / 0.055 / 0.03 / 0.02.

Generation runs in numpy by chunks of categories (about ``--chunk-events`` events each), each
chunk appended to the CSV and dropped: memory is bounded by the catalogue and users (a few
arrays of item / user size) and the chunk, never by the events. Everything is drawn from
``numpy.random.default_rng([seed, ...])``: the same arguments give the same file.

``run`` generates a log per (events, items) under ``--workdir`` (reused when present), runs
``python -m recemb_spark.cli run`` on it with the README's taobao flags and records, per run:
the stages' seconds (manifests), the peak used driver JVM heap (``jstat``) and process-tree
RSS (:class:`scale.Monitor`), the peak RSS of Spark's Python workers (the largest single worker
and the largest sum over workers at one time), HR@10 of every model and popularity (the
metrics), LSH recall (the ann stage's details), and the exit code with the last lines of the
log when the run failed. Writes ``bench/results/catalog_<tag>.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

BEHAVIOURS = np.array(["pv", "cart", "fav", "buy"])
BEHAVIOUR_P = np.array([0.895, 0.055, 0.03, 0.02])
T0 = 1511539200  # 2017-11-25 00:00 UTC, Taobao's first day
DAYS = 9
#: the README's taobao command (section "Running on real data"), after ``--input``
TAOBAO_FLAGS = [
    "--set", "input.columns=[user_id,item_id,category_id,behavior,timestamp]",
    "--set", "input.user_col=user_id", "--set", "input.item_col=item_id",
    "--set", "input.ts_col=timestamp", "--set", "input.rating_col=null",
    "--set", "input.event_col=behavior",
    "--set", "input.event_weights={pv: 1, cart: 2, fav: 2, buy: 3}",
    "--set", "input.category_col=category_id",
]


# --------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class Shape:
    """What to generate: ``events`` rows over exactly ``items`` items (``events >= items``),
    ``users`` users and ``categories`` categories."""

    events: int
    items: int
    users: int
    categories: int
    seed: int = 42
    session_mean: float = 6.0
    singleton_share: float = 0.5

    @staticmethod
    def of(events: int, items: int | None = None, users: int | None = None,
           categories: int | None = None, seed: int = 42) -> Shape:
        """Taobao's ratios where not given: 722k items and 250k users per 5M events, one
        category per ~450 items."""
        items = items or max(10, round(events * 0.1444))
        if items > events:
            raise ValueError(f"--items {items:,} exceeds --events {events:,}: every item is "
                             "seen at least once")
        users = users or max(5, round(events / 20))
        categories = categories or max(3, round(items / 450))
        return Shape(events, items, users, categories, seed)


def item_counts(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Events per item (int64, sums to ``shape.events``): ``singleton_share`` of the items
    once, the others ``2 + `` a lognormal(0, 1.6) draw scaled to the remaining events."""
    n = shape.items
    ones = min(int(round(n * shape.singleton_share)), n)
    if shape.events - ones < 2 * (n - ones):  # too few events for the tail: more singletons
        ones = max(0, 2 * n - shape.events)
    counts = np.ones(n, np.int64)
    rest = n - ones
    if rest:
        extra = shape.events - ones - 2 * rest  # to spread over the non-singletons
        # lognormal(0, 1.6): at 5M events the top item holds ~0.2% of them, the top 10 ~1%,
        # the top 1% of items ~26% (a Pareto(1.1) head put 17% in ten items at 500k events:
        # popularity unbeatable)
        x = rng.lognormal(0.0, 1.6, rest)
        share = x / x.sum() * extra
        add = np.floor(share).astype(np.int64)
        short = int(extra - add.sum())  # the rounding remainder: largest fractions first
        add[np.argsort(add - share, kind="stable")[:short]] += 1
        counts[ones:] = 2 + add
    return counts[rng.permutation(n)]


def item_categories(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Category index per item: category sizes Zipf-like (weight ``1 / rank^0.8``)."""
    w = 1.0 / np.arange(1, shape.categories + 1) ** 0.8
    cat = rng.choice(shape.categories, size=shape.items, p=w / w.sum())
    return cat.astype(np.int64)


def user_pools(shape: Shape, cat_events: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each user's 1-4 favourite categories (drawn by events), as a category -> users index:
    ``(users sorted by category, offsets)``; a category nobody drew gets every user."""
    k = rng.integers(1, 5, shape.users)
    owner = np.repeat(np.arange(shape.users), k)
    p = cat_events / cat_events.sum()
    cats = rng.choice(shape.categories, size=len(owner), p=p)
    order = np.argsort(cats, kind="stable")
    offsets = np.zeros(shape.categories + 1, np.int64)
    np.cumsum(np.bincount(cats, minlength=shape.categories), out=offsets[1:])
    return owner[order], offsets


def chunks_of(cat_events: np.ndarray, chunk_events: int) -> list[np.ndarray]:
    """Consecutive runs of category ids with about ``chunk_events`` events each."""
    out, start, acc = [], 0, 0
    for c, e in enumerate(cat_events):
        acc += int(e)
        if acc >= chunk_events:
            out.append(np.arange(start, c + 1))
            start, acc = c + 1, 0
    if start < len(cat_events):
        out.append(np.arange(start, len(cat_events)))
    return out


def generate(shape: Shape, chunk_events: int = 1_000_000) -> Iterator[pa.Table]:
    """The log as Arrow tables of about ``chunk_events`` rows (columns ``user_id, item_id,
    category_id, behavior, timestamp``: ints but the behaviour string), deterministic in
    ``shape`` and ``chunk_events``. Item ids are 1..items, category ids 1..categories, user
    ids 1..users (ids in a random order, not by popularity)."""
    rng = np.random.default_rng([shape.seed, 0])
    counts = item_counts(shape, rng)
    cat = item_categories(shape, rng)
    place = rng.random(shape.items)  # each item's place on its category's line
    item_id = rng.permutation(shape.items) + 1
    cat_events = np.bincount(cat, weights=counts, minlength=shape.categories)
    pool, pool_off = user_pools(shape, cat_events, rng)
    by_cat = np.argsort(cat, kind="stable")
    cat_off = np.zeros(shape.categories + 1, np.int64)
    np.cumsum(np.bincount(cat, minlength=shape.categories), out=cat_off[1:])
    for chunk_no, cats in enumerate(chunks_of(cat_events, chunk_events)):
        crng = np.random.default_rng([shape.seed, 1, chunk_no])
        items = by_cat[cat_off[cats[0]]:cat_off[cats[-1] + 1]]
        if len(items) == 0:
            continue
        occ = np.repeat(items, counts[items])  # one entry per event
        occ_cat = cat[occ]
        # along each category's line, occurrences jittered around their item's place (popular
        # items spread wider: they co-occur with more of their category)
        spread = np.minimum(0.01 * np.sqrt(counts[occ]), 0.5)
        key = occ_cat * 4.0 + place[occ] + np.clip(crng.normal(0.0, 1.0, len(occ)) * spread,
                                                   -1.5, 1.5)
        occ = occ[np.argsort(key, kind="stable")]
        occ_cat = cat[occ]
        # sessions: cut where a geometric length runs out or the category changes
        cut = crng.random(len(occ)) < 1.0 / shape.session_mean
        cut[0] = True
        cut[1:] |= occ_cat[1:] != occ_cat[:-1]
        session = np.cumsum(cut) - 1
        n_sessions = int(session[-1]) + 1
        s_cat = occ_cat[cut]
        lo, size = pool_off[s_cat], pool_off[s_cat + 1] - pool_off[s_cat]
        pick = (crng.random(n_sessions) * np.maximum(size, 1)).astype(np.int64)
        s_user = np.where(size > 0, pool[np.minimum(lo + pick, len(pool) - 1)],
                          crng.integers(0, shape.users, n_sessions))
        s_start = T0 + crng.integers(0, DAYS * 86400 - 3600, n_sessions)
        first = np.flatnonzero(cut)
        # seconds since the session's start: the cumulated gaps, restarted at each session
        since = np.cumsum(crng.exponential(40.0, len(occ)).astype(np.int64) + 1)
        ts = s_start[session] + since - since[first][session]
        beh = crng.choice(len(BEHAVIOURS), size=len(occ), p=BEHAVIOUR_P)
        yield pa.table({
            "user_id": pa.array(s_user[session] + 1, pa.int64()),
            "item_id": pa.array(item_id[occ], pa.int64()),
            "category_id": pa.array(cat[occ] + 1, pa.int64()),
            "behavior": pa.array(BEHAVIOURS[beh]),
            "timestamp": pa.array(ts, pa.int64()),
        })


def write_log(shape: Shape, path: str | Path, chunk_events: int = 1_000_000) -> int:
    """Write the log of ``shape`` to ``path`` as a header-less CSV (via a ``.tmp`` file,
    renamed when complete); returns the rows written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    rows = 0
    opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(tmp, "wb") as f:
        for table in generate(shape, chunk_events):
            pacsv.write_csv(table, f, opts)
            rows += table.num_rows
    os.replace(tmp, path)
    return rows


# --------------------------------------------------------------------------------------------
# the runner


def lsh_recall(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per model: the ann stage's method and item recall@k (and user recall when measured)."""
    details = manifests.get("ann", {}).get("details", {})
    return {m: {k: d.get(k) for k in ("method", "recall_at_k", "user_recall")}
            for m, d in details.items() if isinstance(d, dict) and "recall_at_k" in d}


def run_log(log: Path, name: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One ``recemb run`` on ``log`` with the taobao flags and ``--set``; the measurements."""
    from scale import RUN_DATE, monitored_run, read_manifests, summarise

    work = Path(args.workdir) / f"run_{name}"
    warehouse = work / "wh"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "recemb_spark.cli", "run", "--input", str(log), *TAOBAO_FLAGS,
           "--run-date", RUN_DATE, "--warehouse", str(warehouse)]
    for item in args.set:
        cmd += ["--set", item]
    if args.resume:
        cmd.append("--resume")
    run = monitored_run(name, cmd, work, env)
    manifests = read_manifests(warehouse)
    result = {"name": name, **run, **summarise(manifests), "lsh_recall": lsh_recall(manifests)}
    if run["rc"] != 0:
        lines = (work / "run.log").read_text(errors="replace").splitlines()
        result["log_tail"] = lines[-15:]
    print(row(result), flush=True)
    return result


def row(r: dict[str, Any]) -> str:
    s, hr, mem = r["stages"], r["hr10"], r["memory"]
    gen = r.get("generated", {})
    cells = [f"{gen.get('events', 0):,}", f"{gen.get('items', 0):,}", str(r["rc"]),
             f"{r['total_seconds']:.0f}"]
    cells += [f"{s[k]:.0f}" if s.get(k) is not None else "-"
              for k in ("tables", "item2vec", "deepwalk", "als", "evaluate", "ann")]
    cells += [f"{mem['jvm_heap_used_mb'] / 1024:.2f}", f"{mem['python_worker_rss_mb']:.0f}"]
    cells += [f"{hr.get(m, {}).get('item', float('nan')):.3f}"
              for m in ("popularity", "item2vec", "deepwalk", "als")]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| events | items | rc | total s | tables | item2vec | deepwalk | als | evaluate | ann "
          "| peak heap GiB | peak worker MiB | HR@10 pop | item2vec | deepwalk | als |\n"
          + "|---" * 16 + "|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["generate", "run"])
    ap.add_argument("--events", "--sizes", type=int, nargs="+", required=True,
                    help="events per generated log")
    ap.add_argument("--items", type=int, nargs="*", default=[],
                    help="items per log, one per --events (default 0.1444 x events)")
    ap.add_argument("--users", type=int, help="users (default events / 20)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--chunk-events", type=int, default=1_000_000)
    ap.add_argument("--out", help="generate: the CSV to write (one --events)")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "_catalog"),
                    help="run: where logs, warehouses and run logs go (logs reused)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="run: passed to every `recemb run` (repeatable)")
    ap.add_argument("--tag", help="run: results file suffix (default: the events)")
    ap.add_argument("--resume", action="store_true",
                    help="run: keep the stages a previous run of the workdir finished (recemb "
                         "run --resume; their seconds are that run's)")
    args = ap.parse_args()
    if args.items and len(args.items) != len(args.events):
        ap.error("give one --items per --events")
    shapes = [Shape.of(e, args.items[i] if args.items else None, args.users, seed=args.seed)
              for i, e in enumerate(args.events)]
    if args.command == "generate":
        if not args.out or len(shapes) != 1:
            ap.error("generate: give one --events and --out")
        t0 = time.perf_counter()
        rows = write_log(shapes[0], args.out, args.chunk_events)
        print(f"wrote {rows:,} events to {args.out} in {time.perf_counter() - t0:.0f}s")
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    for shape in shapes:
        log = (Path(args.workdir) / f"log_{shape.events}e_{shape.items}i_{shape.users}u_"
               f"s{shape.seed}" / "UserBehavior.csv")
        if not log.exists():
            print(f"generating {shape} -> {log}", flush=True)
            write_log(shape, log, args.chunk_events)
        result = run_log(log, f"{shape.events}e_{shape.items}i", args, env)
        result["generated"] = {"events": shape.events, "items": shape.items,
                               "users": shape.users, "categories": shape.categories,
                               "seed": shape.seed}
        runs.append(result)
    from common import write_json

    print(HEADER)
    for r in runs:
        print(row(r))
    tag = args.tag or "-".join(str(s.events) for s in shapes)
    write_json(str(ROOT / "bench" / "results" / f"catalog_{tag}.json"),
               {"sets": args.set, "taobao_flags": TAOBAO_FLAGS, "runs": runs})


if __name__ == "__main__":
    main()
