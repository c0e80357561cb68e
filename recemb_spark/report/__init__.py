"""``recemb report``: one self-contained HTML page about one run date.

:mod:`.gather` reads what the page shows from the warehouse (small pandas frames and dicts,
aggregated or sampled on the executors); :mod:`.render` draws it (matplotlib, the optional
``report`` extra). This module only wires them and writes the page to
``<warehouse>/_reports/dt=<date>/report.html``.
"""
from __future__ import annotations

import importlib.util
import logging
import time

from pyspark.sql import SparkSession

from ..config import Config
from ..errors import ConfigError, StageError
from ..io.warehouse import Warehouse, join_path

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'recemb-spark[report]'"


def missing_extra() -> str | None:
    """``None`` when matplotlib can be imported, else the one-line message to show."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        found = False
    if found:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            found = False
    if found:
        return None
    return f"recemb report needs matplotlib, which is not installed: {EXTRA_HINT}"


def require_matplotlib() -> None:
    """Raise :class:`ConfigError` (exit 2, before Spark starts) without matplotlib."""
    problem = missing_extra()
    if problem:
        raise ConfigError(problem)


def report_path(root: str, run_date: str) -> str:
    return join_path(root, "_reports", f"dt={run_date}", "report.html")


def write_report(spark: SparkSession, cfg: Config, run_date: str) -> str:
    """Gather, render and write the report of ``run_date``; return the file's path.

    Raises :class:`StageError` when the warehouse holds nothing at all for the date (no
    manifests and no tables): a page of "missing" lines helps nobody.
    """
    require_matplotlib()
    from .gather import gather
    from .render import render_page

    t0 = time.perf_counter()
    wh = Warehouse(spark, cfg.warehouse.path)
    data = gather(wh, cfg, run_date)
    if not data.manifests and data.metrics is None and not data.projections \
            and data.rejects is None:
        raise StageError(f"nothing in the warehouse {cfg.warehouse.path} for dt={run_date} "
                         f"(no manifests, metrics, embeddings or rejects); run the pipeline "
                         f"for that date first")
    page = render_page(data)
    path = report_path(wh.root, run_date)
    wh.fs.write_text(path, page)
    log.info("report for dt=%s: %d KiB written to %s in %.1fs", run_date, len(page) // 1024,
             path, time.perf_counter() - t0)
    return path
