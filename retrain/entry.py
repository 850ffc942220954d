"""The console scripts: `retrain` and `label-image`.

A Ctrl-C while Python still loads the command line (click and retrain's flags, about a tenth of a second)
ends with the one line a later one gives, not a traceback; from then on the command handles signals itself.
"""

from __future__ import annotations

import signal
import sys


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
    command()
