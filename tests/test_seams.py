"""The seams are real: a toy objective and a two-module feature source go through the one loop, the cache,
the frozen-graph export and label-image's reading without any of those knowing what they run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrain.cli import label_image_command, retrain_command
from retrain.exporters.model import ExportModel
from retrain.features.extract import file_vectors
from retrain.features.source import load_feature_source
from retrain.features.store import BottleneckStore
from retrain.images import decode_rgb, load_image, read_bytes, resize, resize_batch_tensor
from retrain.labels import ClassIds
from retrain.objectives import Evaluation, evaluate
from retrain.tfenv import import_tensorflow
from retrain.train import Optimizer, Schedule, Split, VectorSteps, initial_head, rng, train
from tests.conftest import PHOTOS, flags, invoke, save_tiny_module


@dataclass(frozen=True)
class OneVersusRest:
    """A toy objective: a sigmoid per class trained one-versus-rest on single labels (squared error)."""

    name: str = "one_vs_rest"
    headline: str = "hits"
    output_op: str = "Sigmoid"
    tflite_op: str = "LOGISTIC"
    multi_label: bool = False

    def activation(self, logits: Any, *, name: str | None = None) -> Any:
        return import_tensorflow().math.sigmoid(logits, name=name)

    def target_spec(self, classes: int, *, leading: int = 1) -> Any:
        tf = import_tensorflow()
        return tf.TensorSpec([None] * leading, tf.int32)

    def loss(self, logits: Any, targets: Any) -> Any:
        tf = import_tensorflow()
        truth = tf.one_hot(targets, tf.shape(logits)[1])
        return tf.reduce_mean(tf.square(tf.math.sigmoid(logits) - truth))

    def batch_metric(self, logits: Any, targets: Any) -> Any:
        tf = import_tensorflow()
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), targets), tf.float32))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logits))

    def evaluate(self, chunks: Any, *, thresholds: Any = None) -> Evaluation:
        probabilities, targets, indices = (np.concatenate(part) for part in zip(*[(p, t.ids, i) for p, t, i in chunks]))
        predictions = probabilities.argmax(1)
        return Evaluation(metrics={"hits": float(np.mean(predictions == targets)), "cross_entropy": 0.0},
                          headline=self.headline, count=len(predictions), predictions=predictions, indices=indices,
                          probabilities=probabilities)

    def calibrate(self, head: Any, chunks: Any, *, training: Any, names: Any = ()) -> Any:
        return head


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The home-made module twice, at two input sizes (32 and 20): two members with their own cache keys."""
    root = tmp_path_factory.mktemp("two_sizes")
    return save_tiny_module(root / "tiny32", size=32), save_tiny_module(root / "tiny20", size=20)


@pytest.mark.parametrize(("size", "new_size"), [((224, 224), (32, 32)), ((299, 200), (224, 150)),
                                               ((20, 32), (33, 7))])
def test_the_resize_between_members_is_trainings_filter_in_ops_every_export_runs(
        size: tuple[int, int], new_size: tuple[int, int]) -> None:
    """A mix of modules of different sizes resizes inside the graph: the numbers of images.resize (Pillow's filter,
    which training uses), along the right axes and per image, as ops TFLite's builtins and TF.js both run."""
    from PIL import Image

    from retrain.exporters.tfjs import SUPPORTED_OPS

    tf = import_tensorflow()
    photos = [np.asarray(Image.fromarray(decode_rgb(read_bytes(p))).resize(size[::-1]))
              for p in sorted(PHOTOS.glob("*.jpg"))[:2]]
    batch = tf.constant(np.stack(photos).astype(np.float32) / 255)
    resized = resize_batch_tensor(batch, height=new_size[0], width=new_size[1]).numpy()
    expected = np.stack([resize(photo, height=new_size[0], width=new_size[1]) for photo in photos])
    assert resized.shape == expected.shape == (2, *new_size, 3)
    assert np.abs(resized - expected).max() <= 1e-6
    graph = tf.function(lambda images: resize_batch_tensor(images, height=new_size[0], width=new_size[1])
                        ).get_concrete_function(tf.TensorSpec([None, *size, 3], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert ops <= {"Placeholder", "Const", "Transpose", "Reshape", "MatMul", "Identity"} and ops <= SUPPORTED_OPS


def _vectors(colour_tree: Path, source: Any, cache: Path) -> tuple[list[Path], Any, list[BottleneckStore]]:
    stores = [BottleneckStore(cache, module_key=m.cache_key, feature_dim=m.feature_dim) for m in source.members]
    for store in stores:
        store.load()
    paths = sorted(colour_tree.rglob("*.jpg"))
    return paths, file_vectors(paths, source=source, stores=stores, batch_size=8), stores


def test_a_toy_objective_and_a_two_member_source_run_through_the_loop_cache_and_export(
        colour_tree: Path, two_sizes: tuple[Path, Path], tmp_path: Path) -> None:
    tf = import_tensorflow()
    source = load_feature_source(tuple(str(p) for p in two_sizes))
    assert (source.height, source.width, source.dim) == (32, 32, 16)
    paths, vectors, stores = _vectors(colour_tree, source, tmp_path / "cache")
    assert vectors.vectors.shape == (len(paths), 16) and vectors.computed == 2 * len(paths)
    assert [s.dir.name for s in stores] == [m.cache_key for m in source.members] and stores[0].dir != stores[1].dir
    # Each member's vectors are its own: the first 8 columns are the 32-pixel module's, the rest the 20's.
    first = np.stack([load_image(p, height=32, width=32) for p in paths[:4]])
    np.testing.assert_allclose(vectors.vectors[:4, :8], source.members[0](tf.constant(first)).numpy(), atol=1e-5)
    assert _vectors(colour_tree, source, tmp_path / "cache")[1].computed == 0  # all from the cache now

    names = sorted({p.parent.name for p in paths})
    targets = ClassIds(np.array([names.index(p.parent.name) for p in paths]), class_count=len(names))
    data = Split(paths=tuple(paths), targets=targets, vectors=vectors.vectors)
    objective = OneVersusRest()
    head = initial_head(dim=source.dim, classes=len(names), seed=0, objective=objective)
    optimizer = Optimizer(learning_rate=0.5)
    steps = VectorSteps(data=data, head=head, optimizer=optimizer, batch_size=16, random=rng(0, "training"))
    evaluated: list[float] = []

    def validate(current: Any) -> Evaluation:
        result = evaluate(current, data.vectors, data.targets, batch_size=-1, rng=rng(0, "validation"))
        evaluated.append(result.accuracy)
        return result

    trained = train(steps=steps, schedule=Schedule(steps=300, eval_interval=100), optimizer=optimizer,
                    validate=validate)
    assert len(evaluated) == 4 and evaluated[-1] >= 0.9  # steps 0, 100, 200, 299; colours are easy

    model = ExportModel(source=source, head=trained, labels=tuple(names), final_tensor_name="final_result")
    graph = tmp_path / "graph.pb"
    graph.write_bytes(model.graph_def.SerializeToString())
    ops = {node.name: node.op for node in model.graph_def.node}
    assert ops["final_result"] == "Sigmoid" and ops["Placeholder"] == "Placeholder"
    images = np.stack([load_image(p, height=32, width=32) for p in paths])
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph.read_bytes())
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="import")
        with tf.compat.v1.Session(graph=g) as session:
            frozen = session.run("import/final_result:0", {"import/Placeholder:0": images})
    np.testing.assert_allclose(frozen, model.classifier.probabilities(tf.constant(images)).numpy(), atol=1e-5)
    # Training computed the 20-pixel member's vectors from the photos directly; the graph resizes its 32-pixel
    # input instead, so scores differ a little from training's, and the labels agree.
    assert np.mean(frozen.argmax(1) == trained.probabilities(vectors.vectors).argmax(1)) >= 0.95

    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in names))
    records = json.loads(invoke(label_image_command, ["--graph", str(graph), "--labels", str(labels), "--json",
                                                      str(paths[0]), str(paths[-1])]).stdout)
    assert [r["predictions"][0]["label"] for r in records] == [paths[0].parent.name, paths[-1].parent.name]


def test_two_modules_through_the_command_line(colour_tree: Path, two_sizes: tuple[Path, Path], outputs) -> None:
    """--tfhub_module A,B: each member cached on its own, one exported model, label-image with no size flag."""
    first, second = (str(p) for p in two_sizes)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=f"{first},{second}",
                                           how_many_training_steps=50, **outputs))
    assert "Bottlenecks (" in result.stderr and result.stderr.count("to compute") == 2
    again = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=second, how_many_training_steps=5,
                                          **outputs) + ["--tfhub_module", first])
    assert "to compute" not in again.stderr, "B,A after A,B computes nothing"
    photo = sorted((colour_tree / "green").iterdir())[0]
    lines = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                         str(outputs["output_labels"]), "--image", str(photo)]).stdout.splitlines()
    assert lines[0].split()[0] == "green"


def test_a_split_of_many_classes_is_evaluated_without_its_whole_score_matrix() -> None:
    """The softmax joined every chunk's probabilities into one [images, classes] array, three times a run (the
    training split twice, validation once): 32,000 training images of 10,000 classes peaked at 4.7 GB after
    training, and 1M images of 5,000 classes would need 50 GB (probe Z). It keeps each image's prediction and the
    cross-entropy's sum, and the scores only up to KEEP_SCORES (for the test split's pictures); the figures are
    those of the whole matrix."""
    import tracemalloc

    from retrain.objectives import Softmax
    from retrain.train import Head

    random = np.random.default_rng(0)

    def case(dim: int, classes: int, images: int) -> tuple[Head, np.ndarray, ClassIds]:
        head = Head(weights=random.normal(size=(dim, classes)).astype(np.float32),
                    biases=random.normal(size=classes).astype(np.float32), objective=Softmax())
        return (head, random.normal(size=(images, dim)).astype(np.float32),
                ClassIds(random.integers(0, classes, images), class_count=classes))

    head, vectors, targets = case(16, 50, 3000)
    result = evaluate(head, vectors, targets, batch_size=-1, rng=None)
    scores = head.probabilities(vectors)
    assert np.array_equal(result.predictions, np.argmax(scores, axis=1)) and np.array_equal(result.truth, targets.ids)
    assert result.accuracy == np.mean(np.argmax(scores, axis=1) == targets.ids)
    assert result.cross_entropy == pytest.approx(-np.mean(np.log(scores[np.arange(3000), targets.ids])), rel=1e-5)
    assert np.array_equal(result.probabilities, scores)  # a split this small keeps its scores

    head, vectors, targets = case(8, 5000, 20000)  # 100 M scores: 400 MB as one array
    tracemalloc.start()
    try:
        result = evaluate(head, vectors, targets, batch_size=-1, rng=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 250e6, f"{peak / 1e6:.0f} MB to evaluate 20,000 images of 5,000 classes"  # KEEP_SCORES: 80 MB
    assert result.probabilities is None and result.count == 20000
    assert np.array_equal(result.predictions[-500:], np.argmax(head.logits(vectors[-500:]), axis=1))


def test_a_stop_signal_during_a_training_step_is_raised_once_the_step_returns() -> None:
    """The CLI's handler raised a SIGTERM wherever the program was, also inside TensorFlow's own Python code around
    a training step, which it left broken: "AssertionError: Concurrent access?" from tf_stack, a traceback, exit 1
    (probe ZZG). Now the step runs to its end and the stop comes as it returns."""
    import signal

    from retrain import cli, errors
    from retrain.objectives import Softmax

    random = np.random.default_rng(0)
    data = Split(paths=tuple(Path(f"{i}.jpg") for i in range(40)),
                 targets=ClassIds(np.arange(40) % 2, class_count=2), vectors=random.normal(size=(40, 8)))
    steps = VectorSteps(data=data, head=initial_head(dim=8, classes=2, seed=0, objective=Softmax()),
                        optimizer=Optimizer(learning_rate=0.1), batch_size=8, random=rng(0, "training"))
    block, finished = steps._block, []

    def signalled(*args: Any) -> Any:  # the signal arrives while the step runs
        cli._on_signal(signal.SIGTERM, None)
        finished.append(block(*args))
        return finished[-1]

    steps._block = signalled
    errors.RECEIVED.clear()
    try:
        with pytest.raises(errors.Terminated):
            steps.run(5, lambda _count: None)
    finally:
        errors.RECEIVED.clear()
    assert len(finished) == 1  # the step ended; none began after it


def test_a_second_stop_signal_during_a_held_call_is_raised_at_once() -> None:
    """An impatient user's second Ctrl-C exits at once even while a TensorFlow call holds the first (probe ZZH: the
    first fine-tuning step, which traces for seconds, held both)."""
    import signal

    from retrain import cli, errors

    errors.RECEIVED.clear()
    try:
        with pytest.raises(KeyboardInterrupt), errors.stops_after():  # (the held one, as the call returns)
            cli._on_signal(signal.SIGINT, None)  # noted
            with pytest.raises(KeyboardInterrupt):
                cli._on_signal(signal.SIGINT, None)  # raised where the program is
    finally:
        errors.RECEIVED.clear()


def test_every_objective_and_export_is_known_where_files_are_judged(colour_tree: Path, outputs) -> None:
    """The contract a new objective or format meets (probe ZZR, adding some): each objective's score op is one
    the file checks know as a classifier's, and no two objectives share an op (label-image and TF.js tell the
    objective by it); each file an exporter declares has a kind the replace checks recognise (a kind they did
    not know was a KeyError traceback on a rerun), and its flag is a path flag retrain writes at, made a Path
    and checked up front."""
    from retrain import config as config_module
    from retrain.config import RetrainConfig
    from retrain.exporters import exporters
    from retrain.filekinds import SCORE_OPS
    from retrain.objectives import OBJECTIVES, objective_of
    from retrain.outputs.checks import CONTENTS

    ops = [op for objective in OBJECTIVES for op in (objective.output_op, objective.tflite_op)]
    assert len(ops) == len(set(ops)) and {o.output_op for o in OBJECTIVES} == set(SCORE_OPS)
    assert all(objective_of(objective.output_op) is objective is objective_of(objective.tflite_op)
               for objective in OBJECTIVES)
    out = outputs["output_graph"].parent
    config = RetrainConfig(colour_tree, **outputs, saved_model_dir=out / "sm", output_tflite=out / "m.tflite",
                           output_tfjs=out / "js", intermediate_store_frequency=10, multi_label=True)
    declared = [output for exporter in exporters() for output in exporter.outputs(config)]
    assert {output.content for output in declared} >= {"graph", "labels", "thresholds", "tflite", "checkpoint"}
    for output in declared:
        assert output.kind != "file" or output.content in CONTENTS, output
        field = output.flag.removeprefix("--")
        assert field in config_module._PATH_FIELDS and field in config_module._WRITTEN, output
        assert isinstance(getattr(config, field), Path), output


def test_the_file_checks_import_no_numpy() -> None:
    """The output checks run before any work, on argument errors too: they read the score ops from names.py, not
    through objectives and numpy (probe ZZL: 0.34 s against 0.16 s; the contract test above keeps the lists equal).
    My change for probe ZZR took them from OBJECTIVES again, and nothing failed."""
    import subprocess
    import sys

    code = ("import sys, retrain.outputs, retrain.filekinds; "
            "print(sorted({'numpy', 'retrain.objectives'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.parametrize("validation_count", [7, 0])
def test_the_loops_classic_lines_say_the_validation_figure_and_the_shown_step(caplog: pytest.LogCaptureFixture,
                                                                              validation_count: int) -> None:
    """Probe ZZO's survivors: the Validation line printing the training batch's figure, a phase's Train lines
    numbered from 0 while its Validation lines go on (a fine-tuning after 100 steps), and a Validation line for
    no validation image all passed the tests."""
    import logging

    from retrain.objectives import Softmax

    vectors = np.eye(4, dtype=np.float32)[np.arange(40) % 4] + 0.01
    data = Split(paths=tuple(Path(f"{i}.jpg") for i in range(40)), vectors=vectors,
                 targets=ClassIds(np.arange(40) % 4, class_count=4))
    head = initial_head(dim=4, classes=4, seed=0, objective=Softmax())
    optimizer = Optimizer(learning_rate=0.5)
    steps = VectorSteps(data=data, head=head, optimizer=optimizer, batch_size=8, random=rng(0, "training"))
    known = Evaluation(metrics={"accuracy": 0.123, "cross_entropy": 1.0}, headline="accuracy",
                       count=validation_count, predictions=None, indices=np.arange(validation_count),
                       probabilities=None)
    with caplog.at_level(logging.INFO, logger="retrain"):
        train(steps=steps, schedule=Schedule(steps=20, eval_interval=10, first_step=100), optimizer=optimizer,
              validate=lambda _head: known)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Step ")]
    steps_said = sorted({int(line.split(":")[0].split()[1]) for line in lines})
    assert steps_said == [100, 110, 119], lines  # the phase's steps shown after the first phase's 100
    validation = [line for line in lines if "Validation" in line]
    assert validation == ([f"Step {n}: Validation accuracy = 12.3% (N=7)" for n in (100, 110, 119)]
                          if validation_count else []), lines
    assert len([line for line in lines if "Train accuracy" in line]) == 3


def test_training_batches_draw_every_class_alike_and_momentum_carries_the_last_step() -> None:
    """Probe ZZO's survivors: uniform draws over images (not the classic class-uniform ones) and momentum 0 (the
    README's "SGD (momentum 0.9)" for fine-tuning) passed the tests."""
    ids = ClassIds(np.array([0] * 90 + [1] * 10), class_count=2)
    drawn = ids.batch(ids.sample(np.random.default_rng(0), 20_000))
    assert 0.48 < float(np.mean(drawn == 1)) < 0.52

    tf = import_tensorflow()
    variable = tf.Variable([0.0])
    apply = Optimizer(learning_rate=0.1, kind="momentum").updater([variable])
    apply([tf.constant([1.0])])
    apply([tf.constant([1.0])])
    np.testing.assert_allclose(variable.numpy(), [-(0.1 + 0.1 * 1.9)], rtol=1e-6)  # velocity 1, then 0.9 + 1
