"""Inference for `label-image`: classify images with a model that retrain exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrain.config import LabelImageConfig, RetrainError
from retrain.images import ImageError, decode_rgb, read_bytes, resize
from retrain.tfenv import import_tensorflow


def _load_graph(path: Path):
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(read_bytes(path))
    except ImageError as error:
        raise RetrainError(f"cannot read --graph {path}: {error}") from None
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise RetrainError(f"--graph {path} is not a frozen GraphDef (.pb)") from None
    return graph_def


def _input_node(graph_def) -> tuple[str, int | None, int | None]:
    """The graph's float image placeholder: (name, height, width)."""
    for node in graph_def.node:
        if node.op == "Placeholder":
            dims = [d.size for d in node.attr["shape"].shape.dim]
            if len(dims) == 4:
                return node.name, (dims[1] if dims[1] > 0 else None), (dims[2] if dims[2] > 0 else None)
    raise RetrainError("the graph has no [N, H, W, 3] Placeholder; pass --input_layer")


def run(config: LabelImageConfig) -> None:
    tf = import_tensorflow()
    graph_def = _load_graph(config.graph)
    input_name, height, width = _input_node(graph_def)
    input_name = config.input_layer or input_name
    output_name = config.output_layer or "final_result"
    height = config.input_height or height
    width = config.input_width or width
    if not height or not width:
        raise RetrainError("the graph does not fix its input size; pass --input_height and --input_width")
    mean = 0.0 if config.input_mean is None else config.input_mean
    std = 255.0 if config.input_std is None else config.input_std
    try:
        labels = read_bytes(config.labels).decode("utf-8").splitlines()
    except ImageError as error:
        raise RetrainError(f"cannot read --labels {config.labels}: {error}") from None
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="import")
    try:
        inputs = graph.get_tensor_by_name(f"import/{input_name}:0")
        outputs = graph.get_tensor_by_name(f"import/{output_name}:0")
    except (KeyError, ValueError):
        raise RetrainError(f"--input_layer {input_name} or --output_layer {output_name} is not in the graph") from None
    with tf.compat.v1.Session(graph=graph) as session:
        for path in config.images:
            try:
                rgb = decode_rgb(read_bytes(path), min_size=(height, width))
            except ImageError as error:
                raise RetrainError(f"cannot classify --image {path}: {error}") from None
            pixels = resize(rgb, height=height, width=width) * 255.0
            batch = ((pixels - mean) / std)[None].astype(np.float32)
            scores = session.run(outputs, {inputs: batch})[0]
            for index in np.argsort(-scores)[: config.top_k]:
                print(f"{labels[index] if index < len(labels) else index} {scores[index]:.5f}")
