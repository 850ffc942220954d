"""The only writer of model files: frozen graph, labels, SavedModel, TFLite, checkpoint.

Every file is written next to its destination under a temporary name and
renamed into place, so a crash never leaves half a model, and an existing
output is replaced only by a complete new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.config import RetrainError
from retrain.images import resize_tensor
from retrain.modules import FeatureExtractor
from retrain.tfenv import import_tensorflow, stderr_captured
from retrain.train import Head

INPUT_NODE = "Placeholder"
# SavedModel and TFLite signatures: `serving_default` takes IMAGE_KEY (float [N, H, W, 3] in
# [0, 1]); the SavedModel's BYTES_SIGNATURE takes BYTES_KEY (encoded files); both return OUTPUT_KEY.
IMAGE_KEY = "image"
BYTES_SIGNATURE = "serving_bytes"
BYTES_KEY = "image_bytes"  # TF Serving's REST API base64-decodes {"b64": ...} values; `_bytes` says so
OUTPUT_KEY = "prediction"


def build_classifier(extractor: FeatureExtractor, head: Head, *, final_tensor_name: str) -> Any:
    """A tf.Module computing class probabilities from float [N, H, W, 3] images in [0, 1]."""
    tf = import_tensorflow()

    class Classifier(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=None)
            self.backbone = extractor.model
            self.final_weights = tf.Variable(head.weights, name="final_weights")
            self.final_biases = tf.Variable(head.biases, name="final_biases")

        def probabilities(self, images: Any) -> Any:
            logits = tf.matmul(extractor(images), self.final_weights) + self.final_biases
            # Named at the top level of the traced function, so the frozen graph has
            # a node called exactly `final_tensor_name` (the classic contract).
            return tf.nn.softmax(logits, name=final_tensor_name)

    classifier = Classifier()
    classifier.height, classifier.width = extractor.height, extractor.width
    return classifier


def frozen_graph_def(classifier: Any) -> Any:
    """The classifier as a flat GraphDef: `Placeholder` [None, H, W, 3] -> softmax, constants only."""
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, classifier.height, classifier.width, 3], tf.float32, name=INPUT_NODE)
    function = tf.function(classifier.probabilities).get_concrete_function(spec)
    return convert_variables_to_constants_v2(function).graph.as_graph_def()


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_frozen_graph(path: Path, classifier: Any) -> None:
    graph_def = frozen_graph_def(classifier)
    _atomic_write(path, lambda f: f.write(graph_def.SerializeToString()))


def write_labels(path: Path, labels: list[str]) -> None:
    _atomic_write(path, lambda f: f.write("".join(f"{label}\n" for label in labels).encode("utf-8")))


def write_checkpoint(path: Path, classifier: Any) -> None:
    """The new layer's variables as a TF checkpoint at the --checkpoint_path prefix."""
    tf = import_tensorflow()
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(final_weights=classifier.final_weights,
                        final_biases=classifier.final_biases).write(str(path))


def write_saved_model(directory: Path, classifier: Any) -> None:
    """A SavedModel with two signatures, both returning `prediction` [N, classes]:

    `serving_default` takes `image`, float32 [N, H, W, 3] RGB in [0, 1];
    `serving_bytes` takes `image_bytes`, string [N] of encoded files (JPEG, PNG,
    GIF, BMP, WebP), decoded by TensorFlow (see _decode_like_training) and
    resized with the very function training uses (images.resize_tensor).
    """
    tf = import_tensorflow()
    height, width = classifier.height, classifier.width

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)])
    def serve(image: Any) -> dict[str, Any]:
        return {OUTPUT_KEY: classifier.probabilities(image)}

    def decode(data: Any) -> Any:
        return resize_tensor(_decode_like_training(tf, data, height=height, width=width), height=height, width=width)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_bytes(image_bytes: Any) -> dict[str, Any]:
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
        return {OUTPUT_KEY: classifier.probabilities(images)}

    classifier.serve, classifier.serve_bytes = serve, serve_bytes
    _replace_dir(directory, lambda tmp: tf.saved_model.save(
        classifier, str(tmp), signatures={"serving_default": serve, BYTES_SIGNATURE: serve_bytes}))


def _decode_like_training(tf: Any, data: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: encoded bytes -> uint8 RGB [h, w, 3], as images.decode_rgb (Pillow) decodes for training.

    JPEGs use libjpeg's accurate integer IDCT, as Pillow does (TensorFlow's
    default fast IDCT differs by up to ~20 levels), and Pillow's draft rule:
    a JPEG at least 4x the input size on both sides is decoded at scale 1/2,
    1/4 or 1/8, the smallest that keeps both sides at least twice the input
    size. The pixels then match Pillow's exactly (measured on the fixtures). Other formats go through
    tf.io.decode_image (first frame, alpha dropped, 16-bit scaled to 8).
    Not replicated: EXIF orientation (send upright images) and the box
    reduction training applies to non-JPEG images over 4x the input size.
    """
    def jpeg() -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        fits = tf.minimum(shape[0] // (2 * height), shape[1] // (2 * width))
        branch = tf.cast(fits >= 2, tf.int32) + tf.cast(fits >= 4, tf.int32) + tf.cast(fits >= 8, tf.int32)
        return tf.switch_case(branch, [
            lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
            for ratio in (1, 2, 4, 8)])

    def other() -> Any:
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    rgb = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    rgb.set_shape([None, None, 3])
    return rgb


def tflite_paths(path: Path, quantizations: Sequence[str]) -> dict[str, Path]:
    """Where each TFLite variant goes: `path` for the first, `<stem>_<quantization><suffix>` beside it for the rest."""
    suffix = path.suffix or ".tflite"
    return {q: path if i == 0 else path.with_name(f"{path.stem}_{q}{suffix}") for i, q in enumerate(quantizations)}


def tflite_model(classifier: Any, *, quantization: str, representative_images: np.ndarray | None = None) -> bytes:
    """The classifier as a TFLite flatbuffer, signature `serving_default`: `image` -> `prediction`.

    float32, float16 (weights) and dynamic (int8 weights) take and return float32:
    `image` [N, H, W, 3] RGB in [0, 1], `prediction` probabilities. int8 is fully
    integer, calibrated on `representative_images` (float [K, H, W, 3] in [0, 1]):
    its input is int8, real = scale * (q - zero_point); when the calibration
    photos span 0..255 (real photos do) that is scale 1/255, zero point -128,
    i.e. q = pixel - 128. Its output is int8 with scale 1/256 and zero point
    -128, probability = (q + 128) / 256. The interpreter's input/output details
    report both parameters; readers should use those, not these constants.
    """
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, classifier.height, classifier.width, 3], tf.float32, name=IMAGE_KEY)
    frozen = convert_variables_to_constants_v2(tf.function(classifier.probabilities).get_concrete_function(spec))
    # Converting the frozen function spares the converter from saving the whole module as a
    # SavedModel first (about 3x faster); the wrapper restores the named output that freezing
    # drops, and the empty tf.Module is the trackable the converter insists on.
    signature = tf.function(lambda image: {OUTPUT_KEY: frozen(image)[0]}).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([signature], tf.Module())
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None or not len(representative_images):
            raise RetrainError("--tflite_quantization int8 needs representative training images; none were usable")

        def representative() -> Iterator[list[np.ndarray]]:
            for image in representative_images:
                yield [np.asarray(image, np.float32)[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with stderr_captured() as captured:
        try:
            return converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter raises many kinds
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RetrainError(f"--output_tflite: TFLite conversion ({quantization}) failed: {detail}; "
                               f"converter log: {captured().strip()[-300:] or 'empty'}") from None


def write_tflite(path: Path, classifier: Any, *, quantization: str,
                 representative_images: np.ndarray | None = None) -> None:
    """Convert the classifier to TFLite (see tflite_model) and write it atomically to `path`."""
    data = tflite_model(classifier, quantization=quantization, representative_images=representative_images)
    _atomic_write(path, lambda f: f.write(data))


def _replace_dir(directory: Path, write: Callable[[Path], None]) -> None:
    """Build a folder beside `directory`, then swap it in; the old one goes only after."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_output_file(path: Path, *, flag: str) -> None:
    """Fail before any work if `path` cannot be written (missing or read-only folder, a folder in the way)."""
    if path.is_dir():
        raise RetrainError(f"{flag} {path} is a folder; expected a file path", exit_code=2)
    if not path.parent.is_dir():
        raise RetrainError(f"{flag} {path}: folder {path.parent} does not exist; create it or choose another {flag}",
                           exit_code=2)
    _check_writable_dir(path.parent, flag=flag, shown=path)


def check_output_dir(path: Path, *, flag: str) -> None:
    """Create `path` if needed and check that files can be written into it."""
    if path.exists() and not path.is_dir():
        raise RetrainError(f"{flag} {path} is a file; expected a folder", exit_code=2)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RetrainError(f"{flag} {path} cannot be created ({error.strerror}); choose another {flag}",
                           exit_code=2) from None
    _check_writable_dir(path, flag=flag, shown=path)


def check_saved_model_dir(path: Path) -> None:
    """A SavedModel folder may replace an earlier SavedModel, never a folder of other files."""
    if path.exists():
        if not path.is_dir():
            raise RetrainError(f"--saved_model_dir {path} is a file; expected a folder", exit_code=2)
        if any(path.iterdir()) and not (path / "saved_model.pb").exists():
            raise RetrainError(f"--saved_model_dir {path} exists and holds files that are not a SavedModel; "
                               "choose an empty or new folder", exit_code=2)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    _check_writable_dir(parent, flag="--saved_model_dir", shown=path)


def _check_writable_dir(directory: Path, *, flag: str, shown: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise RetrainError(f"{flag} {shown}: cannot write in {directory} ({error.strerror}); "
                           f"choose another {flag}", exit_code=2) from None
