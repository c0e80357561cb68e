"""Logging set-up for jobs: one readable line per event on stderr, everything in a log file.

The terminal gets the library's records (logger ``recemb_spark``) at the chosen level, one
line each and without tracebacks; records at ERROR and above are left to the CLI, which ends
a failed command with exactly one line (:func:`recemb_spark.cli.main`). The log file (when
given: ``<warehouse>/_logs/`` by default, ``--log-file``) gets every record at DEBUG with its
traceback, and — through :func:`redirect_stderr_to` while the Spark JVM starts — whatever the
JVM and its Python workers write to stderr: Spark's log4j console output, executor
task-failure stack traces, Python worker tracebacks.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

#: folder of the log files under the warehouse root
LOGS_DIR = "_logs"
_FORMAT = "%(asctime)s recemb %(levelname)s %(message)s"
#: loggers of libraries whose records go to the log file only (when there is one)
_THIRD_PARTY = ("py4j", "pyspark")


class StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at each record, not the
    stream of the moment it was made (the CLI runs many times in one process in tests, and
    an embedding application may redirect stderr after the first run)."""

    @property
    def stream(self):  # noqa: D401 - logging.StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class OneLineFormatter(logging.Formatter):
    """The message alone, without the traceback (that goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record).replace("\n", " | ")
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class LogFileHandler(logging.FileHandler):
    """A file handler that never writes a "--- Logging error ---" traceback to the terminal
    (a full disk must not turn one line into dozens): a failed write is dropped."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def setup_logging(level: int = logging.INFO, log_file: str | None = None) -> None:
    """Send the library's log lines (logger ``recemb_spark``) at ``level`` to stderr, one line
    each and below ERROR (see the module doc); with ``log_file``, every record at DEBUG with
    tracebacks to that file too (replacing the file of an earlier call in this process)."""
    logger = logging.getLogger("recemb_spark")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(OneLineFormatter(_FORMAT, "%H:%M:%S"))
        handler.addFilter(_below_error)
        logger.addHandler(handler)
    for handler in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        handler.setLevel(level)
    for old in [h for h in logger.handlers if isinstance(h, LogFileHandler)]:
        logger.removeHandler(old)
        old.close()
    if log_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = LogFileHandler(log_file, encoding="utf-8", delay=True)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler.setLevel(logging.DEBUG)
        logger.addHandler(file_handler)
        logger.setLevel(min(level, logging.DEBUG))
    else:
        logger.setLevel(level)
    logger.propagate = False
    for name in _THIRD_PARTY:  # py4j's "Exception while sending command" and the like
        other = logging.getLogger(name)
        other.setLevel(logging.WARNING)
        for old in [h for h in other.handlers if isinstance(h, LogFileHandler)]:
            other.removeHandler(old)
        if log_file is not None:
            other.addHandler(file_handler)
        other.propagate = log_file is None


def close_log_file() -> None:
    """Detach and close the log file of :func:`setup_logging` (the terminal handler stays)."""
    for name in ("recemb_spark", *_THIRD_PARTY):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, LogFileHandler)]:
            logger.removeHandler(handler)
            handler.close()
        if name != "recemb_spark":
            logger.propagate = True


def current_log_file() -> str | None:
    """The file :func:`setup_logging` logs to now, or None."""
    for handler in logging.getLogger("recemb_spark").handlers:
        if isinstance(handler, LogFileHandler):
            return handler.baseFilename
    return None


def default_log_file(warehouse: str, command: str, run_date: str | None,
                     now: dt.datetime | None = None) -> str:
    """``<warehouse>/_logs/<command>-<run date>-<UTC time>-<pid>.log`` for a local warehouse;
    for a remote one (hdfs://, s3a://) the same name under ``<tmp>/recemb-logs/`` (a log file
    is written by plain Python and by the JVM's stderr, which need a local path)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    name = (f"{command}-{run_date or 'nodate'}-{now.strftime('%Y%m%dT%H%M%SZ')}-"
            f"{os.getpid()}.log")
    parsed = urlparse(warehouse)
    if parsed.scheme in ("", "file"):
        root = parsed.path if parsed.scheme == "file" else warehouse
        return os.path.join(os.path.abspath(root), LOGS_DIR, name)
    import tempfile

    return os.path.join(tempfile.gettempdir(), "recemb-logs", name)


@contextmanager
def redirect_stderr_to(path: str | None) -> Iterator[None]:
    """Point this process's file descriptor 2 at ``path`` (appending) inside the block, so
    that a child started in it — the Spark JVM, and through it the Python workers —
    inherits the file as its stderr; restore the terminal afterwards. No-op without a path
    or when the file cannot be opened."""
    if path is None:
        yield
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
