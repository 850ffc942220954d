"""The console scripts: `retrain` and `label-image`.

A Ctrl-C while Python still loads the command line (click and retrain's flags, about a tenth of a second)
ends with the one line a later one gives, not a traceback; from then on the command handles signals itself,
and once it has returned, while Python and TensorFlow shut down (a second or two), `_on_the_way_out` does.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def retrain_command() -> None:
    _run("retrain", "retrain_command")


def label_image_command() -> None:
    _run("label-image", "label_image_command")


def _run(prog: str, name: str) -> None:
    try:
        from retrain import cli  # the command installs its own handlers when it starts
        command = getattr(cli, name)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    try:
        command()
    finally:
        _on_the_way_out(prog)


def _on_the_way_out(prog: str) -> None:
    """A signal once the command has returned, while Python and TensorFlow shut down, killed the process without a
    word (SIGTERM) or printed a traceback of Python's shutdown (Ctrl-C). Everything is written by then (complete
    or not at all): say so and exit at once, with the signal's status."""
    from retrain.errors import STOP_SIGNALS

    def stop(signum: int, _frame: Any) -> None:
        with_line = f"\n{prog}: {STOP_SIGNALS[signum]} as it was exiting; what it wrote is complete\n"
        try:
            os.write(2, with_line.encode())
        except OSError:
            pass
        os._exit(128 + signum)

    for signum, handled in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                            (getattr(signal, "SIGHUP", None), signal.SIG_DFL)):
        if signum is not None and signal.getsignal(signum) == handled:  # not one ignored (a background job, nohup)
            signal.signal(signum, stop)
