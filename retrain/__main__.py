"""`python -m retrain` is the `retrain` command."""

from retrain.cli import retrain_command

retrain_command(prog_name="retrain")
