"""Errors that carry a message meant for the person running the job.

The CLI prints these as one clear line and exits non-zero, without a traceback:
:class:`ConfigError` (exit 2) before Spark starts, :class:`InputError` (exit 3) for bad or
missing input data, :class:`StageError` (exit 4) for a stage that cannot run (e.g. its input
table for the run date does not exist), :class:`LockError` (exit 5) when another run holds
the run date's lock.
"""


class RecembError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(RecembError):
    exit_code = 2


class InputError(RecembError):
    exit_code = 3


class StageError(RecembError):
    exit_code = 4


class LockError(RecembError):
    exit_code = 5


class OutOfMemoryError(RecembError):
    """The driver, an executor or a Python worker ran out of memory (exit 6)."""

    exit_code = 6


class DiskFullError(RecembError):
    """A write found no space left on a device (exit 7)."""

    exit_code = 7


class CorruptTableError(RecembError):
    """A file of a warehouse table (a stage's input) cannot be read (exit 8)."""

    exit_code = 8


class ServiceError(RecembError):
    """An outside service (Redis) was lost or refused the writes (exit 1: worth a retry)."""

    exit_code = 1


#: what each exit code means (the README's and docs/faults.md's table)
EXIT_CODES = {0: "ok", 1: "unexpected error, or a lost service (Redis): worth a retry",
              2: "config error (before Spark starts)", 3: "bad or missing input data",
              4: "a stage's input table is missing", 5: "the run date is locked by another run",
              6: "out of memory", 7: "disk full", 8: "a warehouse table's file is corrupt",
              130: "interrupted"}
