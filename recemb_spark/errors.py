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
