"""`python -m retrain` is the `retrain` command."""

from retrain.entry import in_utf8_mode

in_utf8_mode()

from retrain.cli import retrain_command  # noqa: E402 - after the locale is settled

retrain_command(prog_name="retrain")
