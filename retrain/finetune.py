"""Training on images rather than cached vectors: on-the-fly distortions and fine-tuning.

Both run the module on every training sample of every step, so they are the
long runs: images are decoded once into memory (uint8, at the size the step
needs), each step draws a class-uniform batch, distorts it (when asked) in one
batched op, and runs the module and the new layer in one compiled function.

- On-the-fly distortion (the classic behaviour, batched): the module stays
  frozen; only the new layer learns, by plain SGD as in `train.train_head`.
- Fine-tuning: the module's own trainable variables learn together with the
  new layer, by SGD with momentum at their own learning rate. The variables
  are updated in place, so everything exported afterwards carries them.
  Batch normalization stays in inference mode (its moving statistics are
  kept): with the small batches a CPU affords, batch statistics are too noisy,
  which is what Keras' transfer-learning guide advises too.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain.config import DISTORTION_MODES, RetrainConfig, RetrainError, UsageError
from retrain.distortions import Distortions, crop_boxes, distort_tensors, sample_parameters
from retrain.images import ImageError, load_image
from retrain.modules import FeatureExtractor, batch_function
from retrain.progress import Progress
from retrain.tfenv import import_tensorflow
from retrain.train import Evaluation, Head, Split, Summaries, class_uniform_indices, evaluate

log = logging.getLogger(__name__)

FINE_TUNE_MOMENTUM = 0.9


@dataclass(frozen=True)
class ImageSet:
    """Decoded images of one split, held in memory: uint8 [N, h, w, 3], labels, files."""

    pixels: np.ndarray
    labels: np.ndarray
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.labels)


def load_images(paths: Sequence[Path], labels: np.ndarray, *, height: int, width: int, label: str = "Loading images",
                workers: int | None = None) -> ImageSet:
    """Decode and resize images into memory (unreadable ones are left out with a warning)."""
    def prepare(path: Path) -> np.ndarray | None:
        try:
            image = load_image(path, height=height, width=width)
        except ImageError as error:
            log.warning("skipping %s: %s", path, error)
            return None
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

    progress = Progress(len(paths), label)
    kept: list[int] = []
    pixels = np.zeros((len(paths), height, width, 3), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(workers or min(4, os.cpu_count() or 2)) as pool:
        for index, image in enumerate(pool.map(prepare, paths)):
            progress.update()
            if image is not None:
                pixels[len(kept)] = image
                kept.append(index)
    progress.close()
    log.info("holding %d images of %dx%d in memory (%.0f MB)", len(kept), height, width, pixels[:len(kept)].nbytes / 1e6)
    return ImageSet(pixels=pixels[:len(kept)], labels=np.asarray(labels)[kept],
                    paths=tuple(paths[i] for i in kept))


def check_fine_tunable(extractor: FeatureExtractor) -> None:
    """Raise a clear error for modules whose weights cannot be trained."""
    if extractor.is_tf1:
        raise RetrainError(f"--tfhub_module {extractor.handle} is a classic TF1 Hub module, which cannot be "
                           "fine-tuned in TensorFlow 2; use a TF2 module or drop --fine_tune")
    if not list(getattr(extractor.model, "trainable_variables", None) or []):
        raise RetrainError(f"--tfhub_module {extractor.handle} exposes no trainable variables, so it cannot be "
                           "fine-tuned; use a TF2 module saved with its trainable_variables or drop --fine_tune")


def file_features(extractor: FeatureExtractor, paths: Sequence[Path], *, batch_size: int = 32,
                  workers: int | None = None) -> np.ndarray:
    """Module vectors of image files as the module is now (e.g. fine-tuned), prepared exactly as for the cache."""
    compiled = batch_function(extractor)
    chunks = []
    with concurrent.futures.ThreadPoolExecutor(workers or min(4, os.cpu_count() or 2)) as pool:
        for start in range(0, len(paths), batch_size):
            images = list(pool.map(lambda p: load_image(p, height=extractor.height, width=extractor.width),
                                   paths[start:start + batch_size]))
            chunks.append(compiled(np.stack(images)))
    return np.concatenate(chunks) if chunks else np.zeros((0, extractor.feature_dim), np.float32)


def _compiled_features(extractor: FeatureExtractor) -> Any:
    tf = import_tensorflow()
    return tf.function(lambda pixels: extractor(tf.cast(pixels, tf.float32) / 255.0),
                       input_signature=[tf.TensorSpec([None, extractor.height, extractor.width, 3], tf.uint8)])


def image_validator(extractor: FeatureExtractor, images: ImageSet, *, batch_size: int, class_count: int,
                    seed: int) -> Callable[[Head], Evaluation]:
    """Validation through the module as it is at each evaluation (for fine-tuning)."""
    rng = np.random.default_rng(seed + 1)
    compiled = _compiled_features(extractor)
    tf = import_tensorflow()

    def validate(head: Head) -> Evaluation:
        if not len(images):
            return evaluate(head, Split(np.zeros((0, 1), np.float32), images.labels, ()), batch_size=-1, rng=rng,
                            class_count=class_count)
        indices = (np.arange(len(images)) if batch_size < 0
                   else class_uniform_indices(images.labels, batch_size, rng, class_count))
        unique, inverse = np.unique(indices, return_inverse=True)
        vectors = np.concatenate([compiled(tf.constant(images.pixels[unique[s:s + 64]])).numpy()
                                  for s in range(0, len(unique), 64)])
        sample = Split(vectors=vectors[inverse], labels=images.labels[indices], paths=())
        return evaluate(head, sample, batch_size=-1, rng=rng, class_count=class_count)

    return validate


def train_on_images(
    *,
    extractor: FeatureExtractor,
    train: ImageSet,
    validate: Callable[[Head], Evaluation],
    class_count: int,
    distortions: Distortions,
    steps: int,
    batch_size: int,
    learning_rate: float,
    fine_tune: bool,
    eval_step_interval: int,
    seed: int,
    head: Head | None = None,
    summaries_dir: Path | None = None,
    intermediate_store_frequency: int = 0,
    on_intermediate: Callable[[int, Head], None] | None = None,
    label: str = "Training",
    first_step: int = 0,
) -> Head:
    """Train the new layer (and, with `fine_tune`, the module) on images, distorting each batch.

    `train.pixels` must be at `distortions.source_size(...)` when distortions
    are active, else at the module's input size. Starts from `head` when given
    (fine-tuning after the usual training), else from the classic initial layer.
    Logs the classic lines and writes summaries at every evaluation step, and
    shows a progress bar with the time left. Logged step numbers start at
    `first_step`, so a fine-tuning phase continues the curves of the phase before.
    """
    tf = import_tensorflow()
    if fine_tune:
        check_fine_tunable(extractor)
    height, width = extractor.height, extractor.width
    dim = extractor.feature_dim
    if head is None:
        head = Head(weights=tf.random.stateless_truncated_normal([dim, class_count], seed=[seed, 1],
                                                                 stddev=0.001).numpy(),
                    biases=np.zeros(class_count, np.float32))
    weights = tf.Variable(head.weights, name="final_weights")
    biases = tf.Variable(head.biases, name="final_biases")
    backbone = list(extractor.model.trainable_variables) if fine_tune else []
    variables = [weights, biases, *backbone]
    velocities = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables] if fine_tune else []
    regularization = list(getattr(extractor.model, "regularization_losses", None) or []) if fine_tune else []
    rate = tf.constant(learning_rate, tf.float32)
    active = distortions.active

    def prepare(pixels, boxes, flip, brightness):
        images = tf.cast(pixels, tf.float32) / 255.0
        if active:
            images = distort_tensors(images, boxes, flip, brightness, height=height, width=width)
        return images

    @tf.function(input_signature=[tf.TensorSpec([None, *train.pixels.shape[1:]], tf.uint8),
                                  tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.bool),
                                  tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32)])
    def step(pixels, boxes, flip, brightness, labels):
        images = prepare(pixels, boxes, flip, brightness)
        # A frozen module runs outside the tape: no backward pass through it is ever built.
        features = None if fine_tune else tf.stop_gradient(extractor(images))
        with tf.GradientTape() as tape:
            logits = tf.matmul(extractor(images) if fine_tune else features, weights) + biases
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            total = loss + tf.add_n([tf.cast(r(), tf.float32) for r in regularization]) if regularization else loss
        gradients = tape.gradient(total, variables)
        for index, (variable, gradient) in enumerate(zip(variables, gradients)):
            if gradient is None:
                continue
            gradient = tf.convert_to_tensor(gradient)
            if fine_tune:
                velocities[index].assign(FINE_TUNE_MOMENTUM * velocities[index] + gradient)
                variable.assign_sub(rate * velocities[index])
            else:
                variable.assign_sub(rate * gradient)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32))
        return accuracy, loss, logits

    summaries = Summaries(tf, summaries_dir, weights=weights, biases=biases) if summaries_dir else None
    rng = np.random.default_rng([seed % 2**32, 3])
    progress = Progress(steps, label, unit="steps")
    try:
        for number in range(steps):
            indices = class_uniform_indices(train.labels, batch_size, rng, class_count)
            drawn = sample_parameters(distortions, count=batch_size, rng=rng)
            accuracy, loss, logits = step(train.pixels[indices], crop_boxes(drawn, margin=distortions.margin),
                                          drawn.flip, drawn.brightness, train.labels[indices].astype(np.int32))
            progress.update()
            last = number == steps - 1
            shown = first_step + number
            if number % eval_step_interval == 0 or last or (
                    intermediate_store_frequency > 0 and number > 0 and number % intermediate_store_frequency == 0):
                current = Head(weights=weights.numpy(), biases=biases.numpy())
            if number % eval_step_interval == 0 or last:
                valid = validate(current)
                log.info("Step %d: Train accuracy = %.1f%%", shown, 100 * float(accuracy))
                log.info("Step %d: Cross entropy = %f", shown, float(loss))
                if valid.count:
                    log.info("Step %d: Validation accuracy = %.1f%% (N=%d)", shown, 100 * valid.accuracy,
                             valid.count)
                if summaries:
                    summaries.write(step=shown, accuracy=accuracy, loss=loss, logits=logits, validation=valid)
            if (intermediate_store_frequency > 0 and number > 0 and number % intermediate_store_frequency == 0
                    and on_intermediate):
                on_intermediate(shown, current)
    finally:
        progress.close()
        if summaries:
            summaries.close()
    return Head(weights=weights.numpy(), biases=biases.numpy())


def check_flags(config: RetrainConfig) -> None:
    """Reject impossible distortion and fine-tuning flag values before any work starts."""
    for flag, value in (("--random_crop", config.random_crop), ("--random_scale", config.random_scale)):
        if not 0 <= value <= 100:
            raise UsageError(f"{flag} must be a percentage between 0 and 100, got {value:g}")
    if not 0 <= config.random_brightness < 100:
        raise UsageError(f"--random_brightness must be a percentage from 0 up to (not including) 100, "
                         f"got {config.random_brightness:g}")
    if config.distortion_mode not in DISTORTION_MODES:
        raise UsageError(f"--distortion_mode {config.distortion_mode!r} is not one of {', '.join(DISTORTION_MODES)}")
    for flag, value in (("--distorted_variants", config.distorted_variants), ("--fine_tune_steps", config.fine_tune_steps),
                        ("--fine_tune_batch_size", config.fine_tune_batch_size)):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if config.fine_tune_learning_rate <= 0:
        raise UsageError(f"--fine_tune_learning_rate must be positive, got {config.fine_tune_learning_rate:g}")


def distortions_of(config: RetrainConfig) -> Distortions:
    """The four classic distortion flags of a run."""
    return Distortions(flip_left_right=config.flip_left_right, random_crop=config.random_crop,
                       random_scale=config.random_scale, random_brightness=config.random_brightness)


def _training_images(config: RetrainConfig, extractor: FeatureExtractor, split: Split, label: str) -> ImageSet:
    """The training images in memory, at the size the distortions (if any) start from."""
    height, width = distortions_of(config).source_size(height=extractor.height, width=extractor.width)
    return load_images(split.paths, split.labels, height=height, width=width, label=label)


def train_on_the_fly(*, config: RetrainConfig, extractor: FeatureExtractor, splits: dict[str, Split],
                     class_count: int, summaries_dir: Path | None,
                     on_intermediate: Callable[[int, Head], None] | None) -> Head:
    """The classic distortion mode, batched: every sample of every step distorted afresh, module frozen."""
    train = _training_images(config, extractor, splits["training"], "Loading training images")
    eval_rng = np.random.default_rng(config.seed + 1)

    def validate(head: Head) -> Evaluation:
        return evaluate(head, splits["validation"], batch_size=config.validation_batch_size, rng=eval_rng,
                        class_count=class_count)

    log.info("training on distorted images on the fly: %d steps of %d images, each through the module",
             config.how_many_training_steps, config.train_batch_size)
    return train_on_images(extractor=extractor, train=train, validate=validate, class_count=class_count,
                           distortions=distortions_of(config), steps=config.how_many_training_steps,
                           batch_size=config.train_batch_size, learning_rate=config.learning_rate, fine_tune=False,
                           eval_step_interval=config.eval_step_interval, seed=config.seed,
                           summaries_dir=summaries_dir,
                           intermediate_store_frequency=config.intermediate_store_frequency,
                           on_intermediate=on_intermediate, label="Training (distorting on the fly)")


def fine_tune(*, config: RetrainConfig, extractor: FeatureExtractor, head: Head, splits: dict[str, Split],
              class_count: int, summaries_dir: Path | None,
              on_intermediate: Callable[[int, Head], None] | None) -> tuple[Head, dict[str, Split]]:
    """Fine-tune the module and the trained layer together; the module's variables change in place.

    Returns the new layer and the splits with validation and test vectors
    recomputed from the files through the fine-tuned module (the training
    vectors are left as they were: they are not used again). Validation during
    fine-tuning runs on in-memory uint8 copies, which is close enough to steer by.
    """
    check_fine_tunable(extractor)
    train = _training_images(config, extractor, splits["training"], "Loading training images")
    validation = load_images(splits["validation"].paths, splits["validation"].labels, height=extractor.height,
                             width=extractor.width, label="Loading validation images")
    validate = image_validator(extractor, validation, batch_size=config.validation_batch_size,
                               class_count=class_count, seed=config.seed)
    log.info("fine-tuning the module and the new layer: %d steps of %d images, learning rate %g",
             config.fine_tune_steps, config.fine_tune_batch_size, config.fine_tune_learning_rate)
    head = train_on_images(extractor=extractor, train=train, validate=validate, class_count=class_count,
                           distortions=distortions_of(config), steps=config.fine_tune_steps,
                           batch_size=config.fine_tune_batch_size, learning_rate=config.fine_tune_learning_rate,
                           fine_tune=True, eval_step_interval=config.eval_step_interval, seed=config.seed + 7,
                           head=head, summaries_dir=summaries_dir,
                           intermediate_store_frequency=config.intermediate_store_frequency,
                           on_intermediate=on_intermediate, label="Fine-tuning",
                           first_step=config.how_many_training_steps)
    refreshed = dict(splits)
    for name in ("validation", "testing"):
        split = splits[name]
        try:
            vectors = file_features(extractor, split.paths, batch_size=config.bottleneck_batch_size)
        except ImageError as error:
            raise RetrainError(f"a {name} image became unreadable during the run ({error}); rerun") from None
        refreshed[name] = Split(vectors=vectors, labels=split.labels, paths=split.paths)
    return head, refreshed
