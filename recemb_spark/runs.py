"""One run of stages for one date: the run lock, ``--resume``, and the run summary.

``run_stages`` holds the date's lock (:mod:`recemb_spark.io.lock`) while it runs the stages in
order. With ``resume`` a stage is skipped when its manifest for the date says ``ok``, its
parameters equal the current ones (:func:`compared_parameters`) and every partition it wrote
still exists; from the first stage that must run, every later stage runs. The summary
``_manifests/dt=<date>/run.json`` lists each stage's status (ok / failed / skipped / not_run),
rows and seconds; a skipped stage keeps its own manifest untouched (it still describes the
run that wrote the outputs).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Optional

from pyspark.sql import SparkSession

from .config import Config
from .errors import RecembError
from .io.lock import RunLock
from .io.warehouse import Warehouse, join_path
from .stage import StageFn, StageResult, run_stage

log = logging.getLogger(__name__)

# Keys that steer how a run goes, not what it writes: a resumed run may change them freely
# (say, more driver memory after an out-of-memory failure).
RUN_CONTROL_KEYS = {"spark.master", "spark.driver_memory", "spark.log_level", "spark.blas_threads",
                    "warehouse.lock_max_age_hours", "warehouse.retention_days"}
RUN_CONTROL_SECTIONS = {"catalog", "report"}  # report: a command, not a stage
# Sections a stage provably does not read (its outputs cannot depend on them). Sections not
# listed — input, sample, sequences, users, and any section added later — count for every
# stage; evaluate and ann (which read every model's settings) compare everything.
_MODELS = {"item2vec", "graph", "walks", "deepwalk", "als"}
NOT_READ_BY = {
    "tables": _MODELS | {"users", "ann"},  # evaluate.*: the tables stage holds pairs out
    "item2vec": _MODELS - {"item2vec"} | {"evaluate", "ann"},
    "deepwalk": {"item2vec", "als", "evaluate", "ann"},
    "als": _MODELS - {"als"} | {"evaluate", "ann"},
}


def compared_parameters(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """The ``section.key -> value`` pairs of ``params`` that decide ``stage``'s outputs."""
    ignored = RUN_CONTROL_SECTIONS | NOT_READ_BY.get(stage, set())
    return {f"{section}.{key}": value
            for section, values in params.items() if section not in ignored
            for key, value in values.items() if f"{section}.{key}" not in RUN_CONTROL_KEYS}


def skip_reason(wh: Warehouse, stage: str, cfg: Config, run_date: str
                ) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """``(why the stage must run, None)``, or ``(None, its manifest)`` when it can be skipped."""
    path = wh.manifest_path(run_date, stage)
    if not wh.fs.exists(path):
        return "no manifest for this date", None
    manifest = wh.read_manifest(run_date, stage)
    if manifest.get("status") != "ok":
        return f"its last run {manifest.get('status', 'did not finish')}", None
    before = compared_parameters(stage, manifest.get("parameters", {}))
    now = compared_parameters(stage, cfg.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        return f"parameters changed: {', '.join(changed[:5])}", None
    if "outputs" not in manifest:
        return "its manifest does not list its outputs (written by an older version)", None
    missing = [p for p in manifest["outputs"] if not wh.fs.exists(join_path(wh.root, p))]
    if missing:
        return f"output partition(s) missing: {', '.join(missing[:3])}", None
    return None, manifest


def result_from_manifest(manifest: dict[str, Any]) -> StageResult:
    """The StageResult a skipped stage returned when it ran (from its manifest)."""
    return StageResult(inputs=manifest.get("inputs", {}), rows=manifest.get("rows", {}),
                       details=manifest.get("details", {}), metrics=manifest.get("metrics", []),
                       timings=manifest.get("timings", {}))


def run_stages(spark: SparkSession, cfg: Config, run_date: str,
               stages: list[tuple[str, StageFn]], resume: bool = False,
               summary: bool = True, command: str = "run") -> dict[str, StageResult]:
    """Run ``stages`` in order for ``run_date`` under the date's lock; return their results.

    ``summary`` writes ``_manifests/dt=<run_date>/run.json`` (``recemb run``; a single-stage
    command only writes its stage manifest). On failure the summary names the failing stage,
    the error gets a ``recemb_stage`` attribute (the CLI's last line names it) and is raised.
    """
    wh = Warehouse(spark, cfg.warehouse.path)
    results: dict[str, StageResult] = {}
    entries: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    must_run = not resume
    with RunLock(wh, run_date, cfg.warehouse.lock_max_age_hours, command):
        try:
            for name, fn in stages:
                if not must_run:
                    reason, manifest = skip_reason(wh, name, cfg, run_date)
                    if reason is None:
                        results[name] = result_from_manifest(manifest)
                        entries.append(_entry(name, "skipped", manifest,
                                              ran_at=manifest.get("started_at")))
                        log.info("stage %s: skipped (resume: done on %s with the same "
                                 "parameters, outputs present)", name, manifest.get("started_at"))
                        continue
                    log.info("stage %s: must run (%s); every later stage runs too", name, reason)
                    must_run = True
                s0 = time.perf_counter()
                try:
                    results[name] = run_stage(name, fn, spark, cfg, run_date)
                except BaseException as exc:
                    entries.append({"stage": name, "status": "failed", "skipped": False,
                                    "seconds": round(time.perf_counter() - s0, 3),
                                    "error": f"{type(exc).__name__}: {exc}"[:2000]})
                    raise
                manifest = {"rows": results[name].rows,
                            "seconds": round(time.perf_counter() - s0, 3)}
                entries.append(_entry(name, "ok", manifest))
        except BaseException as exc:
            failed = entries[-1]["stage"] if entries and entries[-1]["status"] == "failed" \
                else None
            done = {e["stage"] for e in entries}
            entries += [{"stage": n, "status": "not_run", "skipped": False}
                        for n, _ in stages if n not in done]
            if summary:
                _write_summary(wh, run_date, started, t0, resume, entries, "failed", failed)
            if failed is not None:
                try:
                    exc.recemb_stage = failed
                except AttributeError:  # an exception type without a __dict__
                    pass
                code = exc.exit_code if isinstance(exc, RecembError) else 1
                log.error("run %s failed in stage %s (exit %d): %s: %s", run_date, failed, code,
                          type(exc).__name__, str(exc).strip().splitlines()[0][:300]
                          if str(exc).strip() else "")
            raise
        if summary:
            _write_summary(wh, run_date, started, t0, resume, entries, "ok", None)
    return results


def _entry(name: str, status: str, manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One stage's line in run.json: status, rows, seconds (0 when skipped)."""
    return {"stage": name, "status": status, "skipped": status == "skipped",
            "rows": manifest.get("rows", {}),
            "seconds": 0.0 if status == "skipped" else manifest.get("seconds"), **extra}


def _write_summary(wh: Warehouse, run_date: str, started: dt.datetime, t0: float, resume: bool,
                   entries: list[dict[str, Any]], status: str, failed: Optional[str]) -> None:
    payload = {"run_date": run_date, "status": status, "resume": resume,
               "started_at": started.isoformat(),
               "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
               "seconds": round(time.perf_counter() - t0, 3), "failed_stage": failed,
               "stages": entries}
    try:
        path = wh.write_manifest(run_date, "run", payload)
        log.info("run %s %s in %.1fs (summary %s)", run_date, status, payload["seconds"], path)
    except Exception:  # the run's own error matters more than a failed summary: on a failed
        # run (a full disk fails this write too) the CLI's one line says what happened
        log.log(logging.WARNING if status == "ok" else logging.INFO,
                "could not write the run summary", exc_info=True)
