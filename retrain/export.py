"""The only writer of model files: frozen graph, labels, SavedModel, checkpoint.

Every file is written next to its destination under a temporary name and
renamed into place, so a crash never leaves half a model, and an existing
output is replaced only by a complete new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.config import RetrainError
from retrain.modules import FeatureExtractor
from retrain.tfenv import import_tensorflow
from retrain.train import Head

INPUT_NODE = "Placeholder"


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
    """A SavedModel whose `serving_default` maps `image` [N, H, W, 3] in [0, 1] to `prediction`."""
    tf = import_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec([None, classifier.height, classifier.width, 3], tf.float32)])
    def serve(image: Any) -> dict[str, Any]:
        return {"prediction": classifier.probabilities(image)}

    classifier.serve = serve
    _replace_dir(directory, lambda tmp: tf.saved_model.save(classifier, str(tmp),
                                                            signatures={"serving_default": serve}))


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
