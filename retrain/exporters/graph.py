"""The classic frozen graph (`--output_graph`) and the intermediate graphs written during training.

A flat GraphDef, variables folded into constants, no function library: input
node `Placeholder` (float32 [None, H, W, 3], RGB in [0, 1]), output node
`--final_tensor_name` (`final_result`): loadable with `tf.compat.v1`
(`import_graph_def`, feed `import/Placeholder:0`, fetch `import/final_result:0`)
exactly as the classic label_image.py does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.errors import RetrainError
from retrain.exporters import Exporter
from retrain.names import FINAL_TENSOR_NAME
from retrain.outputs import (Output, atomic_write_bytes, check_writable_dir, check_writable_file, judge_again,
                             make_folder, set_aside)

log = logging.getLogger(__name__)


class FrozenGraph(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--output_graph", config.output_graph, content="graph")]

    def check(self, config: RetrainConfig) -> None:
        check_writable_file(config.output_graph, flag="--output_graph")

    def check_model(self, model: Any, config: RetrainConfig) -> None:
        """A --final_tensor_name of the user's may clash with a node of the module: said before any work (building
        the untrained model's graph takes seconds, so only for a name other than the classic one)."""
        if config.final_tensor_name != FINAL_TENSOR_NAME:
            model.graph_def  # noqa: B018 - raises a RetrainError on a clash

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        atomic_write_bytes(config.output_graph, model.graph_def.SerializeToString(), flag="--output_graph")
        return [config.output_graph]


@dataclass(frozen=True)
class Stored:
    """An intermediate graph a run wrote, and the earlier run's file of that step it replaced (kept aside)."""

    path: Path
    earlier: Path | None


class IntermediateGraphs(Exporter):
    """`intermediate_<step>.pb` every --intermediate_store_frequency steps (written while training)."""

    def outputs(self, config: RetrainConfig) -> list[Output]:
        if config.intermediate_store_frequency <= 0:
            return []
        return [Output("--intermediate_output_graphs_dir", config.intermediate_output_graphs_dir, kind="entries",
                       pattern=r"intermediate_\d+\.pb", content="graph")]

    def check(self, config: RetrainConfig) -> None:
        check_writable_dir(config.intermediate_output_graphs_dir, flag="--intermediate_output_graphs_dir")

    @staticmethod
    def store(model: Any, config: RetrainConfig, *, step: int) -> Stored:
        """Write `intermediate_<step>.pb`; an earlier run's file of that step is kept aside until `keep`."""
        path = config.intermediate_output_graphs_dir / f"intermediate_{step}.pb"
        make_folder(path.parent, flag="--intermediate_output_graphs_dir")
        judge_again(path)  # a file saved there meanwhile is refused here, before anything is set aside
        try:
            earlier = set_aside(path)
        except OSError as error:
            raise RetrainError(f"cannot write --intermediate_output_graphs_dir {path}: {error.strerror or error}") \
                from None
        try:
            atomic_write_bytes(path, model.graph_def.SerializeToString(), flag="--intermediate_output_graphs_dir")
        except BaseException:
            if earlier is not None:
                earlier.unlink(missing_ok=True)
            raise
        log.info("saved intermediate graph %s", path)
        return Stored(path, earlier)

    @staticmethod
    def keep(stored: list[Stored]) -> None:
        """The run keeps its model: the earlier runs' files its intermediate graphs replaced go."""
        for entry in stored:
            if entry.earlier is not None:
                entry.earlier.unlink(missing_ok=True)

    @staticmethod
    def remove(stored: list[Stored], *, why: str) -> None:
        """Take back the intermediate graphs this run wrote of a model it does not keep (an earlier run's file of
        the same step is put back), and say so."""
        for entry in stored:
            if entry.earlier is not None:
                os.replace(entry.earlier, entry.path)
            else:
                entry.path.unlink(missing_ok=True)
        if stored:
            put_back = sum(entry.earlier is not None for entry in stored)
            log.warning("removed the %d intermediate graph(s) this run wrote from step %s on (%s), as they hold "
                        "that model%s", len(stored), stored[0].path.stem.removeprefix("intermediate_"), why,
                        f"; put back the earlier run's file of the same step for {put_back} of them" if put_back
                        else "")
