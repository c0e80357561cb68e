"""The warehouse: dated Parquet partitions, manifests, and file-system helpers.

Layout: ``<root>/<table>/dt=<run-date>/[model=<model>/]part-*.parquet`` and
``<root>/_manifests/dt=<run-date>/<stage>.json``. Every path goes through Hadoop's FileSystem
API, so the same code works on a local disk, HDFS or an object store.

Each write replaces exactly one partition directory (``dt=...`` or ``dt=.../model=...``) and
leaves every other partition untouched. We write each partition as a whole rather than
relying on dynamic partition overwrite alone: an *empty* result (say, no rejects on a re-run)
must still replace the old partition, and dynamic overwrite writes nothing for empty input.

Readers never see a partial partition. Spark's commit protocol does not promise that: an
``overwrite`` deletes the old partition before the job starts, and a job that fails (a full
disk) or a driver that is killed leaves ``_temporary`` and part files in the output folder.
So a partition is written to ``<root>/_staging/dt=<date>/<table>.dt=<date>...<random>/``
first (a
folder every reader skips: Spark ignores names starting with ``_``) and published by renames:
the old partition moves aside, the new one takes its path, the old one is deleted. On a local
disk and HDFS each rename is atomic; between the two a reader finds no partition, never half
of one. A failed write deletes its staging folder; what a killed driver leaves there is
deleted when the next run takes the date's lock (:func:`Warehouse.clear_staging`).
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from ..errors import StageError
from ..jvm import driver_jvm


class HadoopFS:
    """Small helper over ``org.apache.hadoop.fs.FileSystem`` for one SparkSession."""

    def __init__(self, spark: SparkSession):
        self._jvm = driver_jvm(spark)
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str):
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p, p.getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        p, fs = self._path(path)
        return bool(fs.exists(p))

    def is_dir(self, path: str) -> bool:
        p, fs = self._path(path)
        return bool(fs.exists(p) and fs.getFileStatus(p).isDirectory())

    def list_names(self, path: str) -> list[str]:
        """Names (not paths) of the entries directly in a folder, sorted."""
        p, fs = self._path(path)
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(p))

    def delete(self, path: str) -> None:
        p, fs = self._path(path)
        if fs.exists(p):
            fs.delete(p, True)

    def mkdirs(self, path: str) -> None:
        p, fs = self._path(path)
        fs.mkdirs(p)

    def rename(self, src: str, dst: str) -> None:
        p, fs = self._path(src)
        if not fs.rename(p, self._path(dst)[0]):
            raise OSError(f"could not rename {src} to {dst}")

    def write_text(self, path: str, text: str) -> None:
        p, fs = self._path(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def create_new(self, path: str, text: str) -> bool:
        """Write a new file; False (nothing written) when it exists. Atomic on HDFS."""
        p, fs = self._path(path)
        try:
            out = fs.create(p, False)
        except Exception as exc:  # FileAlreadyExistsException through py4j
            if fs.exists(p):
                return False
            raise exc
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return True

    def read_text(self, path: str) -> str:
        p, fs = self._path(path)
        stream = fs.open(p)
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()


_RECORDERS: list[list[str]] = []


@contextmanager
def record_writes() -> Iterator[list[str]]:
    """Collect the partitions written inside the ``with`` block (paths relative to the root).

    The stage runner records them in the stage's manifest; ``recemb run --resume`` checks
    that they still exist before it skips the stage.
    """
    written: list[str] = []
    _RECORDERS.append(written)
    try:
        yield written
    finally:
        _RECORDERS.remove(written)


#: folder under the warehouse root where partitions are written before they are published
STAGING = "_staging"


def join_path(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def checkpoint_dir(root: str, name: str) -> str:
    """Where Spark checkpoints of ``name`` (``als``, ``walks``) go: ``<root>/_checkpoints/<name>``
    under the warehouse root ``root`` (a place every executor can reach on a cluster)."""
    return join_path(root, "_checkpoints", name)


@dataclass
class Warehouse:
    """Reads and writes the dated tables under ``root``."""

    spark: SparkSession
    root: str

    def __post_init__(self) -> None:
        self.fs = HadoopFS(self.spark)

    def partition_path(self, table: str, run_date: str, model: str | None = None,
                       stage: str | None = None) -> str:
        parts = [self.root, table, f"dt={run_date}"]
        if model is not None:
            parts.append(f"model={model}")
        if stage is not None:
            parts.append(f"stage={stage}")
        return join_path(*parts)

    def write(self, df: DataFrame, table: str, run_date: str, model: str | None = None,
              stage: str | None = None) -> int:
        """Replace one partition of ``table`` with ``df``; return the rows written.

        ``df`` must not contain the partition columns this write uses (``dt``, and ``model`` or
        ``stage`` when given): they come from the path. The row count is observed while the
        rows are written (an :class:`~pyspark.sql.Observation`: no second job; reading it back
        from the footers cost a job and ~0.3 s a write, 20 writes a run).
        """
        used = ["dt"] + (["model"] if model is not None else []) + \
            (["stage"] if stage is not None else [])
        for col in used:
            if col in df.columns:
                raise ValueError(f"{table}: partition column '{col}' must not be in the data")
        path = self.partition_path(table, run_date, model, stage)
        relative = path[len(self.root.rstrip("/")) + 1:].replace("/", ".")
        staging = join_path(self.staging_path(run_date), f"{relative}.{uuid.uuid4().hex}")
        try:
            observed = Observation(f"rows-{uuid.uuid4().hex}")
            df.observe(observed, F.count(F.lit(1)).alias("rows")).write.mode(
                "overwrite").parquet(staging)
            rows = int(observed.get["rows"])
            self._publish(staging, path)
        except BaseException:
            try:
                self.fs.delete(staging)
            except Exception:  # the write's own error matters more
                pass
            raise
        for written in _RECORDERS:
            written.append(path[len(self.root.rstrip("/")) + 1:])
        from . import catalog  # registers the partition when the session has a catalog
        catalog.after_write(self, df.schema, table, run_date, model, stage)
        return rows

    def staging_path(self, run_date: str) -> str:
        """The folder where this date's partitions are written before they are published."""
        return join_path(self.root, STAGING, f"dt={run_date}")

    def clear_staging(self, run_date: str) -> None:
        """Delete what unfinished writes of ``run_date`` left in staging (a killed driver's);
        call only while holding the date's run lock (no write of that date is running)."""
        self.fs.delete(self.staging_path(run_date))

    def _publish(self, staging: str, path: str) -> None:
        """Make the fully written ``staging`` folder the partition at ``path`` (module doc)."""
        aside = staging.rstrip("/") + ".replaced"
        if self.fs.exists(path):
            self.fs.rename(path, aside)
        self.fs.mkdirs(path.rstrip("/").rsplit("/", 1)[0])
        try:
            self.fs.rename(staging, path)
        except BaseException:
            if self.fs.exists(aside) and not self.fs.exists(path):
                self.fs.rename(aside, path)  # put the old partition back
            raise
        self.fs.delete(aside)

    def read(self, table: str, run_date: str, model: str | None = None,
             stage: str | None = None, needed_by: str = "") -> DataFrame:
        """One partition of ``table`` (without partition columns); StageError if it is missing."""
        path = self.partition_path(table, run_date, model, stage)
        if not self.fs.exists(path):
            hint = f" (needed by {needed_by})" if needed_by else ""
            raise StageError(f"table '{table}' has no partition dt={run_date}"
                             f"{'' if model is None else f', model={model}'} at {path}{hint}; "
                             f"run the stage that writes it first for this run date")
        return self.spark.read.parquet(path)

    def has(self, table: str, run_date: str, model: str | None = None) -> bool:
        return self.fs.exists(self.partition_path(table, run_date, model))

    def models(self, table: str, run_date: str) -> list[str]:
        """The ``model=`` partitions present for one date of ``table``."""
        path = self.partition_path(table, run_date)
        if not self.fs.exists(path):
            return []
        return [n.split("=", 1)[1] for n in self.fs.list_names(path) if n.startswith("model=")]

    def read_table(self, table: str) -> DataFrame:
        """The whole table with its partition columns (every date)."""
        return self.spark.read.parquet(join_path(self.root, table))

    def manifest_path(self, run_date: str, stage: str) -> str:
        return join_path(self.root, "_manifests", f"dt={run_date}", f"{stage}.json")

    def write_manifest(self, run_date: str, stage: str, payload: dict[str, Any]) -> str:
        """Write a stage's manifest whole or not at all: to a temporary file first, renamed
        into place (a full disk once left an empty manifest that ``--resume`` choked on)."""
        path = self.manifest_path(run_date, stage)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.write_text(tmp, json.dumps(payload, indent=2, sort_keys=True, default=str))
            try:
                self.fs.rename(tmp, path)
            except OSError:  # HDFS does not rename onto an existing file
                self.fs.delete(path)
                self.fs.rename(tmp, path)
        finally:
            self.fs.delete(tmp)
        return path

    def read_manifest(self, run_date: str, stage: str) -> dict[str, Any]:
        return json.loads(self.fs.read_text(self.manifest_path(run_date, stage)))
