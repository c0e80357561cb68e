"""Faults injected into real parts, the outcome asserted: one line on the terminal naming the
cause and what to change, the stacks in the log file, a clear exit code, nothing half-written
visible to readers (see docs/faults.md for the table of faults and outcomes)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recemb_spark.cli import main
from recemb_spark.errors import (
    CorruptTableError,
    DiskFullError,
    InputError,
    OutOfMemoryError,
    RecembError,
    ServiceError,
)
from recemb_spark.failures import Context, classify
from recemb_spark.io.warehouse import Warehouse

from .redis_server import client, redis_server, require_redis_server

ROOT = Path(__file__).resolve().parents[1]
D1, D2 = "2026-11-20", "2026-11-21"
# the pipeline, trained briefly: tables, item2vec, deepwalk, evaluate
QUICK = ["als.enabled=false", "ann.enabled=false", "item2vec.max_iter=1",
         "deepwalk.max_iter=1", "walks.walks_per_node=2", "evaluate.user_query=false",
         "daily.enabled=false", "evaluate.protocol=holdout"]
TINY = ["sample.n_users=120", "sample.n_items=150", "sample.n_ratings=5000"]
#: a two-stage pipeline (tables, item2vec) for the tests that run it more than once
SHORT = [*TINY, *QUICK, "deepwalk.enabled=false", "evaluate.enabled=false"]
#: what a stack trace looks like on a terminal (Java frames, Python tracebacks)
STACK_MARKERS = ("\tat ", "Traceback (most recent call last)", "Caused by:", "py4j.protocol")


def sets(*items: str) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def one_line(err: str) -> str:
    """The terminal's only line (asserts there is exactly one, and no stack in it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert not any(m in lines[0] for m in STACK_MARKERS), lines[0]
    return lines[0]


def log_of(line: str) -> Path:
    """The log file the CLI's failure line names."""
    path = Path(line.rsplit("log: ", 1)[1].rstrip(")"))
    assert path.is_file(), line
    return path


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable}


def recemb(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``recemb ARGS`` in a fresh process (its own JVM): what a terminal would show."""
    return subprocess.run([sys.executable, "-m", "recemb_spark.cli", *args], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("part-*.parquet"))


def truncate(path: Path) -> None:
    """Cut a Parquet file in half (its footer lost) and drop Hadoop's checksum beside it, as
    a copy from elsewhere would have none."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    crc = path.parent / f".{path.name}.crc"
    if crc.exists():
        crc.unlink()


def visible_partitions(root: Path, run_date: str) -> list[Path]:
    """Every ``dt=<run_date>`` partition folder of every table (what readers can see)."""
    return sorted(p for table in root.iterdir() if not table.name.startswith(("_", "."))
                  for p in table.glob(f"dt={run_date}"))


def assert_whole(spark, partition: Path) -> int:
    """A partition readers may see: committed (``_SUCCESS``), no job leftovers, readable;
    returns its rows."""
    leftovers = [p for p in partition.rglob("_temporary")]
    assert not leftovers, leftovers
    for leaf in {f.parent for f in parquet_files(partition)}:
        assert (leaf / "_SUCCESS").exists(), leaf
    return spark.read.parquet(str(partition)).count()


def staged_files(root: Path) -> list[Path]:
    return [p for p in (root / "_staging").rglob("*") if p.is_file()] \
        if (root / "_staging").exists() else []


# --------------------------------------------------------------------------------------------
# the classifier, on exceptions raised by the real JVM, Python workers and Redis client


def test_classifier_on_real_failures(spark, tmp_path):
    ctx = Context(warehouse=str(tmp_path / "wh"), driver_memory="2g")
    jvm = spark.sparkContext._jvm
    # a real heap exhaustion in the driver JVM (an 8 GiB array on a 2 GiB heap)
    with pytest.raises(Exception) as info:
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Long.TYPE, 1 << 30)
    err = classify(info.value, ctx)
    assert isinstance(err, OutOfMemoryError) and err.exit_code == 6
    assert "Java heap space" in str(err) and "spark.driver_memory (now 2g)" in str(err)
    submitted = classify(info.value, Context(submitted=True, driver_memory="2g"))
    assert "spark-submit --driver-memory" in str(submitted) and "now 2g" not in str(submitted)

    # a Python worker killed (what the kernel's OOM killer does) in the middle of a task
    def killed(rows):
        os.kill(os.getpid(), signal.SIGKILL)
        yield from rows

    with pytest.raises(Exception) as info:
        spark.sparkContext.parallelize(range(4), 2).mapPartitions(killed).collect()
    err = classify(info.value, ctx)
    assert isinstance(err, OutOfMemoryError), err
    assert "Python worker exited unexpectedly" in str(err)
    assert "spark.executor.pyspark.memory" in str(err) and "\n" not in str(err)

    # a MemoryError raised inside a Python worker
    def greedy(rows):
        raise MemoryError()
        yield from rows

    with pytest.raises(Exception) as info:
        spark.sparkContext.parallelize(range(4), 2).mapPartitions(greedy).collect()
    assert isinstance(classify(info.value, ctx), OutOfMemoryError)

    # numpy refused an allocation in a Python worker (what an address-space limit,
    # spark.executor.pyspark.memory, makes of a large array): numpy's _ArrayMemoryError
    def huge(rows):
        import numpy as np

        np.empty(1 << 52, np.uint8)  # 4 PiB: refused by any kernel
        yield from rows

    with pytest.raises(Exception) as info:
        spark.sparkContext.parallelize(range(4), 2).mapPartitions(huge).collect()
    assert "_ArrayMemoryError" in str(info.value)
    err = classify(info.value, ctx)
    assert isinstance(err, OutOfMemoryError) and "spark.executor.pyspark.memory" in str(err)

    # a Redis that is not there
    import redis

    with redis_server(binary=require_redis_server()) as port:
        pass  # started and stopped: the port is closed now
    with pytest.raises(redis.ConnectionError) as info:
        client(port).ping()
    err = classify(info.value, ctx)
    assert isinstance(err, ServiceError) and err.exit_code == 1
    assert f"127.0.0.1:{port}" in str(err) and "export.host / export.port" in str(err)

    # anything else: "unexpected", the Java exception's own line rather than py4j's
    with pytest.raises(Exception) as info:
        spark.sql("select assert_true(1 = 2, 'injected')").collect()
    err = classify(info.value, ctx)
    assert type(err) is RecembError and err.exit_code == 1 and "injected" in str(err)
    assert "\n" not in str(err)
    # our own errors pass unchanged
    own = InputError("input path not found: x")
    assert classify(own, ctx) is own


def test_classifier_names_disk_and_executor_memory():
    """Texts as Spark writes them (the disk-full case runs for real below)."""
    ctx = Context(warehouse="/data/wh", master="spark://h:7077")
    executor = RuntimeError("Job aborted due to stage failure: Task 3 in stage 9.0 failed 4 "
                            "times, most recent failure: Lost task 3.3 (executor 1): "
                            "java.lang.OutOfMemoryError: GC overhead limit exceeded")
    err = classify(executor, ctx)
    assert isinstance(err, OutOfMemoryError) and "spark.executor.memory" in str(err)
    assert "GC overhead limit exceeded" in str(err)
    local = Context(warehouse="/data/wh", master="local[2]", driver_memory="2g")
    build = RuntimeError("[STAGE_MATERIALIZATION_MULTIPLE_FAILURES] Multiple failures (6) in "
                         "stage materialization: (root cause: org.apache.spark.SparkException: "
                         "Not enough memory to build and broadcast the table to all worker "
                         "nodes. As a workaround, you can either disable broadcast")
    err = classify(build, local)
    assert isinstance(err, OutOfMemoryError) and err.exit_code == 6
    assert "(now 2g)" in str(err) and "autoBroadcastJoinThreshold=-1" in str(err)
    collect = RuntimeError("org.apache.spark.SparkException: Job aborted due to stage "
                           "failure: Total size of serialized results of 4 tasks (1058.3 MiB) "
                           "is bigger than spark.driver.maxResultSize (1024.0 MiB)")
    err = classify(collect, local)
    assert isinstance(err, OutOfMemoryError) and err.exit_code == 6
    assert "1058.3 MiB" in str(err) and "spark.driver.maxResultSize (1024.0 MiB)" in str(err)
    heap = RuntimeError("py4j.protocol.Py4JJavaError: An error occurred while calling o2438.fit."
                        "\n: java.lang.OutOfMemoryError: Java heap space")
    err = classify(heap, Context(warehouse="/wh", master="local[*]", driver_memory="10g"))
    assert "(now 10g)" in str(err) and "e.g. 20g" in str(err)  # more than it has
    killed = RuntimeError("py4j.protocol.Py4JNetworkError: Answer from Java side is empty\n"
                          "ConnectionRefusedError: [Errno 111] Connection refused")
    err = classify(killed, Context(warehouse="/wh", master="local[*]", driver_memory="14g"))
    assert isinstance(err, OutOfMemoryError) and "driver JVM died" in str(err)
    assert "(now 14g)" in str(err) and "unexpected" not in str(err)
    full = OSError(28, "No space left on device", "/data/wh/_manifests/dt=x/run.lock")
    err = classify(full, ctx)
    assert isinstance(err, DiskFullError) and err.exit_code == 7
    assert "/data/wh/_manifests/dt=x/run.lock" in str(err) and "warehouse.path" in str(err)


# --------------------------------------------------------------------------------------------
# corrupt files: in the input, in a warehouse table


def test_truncated_parquet_in_the_input_folder_exits_3_naming_the_file(keep_spark, tmp_path,
                                                                       capsys):
    folder = tmp_path / "input"
    (keep_spark.range(3000)
     .selectExpr("cast(id % 97 as string) as userId", "cast(id % 89 as string) as movieId",
                 "cast(1 + id % 5 as double) as rating", "1700000000 + id as timestamp")
     .repartition(3).write.parquet(str(folder)))
    bad = parquet_files(folder)[1]
    truncate(bad)
    capsys.readouterr()
    rc = main(["tables", "--input", str(folder), "--warehouse", str(tmp_path / "wh"),
               "--run-date", D1, "-q"])
    line = one_line(capsys.readouterr().err)
    assert rc == 3, line
    assert line.startswith("recemb: tables failed: input file ") and bad.name in line
    assert f"input.path {folder}" in line and "truncated" in line
    log = log_of(line).read_text()
    assert "Traceback (most recent call last)" in log and "FAILED_READ_FILE" in log


def test_truncated_file_in_a_warehouse_table_exits_8_naming_the_table(keep_spark, tmp_path,
                                                                      capsys):
    wh = tmp_path / "wh"
    common = ["--warehouse", str(wh), "--run-date", D1, "-q", *sets(*TINY, *QUICK)]
    assert main(["tables", *common]) == 0
    bad = parquet_files(wh / "sequences" / f"dt={D1}")[0]
    truncate(bad)
    capsys.readouterr()
    rc = main(["item2vec", *common])
    line = one_line(capsys.readouterr().err)
    assert rc == CorruptTableError.exit_code == 8, line
    assert "warehouse table 'sequences' (dt=" + D1 + ")" in line and bad.name in line
    assert "re-run the stage that writes sequences" in line


# --------------------------------------------------------------------------------------------
# a failed write keeps the old partition whole (staging + rename)


def test_a_write_failing_mid_way_leaves_the_old_partition_whole(spark, tmp_path):
    wh = Warehouse(spark, str(tmp_path / "wh"))
    assert wh.write(spark.range(100).selectExpr("id"), "t", D1) == 100

    def fail_late(rows):  # the first partitions are written, then a task fails
        import pyspark

        ctx = pyspark.TaskContext.get()
        if ctx is not None and ctx.partitionId() == 3:
            raise RuntimeError("injected write failure")
        yield from rows

    failing = spark.range(0, 400, 1, 4).selectExpr("id").rdd.mapPartitions(fail_late)
    with pytest.raises(Exception, match="injected write failure"):
        wh.write(spark.createDataFrame(failing, "id long"), "t", D1)
    partition = tmp_path / "wh" / "t" / f"dt={D1}"
    assert assert_whole(spark, partition) == 100  # Spark's overwrite alone would have lost it
    assert staged_files(tmp_path / "wh") == []
    # and a write that succeeds replaces it whole
    assert wh.write(spark.range(7).selectExpr("id"), "t", D1) == 7
    assert assert_whole(spark, partition) == 7 and staged_files(tmp_path / "wh") == []


# --------------------------------------------------------------------------------------------
# a full Redis (maxmemory) during the export


def test_full_redis_during_export_is_one_line_and_keeps_the_pointer(keep_spark, tmp_path,
                                                                    capsys):
    from .test_export import PREFIX, export_args, make_tables

    wh = str(tmp_path / "wh")
    with redis_server("--maxmemory", "3mb", "--maxmemory-policy", "noeviction",
                      binary=require_redis_server()) as port:
        make_tables(keep_spark, wh, D1, n_items=60, n_users=40, seed=1)
        assert main(["export", "--run-date", D1, *export_args(wh, port)]) == 0
        r = client(port)
        v1 = r.get(f"{PREFIX}:item2vec:current")
        make_tables(keep_spark, wh, D2, n_items=4000, n_users=3000, dim=64, seed=2)
        capsys.readouterr()
        rc = main(["export", "--run-date", D2, *export_args(wh, port)])
        line = one_line(capsys.readouterr().err)
        assert rc == 1, line
        assert "command not allowed when used memory > 'maxmemory'" in line, line
        assert f"redis at 127.0.0.1:{port} is full (maxmemory)" in line
        assert r.get(f"{PREFIX}:item2vec:current") == v1  # the pointer did not move


# --------------------------------------------------------------------------------------------
# disk full: the warehouse on a 12 MB tmpfs


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_the_second_date(keep_spark, small_disk, capsys):
    wh = small_disk / "wh"
    common = ["--warehouse", str(wh), "-q", *sets(*SHORT)]
    assert main(["run", "--run-date", D1, *common]) == 0, capsys.readouterr().err
    before = {p: assert_whole(keep_spark, p) for p in visible_partitions(wh, D1)}
    assert len(before) >= 6
    # another file takes the disk but for less than half of what one date needs: the second
    # date fills it in the middle of writing its tables
    used = sum(f.stat().st_size for p in before for f in p.rglob("*") if f.is_file())
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - used // 3))
    done = recemb("run", "--run-date", D2, *common)
    line = one_line(done.stderr)
    assert done.returncode == DiskFullError.exit_code == 7, line
    assert line.startswith("recemb: run failed in stage ") and "disk full" in line, line
    assert str(wh) in line and "warehouse.path" in line
    # the earlier date is intact and readable
    assert {p: assert_whole(keep_spark, p) for p in visible_partitions(wh, D1)} == before
    # the second date: only whole partitions visible, nothing left in staging, no lock left
    for p in visible_partitions(wh, D2):
        assert_whole(keep_spark, p)
    assert staged_files(wh) == []
    assert not (wh / "_manifests" / f"dt={D2}" / "run.lock").exists()
    # with space again, the same date resumes and finishes
    (small_disk / "filler").unlink()
    capsys.readouterr()
    assert main(["run", "--run-date", D2, "--resume", *common]) == 0, capsys.readouterr().err
    assert {p.parent.name for p in visible_partitions(wh, D2)} >= \
        {p.parent.name for p in before}


# --------------------------------------------------------------------------------------------
# the driver killed with SIGKILL in the middle of a stage


def test_driver_killed_mid_stage_then_resume_takes_over(keep_spark, tmp_path, capsys):
    wh = tmp_path / "wh"
    common = ["--warehouse", str(wh), "--run-date", D1, "-q", *sets(*SHORT)]
    manifests = wh / "_manifests" / f"dt={D1}"
    proc = subprocess.Popen([sys.executable, "-m", "recemb_spark.cli", "run", *common],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed_during_write = False
    try:
        # wait for the first stage to finish (its manifest): the second one is running
        deadline = time.monotonic() + 600
        while not (manifests / "tables.json").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # kill when a partition of the running stage is being written, if we see one soon
        soon = time.monotonic() + 20
        while time.monotonic() < soon and proc.poll() is None:
            if staged_files(wh):
                killed_during_write = True
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, as a lost node
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lock = json.loads((manifests / "run.lock").read_text())
    assert lock["pid"] == proc.pid  # the dead run's lock is still there
    assert not (manifests / "run.json").exists()
    # readers see only whole partitions of the run date
    seen = {p: assert_whole(keep_spark, p) for p in visible_partitions(wh, D1)}
    assert {p.parent.name for p in seen} >= {"ratings", "sequences"}
    if killed_during_write:
        assert staged_files(wh)  # the half-written partition stayed out of the tables
    # the next run takes the stale lock over, skips what was done and finishes
    capsys.readouterr()
    assert main(["run", "--resume", *common]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "took over the stale run lock" in err and f"pid {proc.pid}" in err
    summary = json.loads((manifests / "run.json").read_text())
    assert summary["status"] == "ok"
    assert [s["status"] for s in summary["stages"]][0] == "skipped"  # tables, done before
    assert staged_files(wh) == [] and not (manifests / "run.lock").exists()
    for p in visible_partitions(wh, D1):
        assert_whole(keep_spark, p)
