"""The pipeline: the declared stages (:data:`recemb_spark.stages.STAGES`) that run, in order."""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from ..config import Config
from ..stages import STAGES, stage_named
from .runs import run_stages
from .stage import Stage, StageResult

log = logging.getLogger(__name__)


def enabled_stages(cfg: Config) -> list[Stage]:
    """The stages ``recemb run`` runs for this config, in declaration order."""
    return [stage for stage in STAGES if stage.enabled(cfg)]


def run_pipeline(spark: SparkSession, cfg: Config, run_date: str,
                 stages: list[str] | None = None,
                 resume: bool = False) -> dict[str, StageResult]:
    """Run ``stages`` (default: every enabled stage) for one run date; return their results.

    Holds the date's run lock; the whole pipeline also writes the run summary (run.json), and
    with ``resume`` skips the stages already done (:mod:`.runs`). A stage named in
    ``stages`` runs whatever its ``when`` key says (``recemb export`` with export.enabled off).
    """
    chosen = enabled_stages(cfg) if stages is None else [stage_named(n) for n in stages]
    return run_stages(spark, cfg, run_date, chosen, resume=resume, summary=stages is None,
                      command="run" if stages is None else stages[0])
