"""The labels file (`--output_labels`): one label per line, in class-index order, newline-terminated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.exporters import Exporter
from retrain.outputs import Output, atomic_write_bytes, check_writable_file


def labels_text(labels: tuple[str, ...] | list[str]) -> bytes:
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


class Labels(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--output_labels", config.output_labels)]

    def check(self, config: RetrainConfig) -> None:
        check_writable_file(config.output_labels, flag="--output_labels")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        atomic_write_bytes(config.output_labels, labels_text(model.labels), flag="--output_labels")
        return [config.output_labels]
