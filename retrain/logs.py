"""Where log lines go: the 'retrain' logger, on stderr, at a chosen level (the CLI's and the API's)."""

from __future__ import annotations

import logging
import sys

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}


def setup_logging(verbosity: str) -> None:
    """Our log lines go to stderr at the chosen level; TensorFlow's own loggers stay quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s: %(message)s", datefmt="%H:%M:%S"))
    logger = logging.getLogger("retrain")
    logger.handlers[:] = [handler]
    logger.setLevel(LEVELS[verbosity.upper()])
    logger.propagate = False
