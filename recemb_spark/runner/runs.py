"""One run of stages for one date: each stage's manifest, the run lock, ``--resume``, and the
run summary.

:func:`run_stage` runs one declared stage (:class:`~.stage.Stage`) with its
:class:`~.stage.StageContext`, logs one line and writes its manifest. :func:`run_stages` holds
the date's lock (:mod:`.lock`) while it runs stages in order. With ``resume`` a stage is
skipped when its manifest for the date says ``ok``, the keys of the config sections it
declares equal the current ones (:func:`compared_parameters`) and every partition it wrote
still exists; from the first stage that must run, every later stage runs. The summary
``_manifests/dt=<date>/run.json`` lists each stage's status (ok / failed / skipped / not_run),
rows and seconds; a skipped stage keeps its own manifest untouched (it still describes the
run that wrote the outputs).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from .. import __version__
from ..config import Config, run_control_keys
from ..errors import RecembError
from ..io.warehouse import Warehouse, join_path, record_writes
from ..jvm import drop_python_references, persistent_rdd_ids, release_caches
from .lock import RunLock
from .progress import progress
from .stage import Stage, StageContext, StageResult

log = logging.getLogger(__name__)


def run_stage(stage: Stage, spark: SparkSession, cfg: Config, run_date: str) -> StageResult:
    """Run one stage, log one line about it, and write its manifest (also when it fails).

    The manifest goes to ``<warehouse>/_manifests/dt=<run_date>/<name>.json``; its
    ``outputs`` lists the partitions the stage wrote (relative to the warehouse root). A write
    to a table the stage does not declare is a programming error (RuntimeError). What the
    stage left cached is released when it ends (:func:`~recemb_spark.jvm.release_caches`), and
    so are the JVM objects its Python frames held
    (:func:`~recemb_spark.jvm.drop_python_references`).
    """
    name = stage.name
    wh = Warehouse(spark, cfg.warehouse.path)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log.info("stage %s: started (run date %s)", name, run_date)
    manifest: dict[str, Any] = {
        "stage": name, "run_date": run_date, "started_at": started.isoformat(),
        "spark_version": spark.version, "recemb_version": __version__,
        "master": spark.sparkContext.master, "parameters": cfg.to_dict(),
    }
    ctx = StageContext(spark, cfg, run_date, wh, StageResult(), stage)
    outputs: list[str] = []
    cached_before = persistent_rdd_ids(spark)
    try:
        run = stage.load()
        with record_writes() as outputs, progress(spark, f"stage {name}"):  # progress: a
            # line every ~45 s while it runs
            run(ctx)
        undeclared = sorted({p.split("/")[0] for p in outputs} - set(stage.writes))
        if undeclared:
            raise RuntimeError(f"stage {name} wrote table(s) {undeclared} it does not declare "
                               f"(writes={list(stage.writes)}): fix recemb_spark/stages/"
                               f"__init__.py")
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                        seconds=round(time.perf_counter() - t0, 3), outputs=outputs)
        try:
            wh.write_manifest(run_date, name, manifest)
        except Exception:  # the original error matters more than a failed manifest
            log.debug("could not write the failure manifest", exc_info=True)
        raise
    finally:
        try:
            dropped = release_caches(spark, cached_before)
            collected = drop_python_references()
            log.debug("stage %s: %d cached RDD(s) released, %d Python objects collected", name,
                      dropped, collected)
        except Exception:  # a stopped context (a lost driver) has nothing left to release
            log.debug("could not release the stage's caches", exc_info=True)
    result = ctx.result
    seconds = round(time.perf_counter() - t0, 3)
    manifest.update(status="ok", seconds=seconds,
                    finished_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                    inputs=result.inputs, rows=result.rows, details=result.details,
                    timings=result.timings, metrics=result.metrics, outputs=outputs)
    path = wh.write_manifest(run_date, name, manifest)
    rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
    log.info("stage %s: done in %.1fs: %s (manifest %s)", name, seconds, rows, path)
    return result


def compared_parameters(stage: Stage, params: dict[str, Any]) -> dict[str, Any]:
    """The ``section.key -> value`` pairs of ``params`` that decide ``stage``'s outputs: the
    keys of the sections it declares and the single keys it declares (``Stage.config``),
    run-control keys aside."""
    control = run_control_keys()
    return {f"{section}.{key}": value
            for section, values in params.items()
            for key, value in values.items()
            if (section in stage.config or f"{section}.{key}" in stage.config)
            and f"{section}.{key}" not in control}


def skip_reason(wh: Warehouse, stage: Stage, cfg: Config, run_date: str
                ) -> tuple[str | None, dict[str, Any] | None]:
    """``(why the stage must run, None)``, or ``(None, its manifest)`` when it can be skipped."""
    path = wh.manifest_path(run_date, stage.name)
    if not wh.fs.exists(path):
        return "no manifest for this date", None
    manifest = wh.read_manifest(run_date, stage.name)
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
               stages: list[Stage], resume: bool = False,
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
            for stage in stages:
                name = stage.name
                if not must_run:
                    reason, manifest = skip_reason(wh, stage, cfg, run_date)
                    if manifest is not None:  # no reason to run it
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
                    results[name] = run_stage(stage, spark, cfg, run_date)
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
                        for n in (s.name for s in stages) if n not in done]
            if summary:
                _write_summary(wh, run_date, started, t0, resume, entries, "failed", failed)
            if failed is not None:
                try:
                    setattr(exc, "recemb_stage", failed)  # noqa: B010 - read by the CLI
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
                   entries: list[dict[str, Any]], status: str, failed: str | None) -> None:
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
