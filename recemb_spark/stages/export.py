"""Stage ``export``: the run date's vectors and neighbour lists into a new Redis version, then
the switch of each model's pointer (only after every count is verified), then the expiry of
old versions."""
from __future__ import annotations

import logging
import time
from typing import Any

import redis
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame

from ..config import Config
from ..errors import StageError
from ..io.warehouse import Warehouse
from ..runner.stage import StageContext, StageResult
from ..serving.frames import SOURCES, expected_counts, export_frame, write_frame
from ..serving.redis_store import (
    RANKED,
    ExportError,
    RedisTarget,
    VersionStore,
    new_version,
    pointer_key,
)

log = logging.getLogger(__name__)

#: what a failed write raises (Redis, the network, a Spark task that failed on an executor):
#: reported as one ExportError line with the password scrubbed; anything else is a bug and
#: keeps its traceback
WRITE_FAILURES = (ExportError, redis.RedisError, OSError, PySparkException, Py4JJavaError)


def short_error(exc: BaseException, target: RedisTarget) -> str:
    """One line about ``exc`` (for a Spark task failure: the worker's exception line), with
    the password scrubbed."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked = next((ln for ln in lines if "redis.exceptions." in ln), None)
    if picked is None:
        picked = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln),
                      lines[-1] if lines else type(exc).__name__)
    return target.scrub(picked)[:400]


def plan(wh: Warehouse, cfg: Config, run_date: str) -> dict[str, list[str]]:
    """Per exported model, the kinds to write (switched on and present for the run date); a
    model without item_embeddings (``blend``) is exported when it has a kind to write."""
    e = cfg.export
    present = wh.models("item_embeddings", run_date)
    models = [m for m in e.models if m in present]
    if not models:
        raise StageError(f"export: no item_embeddings for any of {e.models} at dt={run_date} "
                         f"(present: {present}); run a model stage first")
    wanted = [k for k in SOURCES if getattr(e, k)]
    out = {m: [k for k in wanted if wh.has(SOURCES[k][0], run_date, m)] for m in models}
    for m in e.models:  # lists without vectors of their own (the blend's user_candidates)
        kinds = [k for k in wanted if wh.has(SOURCES[k][0], run_date, m)]
        if m not in present and kinds:
            out[m] = kinds
    return out


def run(ctx: StageContext) -> None:
    """Write the run date's vectors and lists of every planned model as a new version, verify
    the counts, switch the pointers, retire old versions (see the module doc)."""
    cfg, run_date, wh, res = ctx.config, ctx.run_date, ctx.warehouse, ctx.result
    e = cfg.export
    todo = plan(wh, cfg, run_date)
    target = RedisTarget.from_config(e)
    tables = {(m, SOURCES[k][0]) for m, kinds in todo.items() for k in kinds}
    res.inputs.update({f"{t}/{m}": wh.partition_path(t, run_date, m)
                       for m, t in sorted(tables)})
    version = new_version(run_date)
    res.details.update(redis=target.describe(), prefix=e.prefix, version=version,
                       kinds={m: kinds for m, kinds in todo.items()})
    skipped = [m for m in e.models if m not in todo]
    if skipped:
        res.details["skipped_models"] = skipped
        log.info("export: no item_embeddings at dt=%s for %s: skipped", run_date, skipped)
    store = VersionStore(target.client(), e.prefix)
    try:
        _export(wh, cfg, target, store, run_date, version, todo, res)
    finally:
        store.r.close()


def _export(wh: Warehouse, cfg: Config, target: RedisTarget, store: VersionStore,
            run_date: str, version: str, todo: dict[str, list[str]], res: StageResult) -> None:
    """Write and verify every model's version, switch the pointers, retire old versions."""
    e = cfg.export
    try:
        store.r.ping()
    except redis.RedisError as exc:
        raise ExportError(f"cannot reach redis at {target.describe()}: "
                          f"{short_error(exc, target)}") from None
    begun: list[str] = []
    model = kind = ""
    try:
        for model, kinds in todo.items():
            store.begin(model, version, run_date)
            begun.append(model)
            info: dict[str, Any] = {"run_date": run_date}
            for kind in kinds:
                with res.timed(f"{model}.{kind}"):
                    info.update(_write_kind(wh, cfg, target, store, run_date, model, version,
                                            kind, res))
            store.complete(model, version, info)
    except Exception as exc:
        _abandon(store, begun, version)
        if not isinstance(exc, WRITE_FAILURES):
            raise  # a programming error: keep its traceback
        where = f"{model} {kind}".strip()
        message = exc if isinstance(exc, ExportError) else short_error(exc, target)
        raise ExportError(f"export to redis {target.describe()} failed writing {where} of "
                          f"version {version}: {message}; the pointers still name the "
                          f"previous versions") from None
    t0 = time.perf_counter()
    try:
        previous = store.switch({m: version for m in todo})
    except redis.RedisError as exc:
        raise ExportError(f"switching the pointers to version {version} failed: "
                          f"{short_error(exc, target)}; the switch is one MULTI/EXEC (all "
                          f"pointers or none): see which version "
                          f"{pointer_key(e.prefix, next(iter(todo)))} names") from None
    retired: dict[str, dict[str, int]] = {}
    try:
        for m in todo:
            for old in store.stale_versions(m, run_date, e.keep_days):
                retired.setdefault(m, {})[old] = store.retire(m, old, e.retire_grace_seconds)
    except redis.RedisError as exc:  # the new versions are live; old ones wait for next time
        res.details["retire_error"] = short_error(exc, target)
        log.warning("export: retiring old versions failed (%s); the next export retries",
                    res.details["retire_error"])
    res.timings["switch_and_retire"] = round(time.perf_counter() - t0, 3)
    res.details.update(previous=previous, retired=retired,
                       pointers={m: pointer_key(e.prefix, m) for m in todo})
    for m in todo:
        log.info("export %s: %s now names %s (was %s); retired %d old version(s)", m,
                 pointer_key(e.prefix, m), version, previous[m], len(retired.get(m, {})))


def _write_kind(wh: Warehouse, cfg: Config, target: RedisTarget, store: VersionStore,
                run_date: str, model: str, version: str, kind: str,
                res: StageResult) -> dict[str, Any]:
    """Write one kind of one model, verify its counts; return what goes into the version's meta."""
    frame = export_frame(wh.read(SOURCES[kind][0], run_date, model, needed_by="export"), kind)
    if kind in RANKED:  # counted, then written: group once
        frame = frame.persist()
    try:
        return _write_frame_checked(cfg, target, store, model, version, kind, frame, res)
    finally:
        frame.unpersist()


def _write_frame_checked(cfg: Config, target: RedisTarget, store: VersionStore, model: str,
                         version: str, kind: str, frame: DataFrame,
                         res: StageResult) -> dict[str, Any]:
    e = cfg.export
    expected = expected_counts(frame, kind)
    if expected.distinct != expected.keys:
        raise ExportError(f"{SOURCES[kind][0]} (model {model}) has {expected.keys} rows but "
                          f"{expected.distinct} distinct ids: one key per id is expected")
    if expected.min_dim != expected.max_dim:
        raise ExportError(f"{SOURCES[kind][0]} (model {model}) mixes vector sizes "
                          f"{expected.min_dim}..{expected.max_dim}")
    t0 = time.perf_counter()
    written = write_frame(frame, target, e.prefix, model, version, kind, e.batch_size)
    seconds = time.perf_counter() - t0
    acked = store.acknowledged(model, version, kind)
    if not (written["rows"] == written["present"] == acked == expected.keys):
        raise ExportError(f"{model} {kind}: {expected.keys} keys expected, {written['rows']} "
                          f"written, {written['present']} found present by the writers, "
                          f"{acked} acknowledged in redis")
    res.rows[f"{kind}_{model}"] = expected.keys
    res.details.setdefault("throughput", {})[f"{model}.{kind}"] = {
        "keys": expected.keys, "seconds": round(seconds, 3),
        "keys_per_second": round(expected.keys / seconds) if seconds > 0 else None,
        "partitions": written["partitions"]}
    log.info("export %s %s: %d keys in %.1fs", model, kind, expected.keys, seconds)
    info: dict[str, Any] = {kind: expected.keys}
    if expected.max_dim:
        info[f"{kind}_dim"] = expected.max_dim
    return info


def _abandon(store: VersionStore, models: list[str], version: str) -> None:
    """Best effort after a failure: delete what the failed version wrote. When Redis is not
    reachable, the version stays registered as ``writing`` and the next export retires it."""
    for model in models:
        try:
            store.retire(model, version, 0)
        except Exception as exc:  # the write error matters more
            log.warning("export: could not clean up %s version %s (%s); the next export "
                        "retires it", model, version, type(exc).__name__)
