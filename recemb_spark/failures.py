"""Turn any exception a job raises into one line: its cause, what to change, an exit code.

:func:`classify` reads the exception's text — for a Spark failure that is the whole Java cause
chain that py4j carries (``Py4JJavaError``) or pyspark's captured exception — and returns a
:class:`~recemb_spark.errors.RecembError` whose message is one line and whose ``exit_code``
says what kind of failure it was (codes: :data:`recemb_spark.errors.EXIT_CODES`):

- out of memory (``java.lang.OutOfMemoryError``: Java heap space, GC overhead; a Python worker
  that raised ``MemoryError`` or was killed) -> exit 6, naming the setting for where it
  happened: ``spark.driver_memory`` (local mode, or the driver), ``spark.executor.memory``
  (an executor of a cluster), ``spark.executor.pyspark.memory`` (a Python worker);
- disk full (``No space left on device``) -> exit 7, naming the path and its free space;
- a corrupt or truncated Parquet file -> exit 3 when it is input (naming the file and
  ``input.path``), exit 8 when it belongs to a warehouse table (naming the file, the table
  and the partition);
- a lost service (Redis connection refused/reset, Redis ``OOM ... maxmemory``) -> exit 1,
  naming ``host:port`` and the ``export.*`` setting;
- anything else -> exit 1 as "unexpected", with the exception's first line.

A :class:`RecembError` raised by our own code is kept as it is (its message is already the
one line), except that a lost-service cause inside it gets the advice appended.
"""
from __future__ import annotations

import errno
import math
import os
import re
import shutil
from dataclasses import dataclass
from urllib.parse import urlparse

from .errors import (
    CorruptTableError,
    DiskFullError,
    InputError,
    OutOfMemoryError,
    RecembError,
    ServiceError,
)
from .neighbors.blocks import memory_bytes

#: characters of exception text looked at (a Spark failure's text is its whole stack trace)
_MAX_TEXT = 200_000

_JAVA_OOM = re.compile(r"java\.lang\.OutOfMemoryError(?::\s*([^\n\r]+))?")
#: Spark's own message when the driver cannot hold a broadcast join's hash table
_BROADCAST_OOM = re.compile(r"Not enough memory to build and broadcast the table")
_RESULT_SIZE = re.compile(r"Total size of serialized results of \d+ tasks \(([^)]+)\) is bigger "
                          r"than spark\.driver\.maxResultSize \(([^)]+)\)")
#: a Python worker out of memory: MemoryError (numpy's ``_ArrayMemoryError`` and pyarrow's
#: ``ArrowMemoryError`` are what an allocation refused under ``spark.executor.pyspark.memory``'s
#: address-space limit raises), or the worker gone
_PY_OOM = re.compile(r"^\s*(?:[\w.]*\._ArrayMemoryError|pyarrow\.lib\.ArrowMemoryError|"
                     r"MemoryError)\b|Python worker exited unexpectedly|"
                     r"PYTHON_WORKER_EXITED|killed by (?:YARN|the OS) for exceeding memory|"
                     r"exceeding memory limits|Container killed on request\. Exit code is 137",
                     re.MULTILINE)
_DRIVER_LOST = re.compile(r"Answer from Java side is empty|Py4JNetworkError|"
                          r"Error while (?:sending|receiving)|Java gateway process exited")
_NO_SPACE = re.compile(r"No space left on device|ENOSPC|Disk quota exceeded")
_BAD_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?(?:\s|$)|"
                       r"(\S+) is not a Parquet file|Could not read footer for file:? ?(\S+)")
_WRITE_PATH = re.compile(r"Task failed while writing rows to (\S+?)\.?(?:\s|$)|"
                         r"(?:Error|error) (?:writing|creating|committing) (?:file )?(\S+)")
_REDIS_OOM = re.compile(r"(?:OOM|OutOfMemoryError:) command not allowed[^\n]*maxmemory")
_REDIS_LOST = re.compile(r"redis\.exceptions\.(?:ConnectionError|TimeoutError)|"
                         r"Error \d+ connecting to ([\w.\-]+):(\d+)|Connection refused|"
                         r"Connection reset by peer|Connection closed by server")
_HOST_PORT = re.compile(r"(?:connecting to |redis (?:at )?)([\w.\-]+):(\d+)")
_TASK_CONTEXT = re.compile(r"Lost task|Task \d+ in stage [\d.]+ failed|TaskSetManager|"
                           r"Executor\.scala|ExecutorLostFailure|executor \d+\)")


@dataclass(frozen=True)
class Context:
    """What the classifier knows about the job besides the exception."""

    warehouse: str = ""
    input_path: str | None = None
    master: str = "local[*]"
    driver_memory: str = ""
    submitted: bool = False  # started by spark-submit (then --driver-memory is the flag)
    redis: str = ""  # host:port of the export target


def exception_text(exc: BaseException) -> str:
    """Everything the exception says: its Python chain, and for a Spark failure the Java
    stack trace with every ``Caused by`` (what ``str`` of a Py4JJavaError returns), plus
    pyspark's captured JVM stack trace. Never raises (a dead JVM gives what Python has)."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 10:
        seen.add(id(cur))
        parts.append(type(cur).__module__ + "." + type(cur).__name__)
        try:
            parts.append(str(cur))
        except Exception:  # py4j asks the JVM for the stack trace: the JVM may be gone
            parts.append(repr(getattr(cur, "errmsg", "")))
        trace = getattr(cur, "_stackTrace", None)
        if isinstance(trace, str):
            parts.append(trace)
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)[:_MAX_TEXT]


def first_line(exc: BaseException) -> str:
    """``Type: first line`` of the exception (at most 300 characters); for a Spark failure
    (py4j's "An error occurred while calling o123.parquet") the Java exception's line and its
    root cause instead."""
    try:
        text = str(exc).strip()
    except Exception:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    java = [ln[2:] for ln in lines if ln.startswith(": ")]
    if java:
        causes = [ln[len("Caused by: "):] for ln in lines if ln.startswith("Caused by: ")]
        line = java[0] + (f" (root cause: {causes[-1]})" if causes else "")
        return line[:400]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def classify(exc: BaseException, ctx: Context) -> RecembError:
    """The one-line error (with its exit code) that stands for ``exc``; see the module doc."""
    if isinstance(exc, RecembError):
        advice = _service_advice(exception_text(exc), ctx)
        if advice and advice not in str(exc):
            kept = type(exc)(f"{exc}; {advice}")
            for attr in ("recemb_stage",):
                if hasattr(exc, attr):
                    setattr(kept, attr, getattr(exc, attr))
            return kept
        return exc
    text = exception_text(exc)
    for check in (_disk_full, _corrupt_file, _out_of_memory, _driver_lost, _lost_service):
        found = check(exc, text, ctx)
        if found is not None:
            return found
    return RecembError(f"unexpected {first_line(exc)}")


# -- the causes ---------------------------------------------------------------------------


def _disk_full(exc: BaseException, text: str, ctx: Context) -> RecembError | None:
    if not (_NO_SPACE.search(text) or
            (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))):
        return None
    path = None
    m = _WRITE_PATH.search(text)
    if m:
        path = next(g for g in m.groups() if g)
    elif isinstance(exc, OSError) and exc.filename:
        path = str(exc.filename)
    where = path or ctx.warehouse or "?"
    staged = re.search(r"/_staging/dt=([^/]+)/([^/.]+)\.", where)
    if staged:  # a partition being written (io/warehouse.py): name its table
        root = where[: where.index("/_staging/")]
        where = f"table '{staged.group(2)}' (dt={staged.group(1)}) under {root}"
    local = _local_path(path or ctx.warehouse or "")
    in_warehouse = bool(ctx.warehouse) and _under(path or ctx.warehouse, ctx.warehouse)
    free = ""
    if local:
        existing = _existing_parent(local)
        if existing:
            free = f" ({_size(shutil.disk_usage(existing).free)} free there now)"
    setting = ("free space there or point warehouse.path (--warehouse) at a larger disk"
               if in_warehouse or path is None else
               "free space there (Spark's scratch space: spark.local.dir)")
    return DiskFullError(f"disk full: no space left on the device writing {where}{free}; "
                         f"{setting}; partitions published before stay as they were")


def _corrupt_file(exc: BaseException, text: str, ctx: Context) -> RecembError | None:
    m = _BAD_FILE.search(text)
    if not m:
        return None
    path = next(g for g in m.groups() if g).rstrip(".")
    why = ("truncated or not Parquet (no footer)" if re.search(
        r"Could not read footer|not a Parquet file|CANNOT_READ_FILE_FOOTER", text)
        else "corrupt (checksum mismatch)" if "ChecksumException" in text
        else "corrupt or truncated")
    if ctx.warehouse and _under(path, ctx.warehouse):
        rel = _relative(path, ctx.warehouse)
        table = rel.split("/", 1)[0]
        partition = "/".join(p for p in rel.split("/")[1:-1] if "=" in p)
        return CorruptTableError(
            f"warehouse table '{table}' ({partition or 'no partition'}) has a file that "
            f"cannot be read, {why}: {path}; re-run the stage that writes {table} for that "
            f"date (or delete the partition folder), then this stage")
    source = f" of input.path {ctx.input_path}" if ctx.input_path else ""
    return InputError(f"input file {path}{source} cannot be read, {why}; replace it or "
                      f"remove it from the input folder")


def _out_of_memory(exc: BaseException, text: str, ctx: Context) -> RecembError | None:
    java = _JAVA_OOM.search(text)
    python = _PY_OOM.search(text) or isinstance(exc, MemoryError)
    local = ctx.master.startswith("local")
    now = f" (now {ctx.driver_memory})" if ctx.driver_memory and not ctx.submitted else ""
    result = _RESULT_SIZE.search(text)
    if result:
        return OutOfMemoryError(
            f"the driver was sent {result.group(1)} of task results, more than "
            f"spark.driver.maxResultSize ({result.group(2)}); raise it (spark-submit --conf "
            f"spark.driver.maxResultSize=...; local mode: half of spark.driver_memory{now})")
    if _BROADCAST_OOM.search(text):
        return OutOfMemoryError(
            f"out of memory in the driver building a broadcast join's table; raise "
            f"spark.driver_memory{now} or turn such joins off: --conf "
            f"spark.sql.autoBroadcastJoinThreshold=-1")
    if java is None and not python:
        return None
    if java is None:
        return OutOfMemoryError(
            "out of memory in a Python worker (it raised MemoryError or was killed: "
            f"{_py_oom_detail(text)}); give the Python workers more memory "
            "(spark.executor.pyspark.memory, and spark.executor.memoryOverhead on a cluster)"
            + (" or run fewer tasks at once (spark.master=local[N])" if local else ""))
    what = (java.group(1) or "").strip() or "OutOfMemoryError"
    if not local and _TASK_CONTEXT.search(text):
        return OutOfMemoryError(
            f"out of memory in an executor (java.lang.OutOfMemoryError: {what}); raise "
            f"spark.executor.memory (spark-submit --executor-memory) or use more, smaller "
            f"partitions (spark.shuffle_partitions)")
    flag = ("spark-submit --driver-memory" if ctx.submitted else
            f"--set spark.driver_memory=<more>, e.g. {_doubled(ctx.driver_memory)}")
    where = "the driver (local mode: driver and executors share its heap)" if local \
        else "the driver"
    return OutOfMemoryError(f"out of memory in {where} (java.lang.OutOfMemoryError: {what}); "
                            f"raise spark.driver_memory{now}: {flag}")


def _doubled(memory: str | None) -> str:
    """Twice a JVM memory string in whole GiB (``10g`` -> ``20g``); ``8g`` when unknown."""
    try:
        return f"{max(2, math.ceil(2 * memory_bytes(memory or '') / 2**30))}g"
    except ValueError:
        return "8g"


def _py_oom_detail(text: str) -> str:
    if "Python worker exited unexpectedly" in text or "PYTHON_WORKER_EXITED" in text:
        return "Python worker exited unexpectedly"
    if "exceeding memory limits" in text or "Exit code is 137" in text:
        return "container killed for exceeding its memory"
    return "MemoryError"


def _driver_lost(exc: BaseException, text: str, ctx: Context) -> RecembError | None:
    """The driver JVM stopped answering Python (py4j): it died. Measured cause: the OS's
    out-of-memory killer, when the JVM's heap and the Python workers outgrew the machine."""
    if not _DRIVER_LOST.search(text):
        return None
    now = f" (now {ctx.driver_memory})" if ctx.driver_memory else ""
    return OutOfMemoryError(
        "the Spark driver JVM died (it stopped answering: py4j lost its connection); the usual "
        "cause is the OS killing it for memory (dmesg: 'Out of memory: Killed process ... "
        f"java'): the driver heap{now} and the Python workers must fit in the machine's free "
        "memory; lower spark.driver_memory or stop what else uses the memory")


def _lost_service(exc: BaseException, text: str, ctx: Context) -> RecembError | None:
    advice = _service_advice(text, ctx)
    if advice is None:
        return None
    return ServiceError(f"{first_line(exc)}; {advice}")


def _service_advice(text: str, ctx: Context) -> str | None:
    """What to change when ``text`` shows a lost or full Redis; None otherwise."""
    oom = _REDIS_OOM.search(text)
    lost = _REDIS_LOST.search(text) if "redis" in text.lower() else None
    if not oom and not lost:
        return None
    m = _HOST_PORT.search(text)
    where = f"{m.group(1)}:{m.group(2)}" if m else (ctx.redis or "the export target")
    if oom:
        return (f"redis at {where} is full (maxmemory): raise its maxmemory, or keep fewer "
                f"versions (export.keep_days, export.retire_grace_seconds)")
    return (f"redis at {where} was lost: check that it is up and reachable "
            f"(export.host / export.port), then run the export again")


# -- paths ----------------------------------------------------------------------------------


def _local_path(path: str) -> str | None:
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return parsed.path or path
    return None


def _norm(path: str) -> str:
    local = _local_path(path)
    return os.path.normpath(local) if local is not None else path.rstrip("/")


def _under(path: str, root: str) -> bool:
    p, r = _norm(path), _norm(root)
    return p == r or p.startswith(r.rstrip("/") + "/")


def _relative(path: str, root: str) -> str:
    return _norm(path)[len(_norm(root).rstrip("/")) + 1:]


def _existing_parent(path: str) -> str | None:
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return path or None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
