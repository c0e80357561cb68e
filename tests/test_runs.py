"""Production runs: resume after a failure, the run summary, and one run per date (the lock)."""
import datetime as dt
import gc
import json
import logging
import os
import socket
import subprocess
import weakref
from pathlib import Path

import pytest

from recemb_spark.cli import main
from recemb_spark.config import load_config
from recemb_spark.errors import LockError
from recemb_spark.io.warehouse import Warehouse
from recemb_spark.jvm import persistent_rdd_ids
from recemb_spark.runner.lock import RunLock, lock_path
from recemb_spark.runner.runs import run_stage, skip_reason
from recemb_spark.runner.stage import Stage
from recemb_spark.stages import embeddings, stage_named

from .conftest import SMALL_SAMPLE

DATE = "2026-11-10"
# four stages, trained briefly: enough to fail in the middle and resume
QUICK = [*SMALL_SAMPLE, "als.enabled=false", "ann.enabled=false", "item2vec.max_iter=1",
         "deepwalk.max_iter=1", "walks.walks_per_node=2", "evaluate.user_query=false",
         "daily.enabled=false"]


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def files_state(root: Path, *tables: str) -> dict[str, tuple[int, bytes]]:
    """Modification time (ns) and content of every file under the given table folders."""
    out = {}
    for table in tables:
        for f in sorted((root / table).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(root))] = (f.stat().st_mtime_ns, f.read_bytes())
    assert out, tables
    return out


def run_json(root: Path) -> dict:
    return json.loads((root / "_manifests" / f"dt={DATE}" / "run.json").read_text())


def test_failed_stage_then_resume_skips_what_was_done(keep_spark, tmp_path, monkeypatch, capsys):
    root = tmp_path / "wh"
    args = ["--warehouse", str(root), "--run-date", DATE, "-q", *sets(*QUICK)]
    real_run = embeddings.run  # the model stages' run(ctx)

    def crash_deepwalk(ctx):
        if ctx.stage.name == "deepwalk":
            raise RuntimeError("executor lost (injected)")
        real_run(ctx)

    monkeypatch.setattr(embeddings, "run", crash_deepwalk)
    assert main(["run", *args]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "failed in stage deepwalk" in last and "executor lost (injected)" in last
    summary = run_json(root)
    assert summary["status"] == "failed" and summary["failed_stage"] == "deepwalk"
    assert [(s["stage"], s["status"]) for s in summary["stages"]] == [
        ("tables", "ok"), ("item2vec", "ok"), ("deepwalk", "failed"), ("evaluate", "not_run")]
    assert summary["stages"][0]["rows"]["ratings"] > 20000
    assert not (root / "_manifests" / f"dt={DATE}" / "run.lock").exists()

    monkeypatch.setattr(embeddings, "run", real_run)
    before = files_state(root, "ratings", "sequences", "item_embeddings", "user_embeddings")
    manifests = {s: (root / "_manifests" / f"dt={DATE}" / f"{s}.json").read_text()
                 for s in ("tables", "item2vec")}
    assert main(["run", "--resume", *args]) == 0
    summary = run_json(root)
    assert summary["status"] == "ok" and summary["resume"] is True
    assert [(s["stage"], s["status"], s["skipped"]) for s in summary["stages"]] == [
        ("tables", "skipped", True), ("item2vec", "skipped", True),
        ("deepwalk", "ok", False), ("evaluate", "ok", False)]
    assert summary["stages"][1]["rows"]["item_embeddings"] > 100  # rows of the earlier run
    assert summary["stages"][1]["seconds"] == 0 and summary["stages"][2]["seconds"] > 0
    after = files_state(root, "ratings", "sequences", "item_embeddings", "user_embeddings")
    # the skipped stages' files are untouched (same mtime and bytes); deepwalk's are new
    assert {k: v for k, v in after.items() if "model=deepwalk" not in k} == before
    assert any("model=deepwalk" in k for k in after)
    for stage, text in manifests.items():
        assert (root / "_manifests" / f"dt={DATE}" / f"{stage}.json").read_text() == text
    wh = Warehouse(keep_spark, str(root))
    models = {r["model"] for r in wh.read("metrics", DATE, stage="evaluate").collect()}
    assert {"item2vec", "deepwalk", "popularity"} <= models
    assert "leave-last-out evaluation" in capsys.readouterr().out

    # why a stage would (not) be skipped, from the manifests just written
    cfg = load_config(overrides=[f"warehouse.path={root}", *QUICK])
    assert skip_reason(wh, stage_named("tables"), cfg, DATE)[0] is None
    more_memory = load_config(overrides=[f"warehouse.path={root}", *QUICK,
                                         "spark.driver_memory=8g"])
    item2vec, tables = stage_named("item2vec"), stage_named("tables")
    assert skip_reason(wh, item2vec, more_memory, DATE)[0] is None
    threads = load_config(overrides=[f"warehouse.path={root}", *QUICK, "spark.blas_threads=2"])
    assert skip_reason(wh, item2vec, threads, DATE)[0] is None  # speed, not the result
    other = load_config(overrides=[f"warehouse.path={root}", *QUICK, "item2vec.max_iter=3"])
    assert skip_reason(wh, tables, other, DATE)[0] is None  # tables does not read item2vec
    assert skip_reason(wh, item2vec, other, DATE)[0] == "parameters changed: item2vec.max_iter"
    assert skip_reason(wh, stage_named("evaluate"), other, DATE)[0].startswith(
        "parameters changed")
    wh.fs.delete(wh.partition_path("user_embeddings", DATE, "item2vec"))
    reason = skip_reason(wh, item2vec, cfg, DATE)[0]
    assert reason == f"output partition(s) missing: user_embeddings/dt={DATE}/model=item2vec"


def write_lock(root: Path, **info):
    path = root / "_manifests" / f"dt={DATE}" / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"owner": "someone", "command": "run", "token": "t0", **info}))
    return path


def now_iso(hours_ago: float = 0.0) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)).isoformat()


def test_lock_held_by_a_live_process_fails_fast(keep_spark, tmp_path, capsys):
    root = tmp_path / "wh"
    holder = subprocess.Popen(["sleep", "120"])
    try:
        lock = write_lock(root, host=socket.gethostname(), pid=holder.pid, started_at=now_iso())
        rc = main(["tables", "--warehouse", str(root), "--run-date", DATE, "-q",
                   *sets(*SMALL_SAMPLE)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 5 and len(err) == 1
        assert f"run date {DATE} of warehouse {root} is locked by someone@" in err[0]
        assert f"pid {holder.pid}" in err[0] and str(lock) in err[0]
        assert lock.exists() and json.loads(lock.read_text())["pid"] == holder.pid
        assert not (root / "ratings").exists()  # nothing ran
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(keep_spark, tmp_path, caplog):
    root = tmp_path / "wh"
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = write_lock(root, host=socket.gethostname(), pid=gone.pid, started_at=now_iso())
    logger = logging.getLogger("recemb_spark.runner.lock")
    logger.addHandler(caplog.handler)
    try:
        rc = main(["tables", "--warehouse", str(root), "--run-date", DATE, "-q",
                   *sets(*SMALL_SAMPLE)])
    finally:
        logger.removeHandler(caplog.handler)
    assert rc == 0 and (root / "ratings" / f"dt={DATE}").is_dir()
    # each record once: with recemb_spark propagating (no CLI set-up earlier on this worker)
    # the same record also reaches caplog's handler at the root
    records = list({id(r): r for r in caplog.records}.values())
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "took over the stale run lock" in warnings[0]
    assert f"process {gone.pid} on {socket.gethostname()} is gone" in warnings[0]
    assert not lock.exists()  # released at the end
    assert not list(lock.parent.glob("run.lock.*"))  # no temporary files left


def test_lock_age_and_other_hosts(spark, tmp_path):
    root = tmp_path / "wh"
    wh = Warehouse(spark, str(root))
    first = RunLock(wh, DATE, max_age_hours=24)
    first.acquire()
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        RunLock(wh, DATE, max_age_hours=24).acquire()  # a second run in this very process
    first.release()
    assert not Path(lock_path(wh, DATE)).exists()
    with RunLock(wh, DATE, max_age_hours=24):  # free again
        assert json.loads(Path(lock_path(wh, DATE)).read_text())["pid"] == os.getpid()
    # another host: its pid cannot be checked, only the age counts
    write_lock(root, host="elsewhere.example", pid=1, started_at=now_iso(hours_ago=2))
    with pytest.raises(LockError, match="someone@elsewhere.example"):
        RunLock(wh, DATE, max_age_hours=24).acquire()
    write_lock(root, host="elsewhere.example", pid=1, started_at=now_iso(hours_ago=30))
    with RunLock(wh, DATE, max_age_hours=24) as taken:
        held = json.loads(Path(lock_path(wh, DATE)).read_text())
        assert held["token"] == taken.info["token"] and held["host"] == socket.gethostname()
    assert not Path(lock_path(wh, DATE)).exists()


class _CachingStage(Stage):
    """A stage whose run caches a Dataset and persists an RDD, then maybe fails."""

    def load(self):
        def run(ctx):
            ctx.spark.range(50).selectExpr("id * 2 as x").cache().count()
            ctx.spark.sparkContext.parallelize(range(10)).persist().count()
            if self.name == "failing":
                raise ValueError("injected")
        return run


#: weak references to what :class:`_HoldingStage` held in the JVM, filled by its run
_HELD: list[weakref.ref] = []


class _HoldingStage(Stage):
    """A stage whose run builds a local Dataset and calls a method on it through py4j (the
    ``JavaObject`` then caches a ``JavaMember`` pointing back at it: a reference cycle)."""

    def load(self):
        def run(ctx):
            df = ctx.spark.createDataFrame([(i, [float(i)] * 4) for i in range(100)],
                                           "id int, v array<float>")
            assert df._jdf.count() == 100
            _HELD.append(weakref.ref(df._jdf))
        return run


def test_a_stage_lets_go_of_the_java_objects_its_frames_held(spark, tmp_path):
    """What a stage's frames pointed to in the JVM (plans, a LocalRelation's rows) is released
    when the stage ends, not when CPython's cyclic collector next reaches the old generation
    (disabled here, as it can be for the rest of a long run)."""
    cfg = load_config(overrides=[f"warehouse.path={tmp_path / 'wh'}"])
    stage = _HoldingStage("holding", "test", (), (), (), "tables")
    _HELD.clear()
    gc.disable()
    try:
        run_stage(stage, spark, cfg, DATE)
        assert len(_HELD) == 1 and _HELD[0]() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("name", ["caching", "failing"])
def test_a_stage_leaves_nothing_cached_but_what_was_cached_before(spark, tmp_path, name):
    cfg = load_config(overrides=[f"warehouse.path={tmp_path / 'wh'}"])
    earlier = spark.sparkContext.parallelize(range(3)).persist()
    earlier.count()
    before = persistent_rdd_ids(spark)
    stage = _CachingStage(name, "test", (), (), (), "tables")
    if name == "failing":
        with pytest.raises(ValueError, match="injected"):
            run_stage(stage, spark, cfg, DATE)
    else:
        run_stage(stage, spark, cfg, DATE)
    assert persistent_rdd_ids(spark) == before and earlier.id() in before
    cache = spark._jsparkSession.sharedState().cacheManager()
    assert cache.isEmpty()
    earlier.unpersist()
