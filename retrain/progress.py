"""Progress reporting on stderr: a live bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from retrain.errors import raise_if_stopped


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
                 interval: float = 10.0, delay: float = 0.0) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr  # None when stderr was closed (`2>&-`): nothing is shown
        self.tty = self.stream is not None and self.stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start + delay - self.interval  # with a delay, quick work shows nothing, not even its end
        self.delay = delay
        self._first: tuple[float, int] | None = None  # the first update's time and count: rates are measured from it
        self.shown = self.stream is not None and logging.getLogger("retrain").isEnabledFor(logging.INFO)

    def update(self, count: int = 1) -> None:
        """Count `count` more items done. Also where long work stops for a signal a finaliser dropped."""
        raise_if_stopped()
        self.done += count
        now = time.monotonic()
        if self._first is None:
            self._first = (now, self.done)
        if self.shown and now - self._last >= self.interval:
            self._last = now
            self._write(now, final=False)

    def close(self) -> None:
        """The last line (none for no work at all: `Loading validation images: 0/0` said nothing)."""
        if self.shown and (self.total or self.done) and (not self.delay or time.monotonic() - self.start >= self.delay):
            self._write(time.monotonic(), final=True)

    def _write(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if final:
            text = f"{self.label}: {self.done}/{self.total} {self.unit} in {_duration(elapsed)} ({rate:.1f} {self.unit}/s)"
        else:
            # The rate since the first update: the first batch also pays for start-up (TensorFlow tracing), and
            # made the first time-left estimate ten times too long; the first line has none.
            first_time, first_done = self._first or (now, self.done)
            pace = ""
            if now > first_time and self.done > first_done:
                rate = (self.done - first_done) / (now - first_time)
                pace = f"{rate:.1f} {self.unit}/s, {_duration((self.total - self.done) / rate)} left"
            percent = 100.0 * self.done / self.total if self.total else 100.0
            if self.tty:
                filled = int(30 * percent / 100)
                bar = "#" * filled + "-" * (30 - filled)
                text = f"{self.label} [{bar}] {self.done}/{self.total}" + (f" {pace}" if pace else "")
            else:
                text = f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:.0f}%)" + (f", {pace}" if pace
                                                                                               else "")
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
