"""The labels file (`--output_labels`): one label per line, in class-index order, newline-terminated.

A multi-label model's thresholds go beside it (`names.thresholds_path`): one number per
line, in label order, written with 9 significant digits so the float32 value is exact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.exporters import Exporter
from retrain.names import thresholds_path
from retrain.outputs import Output, atomic_write_bytes, check_writable_file


def labels_text(labels: tuple[str, ...] | list[str]) -> bytes:
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


def classic_labels_text(labels: tuple[str, ...] | list[str]) -> bytes:
    """The labels file the classic retrain.py wrote for these classes: each folder name lowercased, every run of
    other characters than a-z and 0-9 one space. A rerun replaces it (it is that run's output)."""
    return labels_text([re.sub(r"[^a-z0-9]+", " ", label.lower()) for label in labels])


def thresholds_text(thresholds: Any) -> bytes:
    return "".join(f"{float(t):.9g}\n" for t in thresholds).encode("ascii")


class Labels(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        outputs = [Output("--output_labels", config.output_labels, content="labels", graph=config.output_graph,
                          detail=config.final_tensor_name)]
        if config.may_be_multi_label:  # (probe ZZS: declared for a folder run, a link of that name was refused)
            outputs.append(Output("--output_labels", thresholds_path(config.output_labels), content="thresholds",
                                  role="the thresholds beside --output_labels"))
        return outputs

    def check(self, config: RetrainConfig) -> None:
        check_writable_file(config.output_labels, flag="--output_labels")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        atomic_write_bytes(config.output_labels, labels_text(model.labels), flag="--output_labels")
        if model.head.thresholds is None:
            return [config.output_labels]
        path = thresholds_path(config.output_labels)
        atomic_write_bytes(path, thresholds_text(model.head.thresholds), flag="--output_labels")
        return [config.output_labels, path]
