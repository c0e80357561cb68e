"""One local SparkSession for the whole test run (start-up costs ~10 s), and small configs."""
from __future__ import annotations

import os

import pytest

from recemb_spark.config import Config, load_config
from recemb_spark.jvm import drop_python_references
from recemb_spark.session import build_session

from .jvm_options import TEST_JVM_OPTIONS

#: the driver JVMs spark-submit launches for the tests' subprocesses (``recemb`` runs,
#: spark-sql, the cluster jobs) and the standalone cluster's daemons inherit these (the cluster
#: tests give them to executors); not the session below. Only where the environment has none
ADDED_ENV = {name: TEST_JVM_OPTIONS for name in ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")
             if name not in os.environ}
os.environ.update(ADDED_ENV)

# Small enough to run in seconds, large enough to carry the sample's structure.
#: ... and the train-once protocol: evaluate.protocol auto would train every model twice on
#: logs this small (tests/test_holdout.py covers auto)
SMALL_SAMPLE = ["sample.n_users=300", "sample.n_items=400", "sample.n_ratings=24000",
                "evaluate.protocol=holdout"]


#: the session's Spark settings beyond the config's: its tests check the library on inputs of
#: kilobytes, where adaptive query execution only adds work (it plans each shuffle as a job of
#: its own and re-optimises between them: the pipeline fixture's run in a warm session, 57 s
#: with it, 49 s without, the same tables). The tests' `recemb` subprocesses, the cluster's
#: jobs and spark-sql keep the product's settings, adaptive execution on
SESSION_OPTIONS = {"spark.sql.adaptive.enabled": "false"}


@pytest.fixture(scope="session")
def spark():
    cfg = load_config(overrides=["spark.shuffle_partitions=4", "spark.driver_memory=2g",
                                 "spark.master=local[2]"])
    # this session's JVM lives the whole run and trains hundreds of tests' models: there the
    # optimising compiler pays back (tests/jvm_options.py), so it starts without the options
    ours = os.environ.pop("SPARK_SUBMIT_OPTS") if "SPARK_SUBMIT_OPTS" in ADDED_ENV else None
    try:
        session = build_session(cfg.spark, "recemb-tests", options=SESSION_OPTIONS)
    finally:
        if ours is not None:
            os.environ["SPARK_SUBMIT_OPTS"] = ours
    yield session
    session.stop()


@pytest.fixture(autouse=True, scope="module")
def _let_go_of_java_objects():
    """After each test file, the JVM objects only Python reference cycles still held (py4j
    objects are in cycles; see :func:`~recemb_spark.jvm.drop_python_references`) are released:
    the files share one session, whose driver heap they would otherwise fill."""
    yield
    drop_python_references()


@pytest.fixture
def cfg(tmp_path) -> Config:
    """Default config with a temporary warehouse and the small sample."""
    return load_config(overrides=[f"warehouse.path={tmp_path / 'wh'}", *SMALL_SAMPLE])


@pytest.fixture
def keep_spark(spark, monkeypatch):
    """Let CLI code run in-process: its session is the test session and stop() is a no-op."""
    import recemb_spark.session as session_module

    monkeypatch.setattr(session_module, "build_session", lambda *a, **k: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    return spark


#: the slowest files (a cluster, Airflow — whose virtualenv a fresh machine builds first —,
#: whole pipeline runs, a metastore), longest first by measured suites (seconds summed over a
#: file's tests, 2026-12-07: 554, 138 (+ the build), 455, 242, 184, 161, 157, 104, 101, 101,
#: 98, 91 ... 44), so that with ``pytest -n auto --dist loadfile --no-loadscope-reorder``
#: (pyproject) they run side by side early and the last files are short ones: a long file
#: last on one worker leaves the other idle
SLOW_FIRST = ["test_cluster.py", "test_airflow.py", "test_pipeline.py", "test_daily.py",
              "test_holdout.py", "test_faults.py", "test_shards.py", "test_export.py",
              "test_catalog.py", "test_runs.py", "test_als.py", "test_real_logs.py",
              "test_walks.py", "test_fuzz_readers.py", "test_report.py", "test_ivf.py",
              "test_normbound.py", "test_blend.py", "test_ann.py", "test_cli.py",
              "test_lsh_join.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
