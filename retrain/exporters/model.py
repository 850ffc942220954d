"""What every exporter writes: the feature source and the trained layer as one TensorFlow model.

`ExportModel` holds the pieces (feature source, head and its objective, label
names, the final node's name, a way to get calibration images) and builds,
once, the `tf.Module` that maps float [N, H, W, 3] RGB in [0, 1] to the
objective's scores, and its frozen GraphDef. Each exporter asks it for what it
needs; none of them knows which objective or how many modules it exports.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.names import INPUT_NODE, THRESHOLDS_NODE
from retrain.tfenv import import_tensorflow


@dataclass(frozen=True)
class ExportModel:
    """The trained classifier, ready to be exported in any format."""

    source: Any  # retrain.features.source.FeatureSource
    head: Any  # retrain.train.Head (weights, biases, objective)
    labels: tuple[str, ...]
    final_tensor_name: str
    calibration: Callable[[int], np.ndarray | None] = lambda count: None  # float [K, H, W, 3] images, for int8

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def width(self) -> int:
        return self.source.width

    @functools.cached_property
    def classifier(self) -> Any:
        """A tf.Module: `probabilities(images)` -> the objective's activation of the new layer's logits.

        `scores(features)` is the same from the source's vectors (for inputs that
        prepare each member's pixels themselves, such as encoded image bytes).
        """
        tf = import_tensorflow()
        source, objective, final_tensor_name = self.source, self.head.objective, self.final_tensor_name

        class Classifier(tf.Module):
            def __init__(self, head: Any) -> None:
                super().__init__(name=None)
                self.backbones = [member.model for member in source.members]  # tracked, so SavedModels hold them
                self.final_weights = tf.Variable(head.weights, name="final_weights")
                self.final_biases = tf.Variable(head.biases, name="final_biases")

            def probabilities(self, images: Any) -> Any:
                return self.scores(source.features(images))

            def scores(self, features: Any) -> Any:
                logits = tf.matmul(features, self.final_weights) + self.final_biases
                # Named at the top level of the traced function, so the frozen graph has
                # a node called exactly `final_tensor_name` (the classic contract).
                return objective.activation(logits, name=final_tensor_name)

        classifier = Classifier(self.head)
        classifier.height, classifier.width = self.height, self.width
        return classifier

    def input_spec(self, name: str = INPUT_NODE) -> Any:
        tf = import_tensorflow()
        return tf.TensorSpec([None, self.height, self.width, 3], tf.float32, name=name)

    def frozen_function(self, input_name: str = INPUT_NODE) -> Any:
        """The classifier as a concrete function with every variable folded into a constant."""
        tf = import_tensorflow()
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        function = tf.function(self.classifier.probabilities).get_concrete_function(self.input_spec(input_name))
        return convert_variables_to_constants_v2(function)

    @functools.cached_property
    def graph_def(self) -> Any:
        """The classifier as a flat GraphDef: `Placeholder` [None, H, W, 3] -> scores, constants only.

        Raises a RetrainError if TensorFlow had to rename the final node (a name
        that clashes with another node): the classic contract would be broken.
        """
        tf = import_tensorflow()
        graph_def = self.frozen_function().graph.as_graph_def()
        ops = {node.name: node.op for node in graph_def.node}
        expected = self.head.objective.output_op
        if ops.get(self.final_tensor_name) != expected:
            raise RetrainError(f"--final_tensor_name {self.final_tensor_name} clashes with another node of the "
                               f"exported graph, such as the module's (the {expected} output could not take that "
                               "name); choose another name")
        if self.head.thresholds is not None:
            # A constant beside the output, for readers that want the per-label thresholds with the model.
            node = graph_def.node.add(name=THRESHOLDS_NODE, op="Const")
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(self.head.thresholds, np.float32)))
        return _in_fixed_form(graph_def)

    @functools.cached_property
    def graph_bytes(self) -> bytes:
        """The frozen GraphDef's bytes, the same for the same model (its maps written in one order)."""
        return self.graph_def.SerializeToString(deterministic=True)

    def with_head(self, head: Any) -> "ExportModel":
        """The same model with another head (for intermediate graphs during training)."""
        return ExportModel(source=self.source, head=head, labels=self.labels, final_tensor_name=self.final_tensor_name,
                           calibration=self.calibration)


def _in_fixed_form(graph_def: Any) -> Any:
    """The same graph in one form for one model, so the same run writes the same bytes.

    Freezing names each variable's constant by a counter of the process, and
    the nodes' order follows those names: the same model came out in other
    bytes on every run. Here each such constant is named after the node that
    reads it (`<reader>/value`), and the nodes are put in topological order,
    placeholders first, then by name.
    """
    readers: dict[str, list[str]] = {}
    for node in graph_def.node:
        for name in node.input:
            readers.setdefault(_node_of(name), []).append(node.name)
    taken = {node.name for node in graph_def.node}
    renamed: dict[str, str] = {}
    for node in graph_def.node:
        if node.name.isdigit() and node.op == "Const" and node.name in readers:
            name = new = f"{min(readers[node.name])}/value"
            count = 0
            while new in taken:
                count += 1
                new = f"{name}_{count}"
            taken.add(new)
            renamed[node.name] = new
    for node in graph_def.node:
        node.name = renamed.get(node.name, node.name)
        for i, name in enumerate(node.input):
            if _node_of(name) in renamed:
                head, tail = ("^", name[1:]) if name.startswith("^") else ("", name)
                node_name, colon, port = tail.partition(":")
                node.input[i] = f"{head}{renamed[node_name]}{colon}{port}"
    nodes = {node.name: node for node in graph_def.node}
    waiting = {name: {_node_of(i) for i in node.input} & nodes.keys() for name, node in nodes.items()}
    readers = {}  # (again, by the new names)
    for name, inputs in waiting.items():
        for source in inputs:
            readers.setdefault(source, []).append(name)
    ready = [(node.op != "Placeholder", name) for name, node in nodes.items() if not waiting[name]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for reader in readers.get(name, ()):
            waiting[reader].discard(name)
            if not waiting[reader]:
                heapq.heappush(ready, (nodes[reader].op != "Placeholder", reader))
    order += sorted(nodes.keys() - set(order))  # nodes on a cycle (none in retrain's graphs), by name
    fixed = type(graph_def)()
    fixed.CopyFrom(graph_def)
    del fixed.node[:]
    fixed.node.extend(nodes[name] for name in order)
    return fixed


def _node_of(input_name: str) -> str:
    """The node an input names: `^name` (a control input) and `name:1` (an output) are `name`'s."""
    return input_name.lstrip("^").partition(":")[0]
