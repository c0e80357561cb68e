"""The warehouse over time: which run dates it holds, the previous date, and retention.

Dates are read from the ``dt=YYYY-MM-DD`` folder names (one listing per table, no data read),
so these helpers work on any Hadoop file system like :mod:`.warehouse` itself.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from .warehouse import Warehouse, join_path

log = logging.getLogger(__name__)

MANIFESTS = "_manifests"


def parse_dt(name: str) -> str | None:
    """``"dt=2026-11-05"`` -> ``"2026-11-05"``; None for any other name (``_SUCCESS``, ...)."""
    if not name.startswith("dt="):
        return None
    try:
        return dt.date.fromisoformat(name[3:]).isoformat()
    except ValueError:
        return None


def table_dates(wh: Warehouse, table: str, model: str | None = None) -> list[str]:
    """The run dates (sorted) that hold a partition of ``table`` (and of ``model`` when given)."""
    root = join_path(wh.root, table)
    if not wh.fs.is_dir(root):
        return []
    dates = [d for d in (parse_dt(n) for n in wh.fs.list_names(root)) if d is not None]
    if model is not None:
        dates = [d for d in dates if wh.has(table, d, model)]
    return sorted(dates)


def previous_date(wh: Warehouse, table: str, run_date: str,
                  model: str | None = None) -> str | None:
    """The latest date before ``run_date`` that holds ``table`` (for ``model``), or None."""
    earlier = [d for d in table_dates(wh, table, model) if d < run_date]
    return earlier[-1] if earlier else None


def warehouse_tables(wh: Warehouse) -> list[str]:
    """Every table folder under the root (names not starting with ``_`` or ``.``)."""
    if not wh.fs.is_dir(wh.root):
        return []
    return [n for n in wh.fs.list_names(wh.root)
            if not n.startswith(("_", ".")) and wh.fs.is_dir(join_path(wh.root, n))]


@dataclass
class Removed:
    """What :func:`apply_retention` deleted: ``partitions`` per table (dt folders) and the
    manifest folders, and the dates they belonged to."""

    partitions: dict[str, int] = field(default_factory=dict)
    manifests: int = 0
    dates: list[str] = field(default_factory=list)

    @property
    def total_partitions(self) -> int:
        return sum(self.partitions.values())


def retention_cutoff(run_date: str, days: int) -> str:
    """The oldest date kept: ``run_date - days`` (``days`` >= 1, so the run date is kept)."""
    if days < 1:
        raise ValueError("retention needs days >= 1")
    return (dt.date.fromisoformat(run_date) - dt.timedelta(days=days)).isoformat()


def apply_retention(wh: Warehouse, run_date: str, days: int) -> Removed:
    """Delete every ``dt=`` partition of every table, and every manifest folder, dated before
    ``run_date - days``. The run date and later dates are never touched (``days`` >= 1)."""
    keep_from = retention_cutoff(run_date, days)
    removed = Removed()
    dates: set[str] = set()
    for table in warehouse_tables(wh) + [MANIFESTS]:
        old = [d for d in table_dates(wh, table) if d < keep_from]
        for d in old:
            wh.fs.delete(join_path(wh.root, table, f"dt={d}"))
        dates.update(old)
        if table == MANIFESTS:
            removed.manifests = len(old)
        elif old:
            removed.partitions[table] = len(old)
    removed.dates = sorted(dates)
    return removed
