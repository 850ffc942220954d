"""Model readers for `label-image`: a frozen GraphDef, a SavedModel folder or a TFLite file.

For a model that retrain exported nothing but the file is needed: the input
node, output node and input size are read from the model itself (our exports
take RGB in [0, 1], that is the classic `--input_mean 0 --input_std 255`).
Explicit layer names override, for graphs made elsewhere (an Inception V3
graph fed at `Mul`). Every reader maps float batches [N, H, W, 3], already
normalized, to scores [N, C].
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.filekinds import SCORE_OPS, CutShort, graph_nodes, is_saved_model_file, is_tflite
from retrain.images import ImageError, read_bytes
from retrain.names import (FINAL_TENSOR_NAME, IMAGE_KEY, INPUT_NODE, OUTPUT_KEY, SERVING_SIGNATURE, THRESHOLDS_NODE,
                           THRESHOLDS_SIGNATURE)
from retrain.objectives import objective_of
from retrain.tfenv import import_tensorflow, loadable, stderr_captured


class Model:
    """A loaded classifier: float batches [N, H, W, 3] (already normalized) -> probabilities [N, C]."""

    kind: str
    description: str  # e.g. "input Placeholder [?, 224, 224, 3] -> output final_result [?, 5]"
    height: int | None
    width: int | None
    class_count: int | None
    max_batch: int | None  # None = any batch size; 1 for graphs with a fixed batch of one
    retrain_export: bool  # its input and output are retrain's own (found, or named by the layer flags)
    multi_label: bool = False  # the output is a sigmoid per label, not a softmax over classes
    thresholds: np.ndarray | None = None  # per-label thresholds the model carries (multi-label)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- loading models


def load_model(path: Path, *, input_layer: str | None = None, output_layer: str | None = None,
               final_name: str | None = None) -> Model:
    """Open a frozen GraphDef file, a SavedModel folder or a TFLite file, whichever `path` is. `final_name`: the
    --final_tensor_name the run that wrote it gave its frozen graph, which --output_layer may name for the
    SavedModel's or TFLite model's output too, as it names `final_result` (probe HHH)."""
    classic = (FINAL_TENSOR_NAME, *([final_name] if final_name else []))
    if path.is_dir():
        return _SavedModel(path, input_layer=input_layer, output_layer=output_layer, classic=classic)
    if is_saved_model_file(path):
        return _SavedModel(path.parent, input_layer=input_layer, output_layer=output_layer, classic=classic)
    try:
        data = read_bytes(path)
    except ImageError as error:
        raise RetrainError(f"cannot read --graph {path}: {error}") from None
    if is_tflite(data):
        return _TfliteModel(path, data, input_layer=input_layer, output_layer=output_layer, classic=classic)
    if (problem := not_a_model(path, data)) is not None:
        raise RetrainError(problem)
    return _FrozenGraph(path, data, input_layer=input_layer, output_layer=output_layer)


def not_a_model(path: Path, data: bytes) -> str | None:
    """Why the file at `path` (its bytes `data`) is no model label-image loads, or None: a TFLite model, a
    SavedModel's saved_model.pb or a frozen graph (told without TensorFlow, so label-image says it before it
    looks for the labels: probe HHH's --graph given the labels file was answered with a word about its labels)."""
    if is_tflite(data) or is_saved_model_file(path):
        return None
    if path.suffix.lower() == ".tflite":
        return (f"--graph {path} is not a TFLite model (no TFL3 identifier); expected a .tflite file that retrain or "
                "the TFLite converter wrote")
    # A SavedModel's saved_model.pb starts with its schema version (field 1, a number), a graph with a node.
    if data[:1] == b"\x08" and path.name != "saved_model.pb":
        return (f"--graph {path} looks like a SavedModel's saved_model.pb under another name; pass the folder that "
                "holds it as saved_model.pb, beside its variables/ (the --saved_model_dir retrain wrote)")
    nodes = named = 0
    try:
        for name, op in graph_nodes(data):
            nodes, named = nodes + 1, named + bool(name and op)
    except CutShort:  # (probe GGG: a graph cut inside a node was called no graph at all)
        if nodes and named == nodes:  # whole nodes, each with a name and an op, then the end
            return (f"--graph {path} is truncated: it ends inside a node, after {nodes} whole nodes; copy or export "
                    "it again")
        return _NOT_A_GRAPH.format(path=path)
    except ValueError:
        return _NOT_A_GRAPH.format(path=path)
    return None if nodes else _NOT_A_GRAPH.format(path=path)


_NOT_A_GRAPH = ("--graph {path} is not a frozen GraphDef, a SavedModel folder or a TFLite file; pass the "
                "--output_graph, --saved_model_dir or .tflite file retrain wrote")


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None or d < 0 else int(d) for d in shape]


def _shape_text(dims: Sequence[int | None] | None) -> str:
    return "[?]" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _node_name(layer: str, nodes: dict[str, Any]) -> str:
    """The node a classic layer name means: `Mul`, `Mul:0` and `import/Mul` all mean `Mul`, unless the graph's own
    node is named `import/Mul` (a graph imported once and frozen again: probe ZZT)."""
    name = layer.split(":")[0]
    return name if name in nodes else name.removeprefix("import/")


def _ancestors(name: str, nodes: dict[str, Any]) -> set[str]:
    """The names of the nodes the node `name` is computed from, itself included."""
    found, todo = set(), [name]
    while todo:
        node = todo.pop()
        if node not in found and node in nodes:
            found.add(node)
            todo.extend(given.lstrip("^").split(":")[0] for given in nodes[node].input)
    return found


def _size_of(dims: Sequence[int | None] | None) -> tuple[int | None, int | None, int | None]:
    """(height, width, batch) of a [N, H, W, C] shape; None where unknown."""
    if dims is None or len(dims) != 4:
        return None, None, None
    return dims[1], dims[2], dims[0]


def _is_image_input(dims: Sequence[int | None] | None) -> bool:
    return dims is not None and len(dims) == 4 and dims[3] in (3, None)


def _feeding(output_layer: str, nodes: dict[str, Any], images: list[Any]) -> list[Any]:
    """Of the image inputs `images`, those `output_layer` is computed from (probe ZZP: another path's input was
    taken; ZZT: none at all), the one plain Placeholder before the ones with a default that it feeds (probe ZZU:
    an override input made two; ZZV: not a side input beside the image). All of them for an output not in the
    graph or a Const: the checks that follow say what is wrong with it."""
    output_node = nodes.get(_node_name(output_layer, nodes))
    if output_node is None or output_node.op == "Const":
        return images
    ancestors = _ancestors(output_node.name, nodes)
    feeding = [n for n in images if n.name in ancestors]
    plain = [n for n in feeding if n.op == "Placeholder"]
    if len(plain) == 1 and all(plain[0].name in _ancestors(n.name, nodes) for n in feeding if n not in plain):
        return plain
    return feeding


def _candidates(kind: str, names: Iterable[str], *, most: int = 10) -> str:
    """The first `most` candidates, then `...` when there are more (probe ZZT: 100,000 made a line of 3.7 MB)."""
    names = list(itertools.islice(names, most + 1))
    listed = ", ".join(names[:most]) + (", ..." if len(names) > most else "")
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
            raise RetrainError(_NOT_A_GRAPH.format(path=path))
        # TensorFlow writes a GraphDef's version record after all its nodes: a graph that lacks it
        # and cannot be used was cut short (a copy or download that stopped between two nodes).
        truncated = not graph_def.HasField("versions")

        def fail(message: str) -> RetrainError:
            if truncated:
                return RetrainError(f"--graph {path} is truncated: it ends after {len(graph_def.node)} nodes, "
                                    "before the graph's version record; copy or export it again")
            return RetrainError(message)

        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.compat.v1.import_graph_def(graph_def, name="import")
            except (ValueError, tf.errors.OpError) as error:
                raise fail(f"--graph {path} cannot be loaded: {_first_line(error)}") from None
        nodes = {node.name: node for node in graph_def.node}
        consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
        # The op type, any name; one with a default is an input too (probe ZZT: another one was fed instead)
        placeholders = [n for n in graph_def.node if n.op in ("Placeholder", "PlaceholderWithDefault")]
        sinks = [n for n in graph_def.node if n.name not in consumed and n.op not in ("Const", "NoOp")]

        def describe(node: Any) -> str:
            return f"{node.name} ({node.op} {_shape_text(self._tensor_dims(node.name + ':0'))})"

        softmaxes = [n for n in graph_def.node if n.op in SCORE_OPS]
        outputs = softmaxes + [n for n in sinks if n.op not in SCORE_OPS]
        listing = (f"{_candidates('input', map(describe, placeholders))}; "
                   f"{_candidates('output', map(describe, outputs))}")
        if output_layer is None:
            # retrain's own name first; else the one softmax (a graph may end in Identity nodes after it)
            softmax_sinks = [n for n in softmaxes if n.name not in consumed]
            if FINAL_TENSOR_NAME in nodes:
                output_layer = FINAL_TENSOR_NAME
            elif len(softmaxes) == 1 or len(softmax_sinks) == 1:
                output_layer = (softmaxes if len(softmaxes) == 1 else softmax_sinks)[0].name
            else:
                raise fail(f"--graph {path} has no node {FINAL_TENSOR_NAME} and {len(softmaxes)} Softmax or Sigmoid nodes, "
                                   f"expected one; pass --output_layer ({listing})")
        if input_layer is None:
            images = _feeding(output_layer, nodes, [n for n in placeholders
                                                    if n.attr["dtype"].type == tf.float32.as_datatype_enum
                                                    and _is_image_input(self._tensor_dims(n.name + ":0"))])
            if len(images) != 1:
                raise fail(f"--graph {path} has {len(images)} float [N, H, W, 3] Placeholders that --output_layer "
                           f"{output_layer} is computed from, expected one; pass --input_layer ({listing})")
            input_layer = images[0].name
        try:
            self.input = self._tensor(input_layer, nodes, flag="--input_layer", path=path, listing=listing)
            self.output = self._tensor(output_layer, nodes, flag="--output_layer", path=path, listing=listing)
        except RetrainError as error:
            raise fail(str(error)) from None
        if not self.input.dtype.is_floating:  # fed [0, 1] floats, an integer or bool input would read zeros
            raise fail(f"--input_layer {input_layer} takes {self.input.dtype.name}; label-image feeds float RGB "
                       f"[N, H, W, 3] ({listing})")
        in_dims = _dims(self.input.shape) if self.input.shape.rank is not None else None
        out_dims = _dims(self.output.shape) if self.output.shape.rank is not None else None
        if in_dims is not None and not _is_image_input(in_dims):  # e.g. the layer flags swapped
            raise fail(f"--input_layer {input_layer} is {self.input.op.type} {_shape_text(in_dims)}, not an image "
                       f"input [N, H, W, 3] ({listing})")
        if out_dims is not None and (len(out_dims) < 2 or self.output.op.type == "Const"  # e.g. the thresholds
                                     or any(d not in (1, None) for d in out_dims[1:-1])):  # e.g. the input image
            raise fail(f"--output_layer {output_layer} is {self.output.op.type} {_shape_text(out_dims)}, not scores "
                       f"per image [N, classes] ({listing})")
        if self.input.op.name.removeprefix("import/") not in _ancestors(self.output.op.name.removeprefix("import/"),
                                                                       nodes):  # (probe ZZU: all scored alike, exit 0)
            raise fail(f"--output_layer {output_layer} is not computed from --input_layer {input_layer}, so every "
                       f"image would get the same scores; pass the input it is computed from ({listing})")
        self.height, self.width, batch = _size_of(in_dims)
        self.max_batch = batch
        self.class_count = out_dims[-1] if out_dims else None
        # By the nodes used, found or named by the classic flags (--input_layer=Placeholder: probe CCC)
        self.retrain_export = (self.input.op.name, self.output.op.name) == (f"import/{INPUT_NODE}",
                                                                            f"import/{FINAL_TENSOR_NAME}")
        self.description = (f"input {self.input.op.name[7:]} {_shape_text(in_dims)} -> "
                            f"output {self.output.op.name[7:]} {_shape_text(out_dims)}")
        self.multi_label = getattr(objective_of(self.output.op.type), "multi_label", False)
        if THRESHOLDS_NODE in nodes and nodes[THRESHOLDS_NODE].op == "Const":
            self.thresholds = tf.make_ndarray(nodes[THRESHOLDS_NODE].attr["value"].tensor).astype(np.float32)
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
        node_name = _node_name(layer, nodes)
        if node_name not in nodes:
            raise RetrainError(f"{flag} {layer} is not in --graph {path}; {listing}")
        output = layer.rpartition(":")[2] if ":" in layer else "0"
        try:
            return self.graph.get_tensor_by_name(f"import/{node_name}:{output}")
        except (KeyError, ValueError) as error:
            raise RetrainError(f"{flag} {layer}: {_first_line(error)}; {listing}") from None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(self.output, {self.input: batch}))
        except (self._errors, ValueError) as error:  # ValueError: the input cannot take [N, H, W, 3] floats
            raise RetrainError(f"running the graph failed: {_first_line(error)}") from None


class _SavedModel(Model):
    """A SavedModel's `serving_default` signature; layer flags name its input and output keys."""

    kind = "SavedModel"

    def __init__(self, path: Path, *, input_layer: str | None, output_layer: str | None,
                 classic: Sequence[str] = (FINAL_TENSOR_NAME,)) -> None:
        tf = import_tensorflow()
        if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
            raise RetrainError(f"--graph {path} is a folder but not a SavedModel (no saved_model.pb); pass the "
                               "--saved_model_dir folder retrain wrote, or a frozen .pb or .tflite file")
        try:
            loaded = tf.saved_model.load(str(loadable(path)))
        except Exception as error:  # noqa: BLE001 - TF raises OSError, ValueError, OpError... for bad SavedModels
            raise RetrainError(f"--graph {path}: cannot load the SavedModel: {_first_line(error)}") from None
        signatures = dict(loaded.signatures)
        if SERVING_SIGNATURE not in signatures:
            raise RetrainError(f"--graph {path} has no {SERVING_SIGNATURE} signature (it has: "
                               f"{', '.join(signatures) or 'none'}); re-export it with retrain --saved_model_dir")
        self._loaded = loaded  # keeps the variables alive
        self.function = signatures[SERVING_SIGNATURE]
        inputs = dict(self.function.structured_input_signature[1])
        outputs = dict(self.function.structured_outputs)
        listing = (f"{_candidates('input', (f'{k} {_shape_text(_dims(s.shape))}' for k, s in inputs.items()))}; "
                   f"{_candidates('output', (f'{k} {_shape_text(_dims(s.shape))}' for k, s in outputs.items()))}")
        input_layer = _classic_name(input_layer, inputs, classic=(INPUT_NODE,), ours=IMAGE_KEY)
        output_layer = _classic_name(output_layer, outputs, classic=classic, ours=OUTPUT_KEY)
        self.input_key = _pick(input_layer, inputs, preferred=IMAGE_KEY, flag="--input_layer", path=path,
                               listing=listing, other=outputs,
                               usable=lambda s: s.dtype == tf.float32 and _is_image_input(_dims(s.shape)))
        self.output_key = _pick(output_layer, outputs, preferred=OUTPUT_KEY, flag="--output_layer", path=path,
                                listing=listing, other=inputs, usable=lambda s: s.shape.rank == 2)
        in_dims = _dims(inputs[self.input_key].shape) if inputs[self.input_key].shape.rank else None
        out_spec = outputs[self.output_key]
        out_dims = _dims(out_spec.shape) if out_spec.shape.rank else None
        self.height, self.width, self.max_batch = _size_of(in_dims)
        self.class_count = out_dims[-1] if out_dims else None
        self.retrain_export = (self.input_key, self.output_key) == (IMAGE_KEY, OUTPUT_KEY)
        if THRESHOLDS_SIGNATURE in signatures:
            self.multi_label = True
            self.thresholds = signatures[THRESHOLDS_SIGNATURE]()[THRESHOLDS_SIGNATURE].numpy().astype(np.float32)
        self.description = f"input {self.input_key} {_shape_text(in_dims)} -> output {self.output_key} {_shape_text(out_dims)}"
        self._tf = tf

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.function(**{self.input_key: self._tf.constant(batch)})[self.output_key].numpy()
        except (self._tf.errors.OpError, ValueError, TypeError) as error:
            raise RetrainError(f"running the SavedModel failed: {_first_line(error)}") from None


def _classic_name(layer: str | None, keys: Iterable[str], *, classic: Sequence[str], ours: str) -> str | None:
    """None (retrain's own input or output) for the frozen graph's node name (`Placeholder`, `final_result`, as
    a classic label_image.py command passes them) given for a SavedModel or TFLite export, where that is `ours`."""
    keys = set(keys)
    if layer is None or layer in keys or ours not in keys:
        return layer
    return None if layer.removeprefix("import/").removesuffix(":0") in classic else layer


def _not_there(name: str, *, flag: str, other: Container[str], where: str, listing: str) -> RetrainError:
    """A key or tensor name the model does not have where the flag looks (`--output_layer image`: an input)."""
    side, other_side = ("input", "output") if flag == "--input_layer" else ("output", "input")
    if name in other:
        return RetrainError(f"{flag} {name} is an {other_side} of {where}, not an {side}; {listing}")
    return RetrainError(f"{flag} {name} is not in {where}; {listing}")


def _pick(name: str | None, specs: dict[str, Any], *, preferred: str, flag: str, path: Path, listing: str,
          other: Container[str], usable: Callable[[Any], bool]) -> str:
    """A signature key: the one asked for, else retrain's own name, else the only usable one."""
    if name is not None:
        if name not in specs:
            raise _not_there(name, flag=flag, other=other, where=f"the serving_default signature of --graph {path}",
                             listing=listing)
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

    def __init__(self, path: Path, data: bytes, *, input_layer: str | None, output_layer: str | None,
                 classic: Sequence[str] = (FINAL_TENSOR_NAME,)) -> None:
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
        input_layer = _classic_name(input_layer, inputs, classic=(INPUT_NODE,), ours=IMAGE_KEY)
        output_layer = _classic_name(output_layer, outputs, classic=classic, ours=OUTPUT_KEY)
        self.input = _tflite_pick(input_layer, inputs, self.interpreter.get_input_details(), flag="--input_layer",
                                  path=path, listing=listing, other=outputs)
        self.output = _tflite_pick(output_layer, outputs, self.interpreter.get_output_details(), flag="--output_layer",
                                   path=path, listing=listing, other=inputs)
        in_dims, out_dims = _tflite_dims(self.input), _tflite_dims(self.output)
        self.height, self.width, self.max_batch = _size_of(in_dims)
        self.class_count = out_dims[-1] if out_dims else None
        self.retrain_export = (_tflite_label(inputs, self.input), _tflite_label(outputs, self.output)) == (
            IMAGE_KEY, OUTPUT_KEY)
        self.multi_label = getattr(objective_of(_produced_by(self.interpreter, self.output["index"])), "multi_label",
                                   False)
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


def _produced_by(interpreter: Any, tensor: int) -> str:
    """The TFLite op that computes `tensor` (e.g. SOFTMAX, LOGISTIC), or '' when the interpreter cannot say.

    An integer model's (de)quantizing steps are looked through: what matters is the op before them.
    """
    try:
        operators = interpreter._get_ops_details()  # noqa: SLF001 - the only way to see a model's ops
    except Exception:  # noqa: BLE001
        return ""
    producer = next((op for op in operators if tensor in list(op.get("outputs", []))), None)
    if producer is None:
        return ""
    if producer["op_name"] in ("QUANTIZE", "DEQUANTIZE") and len(producer["inputs"]):
        return _produced_by(interpreter, int(producer["inputs"][0]))
    return producer["op_name"]


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
    if SERVING_SIGNATURE in signatures or len(signatures) == 1:
        key = SERVING_SIGNATURE if SERVING_SIGNATURE in signatures else next(iter(signatures))
        runner_details = interpreter.get_signature_runner(key)
        found = runner_details.get_input_details() if which == "inputs" else runner_details.get_output_details()
        for name, detail in found.items():
            if detail["index"] in by_index:
                names.setdefault(name, by_index[detail["index"]])
    return names


def _tflite_pick(name: str | None, names: dict[str, dict], details: list[dict], *, flag: str, path: Path,
                 listing: str, other: Container[str]) -> dict:
    if name is not None:
        if name not in names:
            raise _not_there(name, flag=flag, other=other, where=f"--graph {path}", listing=listing)
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
    """The line of a TensorFlow error that says what went wrong, not the headings and call sites around it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines
               if not line.endswith(":") and not line.startswith(("[[", "File ", "Detected at", "Node: "))]
    return (telling or lines or [type(error).__name__])[0]
