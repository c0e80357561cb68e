"""What the run report shows, read from the warehouse as small pandas frames and dicts.

Every function here reads one date's tables or manifests and returns something bounded by the
number of models, metrics, stages, reject reasons or configured sample sizes — never a table
proportional to the data: aggregations and samples run on the executors, and only their
(small) results reach the driver. A function whose input is missing returns ``None`` (or an
empty list) and the page says so in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ..config import Config
from ..evaluation.scoring import is_baseline
from ..ids import natural_key
from ..io.warehouse import Warehouse, join_path
from ..neighbors.topk import unit_rows

#: evaluation metric names (without the ``user_`` prefix of user-vector queries)
EVAL_METRICS = ("hr", "ndcg", "coverage")
#: metrics of the evaluate stage that are counts, shown in the evaluation table as they are
EVAL_COUNTS = ("users", "query_missing", "heldout_missing")
#: stages whose metrics score the same held-out pairs: the evaluate stage's models and the
#: blend stage's candidate lists (query ``list``)
EVAL_STAGES = ("evaluate", "blend")
#: label of the colour class for items whose genre is not among the most frequent ones
OTHER = "other"


# --------------------------------------------------------------------------------------------
# metrics


def metrics_for_date(wh: Warehouse, run_date: str) -> pd.DataFrame | None:
    """The metrics table of one date as ``(stage, model, metric, k, value)``, or ``None``.

    Small by construction (models x metrics x ks rows), so it is collected as a whole.
    """
    path = wh.partition_path("metrics", run_date)
    if not wh.fs.exists(path):
        return None
    df = wh.spark.read.parquet(path)
    if "stage" not in df.columns:
        df = df.withColumn("stage", F.lit(""))
    rows = df.select(F.col("stage").cast("string"), "model", "metric", "k", "value").collect()
    return pd.DataFrame([r.asDict() for r in rows],
                        columns=["stage", "model", "metric", "k", "value"])


def split_query(metric: str) -> tuple[str, str]:
    """``("user", "hr")`` for ``user_hr``; ``("item", "hr")`` for ``hr``."""
    return ("user", metric[len("user_"):]) if metric.startswith("user_") else ("item", metric)


def model_order(key: tuple[str, str]) -> tuple[bool, str, bool]:
    """Sort key of ``(model, query)``: the popularity baselines first, then models by name,
    item query before user query."""
    return not is_baseline(key[0]), key[0], key[1] == "user"


def evaluation_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, query) of the evaluate stage, and per candidate list of the blend
    stage (query ``list``): users, HR/NDCG at every k, coverage, misses (query + held-out
    items without a vector).

    Columns: ``model, query, users, hr@K..., ndcg@K..., coverage@K, misses``; popularity's
    query is ``-`` (it has none). Rows in :func:`model_order`.
    """
    ev = metrics[metrics["stage"].isin(EVAL_STAGES)]
    if ev.empty:
        return pd.DataFrame(columns=["model", "query"])
    ks = sorted({int(k) for k, m in zip(ev["k"], ev["metric"], strict=False)
                 if split_query(m)[1] in ("hr", "ndcg")})
    cov_ks = sorted({int(k) for k, m in zip(ev["k"], ev["metric"], strict=False)
                     if split_query(m)[1] == "coverage"})
    users: dict[str, float] = {r.model: r.value for r in ev.itertuples() if r.metric == "users"}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ev.itertuples():
        query, name = split_query(r.metric)
        if name == "users":
            continue
        if is_baseline(r.model):
            query = "-"
        elif r.stage == "blend":
            query = "list"
        row = rows.setdefault((r.model, query), {"model": r.model, "query": query,
                                                  "users": users.get(r.model), "misses": 0})
        if name in ("query_missing", "heldout_missing"):
            row["misses"] += int(r.value)
        elif name in EVAL_METRICS:
            row[f"{name}@{int(r.k)}"] = float(r.value)
    cols = (["model", "query", "users"] + [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]
            + [f"coverage@{k}" for k in cov_ks] + ["misses"])
    order = sorted(rows, key=model_order)
    table = pd.DataFrame([rows[key] for key in order])
    return table.reindex(columns=cols)


def other_metrics(metrics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The metrics of every stage but evaluate and blend, one table per stage: a row per model
    (by name), a column per ``metric@k`` (``metric`` alone when k is 0; by name). Stages in order of
    appearance."""
    out: dict[str, pd.DataFrame] = {}
    rest = metrics[~metrics["stage"].isin(EVAL_STAGES)]
    for stage in dict.fromkeys(rest["stage"]):
        part = rest[rest["stage"] == stage]
        names = [f"{m}@{int(k)}" if int(k) else m
                 for m, k in zip(part["metric"], part["k"], strict=False)]
        wide = (part.assign(name=names)
                .pivot_table(index="model", columns="name", values="value", aggfunc="first"))
        wide.columns.name = None
        out[stage] = wide.reset_index()
    return out


def headline_k(metrics: pd.DataFrame, preferred: int = 10) -> int | None:
    """The k of the headline figures: ``preferred`` when the evaluation has it, else its
    smallest k; ``None`` without evaluation metrics."""
    ks = {int(k) for m, k, s in zip(metrics["metric"], metrics["k"], metrics["stage"], strict=False)
          if s == "evaluate" and split_query(m)[1] == "hr"}
    if not ks:
        return None
    return preferred if preferred in ks else min(ks)


def headline(metrics: pd.DataFrame, k: int) -> pd.DataFrame:
    """``(model, query, hr, ndcg)`` at ``k`` for every model and query, from the evaluation."""
    table = evaluation_table(metrics)
    if table.empty or f"hr@{k}" not in table:
        return pd.DataFrame(columns=["model", "query", "hr", "ndcg"])
    return (table[["model", "query", f"hr@{k}", f"ndcg@{k}"]]
            .rename(columns={f"hr@{k}": "hr", f"ndcg@{k}": "ndcg"})
            .reset_index(drop=True))


def hr_trend(wh: Warehouse, run_date: str, k: int) -> pd.DataFrame | None:
    """HR@k of every model and query on every date up to ``run_date`` that has evaluation
    metrics: ``(dt, model, query, value)`` sorted by date. ``None`` without a metrics table.

    Filtered on the executors; the result has dates x models x 2 rows.
    """
    root = join_path(wh.root, "metrics")
    if not wh.fs.exists(root):
        return None
    df = wh.read_table("metrics")
    if "stage" not in df.columns:
        return None
    rows = (df.filter((F.col("stage").cast("string") == "evaluate")
                      & F.col("metric").isin("hr", "user_hr") & (F.col("k") == k)
                      & (F.col("dt").cast("string") <= run_date))
            .select(F.col("dt").cast("string").alias("dt"), "model", "metric", "value")
            .collect())
    out = pd.DataFrame(
        [{"dt": r["dt"], "model": r["model"],
          "query": "-" if is_baseline(r["model"]) else split_query(r["metric"])[0],
          "value": float(r["value"])} for r in rows],
        columns=["dt", "model", "query", "value"])
    return out.sort_values(["dt", "model", "query"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# embeddings


@dataclass
class Projection:
    """A 2-D PCA projection of one model's sampled item vectors.

    ``coords`` (n x 2), ``labels`` (genre or popularity bucket per point), ``explained`` the
    variance share of the two components, ``items`` how many items the model has in total,
    ``colour_by`` what the labels are (``genre`` or ``popularity``).
    """

    model: str
    coords: np.ndarray
    labels: list[str]
    explained: tuple[float, float]
    items: int
    colour_by: str


def sample_items(vectors: DataFrame, n: int, seed: int) -> DataFrame:
    """``n`` items of ``vectors`` chosen by a seeded hash of the item id: the same items every
    time for the same seed, whatever the partitioning. A top-n on the executors (each partition
    keeps at most n rows), so only n rows reach the driver."""
    return (vectors.withColumn("_h", F.xxhash64(F.col("item_id"), F.lit(seed)))
            .orderBy("_h", "item_id").limit(n).drop("_h"))


def first_genre(items: DataFrame) -> DataFrame:
    """``(item_id, label)``: each item's first genre, ``(no genre)`` when it has none."""
    return items.select("item_id", F.coalesce(F.get(F.col("genres"), 0),
                                              F.lit("(no genre)")).alias("label"))


def popularity_buckets(ratings: DataFrame) -> DataFrame:
    """``(item_id, label)``: the item's popularity bucket by its number of ratings —
    ``top 10%``, ``10-50%`` or ``bottom 50%`` of the rated items (approximate quantiles,
    computed on the executors)."""
    counts = ratings.groupBy("item_id").agg(F.count("*").alias("n"))
    q50, q90 = counts.approxQuantile("n", [0.5, 0.9], 0.01) or [0.0, 0.0]
    return counts.select("item_id", F.when(F.col("n") > q90, "top 10% most rated")
                         .when(F.col("n") > q50, "top 10-50%")
                         .otherwise("bottom 50%").alias("label"))


def pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Rows projected on their first two principal components (after centring) and the share
    of the variance each explains. Fewer than two dimensions or rows pad with zeros."""
    n = len(matrix)
    if n == 0:
        return np.zeros((0, 2)), (0.0, 0.0)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = min(2, vt.shape[0])
    coords = np.zeros((n, 2))
    coords[:, :comps] = centred @ vt[:comps].T
    # the sign of a component is arbitrary: fix it so the largest coordinate is positive
    for c in range(comps):
        if coords[np.argmax(np.abs(coords[:, c])), c] < 0:
            coords[:, c] = -coords[:, c]
    var = s ** 2
    total = float(var.sum()) or 1.0
    explained = tuple(float(var[c] / total) if c < comps else 0.0 for c in range(2))
    return coords, explained  # type: ignore[return-value]


def keep_top_labels(labels: list[str], max_labels: int) -> list[str]:
    """Labels outside the ``max_labels`` most frequent (ties by name) become ``other``."""
    counts = pd.Series(labels, dtype="object").value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = {name for name, _ in ranked[:max_labels]}
    return [x if x in keep else OTHER for x in labels]


def projection(wh: Warehouse, run_date: str, model: str, cfg: Config) -> Projection:
    """PCA of ``report.sample_items`` sampled item vectors of ``model`` (unit-normalised, as
    the neighbours use cosine), coloured by first genre (``items`` table) or, without one, by
    popularity bucket (``ratings``)."""
    vectors = wh.read("item_embeddings", run_date, model, needed_by="report")
    total = vectors.count()
    sample = sample_items(vectors, cfg.report.sample_items, cfg.report.seed)
    if wh.has("items", run_date):
        labels, colour_by = first_genre(wh.read("items", run_date)), "genre"
    elif wh.has("ratings", run_date):
        labels, colour_by = popularity_buckets(wh.read("ratings", run_date)), "popularity"
    else:
        labels, colour_by = None, "none"
    if labels is not None:
        sample = sample.join(labels, "item_id", "left")
    else:
        sample = sample.withColumn("label", F.lit(None).cast("string"))
    rows = sorted(sample.select("item_id", "vector", "label").collect(),
                  key=lambda r: natural_key(r["item_id"]))
    matrix = unit_rows(np.array([r["vector"] for r in rows], dtype=np.float64).reshape(
        len(rows), -1)) if rows else np.zeros((0, 2))
    coords, explained = pca_2d(matrix.astype(np.float64))
    raw = [r["label"] or ("unknown" if colour_by != "genre" else "(not in items)")
           for r in rows]
    return Projection(model, coords, keep_top_labels(raw, cfg.report.max_genres), explained,
                      total, colour_by)


# --------------------------------------------------------------------------------------------
# neighbours of popular items


class NeighborRow(NamedTuple):
    """One neighbour of a popular item in one model's ``item_neighbors``."""

    rank: int
    item_id: str
    title: str | None
    similarity: float
    genre: str | None


@dataclass
class PopularItem:
    """A most-liked item (its title and first genre when the items table has them) and, per
    model, its top neighbours."""

    item_id: str
    title: str | None
    genre: str | None
    likes: int
    neighbors: dict[str, list[NeighborRow]] = field(default_factory=dict)


def popular_items(ratings: DataFrame, n: int, min_rating: float) -> list[tuple[str, int]]:
    """The ``n`` items with most liked ratings (rating >= ``min_rating``), ties by id:
    ``[(item_id, likes)]``. Aggregated and cut to ``n`` on the executors."""
    rows = (ratings.filter(F.col("rating") >= F.lit(min_rating)).groupBy("item_id")
            .agg(F.count("*").alias("likes")).orderBy(F.desc("likes"), "item_id").limit(n)
            .collect())
    return [(r["item_id"], int(r["likes"])) for r in rows]


def titles_of(wh: Warehouse, run_date: str,
              ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """``{item_id: (title, first genre)}`` for the given ids (empty without an items table)."""
    if not ids or not wh.has("items", run_date):
        return {}
    items = wh.read("items", run_date).filter(F.col("item_id").isin(ids))
    genre = F.get(F.col("genres"), 0) if "genres" in items.columns else F.lit(None)
    return {r["item_id"]: (r["title"], r["genre"]) for r in
            items.select("item_id", "title", genre.cast("string").alias("genre")).collect()}


def popular_neighbors(wh: Warehouse, run_date: str, cfg: Config
                      ) -> tuple[list[str], list[PopularItem]] | None:
    """``(models, items)``: the ``report.popular_items`` most-liked items of the ratings table
    and their top ``report.neighbors`` neighbours in every model of ``item_neighbors``, with
    titles. ``None`` without ratings or item_neighbors for the date."""
    models = wh.models("item_neighbors", run_date)
    if not models or not wh.has("ratings", run_date):
        return None
    top = popular_items(wh.read("ratings", run_date), cfg.report.popular_items,
                        cfg.liked_min_rating)
    ids = [i for i, _ in top]
    found: dict[str, dict[str, list[tuple[int, str, float]]]] = {i: {} for i in ids}
    for model in models:
        rows = (wh.read("item_neighbors", run_date, model)
                .filter(F.col("item_id").isin(ids) & (F.col("rank") <= cfg.report.neighbors))
                .select("item_id", "neighbor_id", "rank", "similarity").collect())
        for r in sorted(rows, key=lambda r: (r["item_id"], r["rank"])):
            found[r["item_id"]].setdefault(model, []).append(
                (int(r["rank"]), r["neighbor_id"], float(r["similarity"])))
    wanted = ids + [n for per in found.values() for lst in per.values() for _, n, _ in lst]
    meta = titles_of(wh, run_date, sorted(set(wanted)))
    def title(i: str) -> str | None:
        return meta.get(i, (None, None))[0]

    def genre(i: str) -> str | None:
        return meta.get(i, (None, None))[1]

    items = [PopularItem(i, title(i), genre(i), likes,
                         {m: [NeighborRow(rank, n, title(n), sim, genre(n))
                              for rank, n, sim in lst]
                          for m, lst in found[i].items()})
             for i, likes in top]
    return models, items


# --------------------------------------------------------------------------------------------
# manifests and rejects


def manifests(wh: Warehouse, run_date: str) -> list[dict[str, Any]]:
    """Every stage manifest of the date (``_manifests/dt=<date>/<stage>.json``), in the order
    the stages started; empty when there are none. The run summary (``run.json``, not a
    stage) is :func:`run_summary`'s."""
    folder = join_path(wh.root, "_manifests", f"dt={run_date}")
    if not wh.fs.is_dir(folder):
        return []
    out = [json.loads(wh.fs.read_text(join_path(folder, name)))
           for name in wh.fs.list_names(folder)
           if name.endswith(".json") and name != RUN_SUMMARY]
    return sorted(out, key=lambda m: (str(m.get("started_at", "")), str(m.get("stage", ""))))


#: the run summary's file name beside the stage manifests (written by recemb run)
RUN_SUMMARY = "run.json"


def run_summary(wh: Warehouse, run_date: str) -> dict[str, Any] | None:
    """The date's run summary (status, seconds of the whole run), or None without one."""
    path = join_path(wh.root, "_manifests", f"dt={run_date}", RUN_SUMMARY)
    if not wh.fs.exists(path):
        return None
    summary: dict[str, Any] = json.loads(wh.fs.read_text(path))
    return summary


def timed_steps(manifest: dict[str, Any]) -> list[tuple[str, float]]:
    """The timings recorded inside a stage, longest first: its ``timings`` and any number in
    its ``details`` (top level or one level down, e.g. per model) under a key ``seconds`` or
    ``*_seconds``."""
    steps = [(str(k), float(v)) for k, v in (manifest.get("timings") or {}).items()]

    def is_seconds(key: str, value: Any) -> bool:
        return (key == "seconds" or key.endswith("_seconds")) and \
            isinstance(value, (int, float)) and not isinstance(value, bool)

    for key, value in (manifest.get("details") or {}).items():
        if is_seconds(str(key), value):
            steps.append((str(key), float(value)))
        elif isinstance(value, dict):
            steps += [(f"{key} {str(k)[:-len('_seconds')]}" if k != "seconds" else str(key),
                       float(v)) for k, v in value.items() if is_seconds(str(k), v)]
    return sorted(steps, key=lambda s: (-s[1], s[0]))


def stage_timings(found: list[dict[str, Any]]) -> pd.DataFrame:
    """``(stage, status, seconds, steps, error)`` per manifest, in the given order; ``steps``
    from :func:`timed_steps`."""
    return pd.DataFrame(
        [{"stage": str(m.get("stage", "?")), "status": str(m.get("status", "?")),
          "seconds": float(m.get("seconds") or 0.0), "steps": timed_steps(m),
          "error": m.get("error")} for m in found],
        columns=["stage", "status", "seconds", "steps", "error"])


def rejects_by_reason(wh: Warehouse, run_date: str) -> pd.DataFrame | None:
    """``(reason, rows)`` of the date's rejects, most frequent first (grouped on the
    executors); ``None`` without a rejects partition."""
    if not wh.has("rejects", run_date):
        return None
    rows = (wh.read("rejects", run_date).groupBy("reason").agg(F.count("*").alias("rows"))
            .orderBy(F.desc("rows"), "reason").collect())
    return pd.DataFrame([(r["reason"], int(r["rows"])) for r in rows], columns=["reason", "rows"])


# --------------------------------------------------------------------------------------------
# everything the page needs


@dataclass
class ReportData:
    """Everything :func:`recemb_spark.report.render.render_page` draws (all small)."""

    run_date: str
    warehouse: str
    manifests: list[dict[str, Any]]
    run: dict[str, Any] | None
    metrics: pd.DataFrame | None
    k: int | None
    trend: pd.DataFrame | None
    projections: list[Projection]
    neighbors: tuple[list[str], list[PopularItem]] | None
    rejects: pd.DataFrame | None


def gather(wh: Warehouse, cfg: Config, run_date: str) -> ReportData:
    """Read every section's input for ``run_date`` (missing inputs stay ``None``/empty)."""
    metrics = metrics_for_date(wh, run_date)
    k = headline_k(metrics) if metrics is not None else None
    return ReportData(
        run_date=run_date, warehouse=wh.root, manifests=manifests(wh, run_date),
        run=run_summary(wh, run_date),
        metrics=metrics, k=k, trend=hr_trend(wh, run_date, k) if k is not None else None,
        projections=[projection(wh, run_date, m, cfg)
                     for m in wh.models("item_embeddings", run_date)],
        neighbors=popular_neighbors(wh, run_date, cfg),
        rejects=rejects_by_reason(wh, run_date))
