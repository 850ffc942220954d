"""`python -m retrain` is the `retrain` command."""

from retrain.entry import retrain_module

retrain_module()
