"""Where log lines go: the 'retrain' logger, on stderr, at a chosen level (the CLI's and the API's)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}


class _StderrHandler(logging.StreamHandler):
    """The handler setup_logging installs, told apart by its class from handlers a caller installed."""


def one_line(text: str) -> str:
    """`text` as one line on the terminal: a line break, an escape code or another unprintable character (a file
    name can hold any of them) is shown escaped, as Python writes it in a string."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _OneLineFormatter(logging.Formatter):
    """Each message one line on the terminal (`one_line`)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


def setup_logging(verbosity: str) -> None:
    """Our log lines go to stderr at the chosen level; TensorFlow's own loggers stay quiet."""
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("%(levelname)s %(asctime)s: %(message)s", datefmt="%H:%M:%S"))
    logger = logging.getLogger("retrain")
    logger.handlers[:] = [handler]
    logger.setLevel(LEVELS[verbosity.upper()])
    logger.propagate = False


@contextmanager
def logger_restored() -> Iterator[logging.Logger]:
    """The 'retrain' logger; its handlers, level and propagation are put back as they were when the block ends."""
    logger = logging.getLogger("retrain")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def logging_during(verbosity: str | None) -> Iterator[None]:
    """Our log lines at `verbosity` for one call (the Python API's), then the 'retrain' logger as it was.

    They go to stderr, unless the caller gave the logger handlers of their own: those then get them, at this
    level. None leaves logging as the caller configured it.
    """
    if verbosity is None:
        yield
        return
    with logger_restored() as logger:
        if all(isinstance(handler, _StderrHandler) for handler in logger.handlers):
            setup_logging(verbosity)
        else:
            logger.setLevel(LEVELS[verbosity.upper()])
        yield
