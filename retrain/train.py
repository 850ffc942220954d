"""The one training loop: the new layer on cached vectors, or on images (distorted on the fly, fine-tuned).

The loop (`train`) owns what every kind of training shares: the pause points
(the classic evaluation every `eval_step_interval` steps, intermediate stores),
the classic log lines, the TensorBoard summaries, progress, and the stop when
the loss stops being a number. What a step does is a `Steps` object:
`VectorSteps` trains the layer on cached vectors (thousands of steps per
second, in compiled blocks), `ImageSteps` runs the feature source on images
every step (distorting each batch, and training the modules' own weights when
fine-tuning). Both start from the same initial layer, draw batches with the
targets' own sampler (class-uniform for single labels, as the classic script
did) and update with the same optimizers; the objective decides activation,
loss and the headline figure.

The classic head, kept so results stay comparable: weights from a truncated
normal (stddev 0.001), zero biases, plain SGD on the mean cross-entropy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrain.distortions import Distortions, crop_boxes, distort_tensors, sample_parameters
from retrain.errors import RetrainError, raise_if_stopped, reason, stops_after
from retrain.images import ImageError, load_image
from retrain.objectives import FIGURE_NAMES, SCORE_FLOOR, Evaluation
from retrain.pool import thread_pool
from retrain.progress import Progress
from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)

# Random streams of a run, each seeded from --seed and its own number, so adding draws to
# one stream never shifts another.
STREAMS = {"training": 0, "validation": 1, "testing": 2, "fine_tune": 3, "calibration": 4}
BLOCK_FLOATS = 4_000_000  # vector-training steps run in compiled blocks of about this many input floats
MOMENTUM = 0.9


def rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one random stream of a run."""
    return np.random.default_rng([STREAMS[stream], seed])


@dataclass(frozen=True)
class Split:
    """One split's rows: source files, targets and (when computed) their vectors [N, D]."""

    paths: tuple[Path, ...]
    targets: Any  # retrain.labels.Targets
    vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Head:
    """The trained layer: probabilities = objective activation of (vectors @ weights + biases)."""

    weights: np.ndarray  # [D, C]
    biases: np.ndarray  # [C]
    objective: Any
    thresholds: np.ndarray | None = None  # per label, for objectives that choose them (multi-label)

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ self.weights + self.biases

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return self.objective.probabilities(self.logits(vectors))

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.weights).all() and np.isfinite(self.biases).all())


def initial_head(*, dim: int, classes: int, seed: int, objective: Any) -> Head:
    """The classic initial layer: truncated-normal weights (stddev 0.001), zero biases."""
    tf = import_tensorflow()
    weights = tf.random.stateless_truncated_normal([dim, classes], seed=[seed, 1], stddev=0.001).numpy()
    return Head(weights=weights, biases=np.zeros(classes, np.float32), objective=objective)


@dataclass(frozen=True)
class Optimizer:
    """How variables learn: "sgd" (the classic) or "momentum" (fine-tuning); `flag` names the rate's flag."""

    learning_rate: float
    flag: str = "--learning_rate"
    kind: str = "sgd"

    def updater(self, variables: Sequence[Any]) -> Callable[[Sequence[Any]], None]:
        """A function, usable inside tf.function, applying gradients to `variables`."""
        tf = import_tensorflow()
        rate = tf.constant(self.learning_rate, tf.float32)
        velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables] \
            if self.kind == "momentum" else []

        def apply(gradients: Sequence[Any]) -> None:
            for index, (variable, gradient) in enumerate(zip(variables, gradients)):
                if gradient is None:
                    continue
                gradient = tf.convert_to_tensor(gradient)
                if velocities:
                    velocities[index].assign(MOMENTUM * velocities[index] + gradient)
                    gradient = velocities[index]
                variable.assign_sub(rate * gradient)

        return apply


@dataclass(frozen=True)
class Last:
    """The last batch of a run of steps, re-evaluated after its update (as the classic script reported)."""

    loss: float
    metric: float
    logits: Any
    # Steps into the run at which the feature source gave NaN or infinity for a batch (the run stopped there), when
    # that is the source's own doing (a frozen module, or a fine-tuned one before its first update), else None;
    # and the member that gave them.
    bad_vectors_at: int | None = None
    bad_member: str = ""


class Steps(Protocol):
    """What a training step is. `run` trains `count` steps, calling tick(n) as steps complete."""

    slow: bool  # whether to show a progress bar

    def run(self, count: int, tick: Callable[[int], None]) -> Last: ...

    def head(self) -> Head: ...


class _Layer:
    """The new layer's variables, created from a Head."""

    def __init__(self, head: Head) -> None:
        tf = import_tensorflow()
        self.objective = head.objective
        self.weights = tf.Variable(head.weights, name="final_weights")
        self.biases = tf.Variable(head.biases, name="final_biases")

    def head(self) -> Head:
        return Head(weights=self.weights.numpy(), biases=self.biases.numpy(), objective=self.objective)


class VectorSteps(_Layer):
    """Steps on cached vectors: many steps per compiled call, batches gathered from `data.vectors`."""

    slow = False

    def __init__(self, *, data: Split, head: Head, optimizer: Optimizer, batch_size: int,
                 random: np.random.Generator) -> None:
        super().__init__(head)
        tf = import_tensorflow()
        self.data, self.batch_size, self.random = data, batch_size, random
        dim, classes = head.weights.shape
        self.chunk = max(1, BLOCK_FLOATS // (batch_size * dim))
        objective, weights, biases = head.objective, self.weights, self.biases
        apply = optimizer.updater([weights, biases])

        @tf.function(input_signature=[tf.TensorSpec([None, None, dim], tf.float32),
                                      objective.target_spec(classes, leading=2)])
        def block(features: Any, targets: Any) -> tuple[Any, Any, Any]:
            for i in tf.range(tf.shape(features)[0]):
                with tf.GradientTape() as tape:
                    loss = objective.loss(tf.matmul(features[i], weights) + biases, targets[i])
                apply(tape.gradient(loss, [weights, biases]))
            logits = tf.matmul(features[-1], weights) + biases
            return objective.loss(logits, targets[-1]), objective.batch_metric(logits, targets[-1]), logits

        self._block = block

    def run(self, count: int, tick: Callable[[int], None]) -> Last:
        result = None
        while count > 0:
            steps = min(count, self.chunk)
            indices = self.data.targets.sample(self.random, steps * self.batch_size)
            features = self.data.vectors[indices].reshape(steps, self.batch_size, -1)
            targets = self.data.targets.batch(indices)
            with stops_after():
                result = self._block(features, targets.reshape(steps, self.batch_size, *targets.shape[1:]))
            count -= steps
            tick(steps)
        loss, metric, logits = result
        return Last(loss=float(loss), metric=float(metric), logits=logits)


@dataclass(frozen=True)
class ImageSet:
    """Decoded images of one split, held in memory: uint8 [N, h, w, 3], targets, files."""

    pixels: np.ndarray
    targets: Any
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.targets)


def load_images(split: Split, *, height: int, width: int, label: str = "Loading images") -> ImageSet:
    """Decode and resize a split's images into memory (unreadable ones are left out with a warning)."""
    def prepare(path: Path) -> np.ndarray | None:
        try:
            image = load_image(path, height=height, width=width)
        except ImageError as error:
            log.warning("skipping %s: %s", path, error)
            return None
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

    progress = Progress(len(split.paths), label)
    kept: list[int] = []
    pixels = np.zeros((len(split.paths), height, width, 3), np.uint8)
    with thread_pool() as pool:
        for index, image in enumerate(pool.map(prepare, split.paths)):
            progress.update()
            if image is not None:
                pixels[len(kept)] = image
                kept.append(index)
    progress.close()
    log.info("holding %d images of %dx%d in memory (%.0f MB)", len(kept), height, width,
             pixels[:len(kept)].nbytes / 1e6)
    chosen = np.array(kept, np.int64)
    return ImageSet(pixels=pixels[:len(kept)], targets=split.targets.take(chosen),
                    paths=tuple(split.paths[i] for i in kept))


class ImageSteps(_Layer):
    """Steps on images in memory: distort each batch (when asked), run the feature source, train.

    With `fine_tune` the source's own trainable variables learn too; otherwise
    the source runs outside the gradient tape (no backward pass through it).
    `images.pixels` must be at `distortions.source_size(...)` of the source's
    input size when distortions are active, else at that input size.
    """

    slow = True

    def __init__(self, *, images: ImageSet, source: Any, head: Head, optimizer: Optimizer, batch_size: int,
                 random: np.random.Generator, distortions: Distortions, fine_tune: bool) -> None:
        super().__init__(head)
        tf = import_tensorflow()
        if fine_tune:
            source.check_fine_tunable()
        self.images, self.batch_size, self.random, self.distortions = images, batch_size, random, distortions
        height, width = source.height, source.width
        objective, weights, biases = head.objective, self.weights, self.biases
        variables = [weights, biases, *(source.trainable_variables if fine_tune else [])]
        regularization = source.regularization_losses if fine_tune else []
        apply = optimizer.updater(variables)
        active = distortions.active

        def features_of(images: Any) -> Any:  # one vector per image: a multi-label loss would broadcast others (ZZN)
            features = source.features(images)
            tf.debugging.Assert(tf.equal(tf.shape(features)[0], tf.shape(images)[0]),
                                ["the module gave another number of vectors than images"])
            return features

        @tf.function(input_signature=[tf.TensorSpec([None, *images.pixels.shape[1:]], tf.uint8),
                                      tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.bool),
                                      tf.TensorSpec([None], tf.float32),
                                      objective.target_spec(weights.shape[1], leading=1)])
        def step(pixels: Any, boxes: Any, flip: Any, brightness: Any, targets: Any) -> tuple[Any, Any, Any]:
            images = tf.cast(pixels, tf.float32) / 255.0
            if active:
                images = distort_tensors(images, boxes, flip, brightness, height=height, width=width)
            # A frozen source runs outside the tape: no backward pass through it is ever built. A fine-tuned one
            # runs inside it, in inference mode like the frozen one (batch normalization keeps its statistics).
            features = None if fine_tune else tf.stop_gradient(features_of(images))
            with tf.GradientTape() as tape:
                features = features_of(images) if fine_tune else features
                logits = tf.matmul(features, weights) + biases
                loss = objective.loss(logits, targets)
                total = loss + tf.add_n([tf.cast(r(), tf.float32) for r in regularization]) if regularization else loss
            apply(tape.gradient(total, variables))
            return loss, objective.batch_metric(logits, targets), logits, tf.reduce_all(tf.math.is_finite(features), 0)

        self._step, self._source, self._fine_tune, self._taken = step, source, fine_tune, 0
        self._batch_flag = "--fine_tune_batch_size" if fine_tune else "--train_batch_size"

    def run(self, count: int, tick: Callable[[int], None]) -> Last:
        tf = import_tensorflow()
        result = None
        for index in range(count):
            indices = self.images.targets.sample(self.random, self.batch_size)
            drawn = sample_parameters(self.distortions, count=self.batch_size, rng=self.random)
            try:
                with stops_after():
                    result = self._step(self.images.pixels[indices],
                                        crop_boxes(drawn, margin=self.distortions.margin), drawn.flip,
                                        drawn.brightness, self.images.targets.batch(indices))
            except tf.errors.OpError as error:  # the module, on distorted or fine-tuned images (probe ZZM)
                raise RetrainError(f"--tfhub_module {self._source.handle} failed during a training step on "
                                   f"{self.batch_size} images ({reason(error)}); expected an image feature-vector "
                                   f"module (one that fails only on large batches takes a smaller "
                                   f"{self._batch_flag})") from None
            loss, metric, logits, finite = result
            # A frozen module's NaN is its own (probes ZZM, ZZS); a fine-tuned one's after an update is the rate's.
            if not bool(tf.reduce_all(finite)) and (not self._fine_tune or self._taken == 0):
                return Last(loss=float(loss), metric=float(metric), logits=logits, bad_vectors_at=index,
                            bad_member=self._member_of(np.flatnonzero(~finite.numpy())[0]))
            self._taken += 1
            tick(1)
        return Last(loss=float(loss), metric=float(metric), logits=logits)

    def _member_of(self, column: int) -> str:
        """The handle of the member whose vectors hold `column` (the source's vectors are its members' side by side)."""
        ends = np.cumsum([member.feature_dim for member in self._source.members])
        return self._source.members[int(np.searchsorted(ends, column, side="right"))].handle


class Diverged(RetrainError):
    """Training broke the model (a loss or weights that are not finite numbers, or a loss that blew up)."""


# A layer whose cross-entropy on its own training images ends this many times above the untrained
# layer's has diverged. (A learning rate far too high drives the loss up only on classes the features
# cannot separate; on the others it falls to 0, and that model is kept.)
DIVERGED_LOSS_FACTOR = 10.0


def check_converged(trained: Evaluation, untrained: Evaluation, optimizer: Optimizer) -> None:
    """Stops with Diverged (nothing exported) when training left the layer far worse on its own
    training images than it started: the loss grew without ever becoming NaN, which `train` catches."""
    if trained.count and not trained.cross_entropy <= DIVERGED_LOSS_FACTOR * untrained.cross_entropy:
        raise Diverged(f"training diverged: the mean cross-entropy of all the training images ended at "
                       f"{trained.cross_entropy:.3g} (each score below {SCORE_FLOOR:g} counts as {SCORE_FLOOR:g}: the "
                       f"steps' logged batches can show more), against {untrained.cross_entropy:.3g} before training, "
                       f"so the model is broken; lower {optimizer.flag} (now {optimizer.learning_rate:g}); nothing was "
                       "exported")


@dataclass(frozen=True)
class Schedule:
    """Where training pauses: the classic evaluations, the intermediate stores, the last step."""

    steps: int
    eval_interval: int
    store_every: int = 0
    first_step: int = 0  # shown step numbers start here, so a later phase continues the curves

    def pauses(self) -> Iterator[int]:
        """The steps (0-based) after which training pauses, in order, computed lazily."""
        step = 0
        while step < self.steps:
            yield step
            candidates = [self._next(step, self.eval_interval)]
            if self.store_every:
                candidates.append(self._next(step, self.store_every))
            if step < self.steps - 1:
                candidates.append(self.steps - 1)
            step = min(candidates)

    def _next(self, step: int, every: int) -> int:
        """The phase's next step after `step` whose shown number is a multiple of `every`."""
        return ((self.first_step + step) // every + 1) * every - self.first_step

    def evaluates(self, step: int) -> bool:
        """Every eval_interval shown steps, and at the phase's first and last steps (where fine-tuning starts)."""
        return step == 0 or (self.first_step + step) % self.eval_interval == 0 or step == self.steps - 1

    def stores(self, step: int) -> bool:
        """Every store_every shown steps but the first: fine-tuning's numbered on from training's (probe AAA: they
        were counted from its own start, storing intermediate_27.pb for every 5 steps after 22)."""
        shown = self.first_step + step
        return self.store_every > 0 and shown > 0 and shown % self.store_every == 0


def train(*, steps: Steps, schedule: Schedule, optimizer: Optimizer, validate: Callable[[Head], Evaluation],
          summaries: Any = None, on_intermediate: Callable[[int, Head], None] | None = None,
          label: str = "Training") -> Head:
    """Run `steps` through `schedule`: log the classic lines, write summaries, store intermediate heads.

    Stops with Diverged (nothing exported) when the loss stops being a
    finite number: the learning rate is then too high for the data.
    """
    progress = Progress(schedule.steps, label, unit="steps") if steps.slow else None
    tick = progress.update if progress else (lambda _count: None)
    done = 0
    try:
        for step in schedule.pauses():
            raise_if_stopped()  # a stop signal a finaliser dropped (TensorFlow's) stops here, not at the run's end
            last = steps.run(step + 1 - done, tick)
            if last.bad_vectors_at is not None:  # (probe ZZM)
                raise Diverged(f"training stopped at step {schedule.first_step + done + last.bad_vectors_at}: "
                               f"--tfhub_module {last.bad_member} gave vectors holding NaN or infinity for that step's "
                               "batch of training images; check the module; nothing was exported")
            done = step + 1
            shown = schedule.first_step + step
            if not math.isfinite(last.loss):
                raise Diverged(f"training stopped at step {shown}: the cross-entropy became {last.loss} "
                                   f"(not a finite number), so the model is broken; lower {optimizer.flag} "
                                   f"(now {optimizer.learning_rate:g}); nothing was exported")
            head = steps.head() if schedule.evaluates(step) or schedule.stores(step) else None
            if schedule.evaluates(step):
                valid = validate(head)
                name = FIGURE_NAMES.get(head.objective.headline, head.objective.headline)
                log.info("Step %d: Train %s = %.1f%%", shown, name, 100 * last.metric)
                log.info("Step %d: Cross entropy = %f", shown, last.loss)
                if valid.count:
                    log.info("Step %d: Validation %s = %.1f%% (N=%d)", shown, name, 100 * valid.accuracy,
                             valid.count)
                if summaries:
                    summaries.write(step=shown, last=last, validation=valid, head=head)
            if schedule.stores(step) and on_intermediate:
                on_intermediate(shown, head)
    finally:
        if progress:
            progress.close()
        if summaries:
            summaries.close()
    head = steps.head()
    if not head.finite:
        raise Diverged(f"training ended with weights that are not finite numbers; lower {optimizer.flag} "
                           f"(now {optimizer.learning_rate:g}); nothing was exported")
    return head
