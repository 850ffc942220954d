"""The new softmax layer: training on cached bottlenecks, evaluation, summaries.

The classic retrain.py top layer, kept as it was so results stay comparable:
weights drawn from a truncated normal (stddev 0.001), zero biases, plain SGD on
the mean softmax cross-entropy, class-uniform batches (pick a class, then an
image of it), and an evaluation every `eval_step_interval` steps. The steps
between evaluations run inside one tf.function loop, which is what makes
4,000 steps take seconds instead of minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Bottleneck vectors of one split with their class indices and source files."""

    vectors: np.ndarray  # [N, D] float32
    labels: np.ndarray  # [N] int
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Head:
    """The trained layer: probabilities = softmax(vectors @ weights + biases)."""

    weights: np.ndarray  # [D, C]
    biases: np.ndarray  # [C]

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return vectors.astype(np.float32) @ self.weights + self.biases

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = self.logits(vectors)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    cross_entropy: float
    count: int
    predictions: np.ndarray  # predicted class per evaluated example
    indices: np.ndarray  # which examples of the split were evaluated


def class_uniform_indices(labels: np.ndarray, count: int, rng: np.random.Generator, class_count: int) -> np.ndarray:
    """Sample `count` example indices: a random class first, then a random example of it."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=class_count)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = np.flatnonzero(counts)
    classes = present[rng.integers(0, len(present), size=count)]
    return order[offsets[classes] + rng.integers(0, counts[classes])]


def evaluate(head: Head, split: Split, *, batch_size: int, rng: np.random.Generator, class_count: int) -> Evaluation:
    """Accuracy on the whole split (batch_size -1) or on a class-uniform sample of it."""
    if len(split) == 0:
        return Evaluation(accuracy=float("nan"), cross_entropy=float("nan"), count=0, predictions=np.zeros(0, int), indices=np.zeros(0, int))
    indices = (np.arange(len(split)) if batch_size < 0
               else class_uniform_indices(split.labels, batch_size, rng, class_count))
    probabilities = head.probabilities(split.vectors[indices])
    truth = split.labels[indices]
    predictions = np.argmax(probabilities, axis=1)
    cross_entropy = float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(truth)), truth], 1e-30))))
    return Evaluation(accuracy=float(np.mean(predictions == truth)), cross_entropy=cross_entropy,
                      count=len(indices), predictions=predictions, indices=indices)


def schedule(steps: int, eval_interval: int, store_every: int) -> list[int]:
    """Steps after which training pauses: the classic evaluation and intermediate-store points."""
    points = {i for i in range(0, steps, eval_interval)} | {steps - 1}
    if store_every > 0:
        points |= {i for i in range(store_every, steps, store_every)}
    return sorted(points)


def train_head(
    *,
    train: Split,
    validation: Split,
    class_count: int,
    steps: int,
    learning_rate: float,
    train_batch_size: int,
    validation_batch_size: int,
    eval_step_interval: int,
    seed: int,
    summaries_dir: Path | None = None,
    intermediate_store_frequency: int = 0,
    on_intermediate: Callable[[int, Head], None] | None = None,
) -> Head:
    """Train the softmax layer on cached vectors and return its weights.

    Logs the classic lines at every evaluation step; writes TensorBoard
    summaries into `summaries_dir/train` and `summaries_dir/validation`.
    """
    tf = import_tensorflow()
    dim = train.vectors.shape[1]
    order = np.argsort(train.labels, kind="stable")
    counts = np.bincount(train.labels, minlength=class_count)
    vectors = tf.constant(train.vectors[order], tf.float32)
    labels = tf.constant(train.labels[order], tf.int32)
    offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int32)
    counts_t = tf.constant(counts, tf.int32)
    present = tf.constant(np.flatnonzero(counts), tf.int32)
    weights = tf.Variable(tf.random.stateless_truncated_normal([dim, class_count], seed=[seed, 1], stddev=0.001),
                          name="final_weights")
    biases = tf.Variable(tf.zeros([class_count]), name="final_biases")
    generator = tf.random.Generator.from_seed(seed)
    rate = tf.constant(learning_rate, tf.float32)

    @tf.function
    def run_steps(count: tf.Tensor) -> tuple[tf.Tensor, ...]:
        logits = tf.zeros([train_batch_size, class_count])
        batch_labels = tf.zeros([train_batch_size], tf.int32)
        index = tf.zeros([train_batch_size], tf.int32)
        for _ in tf.range(count):
            pick = tf.gather(present, generator.uniform([train_batch_size], 0, tf.size(present), tf.int32))
            within = tf.cast(generator.uniform([train_batch_size]) * tf.cast(tf.gather(counts_t, pick), tf.float32),
                             tf.int32)
            index = tf.gather(offsets, pick) + tf.minimum(within, tf.gather(counts_t, pick) - 1)
            batch = tf.gather(vectors, index)
            batch_labels = tf.gather(labels, index)
            with tf.GradientTape() as tape:
                logits = tf.matmul(batch, weights) + biases
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(batch_labels, logits))
            grad_w, grad_b = tape.gradient(loss, [weights, biases])
            weights.assign_sub(rate * grad_w)
            biases.assign_sub(rate * grad_b)
        # The classic script reported accuracy of the last batch after its step.
        logits = tf.matmul(tf.gather(vectors, index), weights) + biases
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(batch_labels, logits))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), batch_labels),
                                          tf.float32))
        return accuracy, loss, logits

    summaries = Summaries(tf, summaries_dir, weights=weights, biases=biases) if summaries_dir else None
    eval_rng = np.random.default_rng(seed + 1)
    done = 0
    for step in schedule(steps, eval_step_interval, intermediate_store_frequency):
        accuracy, loss, logits = run_steps(tf.constant(step + 1 - done))
        done = step + 1
        head = Head(weights=weights.numpy(), biases=biases.numpy())
        if step % eval_step_interval == 0 or step == steps - 1:
            valid = evaluate(head, validation, batch_size=validation_batch_size, rng=eval_rng, class_count=class_count)
            log.info("Step %d: Train accuracy = %.1f%%", step, 100 * float(accuracy))
            log.info("Step %d: Cross entropy = %f", step, float(loss))
            if valid.count:
                log.info("Step %d: Validation accuracy = %.1f%% (N=%d)", step, 100 * valid.accuracy, valid.count)
            if summaries:
                summaries.write(step=step, accuracy=accuracy, loss=loss, logits=logits, validation=valid)
        if intermediate_store_frequency > 0 and step > 0 and step % intermediate_store_frequency == 0 and on_intermediate:
            on_intermediate(step, head)
    if summaries:
        summaries.close()
    return Head(weights=weights.numpy(), biases=biases.numpy())


class Summaries:
    """The classic summaries, compiled once: scalars per run, histograms of the new layer."""

    def __init__(self, tf, summaries_dir: Path, *, weights, biases) -> None:
        self.tf = tf
        self.writers = {name: tf.summary.create_file_writer(str(summaries_dir / name))
                        for name in ("train", "validation")}
        writers = self.writers

        @tf.function
        def write_train(step, accuracy, loss, logits) -> None:
            with writers["train"].as_default(step=step):
                tf.summary.scalar("accuracy", accuracy)
                tf.summary.scalar("cross_entropy", loss)
                tf.summary.histogram("final_layer/weights", weights)
                tf.summary.histogram("final_layer/biases", biases)
                tf.summary.histogram("final_layer/pre_activations", logits)
                tf.summary.histogram("final_layer/activations", tf.nn.softmax(logits))

        @tf.function
        def write_validation(step, accuracy, loss) -> None:
            with writers["validation"].as_default(step=step):
                tf.summary.scalar("accuracy", accuracy)
                tf.summary.scalar("cross_entropy", loss)

        self.write_train, self.write_validation = write_train, write_validation

    def write(self, *, step: int, accuracy, loss, logits, validation: Evaluation) -> None:
        step_t = self.tf.constant(step, self.tf.int64)
        self.write_train(step_t, accuracy, loss, logits)
        if validation.count:
            self.write_validation(step_t, self.tf.constant(validation.accuracy, self.tf.float32),
                                  self.tf.constant(validation.cross_entropy, self.tf.float32))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
