"""Where log lines go: the 'retrain' logger, on stderr, at a chosen level (the CLI's and the API's)."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from retrain.names import names_not_utf8, shown

LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}


NAMED_SKIPS = 10  # files left out that are named one by one in warnings (and the first of each other reason)


class Skips:
    """Warnings for files left out, each with its reason: the first `NAMED_SKIPS` named, and then the first of
    each reason not named yet; the rest counted by reason in one closing line (each named at DEBUG level), so the
    warnings that matter do not scroll away (probe NNN: 180 lines for 150 online-only placeholders and 30 web
    pages saved as .jpg; probe RRR: an iPhone photo among 40 placeholders must still be named). A reason's
    details in parentheses and its numbers do not make it another (`truncated (54 bytes not processed)`)."""

    def __init__(self, log: logging.Logger, what: str = "", *, more: str = "--logging_verbosity DEBUG names each"
                 ) -> None:
        self._log, self._what, self._more = log, what, more  # what: the flag before each path (`--image `), if any
        self._named: set[str] = set()
        self._rest: Counter[str] = Counter()
        self._count = 0

    def add(self, path: object, reason: str) -> None:
        self._count += 1
        kind = re.sub(r"\b\d+\b", "N", reason.split(" (")[0])
        if self._count <= NAMED_SKIPS or kind not in self._named:
            self._named.add(kind)
            self._log.warning("skipping %s%s: %s", self._what, path, reason)
        else:
            self._rest[kind] += 1
            self._log.debug("skipping %s%s: %s", self._what, path, reason)

    def close(self) -> None:
        if self._rest:
            reasons = "; ".join(f"{kind} ({count})" for kind, count in self._rest.most_common())
            named = self._log.isEnabledFor(logging.DEBUG)
            more = " (named above at DEBUG level)" if named else f" ({self._more})" if self._more else ""
            self._log.warning("skipping %d more%s: %s", sum(self._rest.values()), more, reasons)
            self._rest.clear()


def warn_if_names_not_utf8() -> None:
    """Say, on the 'retrain' logger, why file names are read otherwise than as UTF-8 here (`names.names_not_utf8`),
    once a command or Python API call starts; nothing when they are not."""
    problem = names_not_utf8()
    if problem:
        logging.getLogger("retrain").warning("%s", problem)


def warn_skipped(log: logging.Logger, skipped: Iterable[tuple[object, str]]) -> None:
    """`Skips` for a list of (path, reason)."""
    skips = Skips(log)
    for path, reason in skipped:
        skips.add(path, reason)
    skips.close()


class Commentary:
    """stdout or stderr of a run whose work is the files it writes (`commentary`): the first write or flush that
    fails (a closed pipe, as `retrain ... | head` leaves; a full disk, as /dev/full is) silences the stream for the
    rest of the run instead of failing it. The stream's file descriptor then leads to os.devnull, so what Python
    flushes at exit does not fail either. A silenced stdout is said once on stderr."""

    def __init__(self, stream: TextIO, name: str, *, muted: int | None = None) -> None:
        self._stream = stream
        self._name = name
        self._silenced = False
        self._muted = muted  # the thread whose writes go nowhere (`retrain(print_results=False)`), if any

    def write(self, text: str) -> int:
        if not self._silenced and threading.get_ident() != self._muted:
            try:
                try:
                    return self._stream.write(text)
                except UnicodeEncodeError:  # a label the stream's encoding lacks: escaped, as on stderr (probe PPP:
                    encoding = getattr(self._stream, "encoding", None) or "ascii"  # a traceback lost the run)
                    return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            except OSError as error:
                self._silence(error)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._silenced:
            try:
                self._stream.flush()
            except OSError as error:
                self._silence(error)

    def _silence(self, error: OSError) -> None:
        self._silenced = True
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            to_null(self._stream.fileno())
        if self._name == "stdout":
            logging.getLogger("retrain").warning("cannot print to stdout (%s); the run goes on and writes its files, "
                                                 "without printing there", error.strerror or error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ClosedStdout(io.TextIOBase):
    """sys.stdout for a process started with stdout closed (`>&-`), where Python leaves it None and print() skips
    it without a word: every write fails as on a closed descriptor, so a run says once that it cannot print, and
    label-image and --help, whose output is their work, stop with one line."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


class NamedStdout:
    """sys.stdout while a command runs: a write or flush that fails says it was stdout's (probe ZZD: `--help` or
    label-image `>/dev/full` said only "No space left on device", as if a disk of the user's were full)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as error:
            raise _on_stdout(error) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            raise _on_stdout(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _on_stdout(error: OSError) -> OSError:
    return OSError(error.errno, f"cannot print to stdout: {error.strerror or error}")


def to_null(descriptor: int) -> None:
    """Point file descriptor `descriptor` at /dev/null (a closed one is opened there)."""
    null = os.open(os.devnull, os.O_RDWR)
    if null != descriptor:
        os.dup2(null, descriptor)
        os.close(null)


@contextmanager
def commentary(*, quiet: bool = False) -> Iterator[None]:
    """Inside the block sys.stdout and sys.stderr are `Commentary`, for a run whose work is the files it writes: what
    it prints is commentary, and a closed pipe must not cost it those files. (A stderr closed from the start is None,
    which print() skips: it stays None; the command line makes such a stdout a ClosedStdout, said once.) `quiet`:
    what this thread prints on stdout goes nowhere (other threads' lines still go there)."""
    saved = sys.stdout, sys.stderr
    muted = threading.get_ident() if quiet else None
    if sys.stdout is not None and (muted is not None or not isinstance(sys.stdout, Commentary)):
        stream = sys.stdout.stream if isinstance(sys.stdout, NamedStdout) else sys.stdout  # (says it its own way)
        sys.stdout = Commentary(stream, "stdout", muted=muted)
    if sys.stderr is not None and not isinstance(sys.stderr, Commentary):
        sys.stderr = Commentary(sys.stderr, "stderr")
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class _StderrHandler(logging.StreamHandler):
    """The handler setup_logging installs, told apart by its class from handlers a caller installed."""


def one_line(text: str) -> str:
    """`text` as one line on the terminal: a line break, an escape code or another unprintable character (a file
    name can hold any of them) is shown escaped, as Python writes it in a string; a byte that is not UTF-8 (kept
    by Python as a surrogate) as \\x.., as `names.shown` shows it."""
    if text.isprintable():
        return text
    text = shown(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
def caller_settings_kept() -> Iterator[None]:
    """The caller's logging and TensorFlow's log settings as they were once a Python API call ends (probe PPP: a
    call left the root logger a handler TensorFlow's checkpoint code added through logging.info, so the caller's
    own basicConfig did nothing, 'tensorflow' at ERROR, 'absl' at CRITICAL, and TF_CPP_MIN_LOG_LEVEL=3 in the
    environment of the caller's later subprocesses). TensorFlow's thread settings cannot be put back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("tensorflow", "absl")}
    environment = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        if environment is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = environment


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
