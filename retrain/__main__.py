"""`python -m retrain` is the `retrain` command."""

from retrain.entry import in_utf8_mode, stopped_early

try:
    in_utf8_mode(again=lambda: True)
except KeyboardInterrupt:
    stopped_early("retrain")

from retrain.cli import retrain_command  # noqa: E402 - after the locale is settled

retrain_command(prog_name="retrain")
