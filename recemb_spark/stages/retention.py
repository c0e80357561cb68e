"""Stage ``retention``: the last stage of ``recemb run`` when ``warehouse.retention_days`` > 0
— old dt partitions and manifests deleted, and counted."""
from __future__ import annotations

import logging

from ..io.history import apply_retention, retention_cutoff
from ..runner.stage import StageContext

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> None:
    """Delete every partition and manifest folder dated before ``run_date - retention_days``
    (nothing with ``retention_days: 0``, keep all)."""
    run_date, res = ctx.run_date, ctx.result
    days = ctx.config.warehouse.retention_days
    res.inputs["warehouse"] = ctx.config.warehouse.path
    if days < 1:
        res.details.update(retention_days=days, skipped="warehouse.retention_days is 0: keep all")
        log.info("retention: warehouse.retention_days is 0: nothing deleted")
        return
    with res.timed("delete"):
        removed = apply_retention(ctx.warehouse, run_date, days)
    res.rows.update(partitions_removed=removed.total_partitions,
                    manifests_removed=removed.manifests)
    res.details.update(retention_days=days, kept_from=retention_cutoff(run_date, days),
                       dates_removed=removed.dates, partitions_by_table=removed.partitions)
    log.info("retention: kept dates from %s; removed %d partitions and %d manifest folders "
             "(%d dates)", res.details["kept_from"], removed.total_partitions,
             removed.manifests, len(removed.dates))
