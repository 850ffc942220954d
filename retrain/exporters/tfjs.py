"""TF.js graph model (`model.json` + weight shards + `labels.txt`) from retrain's frozen GraphDef.

Written from the documented graph-model format, without the `tensorflowjs` pip
package: that package cannot be installed beside TensorFlow 2.21 (it requires
tensorflow-decision-forests, which pins an older TensorFlow, and jax), and the
frozen graph already runs in TF.js as it is. The format is small:

- `model.json`: `{"format": "graph-model", "modelTopology": <GraphDef as protobuf
  JSON>, "signature": <SignatureDef as JSON>, "userDefinedMetadata": {...},
  "weightsManifest": [{"paths": [shard files], "weights": [{name, shape, dtype}]}]}`.
  Const nodes keep their dtype and shape in the topology; their values move to
  the shards.
- `group1-shard<i>of<n>.bin`: the values of every Const, in manifest order,
  little-endian and unpadded, cut into 4 MB files (TF.js's convention: the
  largest file every browser caches).

The graph is only tidied, never re-computed: control inputs are dropped (in a
graph of constants they order nothing), Identity nodes are bypassed, nodes the
output does not need are pruned, and internal `_` attributes are removed. Batch
norm stays as the frozen graph's Mul/Sub/Rsqrt arithmetic, which TF.js runs as
it is; folding it (as the official converter's Grappler pass does) would save
little on a MobileNet and move the numbers away from the frozen graph's.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.config import RetrainConfig
from retrain.errors import RetrainError, reason
from retrain.exporters import Exporter
from retrain.names import IMAGE_KEY, INPUT_NODE, OUTPUT_KEY
from retrain.objectives import objective_of
from retrain.outputs import Output, check_replaceable_folder, replace_folder

MODEL_FILE = "model.json"
LABELS_FILE = "labels.txt"
SHARD_BYTES = 4 * 1024 * 1024
SHARD_NAME = re.compile(r"group\d+-shard\d+of\d+\.bin")
# The npm release whose graph-model executor SUPPORTED_OPS lists; tests/js/package.json pins it and
# tests/test_tfjs.py checks the list against the installed @tensorflow/tfjs-converter.
TFJS_VERSION = "4.22.0"
# Every op @tensorflow/tfjs-converter 4.22.0's OperationMapper maps (its op_list/*.js, ragged
# and TF-DF lists excluded as the mapper excludes them). Notably present: Softmax, Sigmoid,
# ResizeBilinear; absent: ScaleAndTranslate (what tf.image.resize(antialias=True) becomes).
_SUPPORTED_OP_NAMES = """
Abs Acos Acosh Add AddN AddV2 All Any ArgMax ArgMin Asin Asinh Atan Atan2 Atanh AvgPool AvgPool3D
BatchMatMul BatchMatMulV2 BatchToSpaceND BiasAdd Bincount BitwiseAnd BroadcastArgs BroadcastTo Cast
Ceil ClipByValue Complex ComplexAbs Concat ConcatV2 Const Conv1D Conv2D Conv2DBackpropInput Conv3D
Cos Cosh CropAndResize Cumprod Cumsum DenseBincount DepthToSpace DepthwiseConv2d
DepthwiseConv2dNative Dilation2D Div DivNoNan Einsum Elu EmptyTensorList EnsureShape Enter Equal
Erf EuclideanNorm Exit Exp ExpandDims Expm1 FFT FakeQuantWithMinMaxVars Fill Floor FloorDiv
FloorMod FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 FusedDepthwiseConv2dNative Gather
GatherNd GatherV2 Greater GreaterEqual HashTable HashTableV2 IFFT IRFFT Identity IdentityN If Imag
ImageProjectiveTransformV3 InitializeTable InitializeTableV2 IsFinite IsInf IsNan LRN LeakyRelu
Less LessEqual LinSpace ListDiff Log Log1p LogSoftmax LogicalAnd LogicalNot LogicalOr
LookupTableFind LookupTableFindV2 LookupTableImport LookupTableImportV2 LookupTableSize
LookupTableSizeV2 LoopCond LowerBound MatMul MatrixBandPart Max MaxPool MaxPool3D MaxPoolWithArgmax
Maximum Mean Merge Min Minimum MirrorPad Mod Mul Multinomial Neg NextIteration NoOp
NonMaxSuppressionV2 NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5 NotEqual OneHot
Ones OnesLike Pack Pad PadV2 Placeholder PlaceholderWithDefault Pow Prelu Print Prod RFFT
RandomStandardNormal RandomUniform RandomUniformInt Range Rank Real RealDiv Reciprocal Relu Relu6
Reshape ResizeBilinear ResizeNearestNeighbor Reverse ReverseV2 Round Rsqrt ScatterNd Select
SelectV2 Selu Shape ShapeN Sigmoid Sign Sin Sinh Size Slice Snapshot Softmax Softplus
SpaceToBatchND SparseFillEmptyRows SparseReshape SparseSegmentMean SparseSegmentSum SparseToDense
Split SplitV Sqrt Square SquaredDifference Squeeze StatelessIf StatelessWhile StaticRegexReplace
StopGradient StridedSlice StringNGrams StringSplit StringToHashBucketFast Sub Sum Switch Tan Tanh
TensorArrayCloseV3 TensorArrayConcatV3 TensorArrayGatherV3 TensorArrayReadV3 TensorArrayScatterV3
TensorArraySizeV3 TensorArraySplitV3 TensorArrayV3 TensorArrayWriteV3 TensorListConcat
TensorListConcatV2 TensorListFromTensor TensorListGather TensorListGetItem TensorListLength
TensorListPopBack TensorListPushBack TensorListReserve TensorListResize TensorListScatter
TensorListScatterV2 TensorListSetItem TensorListSplit TensorListStack TensorScatterUpdate Tile
TopKV2 Transpose TruncatedNormal Unique UniqueV2 Unpack UpperBound Where While Zeros ZerosLike
_FusedConv2D _FusedMatMul
"""
SUPPORTED_OPS = frozenset(_SUPPORTED_OP_NAMES.split())
# Const dtypes TF.js can hold: the manifest dtype, and the numpy type its bytes are written as.
# TF.js has no 64-bit or half types; it reads DT_INT64 / DT_DOUBLE / DT_HALF nodes as int32 /
# float32 (tfjs-converter's parseDtypeParam), so those values are narrowed here, as its converter does.
_WEIGHT_TYPES: dict[str, tuple[str, type]] = {
    "float32": ("float32", np.float32), "float64": ("float32", np.float32), "float16": ("float32", np.float32),
    "int32": ("int32", np.int32), "int64": ("int32", np.int32), "int8": ("int32", np.int32),
    "uint8": ("int32", np.int32), "bool": ("bool", np.bool_),
}
# Keys of userDefinedMetadata that TF.js itself reads (`signature` there overrides the model's).
_RESERVED_METADATA = frozenset({"signature"})
_TENSOR_VALUE_FIELDS = ("tensor_content", "half_val", "float_val", "double_val", "int_val", "string_val",
                        "scomplex_val", "int64_val", "bool_val", "dcomplex_val", "resource_handle_val",
                        "variant_val", "uint32_val", "uint64_val", "float8_val")


def unsupported_ops(graph_def_bytes: bytes) -> list[str]:
    """Ops in a serialized GraphDef that TF.js's graph-model executor cannot run, sorted and unique.

    Checks every node, including those of a function library, against the op
    list of @tensorflow/tfjs-converter TFJS_VERSION. An empty list means TF.js
    can run the graph (`write_graph_model` then checks its input and output).
    Raises RetrainError when the bytes are not a GraphDef.
    """
    return _unsupported(_parse_graph_def(graph_def_bytes))


def _unsupported(graph_def: Any) -> list[str]:
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(ops - SUPPORTED_OPS)


def write_graph_model(directory: Path, graph_def_bytes: bytes, *, output_node: str, height: int, width: int,
                      labels: Sequence[str], input_node: str = INPUT_NODE,
                      metadata: dict[str, Any] | None = None) -> list[Path]:
    """Write a TF.js graph model of a retrain frozen graph into `directory`; return the files written.

    `directory` must exist and hold none of the files this writes (the caller
    makes a fresh folder and swaps it into place). `graph_def_bytes` is the
    serialized frozen GraphDef of `--output_graph`: `input_node` a float32
    Placeholder [None, height, width, 3] taking RGB in [0, 1], `output_node`
    the softmax (or sigmoid) [None, len(labels)]. Writes `model.json` (format
    `graph-model`, signature `image` -> `prediction`, the input convention in
    `userDefinedMetadata`, plus the caller's `metadata` keys, which may not
    change the convention), `group1-shard*of*.bin` and `labels.txt` (one
    label per line, in class-index order). Raises RetrainError, before writing
    anything, when the graph does not have that shape or uses ops TF.js
    cannot run.
    """
    directory = Path(directory)
    _check_directory(directory)
    _check_labels(labels)
    graph_def = _parse_graph_def(graph_def_bytes)
    if graph_def.library.function:
        raise RetrainError(f"the graph has a function library ({len(graph_def.library.function)} functions); "
                           "TF.js export expects a flat frozen graph such as --output_graph writes")
    nodes = {node.name: node for node in graph_def.node}
    _check_input(nodes, input_node=input_node, height=height, width=width)
    if output_node not in nodes:
        raise RetrainError(f"the graph has no node {output_node!r} to export to TF.js; "
                           "expected the --final_tensor_name of the run")
    graph_def = _tidy(graph_def, keep={input_node, output_node}, output_node=output_node)
    if input_node not in {node.name for node in graph_def.node}:
        raise RetrainError(f"the output {output_node!r} does not depend on the input {input_node!r}")
    missing = _unsupported(graph_def)
    if missing:
        raise RetrainError(f"TF.js {TFJS_VERSION} cannot run these ops of the graph: {', '.join(missing)}")
    classes, output_kind = _output_info(graph_def, output_node=output_node)
    if classes is not None and classes != len(labels):
        raise RetrainError(f"the graph's {output_node!r} has {classes} outputs but {len(labels)} labels were given")

    weights, data = _extract_weights(graph_def)
    shards = _shard(data)
    shard_names = [f"group1-shard{i + 1}of{len(shards)}.bin" for i in range(len(shards))]
    model = {
        "format": "graph-model",
        "generatedBy": _tensorflow_version(),
        "convertedBy": "retrain (retrain.exporters.tfjs)",
        "signature": _signature(input_node=input_node, output_node=output_node, height=height, width=width,
                                classes=len(labels)),
        "userDefinedMetadata": _metadata(metadata, height=height, width=width, classes=len(labels),
                                         output_kind=output_kind),
        "modelTopology": _graph_json(graph_def),
        "weightsManifest": [{"paths": shard_names, "weights": weights}],
    }

    try:
        text = json.dumps(model, separators=(",", ":"), allow_nan=False, sort_keys=True)  # (the graph's attribute
        # maps come in any order: one model, one model.json, probe RRR)
    except (TypeError, ValueError) as error:
        raise RetrainError(f"TF.js metadata must be plain JSON values ({error})") from None

    written: list[Path] = []
    (directory / MODEL_FILE).write_text(text, encoding="utf-8")
    written.append(directory / MODEL_FILE)
    for name, shard in zip(shard_names, shards):
        (directory / name).write_bytes(shard)
        written.append(directory / name)
    (directory / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    written.append(directory / LABELS_FILE)
    return written


def _parse_graph_def(graph_def_bytes: bytes) -> Any:
    """Serialized bytes -> tf.compat.v1.GraphDef; RetrainError when they are not one."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_def_bytes)
    except (DecodeError, RuntimeWarning) as error:
        raise RetrainError(f"not a TensorFlow GraphDef ({error}); expected the bytes of --output_graph") from None
    if not graph_def.node:
        raise RetrainError("the GraphDef has no nodes; expected the bytes of --output_graph")
    return graph_def


def _check_directory(directory: Path) -> None:
    """The folder exists and holds none of our file names (a model is never written over another)."""
    if not directory.is_dir():
        raise RetrainError(f"TF.js output folder {directory} does not exist; create it first")
    clashes = sorted(p.name for p in directory.iterdir()
                     if p.name in (MODEL_FILE, LABELS_FILE) or SHARD_NAME.fullmatch(p.name))
    if clashes:
        raise RetrainError(f"TF.js output folder {directory} already holds {', '.join(clashes)}; "
                           "expected an empty folder")


def _check_labels(labels: Sequence[str]) -> None:
    """Labels become the lines of labels.txt: non-empty, one line each."""
    if isinstance(labels, str) or not labels:
        raise RetrainError("TF.js export needs the list of labels, one per class")
    for label in labels:
        if not isinstance(label, str) or not label or any(c in label for c in "\r\n"):
            raise RetrainError(f"label {label!r} cannot be a line of {LABELS_FILE}")


def _check_input(nodes: dict[str, Any], *, input_node: str, height: int, width: int) -> None:
    """The input is a float32 Placeholder of shape [None, height, width, 3]."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    node = nodes.get(input_node)
    if node is None or node.op != "Placeholder":
        raise RetrainError(f"the graph has no Placeholder named {input_node!r}; expected retrain's frozen graph")
    dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
    dims = [dim.size for dim in node.attr["shape"].shape.dim]
    if dtype != tf.float32 or node.attr["shape"].shape.unknown_rank or dims != [-1, height, width, 3]:
        shape = "unknown" if node.attr["shape"].shape.unknown_rank else [None if d < 0 else d for d in dims]
        raise RetrainError(f"input {input_node!r} is {dtype.name} {shape}; "
                           f"expected float32 [None, {height}, {width}, 3]")


def _tidy(graph_def: Any, *, keep: set[str], output_node: str) -> Any:
    """A copy with control inputs dropped, Identity nodes bypassed, unneeded nodes pruned, `_` attrs removed.

    Nodes named in `keep` are never bypassed, so the input and output keep their names.
    """
    nodes = {node.name: node for node in graph_def.node}

    def source(name: str) -> str:
        """Follow an input reference through bypassable Identity nodes to what really produces it."""
        seen = set()
        while True:
            node_name, _, index = name.partition(":")
            node = nodes.get(node_name)
            if node is None or node.op != "Identity" or node_name in keep or index not in ("", "0"):
                return name
            data_inputs = [i for i in node.input if not i.startswith("^")]
            if len(data_inputs) != 1 or node_name in seen:
                return name
            seen.add(node_name)
            name = data_inputs[0]

    tidy = type(graph_def)()
    tidy.versions.CopyFrom(graph_def.versions)
    needed: set[str] = set()
    stack = [output_node]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        for reference in nodes[name].input:
            if not reference.startswith("^"):
                producer = source(reference).partition(":")[0]
                if producer not in nodes:
                    raise RetrainError(f"node {name!r} reads {reference!r}, which is not in the graph")
                stack.append(producer)
    for node in graph_def.node:  # original order, so the topology reads like the frozen graph
        if node.name not in needed:
            continue
        copy = tidy.node.add()
        copy.CopyFrom(node)
        copy.ClearField("device")
        del copy.input[:]
        copy.input.extend(source(i) for i in node.input if not i.startswith("^"))
        for key in [key for key in copy.attr if key.startswith("_")]:
            del copy.attr[key]
    return tidy


def _output_info(tidy: Any, *, output_node: str) -> tuple[int | None, str]:
    """(number of classes from the output's static shape or None, "softmax"/"sigmoid"/the op's name)."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    nodes = {node.name: node for node in tidy.node}
    node = nodes[output_node]
    while node.op == "Identity" and node.input and node.input[0].partition(":")[0] in nodes:
        node = nodes[node.input[0].partition(":")[0]]
    kind = getattr(objective_of(node.op), "name", node.op)
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.graph_util.import_graph_def(tidy, name="")
        except (ValueError, tf.errors.OpError) as error:
            raise RetrainError(f"TensorFlow cannot import the graph ({reason(error)})") from None
    shape = graph.get_tensor_by_name(f"{output_node}:0").shape
    if shape.rank != 2:
        raise RetrainError(f"output {output_node!r} has shape {shape}; expected [None, classes]")
    return shape[1], kind


def _extract_weights(tidy: Any) -> tuple[list[dict[str, Any]], bytes]:
    """Move every Const's value out of `tidy` (in place): (manifest entries, concatenated bytes)."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for node in tidy.node:
        if node.op != "Const":
            continue
        tensor = node.attr["value"].tensor
        value = tf.make_ndarray(tensor)
        kind = _WEIGHT_TYPES.get(value.dtype.name)
        if kind is None:
            raise RetrainError(f"constant {node.name!r} is {value.dtype.name}, which TF.js cannot hold")
        dtype, numpy_type = kind
        narrowed = value.astype(numpy_type)
        if np.issubdtype(value.dtype, np.integer) and not np.array_equal(narrowed, value):
            raise RetrainError(f"constant {node.name!r} holds {value.dtype.name} values beyond int32 range")
        entries.append({"name": node.name, "shape": list(value.shape), "dtype": dtype})
        chunks.append(np.ascontiguousarray(narrowed).astype(narrowed.dtype.newbyteorder("<")).tobytes())
        for field in _TENSOR_VALUE_FIELDS:
            try:
                tensor.ClearField(field)
            except ValueError:
                pass  # a field this TensorFlow's TensorProto does not have
    return entries, b"".join(chunks)


def _shard(data: bytes) -> list[bytes]:
    """Cut the weight bytes into SHARD_BYTES pieces (at least one shard, as TF.js expects)."""
    count = max(1, math.ceil(len(data) / SHARD_BYTES))
    return [data[i * SHARD_BYTES:(i + 1) * SHARD_BYTES] for i in range(count)]


def _tensor_info(name: str, shape: Iterable[int]) -> dict[str, Any]:
    """A TensorInfo in protobuf JSON (int64 sizes are strings there)."""
    return {"name": f"{name}:0", "dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": str(d)} for d in shape]}}


def _signature(*, input_node: str, output_node: str, height: int, width: int, classes: int) -> dict[str, Any]:
    """The same keys as the SavedModel and TFLite exports: `image` -> `prediction`."""
    return {"inputs": {IMAGE_KEY: _tensor_info(input_node, [-1, height, width, 3])},
            "outputs": {OUTPUT_KEY: _tensor_info(output_node, [-1, classes])}}


def _metadata(extra: dict[str, Any] | None, *, height: int, width: int, classes: int,
              output_kind: str) -> dict[str, Any]:
    """userDefinedMetadata: the input convention spelled out, then the caller's own keys."""
    outputs = {"softmax": f"softmax probabilities float32 [N, {classes}], summing to 1",
               "sigmoid": f"sigmoid probabilities float32 [N, {classes}], one independent score per label"}
    convention = {
        "input": f"float32 [N, {height}, {width}, 3] RGB scaled to [0, 1] (pixel / 255)",
        "input_preprocessing": (f"the whole image (no crop) resized to {height}x{width}, bilinear with "
                                "antialiasing, as tf.image.resize(..., antialias=True); no mean/std normalization"),
        "input_height": height,
        "input_width": width,
        "output": f"{outputs.get(output_kind, f'{output_kind} float32 [N, {classes}]')}, "
                  f"in the order of the lines of {LABELS_FILE}",
        "output_kind": output_kind,
        "labels_file": LABELS_FILE,
        "num_labels": classes,
    }
    extra = dict(extra or {})
    clashes = sorted(set(extra) & (set(convention) | _RESERVED_METADATA))
    if clashes:
        raise RetrainError(f"TF.js metadata keys {', '.join(clashes)} are reserved for the input convention")
    return {**convention, **extra}


def _graph_json(tidy: Any) -> dict[str, Any]:
    """The GraphDef as protobuf JSON (camelCase fields, bytes as base64): what TF.js parses."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(tidy)


def _tensorflow_version() -> str:
    from retrain.tfenv import import_tensorflow

    return import_tensorflow().__version__


class TFJS(Exporter):
    """`--output_tfjs DIR`: the classifier as a TF.js graph model, with its labels (see the module docstring)."""

    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--output_tfjs", config.output_tfjs, kind="folder")] if config.output_tfjs else []

    def check(self, config: RetrainConfig) -> None:
        check_replaceable_folder(config.output_tfjs, flag="--output_tfjs")

    def check_model(self, model: Any, config: RetrainConfig) -> None:
        """Before any work: the graph's ops do not depend on the weights, so the untrained model tells."""
        missing = _unsupported(model.graph_def)
        if missing:
            raise RetrainError(f"--output_tfjs: TF.js {TFJS_VERSION} cannot run {', '.join(missing)}, which this "
                               f"model needs (--tfhub_module {model.source.handle}); drop --output_tfjs")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        # A web model is published: a local module is named by its folder's name, not the trainer's path to it
        # (probe HHH: /home/<user>/... went out with every web page; XXX: a relative ../../alice/models/x too);
        # handles and short names stay as given.
        metadata: dict[str, Any] = {"module": ",".join(
            os.path.basename(os.path.abspath(os.path.expanduser(member.handle)))
            if os.path.exists(os.path.expanduser(member.handle)) else member.handle
            for member in model.source.members)}
        if model.head.thresholds is not None:
            metadata["thresholds"] = [float(t) for t in model.head.thresholds]

        def write(tmp: Path) -> None:
            tmp.mkdir()
            write_graph_model(tmp, model.graph_bytes, output_node=config.final_tensor_name,
                              height=model.height, width=model.width, labels=model.labels, metadata=metadata)

        replace_folder(config.output_tfjs, write, flag="--output_tfjs")
        return [config.output_tfjs]
