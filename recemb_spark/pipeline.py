"""The pipeline: which stages exist, which run, in what order."""
from __future__ import annotations

import logging
from typing import Callable, Optional

from pyspark.sql import SparkSession

from .config import Config
from .models.registry import model_specs
from .stage import StageFn, StageResult, run_stage
from .stages import ann as ann_stage
from .stages import blend as blend_stage
from .stages import daily as daily_stage
from .stages import evaluate as evaluate_stage
from .stages import export as export_stage
from .stages import retention as retention_stage
from .stages import tables as tables_stage
from .stages.embeddings import model_stage

log = logging.getLogger(__name__)


def stage_table() -> dict[str, tuple[StageFn, Callable[[Config], bool]]]:
    """Every stage by name, in pipeline order, with whether ``recemb run`` runs it."""
    stages: dict[str, tuple[StageFn, Callable[[Config], bool]]] = {
        "tables": (tables_stage.run, lambda c: True)}
    for spec in model_specs():
        stages[spec.stage] = (model_stage(spec), spec.enabled)
    stages["evaluate"] = (evaluate_stage.run, lambda c: c.evaluate.enabled)
    stages["ann"] = (ann_stage.run, lambda c: c.ann.enabled)
    # the blend merges the ann stage's tables: it runs with it
    stages["blend"] = (blend_stage.run, lambda c: c.blend.enabled and c.ann.enabled)
    stages["daily"] = (daily_stage.run, lambda c: c.daily.enabled)
    stages["export"] = (export_stage.run, lambda c: c.export.enabled)
    return stages


def enabled_stages(cfg: Config) -> list[str]:
    """The stages ``recemb run`` runs for this config, in order."""
    return [name for name, (_, enabled) in stage_table().items() if enabled(cfg)]


def run_pipeline(spark: SparkSession, cfg: Config, run_date: str,
                 stages: Optional[list[str]] = None,
                 resume: bool = False) -> dict[str, StageResult]:
    """Run ``stages`` (default: every enabled stage) for one run date; return their results.

    Holds the date's run lock; the whole pipeline also writes the run summary (run.json), and
    with ``resume`` skips the stages already done (:mod:`recemb_spark.runs`).
    """
    from .runs import run_stages

    table = stage_table()
    results = run_stages(spark, cfg, run_date,
                         [(name, table[name][0]) for name in (stages or enabled_stages(cfg))],
                         resume=resume, summary=stages is None,
                         command="run" if stages is None else stages[0])
    if stages is None and cfg.warehouse.retention_days:  # last, only after every stage ran ok
        results["retention"] = run_stage("retention", retention_stage.run, spark, cfg, run_date)
    return results
