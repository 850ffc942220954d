"""The classic TensorBoard summaries of training: scalars per run, histograms of the new layer.

`<run folder>/train` gets the headline figure (`accuracy` for single labels)
and `cross_entropy` of the last batch plus histograms of the new layer's
weights, biases, pre-activations and activations; `<run folder>/validation`
gets the validation figures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.insight.tensorboard import MATRIX_PICTURE_CLASSES, summary_errors, write_confusion_matrix
from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)


def run_dir(summaries_dir: Path) -> Path:
    """A new sub-folder per run, so earlier runs stay visible side by side in TensorBoard."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, number = summaries_dir / stamp, 1
    while candidate.exists():
        number += 1
        candidate = summaries_dir / f"{stamp}-{number}"
    return candidate


def claim_run_dir(planned: Path) -> Path:
    """Create the run folder `run_dir` planned, or the next free name if another run took it meanwhile.

    mkdir fails when the folder exists, so two runs started in the same second get two folders.
    """
    candidate, number = planned, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError as error:
            if not os.path.lexists(candidate):  # not another run's folder: a file or a link to nothing on the way
                raise RetrainError(f"cannot create the TensorBoard run folder {candidate} (--summaries_dir): "
                                   f"{error.strerror} ({error.filename})") from None
            number += 1
            candidate = planned.with_name(f"{planned.name}-{number}")
        except OSError as error:
            raise RetrainError(f"cannot create the TensorBoard run folder {candidate} (--summaries_dir): "
                               f"{error.strerror or error}") from None


class Summaries:
    """Writers for one run folder: the classic scalars and histograms at each evaluation.

    The summaries are built as protocol buffers from numpy values (TensorBoard's own
    `scalar_pb` / `histogram_pb`) and written raw: no TensorFlow function to trace, so a
    short run starts writing at once, and a 4,000-step run spends about half a second here.
    At the steps in `pictured` (a few evaluations, see insight.tensorboard.picture_steps) the
    validation sample's confusion matrix is drawn too, for objectives with one class per image.
    """

    def __init__(self, run_folder: Path, *, objective: Any, labels: Sequence[str] = (),
                 pictured: frozenset[int] = frozenset()) -> None:
        tf = import_tensorflow()
        self.tf, self.run_folder, self.objective, self.labels, self.pictured = tf, run_folder, objective, labels, pictured
        with summary_errors(self.run_folder):
            self.writers = {name: tf.summary.create_file_writer(str(run_folder / name))
                            for name in ("train", "validation")}

    def _write(self, split: str, step: int, summary: Any) -> None:
        with summary_errors(self.run_folder), self.writers[split].as_default(step=step):
            self.tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)

    def write(self, *, step: int, last: Any, validation: Any, head: Any) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        logits = np.asarray(last.logits)
        train = summary_pb2.Summary()
        for name, value in ((self.objective.headline, last.metric), ("cross_entropy", last.loss)):
            train.value.extend(scalar_pb(name, float(value)).value)
        for name, values in (("final_layer/weights", head.weights), ("final_layer/biases", head.biases),
                             ("final_layer/pre_activations", logits),
                             ("final_layer/activations", self.objective.probabilities(logits))):
            train.value.extend(histogram_pb(name, values).value)
        self._write("train", step, train)
        if validation.count:
            figures = summary_pb2.Summary()
            for name, value in ((self.objective.headline, validation.accuracy),
                                ("cross_entropy", validation.cross_entropy)):
                figures.value.extend(scalar_pb(name, float(value)).value)
            self._write("validation", step, figures)
        if (step in self.pictured and validation.count and validation.truth is not None
                and len(self.labels) <= MATRIX_PICTURE_CLASSES):
            from retrain.insight.report import confusion_matrix

            matrix = confusion_matrix(truth=validation.truth, predicted=validation.predictions,
                                      class_count=len(self.labels))
            try:
                write_confusion_matrix(self.run_folder, split="validation", labels=self.labels, matrix=matrix,
                                       step=step, writer=self.writers["validation"])
            except RetrainError:
                raise  # the summaries' folder cannot be written: as for the scalars
            except Exception as error:  # noqa: BLE001 - a picture never fails a run (a damaged font, say)
                log.warning("validation confusion matrix pictures could not be made, so no more are drawn: %s: %s",
                            type(error).__name__, error)
                self.pictured = frozenset()

    def close(self) -> None:
        with summary_errors(self.run_folder):
            for writer in self.writers.values():
                writer.close()
