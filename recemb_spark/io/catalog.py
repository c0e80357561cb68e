"""Catalog tables: every warehouse table registered as an external partitioned Parquet table.

With ``catalog.enabled`` the session is built with Hive support (:func:`session_options`):
an embedded Derby metastore under ``<warehouse>/_metastore`` unless the session is already
configured for a metastore of its own (``spark.sql.catalogImplementation=hive`` or
``hive.metastore.uris`` given to spark-submit). Every :meth:`Warehouse.write` then calls
:func:`after_write`, which creates ``<database>.<table>`` over ``<warehouse>/<table>`` (an
EXTERNAL Parquet table partitioned by ``dt`` and ``model`` or ``stage``; dropping it never
deletes files) on first use, and adds or re-points exactly the partition just written.
Nothing here runs at import time.

The embedded Derby metastore admits one process at a time: query it (``spark-sql``) when no
run is going, or use an external metastore for concurrent access.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from ..errors import ConfigError
from ..jvm import driver_jvm

# the session conf key that carries the database name; set only when the catalog is on
DATABASE_CONF = "spark.recemb.catalog.database"
METASTORE_DIR = "_metastore"


def metastore_options(warehouse: str) -> dict[str, str]:
    """Spark settings for the embedded Derby metastore under ``<warehouse>/_metastore``.

    The same settings, given to ``spark-sql`` with ``--conf``, open the same catalog.
    Assumes a local warehouse (Derby keeps its files on the local disk).
    """
    parsed = urlparse(warehouse)
    if parsed.scheme not in ("", "file"):
        raise ConfigError(
            f"catalog.enabled with warehouse.path={warehouse}: the embedded metastore needs a "
            f"local warehouse; give spark-submit an external metastore "
            f"(--conf spark.hadoop.hive.metastore.uris=thrift://...)")
    root = os.path.abspath(parsed.path if parsed.scheme else warehouse)
    meta = os.path.join(root, METASTORE_DIR)
    return {
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={meta}/metastore_db;create=true",
        "spark.sql.warehouse.dir": os.path.join(meta, "warehouse"),
    }


def _submitted_conf() -> dict[str, str]:
    """spark-submit's settings (--conf, spark-defaults.conf) before the session exists.

    Only under spark-submit, whose JVM is already running: started directly, the JVM is
    launched by the session builder itself (with our driver memory), so we must not start it.
    """
    from pyspark import SparkConf, SparkContext

    from ..session import started_by_spark_submit

    if not started_by_spark_submit():
        return {}
    SparkContext._ensure_initialized()  # attaches to spark-submit's gateway
    return dict(SparkConf().getAll())


def uses_external_metastore(conf: dict[str, str]) -> bool:
    """True when ``conf`` already sets up a Hive metastore of its own."""
    return (conf.get("spark.sql.catalogImplementation") == "hive"
            or any(k.endswith("hive.metastore.uris") and v for k, v in conf.items()))


def session_options(warehouse: str, database: str) -> dict[str, str]:
    """The builder settings for a session whose writes are registered in ``database``."""
    options = {"spark.sql.catalogImplementation": "hive", DATABASE_CONF: database}
    if not uses_external_metastore(_submitted_conf()):
        options.update(metastore_options(warehouse))
    return options


def prepare(spark: SparkSession) -> None:
    """Before the metastore's first use: keep Derby's log beside an embedded metastore."""
    url = spark.sparkContext.getConf().get("spark.hadoop.javax.jdo.option.ConnectionURL", "")
    prefix, suffix = "jdbc:derby:;databaseName=", "/metastore_db;create=true"
    if url.startswith(prefix) and url.endswith(suffix):
        meta = url[len(prefix):-len(suffix)]
        os.makedirs(meta, exist_ok=True)
        driver_jvm(spark).java.lang.System.setProperty(
            "derby.stream.error.file", os.path.join(meta, "derby.log"))


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_ddl(database: str, table: str, schema: StructType, partition_cols: list[str],
              location: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for an external Parquet table over ``location``."""
    cols = [f"{_quote(f.name)} {f.dataType.simpleString()}" for f in schema.fields]
    cols += [f"{_quote(c)} string" for c in partition_cols]
    return (f"CREATE TABLE IF NOT EXISTS {_quote(database)}.{_quote(table)} "
            f"({', '.join(cols)}) USING parquet "
            f"PARTITIONED BY ({', '.join(_quote(c) for c in partition_cols)}) "
            f"LOCATION {_literal(location)}")


def after_write(wh, schema: StructType, table: str, run_date: str, model: str | None,
                stage: str | None) -> None:
    """Register the partition just written in the catalog (when the session has one).

    Creates the database and the table on first use; the partition is added, or re-pointed
    when it exists (a re-run), so the catalog always answers with exactly the files on disk.
    """
    spark = wh.spark
    database = spark.conf.get(DATABASE_CONF, "")
    if not database:
        return
    spec = {"dt": run_date}
    if model is not None:
        spec["model"] = model
    if stage is not None:
        spec["stage"] = stage
    root = _qualified(spark, wh.root)
    name = f"{_quote(database)}.{_quote(table)}"
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(database)}")
    if not spark.catalog.tableExists(table, database):
        spark.sql(table_ddl(database, table, schema, list(spec), f"{root}/{table}"))
    part = ", ".join(f"{_quote(k)} = {_literal(v)}" for k, v in spec.items())
    location = _literal(f"{root}/{table}/" + "/".join(f"{k}={v}" for k, v in spec.items()))
    spark.sql(f"ALTER TABLE {name} ADD IF NOT EXISTS PARTITION ({part}) LOCATION {location}")
    spark.sql(f"ALTER TABLE {name} PARTITION ({part}) SET LOCATION {location}")
    spark.catalog.refreshTable(f"{database}.{table}")


def _qualified(spark: SparkSession, path: str) -> str:
    """``path`` made absolute with its scheme (file:/..., hdfs://...), as the metastore keeps it."""
    jvm = driver_jvm(spark)
    p = jvm.org.apache.hadoop.fs.Path(path)
    fs = p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return str(fs.makeQualified(p).toString()).rstrip("/")
