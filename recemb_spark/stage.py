"""What every stage returns, and the runner that times it and writes its manifest."""
from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pyspark.sql import DataFrame, SparkSession

from . import __version__
from .config import Config
from .io.warehouse import Warehouse, record_writes
from .progress import progress, set_step

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """Row counts, timings and metrics of one stage run; becomes its manifest.

    ``rows`` holds row counts (read, rejected, written per table); ``details`` anything else
    worth recording (items under min_count, users without vectors, ...); ``metrics`` rows of
    ``(model, metric, k, value)``; ``inputs`` what was read.
    """

    inputs: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``timings[step]`` (seconds)."""
        t0 = time.perf_counter()
        outer = set_step(step)  # named in the progress lines of a long step
        try:
            yield
        finally:
            set_step(outer)
            self.timings[step] = round(self.timings.get(step, 0.0) + time.perf_counter() - t0, 3)


def metric_row(model: str, metric: str, k: int, value: float) -> dict[str, Any]:
    """One row of the metrics table."""
    return {"model": model, "metric": metric, "k": int(k), "value": float(value)}


METRICS_SCHEMA = "model string, metric string, k int, value double"


def metrics_frame(spark: SparkSession, metrics: list[dict[str, Any]]) -> DataFrame:
    """The rows of :func:`metric_row` as a metrics-table DataFrame (:data:`METRICS_SCHEMA`)."""
    return spark.createDataFrame([(m["model"], m["metric"], m["k"], m["value"]) for m in metrics],
                                 METRICS_SCHEMA)


StageFn = Callable[[SparkSession, Config, str], StageResult]


def run_stage(name: str, fn: StageFn, spark: SparkSession, cfg: Config,
              run_date: str) -> StageResult:
    """Run one stage, log one line about it, and write its manifest (also when it fails).

    The manifest goes to ``<warehouse>/_manifests/dt=<run_date>/<name>.json``; its
    ``outputs`` lists the partitions the stage wrote (relative to the warehouse root).
    """
    wh = Warehouse(spark, cfg.warehouse.path)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log.info("stage %s: started (run date %s)", name, run_date)
    manifest: dict[str, Any] = {
        "stage": name, "run_date": run_date, "started_at": started.isoformat(),
        "spark_version": spark.version, "recemb_version": __version__,
        "master": spark.sparkContext.master, "parameters": cfg.to_dict(),
    }
    try:
        with record_writes() as outputs, progress(spark, f"stage {name}"):  # progress: a
            # line every ~45 s while it runs
            result = fn(spark, cfg, run_date)
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                        seconds=round(time.perf_counter() - t0, 3), outputs=outputs)
        try:
            wh.write_manifest(run_date, name, manifest)
        except Exception:  # the original error matters more than a failed manifest
            log.debug("could not write the failure manifest", exc_info=True)
        raise
    seconds = round(time.perf_counter() - t0, 3)
    manifest.update(status="ok", seconds=seconds,
                    finished_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                    inputs=result.inputs, rows=result.rows, details=result.details,
                    timings=result.timings, metrics=result.metrics, outputs=outputs)
    path = wh.write_manifest(run_date, name, manifest)
    rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
    log.info("stage %s: done in %.1fs: %s (manifest %s)", name, seconds, rows, path)
    return result
