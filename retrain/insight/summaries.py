"""The classic TensorBoard summaries of training: scalars per run, histograms of the new layer.

`<run folder>/train` gets the headline figure (`accuracy` for single labels)
and `cross_entropy` of the last batch plus histograms of the new layer's
weights, biases, pre-activations and activations; `<run folder>/validation`
gets the validation figures. The writing functions are compiled once: eager
summaries cost 16 s per 4,000 steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain.tfenv import import_tensorflow


def run_dir(summaries_dir: Path) -> Path:
    """A new sub-folder per run, so earlier runs stay visible side by side in TensorBoard."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, number = summaries_dir / stamp, 1
    while candidate.exists():
        number += 1
        candidate = summaries_dir / f"{stamp}-{number}"
    return candidate


class Summaries:
    """Writers for one run folder, given the new layer's (weights, biases) variables and its objective.

    At the steps in `pictured` (a few evaluations, see insight.tensorboard.picture_steps) the
    validation sample's confusion matrix is drawn too, for objectives with one class per image.
    """

    def __init__(self, run_folder: Path, *, layer: tuple[Any, Any], objective: Any, labels: Sequence[str] = (),
                 pictured: frozenset[int] = frozenset()) -> None:
        tf = import_tensorflow()
        self.tf, self.run_folder, self.labels, self.pictured = tf, run_folder, labels, pictured
        self.writers = {name: tf.summary.create_file_writer(str(run_folder / name))
                        for name in ("train", "validation")}
        writers, (weights, biases), headline = self.writers, layer, objective.headline

        @tf.function
        def write_train(step: Any, metric: Any, loss: Any, logits: Any) -> None:
            with writers["train"].as_default(step=step):
                tf.summary.scalar(headline, metric)
                tf.summary.scalar("cross_entropy", loss)
                tf.summary.histogram("final_layer/weights", weights)
                tf.summary.histogram("final_layer/biases", biases)
                tf.summary.histogram("final_layer/pre_activations", logits)
                tf.summary.histogram("final_layer/activations", objective.activation(logits))

        @tf.function
        def write_validation(step: Any, metric: Any, loss: Any) -> None:
            with writers["validation"].as_default(step=step):
                tf.summary.scalar(headline, metric)
                tf.summary.scalar("cross_entropy", loss)

        self.write_train, self.write_validation = write_train, write_validation

    def write(self, *, step: int, last: Any, validation: Any) -> None:
        tf = self.tf
        step_t = tf.constant(step, tf.int64)
        self.write_train(step_t, tf.constant(last.metric, tf.float32), tf.constant(last.loss, tf.float32),
                         last.logits)
        if validation.count:
            self.write_validation(step_t, tf.constant(validation.accuracy, tf.float32),
                                  tf.constant(validation.cross_entropy, tf.float32))
        if step in self.pictured and validation.count and validation.truth is not None:
            from retrain.insight.report import confusion_matrix
            from retrain.insight.tensorboard import write_confusion_matrix

            matrix = confusion_matrix(truth=validation.truth, predicted=validation.predictions,
                                      class_count=len(self.labels))
            write_confusion_matrix(self.run_folder, split="validation", labels=self.labels, matrix=matrix,
                                   step=step, writer=self.writers["validation"])

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
