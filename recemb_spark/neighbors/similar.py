"""One "similar items" query against the stored tables (``recemb similar``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ..errors import StageError
from ..io.warehouse import Warehouse
from .topk import collect_matrix, top_k_rows


@dataclass
class Neighbor:
    rank: int
    item_id: str
    similarity: float
    title: str | None


def latest_date(wh: Warehouse, table: str, model: str) -> str:
    """The newest ``dt`` that has ``table`` for ``model``."""
    root = f"{wh.root.rstrip('/')}/{table}"
    dates = [n.split("=", 1)[1] for n in (wh.fs.list_names(root) if wh.fs.exists(root) else [])
             if n.startswith("dt=")]
    dates = [d for d in dates if wh.has(table, d, model)]
    if not dates:
        raise StageError(f"no {table} for model {model!r} under {root}; run the pipeline first")
    return max(dates)


def similar_items(spark: SparkSession, wh: Warehouse, model: str, item: str, k: int,
                  run_date: str | None = None) -> tuple[str, str, list[Neighbor]]:
    """The ``k`` most similar items to ``item``: ``(run_date, method, neighbours)``.

    Uses ``item_neighbors`` when it holds at least ``k`` rows for the item, else scores the
    item's vector against every item vector of the model exactly (one query on the driver).
    """
    run_date = run_date or latest_date(wh, "item_embeddings", model)
    method, rows = "exact", []
    if wh.has("item_neighbors", run_date, model):
        stored = (wh.read("item_neighbors", run_date, model).filter(F.col("item_id") == item)
                  .orderBy("rank").collect())
        if len(stored) >= k:
            method = stored[0]["method"]
            rows = [(r["rank"], r["neighbor_id"], r["similarity"]) for r in stored[:k]]
    if not rows:
        ids, matrix = collect_matrix(wh.read("item_embeddings", run_date, model,
                                             needed_by="similar"), normalise=True)
        if item not in ids:
            raise StageError(f"item {item!r} has no vector in model {model!r} at dt={run_date}")
        q = ids.index(item)
        scores = (matrix @ matrix[q])[None, :]
        scores[0, q] = -np.inf
        idx, best = top_k_rows(scores, k)
        rows = [(r + 1, ids[j], float(s))
                for r, (j, s) in enumerate(zip(idx[0], best[0], strict=True)) if j >= 0]
    titles = item_titles(wh, run_date, [item] + [r[1] for r in rows])
    neighbors = [Neighbor(rank, i, sim, titles.get(i)) for rank, i, sim in rows]
    return run_date, method, [Neighbor(0, item, 1.0, titles.get(item))] + neighbors


def item_titles(wh: Warehouse, run_date: str, ids: list[str]) -> dict[str, str]:
    """Titles of ``ids`` from the items table of ``run_date`` ({} when it has none)."""
    if not wh.has("items", run_date):
        return {}
    return {r["item_id"]: r["title"] for r in wh.read("items", run_date)
            .filter(F.col("item_id").isin(ids)).collect()}


def format_similar(query: Neighbor, neighbors: list[Neighbor], source: str) -> list[str]:
    """What ``recemb similar`` and ``recemb lookup`` print: a header naming the query item and
    ``source`` (where the neighbours come from), then one line per neighbour: rank,
    similarity, id, title."""
    title = f" ({query.title})" if query.title else ""
    return ([f"items like {query.item_id}{title} - {source}:"]
            + [f"{n.rank:>4}  {n.similarity:6.3f}  {n.item_id:<12}{n.title or ''}"
               for n in neighbors])
