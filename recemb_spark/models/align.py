"""Alignment to the previous date: orthogonal Procrustes on the items both dates share.

Two trainings on almost the same log give vectors in unrelated coordinates. With row vectors
``X`` (today) and ``Y`` (the previous date) of the shared items, the orthogonal ``R`` that
minimises ``||X R - Y||_F`` is ``U V^T`` where ``X^T Y = U S V^T`` (Schönemann 1966). Only the
``d x d`` cross-covariance ``X^T Y`` (and two squared norms) leave the executors: a
distributed sum of per-partition products; the SVD is on the driver; ``R`` is broadcast and
applied on the executors to every item vector and to learned user vectors. An orthogonal map
keeps every dot product and cosine, so neighbour lists, ALS scores and rankings are unchanged;
pooled user vectors (a weighted mean of item vectors) come out rotated by the same ``R``.

Residuals are relative: ``||X R - Y||_F / ||Y||_F`` after, ``||X - Y||_F / ||Y||_F`` before.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..config import Config
from ..io.history import previous_date
from ..io.warehouse import Warehouse
from .registry import TrainedModel

log = logging.getLogger(__name__)

ROWS_PER_CHUNK = 4096  # rows turned into one numpy block when summing X^T Y


@dataclass
class Sums:
    """``cross = X^T Y`` (d x d), ``x_sq = ||X||_F^2``, ``y_sq = ||Y||_F^2``, ``n`` rows."""

    cross: np.ndarray
    x_sq: float
    y_sq: float
    n: int

    def __add__(self, other: Sums) -> Sums:
        return Sums(self.cross + other.cross, self.x_sq + other.x_sq, self.y_sq + other.y_sq,
                    self.n + other.n)


@dataclass
class Alignment:
    """A fitted rotation: apply as ``x @ rotation``; residuals relative to ``||Y||_F``."""

    rotation: np.ndarray
    shared_items: int
    residual_before: float
    residual_after: float

    def report(self) -> dict[str, Any]:
        return {"shared_items": self.shared_items,
                "residual_before": round(self.residual_before, 6),
                "residual_after": round(self.residual_after, 6)}


def block_sums(x: np.ndarray, y: np.ndarray) -> Sums:
    """:class:`Sums` of one block of paired rows (float64)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return Sums(x.T @ y, float((x * x).sum()), float((y * y).sum()), len(x))


def fit_rotation(sums: Sums) -> Alignment:
    """The orthogonal Procrustes solution from the summed statistics (a d x d SVD)."""
    u, s, vt = np.linalg.svd(sums.cross)
    rotation = u @ vt
    y_norm = max(sums.y_sq, 1e-300)
    before = sums.x_sq + sums.y_sq - 2.0 * float(np.trace(sums.cross))
    after = sums.x_sq + sums.y_sq - 2.0 * float(s.sum())  # tr(R^T X^T Y) = sum of singular values
    return Alignment(rotation, sums.n, float(np.sqrt(max(before, 0.0) / y_norm)),
                     float(np.sqrt(max(after, 0.0) / y_norm)))


def chunk_sums(rows: list[Any]) -> Sums:
    """:func:`block_sums` of a list of ``(x, y)`` rows."""
    return block_sums(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))


def cross_sums(pairs: DataFrame, dim: int) -> Sums:
    """:class:`Sums` over ``pairs (x array<float>, y array<float>)``, summed where the rows are:
    each partition returns one d x d partial, merged by a tree reduce."""
    def partial(rows: Iterable[Any]) -> Iterator[Sums]:
        total = Sums(np.zeros((dim, dim)), 0.0, 0.0, 0)
        chunk: list[Any] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= ROWS_PER_CHUNK:
                total += chunk_sums(chunk)
                chunk = []
        if chunk:
            total += chunk_sums(chunk)
        yield total

    rdd = pairs.select("x", "y").rdd.mapPartitions(partial)
    if rdd.getNumPartitions() == 0:
        return Sums(np.zeros((dim, dim)), 0.0, 0.0, 0)
    return rdd.treeReduce(lambda a, b: a + b)


def vector_dim(vectors: DataFrame) -> int | None:
    """The length of the first vector (None for an empty table)."""
    row = vectors.select(F.size("vector")).first()
    return None if row is None else int(row[0])


def fit_alignment(today: DataFrame, previous: DataFrame, dim: int) -> Alignment:
    """Procrustes fit of ``today``'s vectors onto ``previous``'s over the ``item_id``s both
    have (both ``(item_id, vector)``, vectors of length ``dim``)."""
    pairs = today.select("item_id", F.col("vector").alias("x")).join(
        previous.select("item_id", F.col("vector").alias("y")), "item_id")
    return fit_rotation(cross_sums(pairs, dim))


def rotate(spark: SparkSession, vectors: DataFrame, rotation: np.ndarray,
           id_col: str = "item_id") -> DataFrame:
    """``vectors`` with every ``vector`` multiplied by ``rotation`` on the executors (the
    d x d matrix is broadcast); other columns (``id_col``, ``source``, ...) pass unchanged."""
    bc = spark.sparkContext.broadcast(rotation.astype(np.float32))
    dim = rotation.shape[0]
    others = [c for c in vectors.columns if c != "vector"]
    columns = [id_col] + [c for c in others if c != id_col] + ["vector"]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        r = bc.value
        for batch in batches:
            if batch.num_rows == 0:
                continue
            values = batch.column("vector").flatten().to_numpy(zero_copy_only=False)
            out = (values.astype(np.float32).reshape(batch.num_rows, dim) @ r).ravel()
            offsets = pa.array(np.arange(0, batch.num_rows * dim + 1, dim, dtype=np.int32))
            rotated = pa.ListArray.from_arrays(offsets, pa.array(out, pa.float32()))
            yield pa.RecordBatch.from_arrays(
                [batch.column(c) for c in columns[:-1]] + [rotated], names=columns)

    selected = vectors.select(*columns)
    return selected.mapInArrow(run, selected.schema)


def align_to_previous(spark: SparkSession, cfg: Config, wh: Warehouse, model: str,
                      run_date: str, trained: TrainedModel) -> TrainedModel:
    """``trained`` rotated onto the previous date's item embeddings of ``model`` when
    ``align.enabled`` and such a date exists (else unchanged); ``details["align"]`` records
    the previous date, shared items, residuals before/after, or why nothing was done."""
    if not cfg.align.enabled:
        return trained
    t0 = time.perf_counter()
    prev = previous_date(wh, "item_embeddings", run_date, model)
    info: dict[str, Any] = {"previous_date": prev, "applied": False}
    out = trained
    if prev is None:
        info["reason"] = "no previous date"
    else:
        previous = wh.read("item_embeddings", prev, model)
        dim, prev_dim = vector_dim(trained.item_vectors), vector_dim(previous)
        if dim is None or dim != prev_dim:
            info["reason"] = f"vector size changed ({prev_dim} -> {dim})"
        else:
            fit = fit_alignment(trained.item_vectors, previous, dim)
            info.update(fit.report())
            if fit.shared_items < cfg.align.min_shared_items:
                info["reason"] = (f"{fit.shared_items} shared items < align.min_shared_items "
                                  f"({cfg.align.min_shared_items})")
            else:
                info["applied"] = True
                users = trained.user_vectors
                out = dataclasses.replace(
                    trained, item_vectors=rotate(spark, trained.item_vectors, fit.rotation),
                    user_vectors=None if users is None else rotate(spark, users, fit.rotation,
                                                                   "user_id"))
    info["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("align %s: %s", model, info)
    return dataclasses.replace(out, details={**trained.details, "align": info})
