"""The pipeline: which stages exist, which run, in what order."""
from __future__ import annotations

import logging
from typing import Optional

from pyspark.sql import SparkSession

from .config import Config
from .stage import StageFn, StageResult, run_stage
from .stages import tables as tables_stage

log = logging.getLogger(__name__)


def stage_functions() -> dict[str, StageFn]:
    """Every stage by name, in pipeline order."""
    return {"tables": tables_stage.run}


def enabled_stages(cfg: Config) -> list[str]:
    """The stages ``recemb run`` runs for this config, in order."""
    return list(stage_functions())


def run_pipeline(spark: SparkSession, cfg: Config, run_date: str,
                 stages: Optional[list[str]] = None) -> dict[str, StageResult]:
    """Run ``stages`` (default: every enabled stage) for one run date; return their results."""
    fns = stage_functions()
    results = {}
    for name in stages or enabled_stages(cfg):
        results[name] = run_stage(name, fns[name], spark, cfg, run_date)
    return results
