"""The progress reporter logs while a slow Spark job runs, and stops with its block."""
import logging
import time

from recemb_spark.runner.progress import progress, set_step


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
