"""The project's one error type, and its usage-error flavour. Importing this module costs nothing."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator


# The signals that stop a run as Ctrl-C does, with the word the run's last line says for each (SIGHUP only where
# the platform has it): the CLI handles them, and taking back a run's outputs holds them until it is done.
STOP_SIGNALS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):
    STOP_SIGNALS[signal.SIGHUP] = "hung up (its terminal closed)"


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, systemd, Docker, batch schedulers) or SIGHUP (the terminal or ssh session closed), handled
    like Ctrl-C: finished work is kept."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = signum


# The stop signals this process received while a command ran: the CLI's handler notes each, then raises it where
# the program is (`stop_for`). If that is a finaliser (`__del__`, which TensorFlow's objects have), Python reports
# and drops the exception, and the work would go on to its end: `raise_if_stopped` raises it again.
RECEIVED: list[int] = []


def stop_for(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def raise_if_stopped() -> None:
    """Where long work can stop cleanly (each progress update, training step, written output): stop if a stop
    signal was received and its exception dropped. Only the main thread, where signal handlers run, raises."""
    if RECEIVED and threading.current_thread() is threading.main_thread():
        raise stop_for(RECEIVED[-1])


# How deep the main thread is in TensorFlow calls during which a stop signal is only noted (`stops_after`).
_HELD: list[bool] = []


def stops_held() -> bool:
    """Whether a stop signal is to be noted only, not raised where the program is (the CLI's handler asks)."""
    return bool(_HELD)


@contextlib.contextmanager
def stops_after() -> Iterator[None]:
    """A TensorFlow call that a stop signal must not break into: one that comes meanwhile is raised as the call
    returns. Raised inside TensorFlow's own Python code, it left that code's state broken (probe ZZG: "AssertionError:
    Concurrent access?" from tf_stack, a traceback and exit 1, for a SIGTERM during training). The call itself runs
    in native code, where no handler runs anyway, so the stop comes no later."""
    _HELD.append(True)
    try:
        yield
    finally:
        _HELD.pop()
    raise_if_stopped()


class RetrainError(Exception):
    """A problem with the user's input or environment, reported as one clean line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(RetrainError):
    """A bad flag value: reported before any work starts, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


# The lines of a TensorFlow op error that frame its cause: a graph's header and where the node was defined.
_FRAMING = re.compile(r"Graph execution error:|Detected at node .*|<stack traces unavailable>|File \".*|\[\[.*\]\]")


def reason(error: BaseException) -> str:
    """What went wrong, for one line: an OSError's text, or the first line of a TensorFlow op error's message
    that says the cause (the lines after it retell it), without the function-node prefix, the `[Op:...]` suffix
    and the lines that frame it (probe ZZK: "Graph execution error:" was said as the cause)."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(text))
    text = re.sub(r"\s*\[Op:\w+\]( name: \S*)?", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if not _FRAMING.fullmatch(line)), lines[0] if lines else type(error).__name__)
