"""The progress reporter logs while a slow Spark job runs, and stops with its block."""
import logging
import time

from recemb_spark.runner.progress import gc_share, progress, set_step


def slow(rows):
    time.sleep(1.5)  # long enough for several 0.3 s ticks per job on a loaded machine
    return [sum(1 for _ in rows)]


def test_logs_while_a_slow_job_runs(spark, caplog, monkeypatch):
    # the CLI's setup_logging stops recemb_spark's records at its own handler; caplog listens
    # at the root
    monkeypatch.setattr(logging.getLogger("recemb_spark"), "propagate", True)
    caplog.set_level(logging.INFO, logger="recemb_spark.runner.progress")
    outer = set_step("fit")
    try:
        with progress(spark, "stage test", every=0.3) as reporter:
            spark.sparkContext.parallelize(range(8), 4).mapPartitions(slow).collect()
            spark.sparkContext.parallelize(range(8), 4).mapPartitions(slow).collect()
    finally:
        set_step(outer)
    records = {id(r): r for r in caplog.records}.values()  # each record once (see test_runs)
    lines = [r.getMessage() for r in records if r.name == "recemb_spark.runner.progress"]
    assert reporter.lines == len(lines) >= 3
    assert all(line.startswith("progress stage test / fit: ") for line in lines)
    running = [line for line in lines if "running job" in line]
    assert running and "tasks" in running[0] and "/4 done" in running[0]
    # the job count grows: the second job's lines say the first is done
    assert any("1 Spark jobs done, running job" in line for line in lines)
    n = reporter.lines
    time.sleep(0.8)
    assert reporter.lines == n                                     # stopped with its block


def test_nothing_for_a_short_block(spark, caplog):
    caplog.set_level(logging.INFO, logger="recemb_spark.runner.progress")
    with progress(spark, "quick", every=30) as reporter:
        spark.range(10).count()
    assert reporter.lines == 0


def test_gc_share_of_an_interval():
    assert gc_share(450.0, 0.9) == 0.5
    assert gc_share(3000.0, 1.0) == 1.0  # parallel collectors: capped
    assert gc_share(10.0, 0.0) == 0.0 and gc_share(-5.0, 1.0) == 0.0


def test_warns_when_the_driver_jvm_mostly_collects_garbage(spark, caplog, monkeypatch):
    """Full collections back to back (System.gc(), as a driver whose heap is full runs them)
    -> a warning naming the driver memory settings; an idle block -> none."""
    monkeypatch.setattr(logging.getLogger("recemb_spark"), "propagate", True)
    caplog.set_level(logging.INFO, logger="recemb_spark.runner.progress")
    system = spark.sparkContext._jvm.java.lang.System
    with progress(spark, "stage gc", every=0.6) as reporter:
        end = time.perf_counter() + 2.5
        while time.perf_counter() < end:
            system.gc()
    warned = [r.getMessage() for r in {id(r): r for r in caplog.records}.values()
              if r.levelno == logging.WARNING and r.name == "recemb_spark.runner.progress"]
    assert reporter.lines >= 1 and warned, warned  # (collections stop the thread too)
    assert warned[0].startswith("stage gc: the driver JVM spent ")
    assert "collecting garbage (heap " in warned[0] and "spark.driver_memory" in warned[0]
    assert "--driver-memory" in warned[0]
    caplog.clear()
    with progress(spark, "stage idle", every=0.3) as reporter:
        time.sleep(1.2)
    assert reporter.lines >= 2
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
