"""Logging set-up for jobs: one readable line per event on stderr."""
from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    """Send the library's log lines (logger ``recemb_spark``) at ``level`` to stderr."""
    logger = logging.getLogger("recemb_spark")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s recemb %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("py4j").setLevel(logging.WARNING)
