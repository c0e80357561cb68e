"""What a stage is: its declaration (:class:`Stage`), what its ``run`` gets
(:class:`StageContext`) and what it records (:class:`StageResult`, its manifest).

Every stage is declared once, in :data:`recemb_spark.stages.STAGES`; the pipeline order,
``--resume``'s comparison, the CLI's commands, ``jobs/stage.py`` and the docs' stage table
derive from those declarations. This module imports no Spark: the CLI reads the declarations
before any SparkSession exists, and a stage's module is imported only when it runs.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .progress import set_step

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from ..config import Config
    from ..io.warehouse import Warehouse


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


@dataclass(frozen=True)
class StageContext:
    """What a stage's ``run`` gets: the session, the validated config, the run date, the
    warehouse it reads and writes, and the result it fills in (its manifest)."""

    spark: SparkSession
    config: Config
    run_date: str
    warehouse: Warehouse
    result: StageResult
    stage: Stage


#: a stage's work: reads from ``ctx.warehouse``, writes to it, records into ``ctx.result``
RunFn = Callable[[StageContext], None]


@dataclass(frozen=True)
class Stage:
    """One stage, declared once.

    ``name``: the stage, its manifest and its command (``recemb NAME``); ``doc``: one line
    (command help, docs table); ``reads`` / ``writes``: the warehouse tables it reads and may
    write (the runner refuses a write to a table not declared); ``config``: the config
    sections (or single ``section.key`` settings) its outputs depend on (``recemb run
    --resume`` re-runs it when one of their keys changed, run-control keys aside);
    ``module``: the module of ``recemb_spark.stages`` whose ``run(ctx)`` does the work;
    ``when``: the config key that switches it on in ``recemb run`` (a true or non-zero
    value; None: always).
    """

    name: str
    doc: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    config: tuple[str, ...]
    module: str
    when: str | None = None

    def enabled(self, cfg: Config) -> bool:
        """Whether ``recemb run`` runs this stage under ``cfg``."""
        if self.when is None:
            return True
        section, key = self.when.split(".")
        return bool(getattr(getattr(cfg, section), key))

    def load(self) -> RunFn:
        """The stage's ``run(ctx)`` (imports its module, and so Spark)."""
        module = importlib.import_module(f"recemb_spark.stages.{self.module}")
        fn: RunFn = module.run
        return fn
