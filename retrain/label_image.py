"""Inference for `label-image`: classify image files with a model that retrain exported.

Three model kinds are read: a frozen GraphDef (`.pb`), a SavedModel folder and
a TFLite file (float or integer-quantized). For a model that retrain exported
nothing but `--graph` and `--labels` is needed: the input node, output node and
input size are read from the model itself (our exports take RGB in [0, 1], that
is the classic `--input_mean 0 --input_std 255`). Explicit flags override, for
graphs made elsewhere (an Inception V3 graph fed at `Mul` with mean/std 128).

Images are prepared exactly as retrain prepared them for training
(`retrain.images`: Pillow decode, TensorFlow antialiased bilinear resize) and
run through the model in batches. An image that cannot be decoded is reported
and skipped; the command then ends with a non-zero status.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from retrain.bottlenecks import windowed
from retrain.config import EXPORT_INPUT_MEAN, EXPORT_INPUT_STD, LabelImageConfig, RetrainError, UsageError
from retrain.dataset import IMAGE_EXTENSIONS, image_files
from retrain.images import ImageError, load_image, read_bytes
from retrain.tfenv import import_tensorflow, stderr_captured

log = logging.getLogger(__name__)

_TFLITE_MAGIC = b"TFL3"  # FlatBuffer file identifier, at bytes 4..8 of every .tflite file
_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: class probabilities, or the reason it could not be classified."""

    path: Path
    scores: np.ndarray | None
    error: str = ""


class Model:
    """A loaded classifier: float batches [N, H, W, 3] (already normalized) -> probabilities [N, C]."""

    kind: str
    description: str  # e.g. "input Placeholder [?, 224, 224, 3] -> output final_result [?, 5]"
    height: int | None
    width: int | None
    class_count: int | None
    max_batch: int | None  # None = any batch size; 1 for graphs with a fixed batch of one
    retrain_export: bool  # input and output were found by retrain's own names

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- checks without TensorFlow


def validate(config: LabelImageConfig) -> None:
    """Reject bad flags and missing files before TensorFlow is imported (fast, clear failures)."""
    if config.top_k <= 0:
        raise UsageError(f"--top_k must be positive, got {config.top_k}")
    if config.batch_size <= 0:
        raise UsageError(f"--batch_size must be positive, got {config.batch_size}")
    for flag, value in (("--input_height", config.input_height), ("--input_width", config.input_width)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if config.input_std is not None and config.input_std == 0:
        raise UsageError("--input_std must not be 0 (pixels are divided by it)")
    if not config.images:
        raise UsageError("no --image given; pass an image file or a folder of images")
    if not config.graph.exists():
        raise RetrainError(f"--graph {config.graph} not found; pass the model retrain wrote "
                           "(--output_graph, --saved_model_dir) or run retrain first", exit_code=2)
    if not config.labels.exists():
        raise RetrainError(f"--labels {config.labels} not found; pass the labels file retrain wrote "
                           "(--output_labels)", exit_code=2)
    for path in config.images:
        if not path.exists():
            raise RetrainError(f"--image {path} not found; pass an existing image file or folder", exit_code=2)


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """The image files named by `--image`: files as given, folders walked (sorted, recursive, hidden skipped)."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = image_files(path)
        if not found:
            raise RetrainError(f"--image {path} is a folder with no images ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                               exit_code=2)
        files += found
    return files


def read_labels(path: Path) -> list[str]:
    """One label per line, in class-index order (trailing blank lines ignored)."""
    try:
        text = read_bytes(path).decode("utf-8")
    except ImageError as error:
        raise RetrainError(f"cannot read --labels {path}: {error}") from None
    except UnicodeDecodeError:
        raise RetrainError(f"--labels {path} is not a UTF-8 text file; pass the labels file retrain wrote") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise RetrainError(f"--labels {path} is empty; expected one label per line")
    return labels


# --------------------------------------------------------------------------- loading models


def load_model(path: Path, *, input_layer: str | None = None, output_layer: str | None = None) -> Model:
    """Open a frozen GraphDef file, a SavedModel folder or a TFLite file, whichever `path` is."""
    if path.is_dir():
        return _SavedModel(path, input_layer=input_layer, output_layer=output_layer)
    if path.name == "saved_model.pb":
        return _SavedModel(path.parent, input_layer=input_layer, output_layer=output_layer)
    try:
        data = read_bytes(path)
    except ImageError as error:
        raise RetrainError(f"cannot read --graph {path}: {error}") from None
    if data[4:8] == _TFLITE_MAGIC:
        return _TfliteModel(path, data, input_layer=input_layer, output_layer=output_layer)
    if path.suffix.lower() == ".tflite":
        raise RetrainError(f"--graph {path} is not a TFLite model (no TFL3 identifier); expected a .tflite file "
                           "that retrain or the TFLite converter wrote")
    return _FrozenGraph(path, data, input_layer=input_layer, output_layer=output_layer)


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None or d < 0 else int(d) for d in shape]


def _shape_text(dims: Sequence[int | None] | None) -> str:
    return "[?]" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _size_of(dims: Sequence[int | None] | None) -> tuple[int | None, int | None, int | None]:
    """(height, width, batch) of a [N, H, W, C] shape; None where unknown."""
    if dims is None or len(dims) != 4:
        return None, None, None
    return dims[1], dims[2], dims[0]


def _is_image_input(dims: Sequence[int | None] | None) -> bool:
    return dims is not None and len(dims) == 4 and dims[3] in (3, None)


def _candidates(kind: str, names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return f"its {kind} candidates: {listed}" if listed else f"it has no {kind} candidates"


class _FrozenGraph(Model):
    """A frozen GraphDef run in a compat.v1 Session (feeds and fetches may be any tensor, as classically)."""

    kind = "frozen graph"

    def __init__(self, path: Path, data: bytes, *, input_layer: str | None, output_layer: str | None) -> None:
        tf = import_tensorflow()
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(data)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning and friends
            graph_def = None
        if graph_def is None or not graph_def.node:
            raise RetrainError(f"--graph {path} is not a frozen GraphDef, a SavedModel folder or a TFLite file; "
                               "pass the --output_graph, --saved_model_dir or .tflite file retrain wrote")
        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.compat.v1.import_graph_def(graph_def, name="import")
            except (ValueError, tf.errors.OpError) as error:
                raise RetrainError(f"--graph {path} cannot be loaded: {_first_line(error)}") from None
        nodes = {node.name: node for node in graph_def.node}
        consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
        placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
        sinks = [n for n in graph_def.node if n.name not in consumed and n.op not in ("Const", "NoOp")]

        def describe(node: Any) -> str:
            return f"{node.name} ({node.op} {_shape_text(self._tensor_dims(node.name + ':0'))})"

        softmaxes = [n for n in graph_def.node if n.op == "Softmax"]
        outputs = softmaxes + [n for n in sinks if n.op != "Softmax"]
        listing = (f"{_candidates('input', map(describe, placeholders))}; "
                   f"{_candidates('output', map(describe, outputs))}")
        found_input = input_layer is None
        if input_layer is None:
            images = [n for n in placeholders if n.attr["dtype"].type == tf.float32.as_datatype_enum
                      and _is_image_input(self._tensor_dims(n.name + ":0"))]
            if len(images) != 1:
                raise RetrainError(f"--graph {path} has {len(images)} float [N, H, W, 3] Placeholders, expected one; "
                                   f"pass --input_layer ({listing})")
            input_layer = images[0].name
        found_output = output_layer is None
        if output_layer is None:
            # retrain's own name first; else the one softmax (a graph may end in Identity nodes after it)
            softmax_sinks = [n for n in softmaxes if n.name not in consumed]
            if "final_result" in nodes:
                output_layer = "final_result"
            elif len(softmaxes) == 1 or len(softmax_sinks) == 1:
                output_layer = (softmaxes if len(softmaxes) == 1 else softmax_sinks)[0].name
            else:
                raise RetrainError(f"--graph {path} has no node final_result and {len(softmaxes)} Softmax nodes, "
                                   f"expected one; pass --output_layer ({listing})")
        self.input = self._tensor(input_layer, nodes, flag="--input_layer", path=path, listing=listing)
        self.output = self._tensor(output_layer, nodes, flag="--output_layer", path=path, listing=listing)
        in_dims = _dims(self.input.shape) if self.input.shape.rank is not None else None
        out_dims = _dims(self.output.shape) if self.output.shape.rank is not None else None
        self.height, self.width, batch = _size_of(in_dims)
        self.max_batch = batch
        self.class_count = out_dims[-1] if out_dims else None
        self.retrain_export = found_input and found_output and output_layer == "final_result" and \
            self.input.op.name == "import/Placeholder"
        self.description = (f"input {self.input.op.name[7:]} {_shape_text(in_dims)} -> "
                            f"output {self.output.op.name[7:]} {_shape_text(out_dims)}")
        threads = tf.config.threading
        session_config = tf.compat.v1.ConfigProto(
            inter_op_parallelism_threads=threads.get_inter_op_parallelism_threads(),
            intra_op_parallelism_threads=threads.get_intra_op_parallelism_threads())
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        self._errors = tf.errors.OpError

    def _tensor_dims(self, name: str) -> list[int | None] | None:
        try:
            shape = self.graph.get_tensor_by_name("import/" + name).shape
        except (KeyError, ValueError):
            return None
        return _dims(shape) if shape.rank is not None else None

    def _tensor(self, layer: str, nodes: dict[str, Any], *, flag: str, path: Path, listing: str) -> Any:
        """The tensor for a classic layer name: `Mul`, `Mul:0` and `import/Mul` all mean `import/Mul:0`."""
        name = layer[len("import/"):] if layer.startswith("import/") else layer
        node_name = name.split(":")[0]
        if node_name not in nodes:
            raise RetrainError(f"{flag} {layer} is not in --graph {path}; {listing}")
        try:
            return self.graph.get_tensor_by_name("import/" + (name if ":" in name else name + ":0"))
        except (KeyError, ValueError) as error:
            raise RetrainError(f"{flag} {layer}: {_first_line(error)}; {listing}") from None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(self.output, {self.input: batch}))
        except self._errors as error:
            raise RetrainError(f"running the graph failed: {_first_line(error)}") from None


class _SavedModel(Model):
    """A SavedModel's `serving_default` signature; layer flags name its input and output keys."""

    kind = "SavedModel"

    def __init__(self, path: Path, *, input_layer: str | None, output_layer: str | None) -> None:
        tf = import_tensorflow()
        if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
            raise RetrainError(f"--graph {path} is a folder but not a SavedModel (no saved_model.pb); pass the "
                               "--saved_model_dir folder retrain wrote, or a frozen .pb or .tflite file")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as error:  # noqa: BLE001 - TF raises OSError, ValueError, OpError... for bad SavedModels
            raise RetrainError(f"--graph {path}: cannot load the SavedModel: {_first_line(error)}") from None
        signatures = dict(loaded.signatures)
        if _SIGNATURE not in signatures:
            raise RetrainError(f"--graph {path} has no {_SIGNATURE} signature (it has: "
                               f"{', '.join(signatures) or 'none'}); re-export it with retrain --saved_model_dir")
        self._loaded = loaded  # keeps the variables alive
        self.function = signatures[_SIGNATURE]
        inputs = dict(self.function.structured_input_signature[1])
        outputs = dict(self.function.structured_outputs)
        listing = (f"{_candidates('input', (f'{k} {_shape_text(_dims(s.shape))}' for k, s in inputs.items()))}; "
                   f"{_candidates('output', (f'{k} {_shape_text(_dims(s.shape))}' for k, s in outputs.items()))}")
        found = input_layer is None and output_layer is None
        self.input_key = _pick(input_layer, inputs, preferred="image", flag="--input_layer", path=path,
                               listing=listing, usable=lambda s: s.dtype == tf.float32 and _is_image_input(_dims(s.shape)))
        self.output_key = _pick(output_layer, outputs, preferred="prediction", flag="--output_layer", path=path,
                                listing=listing, usable=lambda s: s.shape.rank == 2)
        in_dims = _dims(inputs[self.input_key].shape) if inputs[self.input_key].shape.rank else None
        out_spec = outputs[self.output_key]
        out_dims = _dims(out_spec.shape) if out_spec.shape.rank else None
        self.height, self.width, self.max_batch = _size_of(in_dims)
        self.class_count = out_dims[-1] if out_dims else None
        self.retrain_export = found and (self.input_key, self.output_key) == ("image", "prediction")
        self.description = f"input {self.input_key} {_shape_text(in_dims)} -> output {self.output_key} {_shape_text(out_dims)}"
        self._tf = tf

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.function(**{self.input_key: self._tf.constant(batch)})[self.output_key].numpy()
        except (self._tf.errors.OpError, ValueError, TypeError) as error:
            raise RetrainError(f"running the SavedModel failed: {_first_line(error)}") from None


def _pick(name: str | None, specs: dict[str, Any], *, preferred: str, flag: str, path: Path, listing: str,
          usable: Callable[[Any], bool]) -> str:
    """A signature key: the one asked for, else retrain's own name, else the only usable one."""
    if name is not None:
        if name not in specs:
            raise RetrainError(f"{flag} {name} is not in the serving_default signature of --graph {path}; {listing}")
        return name
    if preferred in specs:
        return preferred
    choices = [key for key, spec in specs.items() if usable(spec)]
    if len(choices) != 1:
        raise RetrainError(f"cannot tell which {flag[2:]} of --graph {path} to use; pass {flag} ({listing})")
    return choices[0]


class _TfliteModel(Model):
    """A TFLite model; integer-quantized inputs are quantized and outputs dequantized with their parameters."""

    kind = "TFLite model"

    def __init__(self, path: Path, data: bytes, *, input_layer: str | None, output_layer: str | None) -> None:
        interpreter_class = _interpreter_class()
        try:
            with stderr_captured():
                self.interpreter = interpreter_class(model_content=data, num_threads=os.cpu_count() or 1)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise RetrainError(f"--graph {path}: cannot load the TFLite model: {_first_line(error)}") from None
        inputs = _tflite_names(self.interpreter, self.interpreter.get_input_details(), "inputs")
        outputs = _tflite_names(self.interpreter, self.interpreter.get_output_details(), "outputs")

        def describe(names: dict[str, dict]) -> Iterator[str]:
            seen = set()
            for name, detail in names.items():
                if detail["index"] not in seen and ":" not in name:
                    seen.add(detail["index"])
                    yield f"{name} ({np.dtype(detail['dtype']).name} {_shape_text(_tflite_dims(detail))})"

        listing = f"{_candidates('input', describe(inputs))}; {_candidates('output', describe(outputs))}"
        self.input = _tflite_pick(input_layer, inputs, self.interpreter.get_input_details(), flag="--input_layer",
                                  path=path, listing=listing)
        self.output = _tflite_pick(output_layer, outputs, self.interpreter.get_output_details(), flag="--output_layer",
                                   path=path, listing=listing)
        in_dims, out_dims = _tflite_dims(self.input), _tflite_dims(self.output)
        self.height, self.width, self.max_batch = _size_of(in_dims)
        self.class_count = out_dims[-1] if out_dims else None
        self.retrain_export = input_layer is None and output_layer is None and "image" in inputs
        dtype = np.dtype(self.input["dtype"]).name
        self.description = (f"input {_tflite_label(inputs, self.input)} {dtype} {_shape_text(in_dims)} -> "
                            f"output {_tflite_label(outputs, self.output)} {np.dtype(self.output['dtype']).name} "
                            f"{_shape_text(out_dims)}")
        self._batch = -1

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape), strict=False)
            with stderr_captured():  # XNNPACK announces itself on stderr at each allocation
                self.interpreter.allocate_tensors()
            self._batch = len(batch)
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)


def _interpreter_class() -> Callable[..., Any]:
    """LiteRT's interpreter when installed, else TensorFlow's (deprecated there, so its warning is hidden)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        tf = import_tensorflow()

        def make(**kwargs: Any) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return tf.lite.Interpreter(**kwargs)

        return make


def _tflite_names(interpreter: Any, details: list[dict], which: str) -> dict[str, dict]:
    """Every name a tensor answers to: its tensor name (`serving_default_image:0`) and its signature key (`image`)."""
    names = {d["name"]: d for d in details}
    by_index = {d["index"]: d for d in details}
    signatures = interpreter.get_signature_list()
    if _SIGNATURE in signatures or len(signatures) == 1:
        key = _SIGNATURE if _SIGNATURE in signatures else next(iter(signatures))
        runner_details = interpreter.get_signature_runner(key)
        found = runner_details.get_input_details() if which == "inputs" else runner_details.get_output_details()
        for name, detail in found.items():
            if detail["index"] in by_index:
                names.setdefault(name, by_index[detail["index"]])
    return names


def _tflite_pick(name: str | None, names: dict[str, dict], details: list[dict], *, flag: str, path: Path,
                 listing: str) -> dict:
    if name is not None:
        if name not in names:
            raise RetrainError(f"{flag} {name} is not in --graph {path}; {listing}")
        return names[name]
    if len(details) != 1:
        raise RetrainError(f"--graph {path} has {len(details)} {flag[2:]}s; pass {flag} ({listing})")
    return details[0]


def _tflite_label(names: dict[str, dict], detail: dict) -> str:
    """The friendliest name of a tensor: its signature key when it has one."""
    short = [n for n, d in names.items() if d["index"] == detail["index"] and ":" not in n]
    return short[0] if short else detail["name"]


def _tflite_dims(detail: dict) -> list[int | None]:
    signature = detail.get("shape_signature")
    return _dims(signature if signature is not None and len(signature) else detail["shape"])


def _quantize(batch: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the tensor's dtype; integer tensors use their scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return batch.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise RetrainError(f"the TFLite input is {dtype.name} without quantization parameters; "
                           "expected a float input or a quantized one with a scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return values.astype(np.float32)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- classifying


@dataclass(frozen=True)
class Preprocessing:
    """How decoded images become model input: classic semantics, (pixel_0_255 - mean) / std."""

    height: int
    width: int
    mean: float
    std: float

    def __call__(self, path: Path) -> np.ndarray:
        pixels = load_image(path, height=self.height, width=self.width)  # [0, 1], exactly as in training
        if (self.mean, self.std) == (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD):
            return pixels  # what our exports take; skipping the no-op keeps results bit-identical to training
        return ((pixels * 255.0 - self.mean) / self.std).astype(np.float32)


def preprocessing_for(model: Model, config: LabelImageConfig) -> Preprocessing:
    """Size from the flags or the model (they must agree when both exist); mean and std likewise."""
    sizes = {}
    for flag, given, own in (("--input_height", config.input_height, model.height),
                             ("--input_width", config.input_width, model.width)):
        if given is not None and own is not None and given != own:
            raise RetrainError(f"{flag} {given} does not match the model's input {model.description}; "
                               f"omit {flag} (the size is read from the model)")
        sizes[flag] = given or own
        if not sizes[flag]:
            raise RetrainError(f"the model does not fix its input size ({model.description}); "
                               "pass --input_height and --input_width")
    mean = EXPORT_INPUT_MEAN if config.input_mean is None else config.input_mean
    std = EXPORT_INPUT_STD if config.input_std is None else config.input_std
    if model.retrain_export and (mean, std) != (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD):
        log.warning("--input_mean %g --input_std %g: models that retrain exported expect %g and %g "
                    "(RGB in [0, 1]); results will be wrong unless the flags are omitted",
                    mean, std, EXPORT_INPUT_MEAN, EXPORT_INPUT_STD)
    return Preprocessing(height=sizes["--input_height"], width=sizes["--input_width"], mean=mean, std=std)


def classify(model: Model, paths: Sequence[Path], *, prepare: Callable[[Path], np.ndarray],
             batch_size: int) -> Iterator[ImageResult]:
    """Yield each image's probabilities in input order; images are decoded by a thread pool while the model runs."""
    batch_size = min(batch_size, model.max_batch or batch_size)

    def load(path: Path) -> tuple[Path, np.ndarray | None, str]:
        try:
            return path, prepare(path), ""
        except ImageError as error:
            return path, None, str(error)

    pending: list[tuple[Path, np.ndarray | None, str]] = []

    def flush() -> Iterator[ImageResult]:
        good = [(p, x) for p, x, _ in pending if x is not None]
        # [N, C] whatever the output's rank (classic graphs may give [N, 1, 1, C])
        scores = iter(np.asarray(model.predict(np.stack([x for _, x in good]))).reshape(len(good), -1) if good else [])
        for path, image, reason in pending:
            yield ImageResult(path, next(scores) if image is not None else None, reason)
        pending.clear()

    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 2)) as pool:
        for loaded in windowed(paths, lambda path: pool.submit(load, path), 2 * batch_size):
            pending.append(loaded)
            if len(pending) == batch_size:
                yield from flush()
        if pending:
            yield from flush()


def top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; ties keep class order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


def _write_text(out: TextIO, result: ImageResult, labels: Sequence[str], k: int, *, header: bool) -> None:
    if header:
        out.write(f"==> {result.path} <==\n")
    for label, score in top_k(result.scores, labels, k):
        # str(np.float32) is what the classic label_image.py printed, e.g. "daisy 0.9273"
        out.write(f"{label} {str(np.float32(score))}\n")
    if header:
        out.write("\n")
    out.flush()


def run(config: LabelImageConfig, *, out: TextIO | None = None) -> int:
    """Classify every image and print the results; returns how many images were classified.

    Raises RetrainError at the end if some images could not be decoded (they
    are reported on stderr as they come and skipped).
    """
    out = out or sys.stdout
    validate(config)
    paths = collect_images(config.images)
    labels = read_labels(config.labels)
    model = load_model(config.graph, input_layer=config.input_layer, output_layer=config.output_layer)
    log.info("%s %s: %s", model.kind, config.graph, model.description)
    if model.class_count is not None and model.class_count != len(labels):
        raise RetrainError(f"--labels {config.labels} has {len(labels)} labels but --graph {config.graph} has "
                           f"{model.class_count} classes; pass the labels file written with this model")
    prepare = preprocessing_for(model, config)
    several = len(paths) > 1
    records: list[dict[str, Any]] = []
    failed: list[ImageResult] = []
    for result in classify(model, paths, prepare=prepare, batch_size=config.batch_size):
        if result.scores is None:
            failed.append(result)
            if several:
                log.warning("skipping --image %s: %s", result.path, result.error)
            if config.json:
                records.append({"image": str(result.path), "error": result.error})
            continue
        if result.scores.shape[-1] != len(labels):
            raise RetrainError(f"--labels {config.labels} has {len(labels)} labels but --graph {config.graph} "
                               f"gives {result.scores.shape[-1]} scores; pass the labels file written with this model")
        if config.json:
            records.append({"image": str(result.path), "predictions": [
                {"label": label, "score": score} for label, score in top_k(result.scores, labels, config.top_k)]})
        else:
            _write_text(out, result, labels, config.top_k, header=several)
    if config.json:
        json.dump(records, out, indent=2)
        out.write("\n")
        out.flush()
    if failed and not several:
        raise RetrainError(f"cannot classify --image {failed[0].path}: {failed[0].error}")
    if failed:
        raise RetrainError(f"{len(failed)} of {len(paths)} images could not be decoded and were skipped "
                           "(named in the warnings above)")
    return len(paths)
