"""Objectives: what the new layer's activation, loss, metrics and exported output are.

The training loop, the exporters and label-image never ask which objective
they run: they call these methods. `Softmax` is the classic one (one class per
image, accuracy and cross-entropy); `Sigmoid` is the multi-label one (any set
of labels per image, binary cross-entropy, F1, per-label thresholds chosen on
validation). A new objective is a class with the same methods; nothing else
changes.

Evaluation streams: `evaluate` gets the scores of a split in chunks, so a split
of 100,000 images and 5,000 classes or labels never becomes one dense matrix
(a softmax keeps each image's prediction and the cross-entropy's sum, a sigmoid
per-label histograms, `labels.multilabel.LabelStats`); the scores themselves are
kept only up to KEEP_SCORES numbers, for the test split's pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrain.names import SIGMOID_OPS, SOFTMAX_OPS
from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)

EVAL_CHUNK = 8192  # rows evaluated at a time, so huge evaluation samples stay within memory
CHUNK_SCORES = 4_000_000  # scores computed at a time: fewer rows a chunk for thousands of classes
KEEP_SCORES = 20_000_000  # scores kept in an Evaluation (for pictures, listings); larger splits keep none

# How the figures read in the classic lines ("Step 10: Train accuracy = ...", "Final test micro F1 = ...").
FIGURE_NAMES = {"accuracy": "accuracy", "micro_f1": "micro F1", "macro_f1": "macro F1",
                "mean_average_precision": "mean average precision"}
Chunks = Iterable[tuple[np.ndarray, Any, np.ndarray]]  # (scores [n, C], targets of those rows, row indices)


@dataclass(frozen=True)
class Evaluation:
    """Figures on (a sample of) a split: `metrics` holds the objective's headline figure and cross_entropy."""

    metrics: dict[str, float]
    headline: str  # the key of the figure the classic lines print ("accuracy", "micro_f1")
    count: int
    predictions: np.ndarray | None  # per row: class index (softmax) or labels at threshold, bool [n, L] (sigmoid)
    indices: np.ndarray  # which rows of the split were evaluated
    probabilities: np.ndarray | None  # [n, classes]; None for splits too large to keep (see KEEP_SCORES)
    details: Any = None  # per-label figures (sigmoid: labels.multilabel.MultiLabelMetrics)
    truth: np.ndarray | None = None  # per row: the true class (softmax)

    @property
    def accuracy(self) -> float:
        """The headline figure (accuracy for softmax, micro F1 for sigmoid)."""
        return self.metrics.get(self.headline, float("nan"))

    @property
    def cross_entropy(self) -> float:
        return self.metrics.get("cross_entropy", float("nan"))


# An evaluation's cross-entropy counts a score below this as this (a softmax image adds at most 69.1).
SCORE_FLOOR = 1e-30


@dataclass(frozen=True)
class Softmax:
    """One class per image: softmax over classes, mean cross-entropy, accuracy (the classic objective)."""

    name: str = "softmax"
    headline: str = "accuracy"  # the metric of the classic log lines: "Step N: Train accuracy = X%"
    output_op: str = SOFTMAX_OPS[0]  # the exported graph's score node (its op in a TFLite model: tflite_op)
    tflite_op: str = SOFTMAX_OPS[1]
    multi_label: bool = False

    def activation(self, logits: Any, *, name: str | None = None) -> Any:
        return import_tensorflow().nn.softmax(logits, name=name)

    def target_spec(self, classes: int, *, leading: int = 1) -> Any:
        """The TensorSpec of a batch of targets (with `leading` batch dimensions)."""
        tf = import_tensorflow()
        return tf.TensorSpec([None] * leading, tf.int32)

    def loss(self, logits: Any, targets: Any) -> Any:
        tf = import_tensorflow()
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))

    def batch_metric(self, logits: Any, targets: Any) -> Any:
        """The headline figure of a training batch, as a TensorFlow scalar."""
        tf = import_tensorflow()
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), targets), tf.float32))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def evaluate(self, chunks: Chunks, *, thresholds: np.ndarray | None = None) -> Evaluation:
        truths, predictions, indices, entropy, kept = [], [], [], 0.0, _Kept()
        for probabilities, targets, rows in chunks:
            truth = targets.ids
            picked = probabilities[np.arange(len(truth)), truth]
            entropy -= float(np.sum(np.log(np.maximum(picked, SCORE_FLOOR))))
            truths.append(truth)
            predictions.append(np.argmax(probabilities, axis=1))
            indices.append(rows)
            kept.add(probabilities)
        truth, predicted = np.concatenate(truths), np.concatenate(predictions)
        return Evaluation(metrics={"accuracy": float(np.mean(predicted == truth)),
                                   "cross_entropy": entropy / len(truth)},
                          headline=self.headline, count=len(truth), predictions=predicted,
                          indices=np.concatenate(indices), probabilities=kept.scores(), truth=truth)

    def calibrate(self, head: Any, chunks: Chunks, *, training: Any, names: Sequence[str] = ()) -> Any:
        """The head as it is: a softmax needs no threshold."""
        return head


@dataclass(frozen=True)
class Sigmoid:
    """Any set of labels per image: a sigmoid per label, binary cross-entropy, F1 at per-label thresholds.

    The loss sums the cross-entropy over labels and averages over images, so each
    logit's gradient has the scale the softmax's has (the classic learning rate
    fits). During training the figures use a threshold of 0.5; `calibrate` then
    picks each label's threshold on validation (maximising its F1; 0.5 for a
    label with no positive there) and the final figures use those.
    """

    name: str = "sigmoid"
    headline: str = "micro_f1"
    output_op: str = SIGMOID_OPS[0]
    tflite_op: str = SIGMOID_OPS[1]
    multi_label: bool = True

    def activation(self, logits: Any, *, name: str | None = None) -> Any:
        return import_tensorflow().math.sigmoid(logits, name=name)

    def target_spec(self, classes: int, *, leading: int = 1) -> Any:
        tf = import_tensorflow()
        return tf.TensorSpec([None] * leading + [classes], tf.float32)

    def loss(self, logits: Any, targets: Any) -> Any:
        tf = import_tensorflow()
        return tf.reduce_mean(tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits), axis=1))

    def batch_metric(self, logits: Any, targets: Any) -> Any:
        """Micro F1 of the batch at 0.5 (logit 0)."""
        tf = import_tensorflow()
        predicted = tf.cast(logits >= 0.0, tf.float32)
        hits = tf.reduce_sum(predicted * targets)
        wrong = tf.reduce_sum(predicted) + tf.reduce_sum(targets) - 2.0 * hits
        return tf.math.divide_no_nan(2.0 * hits, 2.0 * hits + wrong)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(-np.logaddexp(0.0, -logits)).astype(np.float32)

    def evaluate(self, chunks: Chunks, *, thresholds: np.ndarray | None = None) -> Evaluation:
        from retrain.labels.multilabel import DEFAULT_THRESHOLD, LabelStats

        stats, kept, indices, entropy, count = None, _Kept(), [], 0.0, 0
        for probabilities, truth, rows in chunks:
            stats = stats or LabelStats(num_labels=probabilities.shape[1])
            stats.add(probabilities, truth)
            dense = truth.rows(np.arange(len(truth)))
            # Floored as the softmax's is, so a saturated wrong label costs up to 69, not 16: that is what lets
            # train.check_converged tell a diverged layer (every label's sigmoid at 0 or 1) from an untrained one.
            p = probabilities.astype(np.float64)
            entropy -= float(np.sum(dense * np.log(np.maximum(p, SCORE_FLOOR))
                                    + (1 - dense) * np.log(np.maximum(1 - p, SCORE_FLOOR))))
            count += len(truth)
            indices.append(rows)
            kept.add(probabilities)
        if stats is None:
            return Evaluation(metrics={}, headline=self.headline, count=0, predictions=None,
                              indices=np.zeros(0, int), probabilities=None)
        thresholds = DEFAULT_THRESHOLD if thresholds is None else thresholds
        details = stats.metrics(thresholds)
        probabilities = kept.scores()
        predictions = None if probabilities is None else probabilities >= thresholds
        return Evaluation(metrics={"micro_f1": details.micro_f1, "cross_entropy": entropy / count,
                                   "macro_f1": details.macro_f1, "mean_average_precision": details.mean_average_precision},
                          headline=self.headline, count=count, predictions=predictions,
                          indices=np.concatenate(indices), probabilities=probabilities, details=details)

    def calibrate(self, head: Any, chunks: Chunks, *, training: Any, names: Sequence[str] = ()) -> Any:
        """The head with a threshold per label, each maximising that label's F1 on `chunks` (validation).

        A label without a positive in `training` (the training targets) gets one above any probability:
        the layer never learned it, so validation cannot pick a meaningful threshold for it. One whose best
        threshold would name it on every validation image, those without it too (or is 0, every image whatever
        its score), gets the default instead, said when `names` (the labels) are given.
        """
        from retrain.labels.multilabel import DEFAULT_THRESHOLD, UNTRAINED_THRESHOLD, LabelStats

        stats = LabelStats(num_labels=head.biases.shape[0])
        for probabilities, truth, _rows in chunks:
            stats.add(probabilities, truth)
        thresholds = stats.best_thresholds()
        if not stats.rows:  # said: each threshold was 0.5 without a word (probe PP)
            log.warning("no validation images to choose each label's threshold on: every label's is %g; give "
                        "--validation_percentage (or validation rows in --labels_csv) to choose them",
                        DEFAULT_THRESHOLD)
        untrained = training.positives_per_label() == 0
        # Named on every validation image, negatives too (probes ZZM, ZZN: saturated or unlearnable scores), or on
        # every image whatever its score (0): not a threshold the scores chose.
        chosen = stats.metrics(thresholds)  # exact at the grid thresholds best_thresholds chose
        named_on_all = (chosen.predicted == stats.rows) & (chosen.support < stats.rows)
        everywhere = np.flatnonzero(((thresholds <= 0) | named_on_all) & ~untrained)
        thresholds[everywhere] = DEFAULT_THRESHOLD
        if names and everywhere.size:
            log.warning("%d label(s) would be named on every image at the threshold that maximises their F1 on "
                        "validation, where their images score no higher than the others (%s): they get %g instead; "
                        "add validation images of them, or lower --learning_rate if their scores saturate",
                        everywhere.size, ", ".join(repr(names[i]) for i in everywhere[:5]), DEFAULT_THRESHOLD)
        thresholds[untrained] = UNTRAINED_THRESHOLD
        return replace(head, thresholds=thresholds)


class _Kept:
    """The scores of an evaluation's chunks, kept while they hold up to KEEP_SCORES numbers; beyond, none."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] | None = []
        self.size = 0

    def add(self, scores: np.ndarray) -> None:
        self.size += scores.size
        if self.parts is not None and self.size <= KEEP_SCORES:
            self.parts.append(scores)
        else:
            self.parts = None

    def scores(self) -> np.ndarray | None:
        return None if not self.parts else np.concatenate(self.parts)


OBJECTIVES = (Softmax(), Sigmoid())


def objective_for(*, multi_label: bool) -> Softmax | Sigmoid:
    """The objective a label set asks for: one sigmoid per label for multi-label sets, else the softmax."""
    return next(objective for objective in OBJECTIVES if objective.multi_label == multi_label)


def is_multi_label(name: object) -> bool:
    """Whether the objective a report names (its "objective" key) gives any set of labels per image."""
    return any(objective.multi_label for objective in OBJECTIVES if objective.name == name)


def objective_of(op: str) -> Softmax | Sigmoid | None:
    """The objective whose scores an exported model's output op computes (a graph's op, or a TFLite model's), or
    None (another model's output, logits)."""
    return next((objective for objective in OBJECTIVES if op in (objective.output_op, objective.tflite_op)), None)


def score_chunks(head: Any, vectors: np.ndarray, targets: Any, indices: np.ndarray) -> Iterator[tuple]:
    """(scores, targets, indices) of `indices`' rows, up to EVAL_CHUNK rows (and CHUNK_SCORES scores) at a time."""
    step = max(1, min(EVAL_CHUNK, CHUNK_SCORES // max(1, head.biases.shape[0])))
    for start in range(0, len(indices), step):
        rows = indices[start:start + step]
        yield head.probabilities(vectors[rows]), targets.take(rows), rows


def evaluate(head: Any, vectors: np.ndarray, targets: Any, *, batch_size: int, rng: np.random.Generator) -> Evaluation:
    """The head's figures on a split: all rows (batch_size -1) or a sample drawn as training draws."""
    if len(targets) == 0:
        return Evaluation(metrics={}, headline=head.objective.headline, count=0, predictions=None,
                          indices=np.zeros(0, int), probabilities=None)
    indices = np.arange(len(targets)) if batch_size < 0 else targets.sample(rng, batch_size)
    return head.objective.evaluate(score_chunks(head, vectors, targets, indices), thresholds=head.thresholds)
