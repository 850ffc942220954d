"""The project's one error type, and its usage-error flavour. Importing this module costs nothing."""

from __future__ import annotations

import re
import signal


# The signals that stop a run as Ctrl-C does, with the word the run's last line says for each (SIGHUP only where
# the platform has it): the CLI handles them, and taking back a run's outputs holds them until it is done.
STOP_SIGNALS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):
    STOP_SIGNALS[signal.SIGHUP] = "hung up (its terminal closed)"


class RetrainError(Exception):
    """A problem with the user's input or environment, reported as one clean line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(RetrainError):
    """A bad flag value: reported before any work starts, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


def reason(error: BaseException) -> str:
    """What went wrong, for one line: an OSError's text, or the first line of a TensorFlow op error's message
    (the cause; the lines after it retell it) without the function-node prefix and the `[Op:...]` suffix."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(text))
    text = re.sub(r"\s*\[Op:\w+\]( name: \S*)?", "", text)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
