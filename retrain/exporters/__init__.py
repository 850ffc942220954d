"""Output formats: each one a check (before any work, so a bad path fails in a second) and a write.

An exporter says which paths it will write for a config (`outputs`, empty when
the format was not asked for), checks them and its own flags before any work
(`check`), may check the model once the modules are loaded (`check_model`), and
writes the trained model (`write`), giving the files to report (a generator
gives each as it is written). The run
goes through `exporters()` in order; adding a format is a new module here and
one entry in that tuple, never an edit of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.outputs import Output


class Exporter:
    """The interface every format implements (the defaults do nothing)."""

    def outputs(self, config: RetrainConfig) -> list[Output]:
        return []

    def check(self, config: RetrainConfig) -> None:
        pass

    def check_model(self, model: Any, config: RetrainConfig) -> None:
        pass

    def write(self, model: Any, config: RetrainConfig) -> Iterable[Path]:
        return []


def exporters() -> tuple[Exporter, ...]:
    """Every format, in the order a run writes and reports them."""
    from retrain.exporters.checkpoint import Checkpoint
    from retrain.exporters.graph import FrozenGraph, IntermediateGraphs
    from retrain.exporters.labels import Labels
    from retrain.exporters.saved_model import SavedModel
    from retrain.exporters.tfjs import TFJS
    from retrain.exporters.tflite import TFLite

    return (FrozenGraph(), Labels(), Checkpoint(), IntermediateGraphs(), SavedModel(), TFLite(), TFJS())


def requested(config: RetrainConfig) -> tuple[Exporter, ...]:
    """The formats this config asks for."""
    return tuple(exporter for exporter in exporters() if exporter.outputs(config))
