"""`python -m retrain` is the `retrain` command."""

import signal
import sys

from retrain.entry import in_utf8_mode

try:
    in_utf8_mode(again=lambda: True)
except KeyboardInterrupt:
    print("\nretrain: interrupted", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

from retrain.cli import retrain_command  # noqa: E402 - after the locale is settled

retrain_command(prog_name="retrain")
