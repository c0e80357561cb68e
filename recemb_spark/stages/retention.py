"""Step ``retention``: the last step of a successful ``recemb run`` when
``warehouse.retention_days`` > 0 — old dt partitions and manifests deleted, and counted."""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from ..config import Config
from ..io.history import apply_retention, retention_cutoff
from ..io.warehouse import Warehouse
from ..stage import StageResult

log = logging.getLogger(__name__)


def run(spark: SparkSession, cfg: Config, run_date: str) -> StageResult:
    """Delete every partition and manifest folder dated before ``run_date - retention_days``."""
    days = cfg.warehouse.retention_days
    res = StageResult(inputs={"warehouse": cfg.warehouse.path})
    with res.timed("delete"):
        removed = apply_retention(Warehouse(spark, cfg.warehouse.path), run_date, days)
    res.rows.update(partitions_removed=removed.total_partitions,
                    manifests_removed=removed.manifests)
    res.details.update(retention_days=days, kept_from=retention_cutoff(run_date, days),
                       dates_removed=removed.dates, partitions_by_table=removed.partitions)
    log.info("retention: kept dates from %s; removed %d partitions and %d manifest folders "
             "(%d dates)", res.details["kept_from"], removed.total_partitions,
             removed.manifests, len(removed.dates))
    return res
