"""Logging set-up for jobs: one readable line per event on stderr."""
from __future__ import annotations

import logging
import sys


class StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at each record, not the
    stream of the moment it was made (the CLI runs many times in one process in tests, and
    an embedding application may redirect stderr after the first run)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401 - logging.StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Send the library's log lines (logger ``recemb_spark``) at ``level`` to stderr."""
    logger = logging.getLogger("recemb_spark")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s recemb %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("py4j").setLevel(logging.WARNING)
