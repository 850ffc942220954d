"""Objectives: what the new layer's activation, loss, metrics and exported output are.

The training loop, the exporters and label-image never ask which objective
they run: they call these methods. `Softmax` is the classic one (one class per
image, accuracy and cross-entropy); `Sigmoid` is the multi-label one (any set
of labels per image, binary cross-entropy, F1). A new objective is a class
with the same methods; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain.tfenv import import_tensorflow

EVAL_CHUNK = 8192  # rows evaluated at a time, so huge evaluation samples stay within memory


@dataclass(frozen=True)
class Evaluation:
    """Figures on (a sample of) a split: `metrics` holds the objective's headline figure and cross_entropy."""

    metrics: dict[str, float]
    headline: str  # the key of the figure the classic lines print ("accuracy", "micro_f1")
    count: int
    predictions: np.ndarray  # per evaluated row: class index (softmax) or label set as bool [n, L] (sigmoid)
    indices: np.ndarray  # which rows of the split were evaluated
    probabilities: np.ndarray  # [n, classes]

    @property
    def accuracy(self) -> float:
        """The headline figure (accuracy for softmax, micro F1 for sigmoid)."""
        return self.metrics.get(self.headline, float("nan"))

    @property
    def cross_entropy(self) -> float:
        return self.metrics.get("cross_entropy", float("nan"))


@dataclass(frozen=True)
class Softmax:
    """One class per image: softmax over classes, mean cross-entropy, accuracy (the classic objective)."""

    label_smoothing: float = 0.0
    name: str = "softmax"
    headline: str = "accuracy"  # the metric of the classic log lines: "Step N: Train accuracy = X%"
    output_op: str = "Softmax"

    def activation(self, logits: Any, *, name: str | None = None) -> Any:
        return import_tensorflow().nn.softmax(logits, name=name)

    def target_spec(self, classes: int, *, leading: int = 1) -> Any:
        """The TensorSpec of a batch of targets (with `leading` batch dimensions)."""
        tf = import_tensorflow()
        return tf.TensorSpec([None] * leading, tf.int32)

    def loss(self, logits: Any, targets: Any) -> Any:
        tf = import_tensorflow()
        if self.label_smoothing:
            classes = tf.shape(logits)[1]
            smooth = tf.one_hot(targets, classes) * (1.0 - self.label_smoothing) + \
                self.label_smoothing / tf.cast(classes, tf.float32)
            return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(smooth, logits))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))

    def batch_metric(self, logits: Any, targets: Any) -> Any:
        """The headline figure of a training batch, as a TensorFlow scalar."""
        tf = import_tensorflow()
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), targets), tf.float32))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def evaluate(self, probabilities: np.ndarray, targets: Any, *, indices: np.ndarray) -> Evaluation:
        truth = targets.ids
        predictions = np.argmax(probabilities, axis=1)
        picked = probabilities[np.arange(len(truth)), truth]
        cross_entropy = float(-np.mean(np.log(np.maximum(picked, 1e-30))))
        return Evaluation(metrics={"accuracy": float(np.mean(predictions == truth)), "cross_entropy": cross_entropy},
                          headline=self.headline, count=len(truth), predictions=predictions, indices=indices, probabilities=probabilities)


def evaluate(head: Any, vectors: np.ndarray, targets: Any, *, batch_size: int, rng: np.random.Generator) -> Evaluation:
    """The head's figures on a split: all rows (batch_size -1) or a sample drawn as training draws."""
    objective = head.objective
    if len(targets) == 0:
        return Evaluation(metrics={}, headline=objective.headline, count=0, predictions=np.zeros(0, int), indices=np.zeros(0, int),
                          probabilities=np.zeros((0, head.biases.shape[0]), np.float32))
    indices = np.arange(len(targets)) if batch_size < 0 else targets.sample(rng, batch_size)
    probabilities = np.concatenate([head.probabilities(vectors[indices[s:s + EVAL_CHUNK]])
                                    for s in range(0, len(indices), EVAL_CHUNK)])
    return objective.evaluate(probabilities, targets.take(indices), indices=indices)
