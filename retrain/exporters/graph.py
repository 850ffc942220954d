"""The classic frozen graph (`--output_graph`) and the intermediate graphs written during training.

A flat GraphDef, variables folded into constants, no function library: input
node `Placeholder` (float32 [None, H, W, 3], RGB in [0, 1]), output node
`--final_tensor_name` (`final_result`): loadable with `tf.compat.v1`
(`import_graph_def`, feed `import/Placeholder:0`, fetch `import/final_result:0`)
exactly as the classic label_image.py does.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.errors import RetrainError
from retrain.exporters import Exporter
from retrain.names import FINAL_TENSOR_NAME, report_path
from retrain.outputs import (Output, Writes, atomic_write_bytes, check_writable_dir, check_writable_file,
                             held_elsewhere, judge_again, make_folder, recording)

log = logging.getLogger(__name__)


class FrozenGraph(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--output_graph", config.output_graph, content="graph", detail=config.final_tensor_name,
                       report=report_path(config.output_labels))]

    def check(self, config: RetrainConfig) -> None:
        check_writable_file(config.output_graph, flag="--output_graph")

    def check_model(self, model: Any, config: RetrainConfig) -> None:
        """A --final_tensor_name of the user's may clash with a node of the module: said before any work (building
        the untrained model's graph takes seconds, so only for a name other than the classic one)."""
        if config.final_tensor_name != FINAL_TENSOR_NAME:
            model.graph_def  # noqa: B018 - raises a RetrainError on a clash

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        atomic_write_bytes(config.output_graph, model.graph_bytes, flag="--output_graph",
                           digest=True)  # in the report always (run.files_sha256)
        return [config.output_graph]


class IntermediateGraphs(Exporter):
    """`intermediate_<step>.pb` every --intermediate_store_frequency steps (written while training)."""

    def outputs(self, config: RetrainConfig) -> list[Output]:
        if config.intermediate_store_frequency <= 0:
            return []
        return [Output("--intermediate_output_graphs_dir", config.intermediate_output_graphs_dir, kind="entries",
                       pattern=r"intermediate_\d+\.pb", content="graph", detail=config.final_tensor_name,
                       report=report_path(config.output_labels), writes_name=functools.partial(_stores, config))]

    def check(self, config: RetrainConfig) -> None:
        check_writable_dir(config.intermediate_output_graphs_dir, flag="--intermediate_output_graphs_dir")

    @staticmethod
    def store(model: Any, config: RetrainConfig, *, step: int, writes: Writes) -> None:
        """Write `intermediate_<step>.pb`, recorded in `writes`: an earlier run's file of that step is kept aside
        until the run keeps its model (`writes.keep()`) or puts it back (`remove`)."""
        path = config.intermediate_output_graphs_dir / f"intermediate_{step}.pb"
        holder = held_elsewhere(path)
        if holder is not None:  # another run's --output_graph (say) of that name: not this run's to replace
            log.warning("intermediate graph %s not saved: another retrain run%s is writing that file", path, holder)
            return
        try:
            judge_again(path)  # a file put there while the run went on is kept; the run goes on without this graph
        except RetrainError as error:  # (the whole run stopped for it, probe QQ)
            log.warning("intermediate graph %s not saved: %s", path, error)
            return
        writes.check_in_place()  # the folder moved since the last graph: not made again at its old path (ZZZ)
        make_folder(path.parent, flag="--intermediate_output_graphs_dir")
        with recording(writes):
            atomic_write_bytes(path, model.graph_bytes, flag="--intermediate_output_graphs_dir",
                               digest=True)  # in the report always (run.intermediate_sha256)
        log.info("saved intermediate graph %s", path)

    @staticmethod
    def put_back(writes: Writes) -> None:
        """A run that ends without keeping its model (an error, an interrupt): the earlier run's files of the steps
        whose graphs this run replaced are put back (probe YYY: a full disk at the SavedModel left them replaced,
        "earlier outputs are kept"); this run's new ones stay, as any finished file of a run that stopped."""
        restored = writes.put_back_earlier()
        if restored:
            log.warning("put back the earlier run's intermediate graph(s) %s, which this run had replaced, as its "
                        "model is not kept", ", ".join(map(str, restored)))

    @staticmethod
    def remove(writes: Writes, *, start: int = 0, why: str) -> None:
        """Take back the intermediate graphs this run wrote (from the `start`-th on) of a model it does not keep
        (an earlier run's file of the same step is put back), and say so."""
        taken = writes.entries[start:]
        if not taken:
            return
        put_back = sum(entry.aside is not None for entry in taken)
        log.warning("removed the %d intermediate graph(s) this run wrote from step %s on (%s), as they hold "
                    "that model%s", len(taken), taken[0].path.stem.removeprefix("intermediate_"), why,
                    f"; put back the earlier run's file of the same step for {put_back} of them" if put_back
                    else "")
        writes.take_back(start)


def _stores(config: RetrainConfig, name: str) -> bool:
    """Whether the run stores the intermediate graph of that name: every --intermediate_store_frequency steps
    but step 0 (train.Schedule.stores), of training, then of fine-tuning, whose steps are numbered on from
    training's. Other steps' files, an earlier run's, are not its to judge."""
    digits = name.removeprefix("intermediate_").removesuffix(".pb")
    if not re.fullmatch(r"[0-9]{1,18}", digits):  # past any step count (and int() refuses thousands of digits)
        return False
    step = int(digits)
    steps = config.how_many_training_steps + (config.fine_tune_steps if config.fine_tune else 0)
    every = config.intermediate_store_frequency
    return digits == str(step) and 0 < step < steps and step % every == 0  # (intermediate_010.pb is no step's)
