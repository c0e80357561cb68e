"""Building the one SparkSession a job uses. Nothing here runs at import time."""
from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from .config import SparkConfig
from .logs import redirect_stderr_to
from .neighbors.blocks import memory_bytes

log = logging.getLogger(__name__)


def half_memory(memory: str) -> str:
    """Half of a JVM memory string, in MiB (``4g`` -> ``2048m``; a bare number is MiB)."""
    return f"{max(1, memory_bytes(memory) // 2 // 2**20)}m"


def started_by_spark_submit() -> bool:
    """True when this Python process was launched by ``spark-submit``.

    spark-submit's PythonRunner starts the JVM first and hands its gateway to Python through
    ``PYSPARK_GATEWAY_PORT``; a plain ``python``/``recemb`` process has no such variable.
    """
    return "PYSPARK_GATEWAY_PORT" in os.environ


BLAS_THREADS_KEY = "spark.executorEnv.OPENBLAS_NUM_THREADS"
#: environment of the Python workers that keeps their address space small (see build_session)
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2"}


def _submitted_conf_has(key: str) -> bool:
    """Under spark-submit (its JVM already running): whether ``key`` was given to it."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # joins spark-submit's gateway; starts no JVM
    return SparkConf().contains(key)


def build_session(cfg: SparkConfig, app_name: str = "recemb-spark",
                  options: dict[str, str] | None = None,
                  log_file: str | None = None) -> SparkSession:
    """Return the SparkSession for a job.

    Under ``spark-submit`` the master and resources given there are kept; ``cfg.master`` is
    ignored. Started directly, the session is ``local[*]`` (or ``cfg.master``) with settings
    that suit one machine: driver memory from ``cfg.driver_memory``, shuffle partitions scaled
    to the cores, executors running this very interpreter. Either way the session time zone is
    UTC, partition columns are read back as strings, and partition overwrite is dynamic.
    ``options`` are further builder settings (the catalog's, :mod:`recemb_spark.io.catalog`).

    ``cfg.blas_threads`` (when > 0) becomes ``OPENBLAS_NUM_THREADS`` of the executors and, in
    local mode, of the driver JVM started here: where a native BLAS is installed MLlib calls
    it from every task, and a threaded OpenBLAS per task would oversubscribe the cores. A
    value already in this process's environment, or (under spark-submit) an
    ``spark.executorEnv.OPENBLAS_NUM_THREADS`` given to spark-submit, wins. The Python
    workers inherit it too, so their numpy runs one thread per task (in local mode, without
    it, numpy uses every core: evaluate + ann at 25M took 347 s with 1 against ~250 s).

    Python workers get ``ARROW_DEFAULT_MEMORY_POOL=system`` and ``MALLOC_ARENA_MAX=2``
    (:data:`WORKER_ENV`; as ``spark.executorEnv.*``, and in local mode in this process's
    environment too; a value given to spark-submit or already in the environment wins):
    ``spark.executor.pyspark.memory`` is enforced with ``setrlimit(RLIMIT_AS)``, which
    counts address space, not resident memory, and a worker that imports numpy and pyarrow
    reserves ~1.8 GB of it by default (Arrow's mimalloc arena, glibc's per-thread malloc
    arenas); with these two ~0.55 GB (measured: a 1 GiB limit then leaves ~540 MB to the
    task instead of ~220 MB, and limits of 768 MB or less no longer hang or abort in pyarrow).

    ``log_file``: where Spark's own output goes instead of the terminal. Started directly,
    the JVM is launched with that file as its stderr (:func:`~recemb_spark.logs.
    redirect_stderr_to`): log4j's console lines, executor task-failure stack traces and the
    Python workers' stderr all land there. Under spark-submit (the JVM already runs) log4j
    is re-pointed instead: a file appender on the root logger, the console appenders turned
    off (:func:`quiet_log4j_console`). Without it Spark logs to the terminal at
    ``cfg.log_level``.
    """
    builder = SparkSession.builder.appName(app_name)
    submitted = started_by_spark_submit()
    if cfg.blas_threads and not (submitted and _submitted_conf_has(BLAS_THREADS_KEY)):
        threads = os.environ.setdefault("OPENBLAS_NUM_THREADS", str(cfg.blas_threads))
        builder = builder.config(BLAS_THREADS_KEY, threads)
    for name, value in WORKER_ENV.items():
        key = f"spark.executorEnv.{name}"
        if not (submitted and _submitted_conf_has(key)):
            builder = builder.config(key, value if submitted else
                                     os.environ.setdefault(name, value))
    if submitted:
        if cfg.master:
            log.warning("spark.master=%s ignored: spark-submit's --master decides", cfg.master)
        if cfg.shuffle_partitions:
            builder = builder.config("spark.sql.shuffle.partitions", cfg.shuffle_partitions)
    else:
        # Workers must run the interpreter that has our packages (a venv's python).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        cores = os.cpu_count() or 2
        builder = (builder.master(cfg.master or "local[*]")
                   .config("spark.driver.memory", cfg.driver_memory)
                   # what one action may collect: half the heap (Spark's default is 1g
                   # whatever the heap; MLlib Word2Vec collects 1 GiB per epoch at 3M words)
                   .config("spark.driver.maxResultSize", half_memory(cfg.driver_memory))
                   .config("spark.sql.shuffle.partitions", cfg.shuffle_partitions or 2 * cores)
                   .config("spark.default.parallelism", 2 * cores)
                   .config("spark.ui.showConsoleProgress", "false"))
    for key, value in (options or {}).items():
        builder = builder.config(key, value)
    builder = (builder
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false"))
    with redirect_stderr_to(None if submitted else log_file):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    if submitted and log_file is not None:
        try:
            quiet_log4j_console(spark, log_file)
        except Exception:  # a log4j other than log4j2 core: keep its console as it is
            log.warning("could not send Spark's log4j output to %s", log_file, exc_info=True)
    log.info("spark %s master=%s parallelism=%d (recemb_spark from %s)", spark.version,
             spark.sparkContext.master, spark.sparkContext.defaultParallelism,
             os.path.dirname(__file__))
    return spark


def quiet_log4j_console(spark: SparkSession, log_file: str) -> None:
    """Re-point log4j2's root logger of a running JVM: its console appenders are detached and
    a file appender writing ``log_file`` (appending) takes their place."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a running session has its gateway
    core = jvm.org.apache.logging.log4j.core
    context = jvm.org.apache.logging.log4j.LogManager.getContext(False)
    config = context.getConfiguration()
    layout = (core.layout.PatternLayout.newBuilder()
              .withPattern("%d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex")
              .withConfiguration(config).build())
    appender = (core.appender.FileAppender.newBuilder().withFileName(log_file)
                .withAppend(True).setName("recemb-log-file").setLayout(layout)
                .setConfiguration(config).build())
    appender.start()
    config.addAppender(appender)
    root = config.getRootLogger()
    for name in list(root.getAppenders().keySet()):
        if "Console" in root.getAppenders().get(name).getClass().getSimpleName():
            root.removeAppender(name)
    root.addAppender(appender, None, None)
    context.updateLoggers()
