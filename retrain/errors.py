"""The project's one error type, and its usage-error flavour. Importing this module costs nothing."""

from __future__ import annotations


class RetrainError(Exception):
    """A problem with the user's input or environment, reported as one clean line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(RetrainError):
    """A bad flag value: reported before any work starts, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)
