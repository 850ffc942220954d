"""Progress reporting on stderr: a live bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts work items and reports rate and time left.

    On a terminal it redraws one line at most 10 times a second; when stderr is
    a file or pipe it writes a plain line every `interval` seconds, so logs stay
    readable. It is shown at the level of INFO lines: `--logging_verbosity WARN`
    (or `log_level="WARN"`) quietens it with them.
    """

    def __init__(self, total: int, label: str, *, unit: str = "images", stream: TextIO | None = None,
                 interval: float = 10.0) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr  # None when stderr was closed (`2>&-`): nothing is shown
        self.tty = self.stream is not None and self.stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.shown = self.stream is not None and logging.getLogger("retrain").isEnabledFor(logging.INFO)

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.shown and now - self._last >= self.interval:
            self._last = now
            self._write(now, final=False)

    def close(self) -> None:
        if self.shown:
            self._write(time.monotonic(), final=True)

    def _write(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if final:
            text = f"{self.label}: {self.done}/{self.total} {self.unit} in {_duration(elapsed)} ({rate:.1f} {self.unit}/s)"
        else:
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            percent = 100.0 * self.done / self.total if self.total else 100.0
            if self.tty:
                filled = int(30 * percent / 100)
                bar = "#" * filled + "-" * (30 - filled)
                text = f"{self.label} [{bar}] {self.done}/{self.total} {rate:.1f} {self.unit}/s, {_duration(left)} left"
            else:
                text = (f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), "
                        f"{rate:.1f} {self.unit}/s, {_duration(left)} left")
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
