"""TF.js export: the writer (fast, Python only) and the real TF.js in Node and Chromium (integration).

The fast tests read the TF.js model of the session's shared retraining of the
fixture flowers (conftest.flowers_export, MobileNet V2 1.0), check its structure, and rebuild a GraphDef from
`model.json` + shards to run it in TensorFlow: that proves the writer without
Node. The integration tests (`-m integration`) install the pure-JavaScript
@tensorflow packages with `npm ci` in tests/js if needed, run a MobileNet V2 0.35
model (from the CLI, 20 photos per class) with the real TF.js in Node 20, and try
examples/web in headless Chromium (Debian's `chromium` package) against
label-image on 50 held-out photos.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrain.errors import RetrainError
from retrain.exporters.tfjs import (
    SHARD_BYTES,
    SUPPORTED_OPS,
    TFJS_VERSION,
    unsupported_ops,
    write_graph_model,
)
from retrain.images import RESIZE_TOLERANCE, decode_rgb, load_image, read_bytes, resize, resize_tensor
from tests.conftest import FLOWERS, MODULES, PHOTOS, flags, require, run_script

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "tests" / "js"
SIZE = 224


def held_out(trained: dict[str, Any], per_class: int) -> list[Path]:
    """Photos the model never saw (its test split): the first `per_class` of each class, class by class."""
    by_class: dict[str, list[Path]] = {}
    for path in trained["test_paths"]:
        by_class.setdefault(path.parent.name, []).append(path)
    return [path for label in sorted(by_class) for path in by_class[label][:per_class]]


@pytest.fixture(scope="module")
def trained(flowers_export) -> dict[str, Any]:
    """The session's shared retraining of the fixture flowers (MobileNet V2 1.0, every export, --output_tfjs
    among them: see conftest.flowers_export)."""
    config, result, _stdout, _seconds = flowers_export
    return {"graph": config.output_graph, "labels": config.output_labels, "tfjs": config.output_tfjs,
            "module": config.tfhub_module, "test_paths": list(result.splits["testing"].paths),
            "label_list": config.output_labels.read_text(encoding="utf-8").splitlines(),
            "graph_bytes": config.output_graph.read_bytes()}


TRAIN_PER_CLASS = 20  # the small model's training photos: the first 20 of each class (sorted)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, flowers_bottlenecks: Path) -> dict[str, Any]:
    """For Node and the browser, where TF.js's CPU backend makes MobileNet V2 1.0 three times slower: a model of
    MobileNet V2 0.35 from the real CLI with --output_tfjs, trained on 20 photos per class; every later photo of
    each class is held out."""
    module = require(MODULES / "mobilenet_v2_035_224")
    work = tmp_path_factory.mktemp("tfjs_run")
    classes = sorted(p for p in require(FLOWERS).iterdir() if p.is_dir())
    for class_dir in classes:
        (work / "photos" / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:TRAIN_PER_CLASS]:
            shutil.copyfile(photo, work / "photos" / class_dir.name / photo.name)
    out = work / "out"
    out.mkdir()
    run_script("-m", "retrain", *flags(
        image_dir=work / "photos", tfhub_module=module, how_many_training_steps=200,
        output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
        bottleneck_dir=flowers_bottlenecks, checkpoint_path=out / "checkpoint" / "ckpt", output_tfjs=out / "web"))
    return {"graph": out / "graph.pb", "labels": out / "labels.txt", "tfjs": out / "web",
            "test_paths": [p for d in classes for p in sorted(d.iterdir())[TRAIN_PER_CLASS:]],
            "graph_bytes": (out / "graph.pb").read_bytes()}


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any]) -> dict[str, Any]:
    """What `retrain --output_tfjs DIR` wrote."""
    directory = trained["tfjs"]
    return {"dir": directory, "model": json.loads((directory / "model.json").read_text())}


@pytest.fixture(scope="module")
def held_out_images(trained: dict[str, Any]) -> tuple[list[Path], np.ndarray]:
    """Two held-out photos per class, prepared exactly as training prepares images."""
    photos = held_out(trained, 2)
    return photos, np.stack([load_image(p, height=SIZE, width=SIZE) for p in photos])


def _tf() -> Any:
    from retrain.tfenv import import_tensorflow

    return import_tensorflow()


def run_graph(graph_def: Any, images: np.ndarray, *, output: str = "final_result") -> np.ndarray:
    """Run a GraphDef the classic way: feed Placeholder:0, fetch output:0."""
    tf = _tf()
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(f"{output}:0", {"Placeholder:0": images})


def parse_graph(graph_bytes: bytes) -> Any:
    graph_def = _tf().compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    return graph_def


def rebuild_graph_def(directory: Path) -> Any:
    """A GraphDef from model.json + shards alone, as TF.js reads them: the topology with each Const refilled."""
    tf = _tf()
    from google.protobuf.json_format import ParseDict

    model = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    graph_def = ParseDict(model["modelTopology"], tf.compat.v1.GraphDef())
    values: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        data = b"".join((directory / path).read_bytes() for path in group["paths"])
        offset = 0
        for weight in group["weights"]:
            dtype = np.dtype(weight["dtype"]).newbyteorder("<")
            count = math.prod(weight["shape"])
            values[weight["name"]] = np.frombuffer(data, dtype, count=count, offset=offset).reshape(weight["shape"])
            offset += count * dtype.itemsize
        assert offset == len(data), "the shards hold bytes no weight accounts for"
    for node in graph_def.node:
        if node.op == "Const":
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values.pop(node.name).astype(dtype.as_numpy_dtype)))
    assert not values, f"weights without a Const node: {sorted(values)}"
    return graph_def


def frozen_function_graph(build: Callable[[Any], Any], *, shape: list[int | None]) -> bytes:
    """A small frozen graph (constants only): Placeholder [shape] -> build(x), named by `build`."""
    tf = _tf()
    function = tf.function(build).get_concrete_function(tf.TensorSpec(shape, tf.float32, name="Placeholder"))
    return function.graph.as_graph_def().SerializeToString()


# ---------------------------------------------------------------- the writer, proved in Python


def test_writes_model_json_shards_and_labels(trained: dict[str, Any], exported: dict[str, Any]) -> None:
    directory, model = exported["dir"], exported["model"]
    shards = [path for group in model["weightsManifest"] for path in group["paths"]]
    count = len(shards)  # MobileNet V2 1.0's 9 MB in shards of at most 4 MB
    assert count >= 3 and shards == [f"group1-shard{i}of{count}.bin" for i in range(1, count + 1)]
    assert sorted(p.name for p in directory.iterdir()) == [".retrain-export.json", *sorted(shards),
                                                           "labels.txt", "model.json"]  # and the owner marker
    assert json.loads((directory / ".retrain-export.json").read_text())["files"] == [
        *sorted(shards), "labels.txt", "model.json"]
    assert (directory / "labels.txt").read_text(encoding="utf-8") == trained["labels"].read_text(encoding="utf-8")
    assert model["format"] == "graph-model"
    assert model["generatedBy"] == _tf().__version__
    labels = len(trained["label_list"])
    assert model["signature"] == {
        "inputs": {"image": {"name": "Placeholder:0", "dtype": "DT_FLOAT", "tensorShape": {
            "dim": [{"size": "-1"}, {"size": str(SIZE)}, {"size": str(SIZE)}, {"size": "3"}]}}},
        "outputs": {"prediction": {"name": "final_result:0", "dtype": "DT_FLOAT", "tensorShape": {
            "dim": [{"size": "-1"}, {"size": str(labels)}]}}},
    }
    metadata = model["userDefinedMetadata"]
    assert metadata["input"] == f"float32 [N, {SIZE}, {SIZE}, 3] RGB scaled to [0, 1] (pixel / 255)"
    assert "antialias" in metadata["input_preprocessing"] and "no crop" in metadata["input_preprocessing"]
    assert (metadata["input_height"], metadata["input_width"]) == (SIZE, SIZE)
    assert metadata["output_kind"] == "softmax" and metadata["num_labels"] == labels
    assert metadata["labels_file"] == "labels.txt" and "signature" not in metadata
    assert metadata["module"] == Path(trained["module"]).name  # not the trainer's path to it (probe HHH)


def test_label_image_given_the_model_json_says_it_is_a_tf_js_model(trained: dict[str, Any], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """label-image --graph web/model.json looked for its labels first and, finding none (no --labels, no classic
    default), said `no labels found` (probe EE); given --labels, that it was no frozen graph. It says what it is."""
    from retrain.cli import label_image_command
    from retrain.config import RetrainConfig
    from tests.conftest import invoke

    monkeypatch.setattr(RetrainConfig, "output_labels", tmp_path / "no_default.txt")
    model = trained["tfjs"] / "model.json"
    for labels in ([], ["--labels", str(trained["labels"])]):
        result = invoke(label_image_command, ["--graph", str(model), *labels, "--image", str(trained["test_paths"][0])],
                        expect=2)
        assert result.stderr == (f"label-image: error: --graph {model} is a TF.js model (for web pages and Node); "
                                 "label-image reads the frozen graph (--output_graph), the SavedModel folder "
                                 "(--saved_model_dir) or the .tflite file retrain wrote\n")
    # Its folder: it said 'a folder but not a SavedModel' (probe TT).
    result = invoke(label_image_command, ["--graph", str(model.parent), "--image", str(trained["test_paths"][0])],
                    expect=2)
    assert result.stderr.startswith(f"label-image: error: --graph {model.parent} is a TF.js model's folder (for web "
                                    "pages and Node); label-image reads the frozen graph"), result.stderr


def test_weights_manifest_matches_the_shards(exported: dict[str, Any]) -> None:
    directory, model = exported["dir"], exported["model"]
    (group,) = model["weightsManifest"]
    sizes = [(directory / path).stat().st_size for path in group["paths"]]
    expected = sum(math.prod(w["shape"]) * np.dtype(w["dtype"]).itemsize for w in group["weights"])
    assert sum(sizes) == expected
    assert all(size <= SHARD_BYTES for size in sizes)
    consts = [node for node in model["modelTopology"]["node"] if node["op"] == "Const"]
    assert [node["name"] for node in consts] == [w["name"] for w in group["weights"]]
    assert len({w["name"] for w in group["weights"]}) == len(group["weights"])
    for node in consts:  # values live in the shards only; dtype and shape stay for TF.js
        assert set(node["attr"]["value"]["tensor"]) <= {"dtype", "tensorShape"}
    assert {w["dtype"] for w in group["weights"]} <= {"float32", "int32", "bool"}


def test_topology_is_only_what_the_output_needs(trained: dict[str, Any], exported: dict[str, Any]) -> None:
    nodes = exported["model"]["modelTopology"]["node"]
    names = {node["name"] for node in nodes}
    assert {"Placeholder", "final_result"} <= names
    assert not {node["op"] for node in nodes} & {"Identity", "NoOp"}
    assert not [i for node in nodes for i in node.get("input", []) if i.startswith("^")]
    assert not [key for node in nodes for key in node.get("attr", {}) if key.startswith("_")]
    for node in nodes:  # every input refers to a node that is there
        for reference in node.get("input", []):
            assert reference.partition(":")[0] in names
    assert len(nodes) < len(parse_graph(trained["graph_bytes"]).node)


def test_rebuilt_graph_gives_the_frozen_graphs_probabilities(
        trained: dict[str, Any], exported: dict[str, Any], held_out_images: tuple[list[Path], np.ndarray]) -> None:
    _, images = held_out_images
    expected = run_graph(parse_graph(trained["graph_bytes"]), images)
    rebuilt = run_graph(rebuild_graph_def(exported["dir"]), images)
    assert rebuilt.shape == (len(images), len(trained["label_list"]))
    assert np.abs(rebuilt - expected).max() <= 1e-5
    assert (rebuilt.argmax(1) == expected.argmax(1)).all()


def test_unsupported_ops_lists_what_tfjs_cannot_run(trained: dict[str, Any]) -> None:
    tf = _tf()
    assert unsupported_ops(trained["graph_bytes"]) == []
    sigmoid = frozen_function_graph(lambda x: tf.sigmoid(tf.reduce_mean(x, [1, 2]), name="final_result"),
                                    shape=[None, 8, 8, 3])
    assert unsupported_ops(sigmoid) == []
    plain = frozen_function_graph(lambda x: tf.image.resize(x, [4, 4], method="bilinear"), shape=[None, 8, 8, 3])
    assert "ResizeBilinear" in {node.op for node in parse_graph(plain).node}
    assert unsupported_ops(plain) == []
    antialiased = frozen_function_graph(lambda x: tf.image.resize(x, [4, 4], method="bilinear", antialias=True),
                                        shape=[None, 8, 8, 3])
    assert unsupported_ops(antialiased) == ["ScaleAndTranslate"]
    assert "ScaleAndTranslate" not in SUPPORTED_OPS and {"Softmax", "Sigmoid", "ResizeBilinear"} <= SUPPORTED_OPS


def test_large_weights_are_sharded_and_sigmoid_is_described(tmp_path: Path) -> None:
    """Weights over 4 MB go into several shards (one weight spans two); a sigmoid output is named so."""
    tf = _tf()
    rng = np.random.default_rng(0)
    wide = rng.normal(0, 0.1, (3, 350_000)).astype(np.float32)  # 4.2 MB: crosses the first shard's end
    narrow = rng.normal(0, 0.01, (350_000, 4)).astype(np.float32)
    steps = np.array([1, 2], np.int64)  # int64 constants are narrowed to int32, as TF.js reads them

    def build(x: Any) -> Any:
        pooled = tf.reduce_mean(x, tf.constant(steps))
        return tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(pooled, wide)), narrow), name="final_result")

    graph = frozen_function_graph(build, shape=[None, 6, 6, 3])
    files = write_graph_model(tmp_path, graph, output_node="final_result", height=6, width=6,
                              labels=["a", "b", "c", "d"], metadata={"module": "home-made"})
    shards = [p for p in files if p.suffix == ".bin"]
    assert [p.name for p in shards] == ["group1-shard1of3.bin", "group1-shard2of3.bin", "group1-shard3of3.bin"]
    assert [p.stat().st_size for p in shards[:2]] == [SHARD_BYTES, SHARD_BYTES]
    model = json.loads((tmp_path / "model.json").read_text())
    assert model["userDefinedMetadata"]["output_kind"] == "sigmoid"
    assert model["userDefinedMetadata"]["module"] == "home-made"
    assert "int32" in {w["dtype"] for w in model["weightsManifest"][0]["weights"]}
    images = rng.uniform(0, 1, (3, 6, 6, 3)).astype(np.float32)
    expected = run_graph(parse_graph(graph), images)
    assert np.abs(run_graph(rebuild_graph_def(tmp_path), images) - expected).max() <= 1e-6


@pytest.mark.parametrize(("change", "message"), [
    ({"height": 299, "width": 299},
     r"input 'Placeholder' is float32 \[None, 224, 224, 3\]; expected float32 \[None, 299, 299, 3\]"),
    ({"output_node": "scores"}, "no node 'scores'"),
    ({"input_node": "images"}, "no Placeholder named 'images'"),
    ({"labels": ["a", "b"]}, "has 5 outputs but 2 labels"),
    ({"labels": ["a", "b\nc", "d", "e", "f"]}, "cannot be a line of labels.txt"),
    ({"metadata": {"signature": {}}}, "reserved"),
    ({"metadata": {"input": "uint8"}}, "reserved"),
    ({"metadata": {"module": Path("not JSON")}}, "plain JSON values"),
])
def test_refuses_a_graph_that_does_not_fit(trained: dict[str, Any], tmp_path: Path, change: dict[str, Any],
                                           message: str) -> None:
    arguments = {"output_node": "final_result", "height": SIZE, "width": SIZE, "labels": trained["label_list"],
                 **change}
    with pytest.raises(RetrainError, match=message):
        write_graph_model(tmp_path, trained["graph_bytes"], **arguments)
    assert list(tmp_path.iterdir()) == []


def test_refuses_unsupported_ops_bad_bytes_and_a_used_folder(trained: dict[str, Any], tmp_path: Path) -> None:
    tf = _tf()
    antialiased = frozen_function_graph(
        lambda x: tf.nn.softmax(tf.reduce_mean(tf.image.resize(x, [4, 4], antialias=True), [1, 2]),
                                name="final_result"), shape=[None, 8, 8, 3])
    with pytest.raises(RetrainError, match="cannot run these ops of the graph: ScaleAndTranslate"):
        write_graph_model(tmp_path, antialiased, output_node="final_result", height=8, width=8,
                          labels=["r", "g", "b"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RetrainError, match="not a TensorFlow GraphDef"):
        unsupported_ops(b"\xff\xfe not a graph")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(RetrainError, match="already holds model.json"):
        write_graph_model(tmp_path, trained["graph_bytes"], output_node="final_result", height=SIZE, width=SIZE,
                          labels=trained["label_list"])
    with pytest.raises(RetrainError, match="does not exist"):
        write_graph_model(tmp_path / "missing", trained["graph_bytes"], output_node="final_result", height=SIZE,
                          width=SIZE, labels=trained["label_list"])


# ---------------------------------------------------------------- the real TF.js (integration)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """tests/js/node_modules with the pinned @tensorflow packages (npm ci from the committed lock file)."""
    marker = JS / "node_modules" / "@tensorflow" / "tfjs-converter" / "package.json"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the TF.js checks need Node 20 and npm")
    if not marker.exists():
        result = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=JS, check=False,
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"npm ci in {JS} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return JS / "node_modules"


def node(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(["node", *args], check=False, capture_output=True, text=True, timeout=timeout, cwd=JS)
    if result.returncode != 0:
        pytest.fail(f"node {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


@pytest.mark.integration
def test_supported_ops_match_the_installed_tfjs(node_modules: Path) -> None:
    converter = node_modules / "@tensorflow" / "tfjs-converter"
    assert json.loads((converter / "package.json").read_text())["version"] == TFJS_VERSION
    operations = converter / "dist" / "operations"
    # The op lists the OperationMapper imports (not every file in op_list/: it leaves some out).
    lists = re.findall(r"from '\./op_list/(\w+)'", (operations / "operation_mapper.js").read_text())
    assert len(lists) > 10
    mapped = {name for module in lists
              for name in re.findall(r"'tfOpName':\s*'(\w+)'", (operations / "op_list" / f"{module}.js").read_text())}
    assert mapped == SUPPORTED_OPS


@pytest.mark.integration
def test_tfjs_in_node_gives_the_frozen_graphs_probabilities(node_modules: Path, small: dict[str, Any],
                                                           tmp_path: Path) -> None:
    images = np.stack([load_image(p, height=SIZE, width=SIZE) for p in held_out(small, 2)])
    images.astype("<f4").tofile(tmp_path / "inputs.bin")
    answer = json.loads(node("run_model.mjs", str(small["tfjs"]), str(tmp_path / "inputs.bin"), str(len(images))))
    expected = run_graph(parse_graph(small["graph_bytes"]), images)
    probabilities = np.array(answer["probabilities"], dtype=np.float32)
    print(f"TF.js {answer['tfjs']} ({answer['backend']}): load {answer['load_ms']:.0f} ms, "
          f"{len(images)} images in {answer['predict_ms']:.0f} ms, max |dp| {np.abs(probabilities - expected).max():.2e}")
    assert answer["tfjs"] == TFJS_VERSION and answer["backend"] == "cpu"
    assert answer["inputNodes"] == ["image"] and answer["outputNodes"] == ["prediction"]
    assert answer["input"] == {"name": "Placeholder", "shape": [-1, SIZE, SIZE, 3], "dtype": "float32"}
    assert answer["metadata"]["input"].startswith(f"float32 [N, {SIZE}, {SIZE}, 3] RGB scaled to [0, 1]")
    assert probabilities.shape == expected.shape
    assert np.abs(probabilities - expected).max() <= 1e-4
    assert (probabilities.argmax(1) == expected.argmax(1)).all()


@pytest.mark.integration
def test_page_resize_equals_tensorflows(node_modules: Path, tmp_path: Path) -> None:
    """examples/web/resize.js against TensorFlow's antialiased resize (what serving_bytes uses, within 2e-6) and
    training's (retrain.images.resize, Pillow's filter: within RESIZE_TOLERANCE), shrinking and enlarging photos."""
    photos = [sorted((FLOWERS / "daisy").iterdir())[0], sorted((FLOWERS / "roses").iterdir())[0], PHOTOS / "cat.bmp",
              PHOTOS / "cat_720p.jpg"]
    for photo in photos:
        rgb = decode_rgb(read_bytes(require(photo)))
        rgb.tofile(tmp_path / "pixels.bin")
        for height, width in [(SIZE, SIZE), (299, 299), (rgb.shape[0] * 2, rgb.shape[1] + 7)]:
            node("resize_image.mjs", str(tmp_path / "pixels.bin"), str(rgb.shape[1]), str(rgb.shape[0]), "3",
                 str(width), str(height), str(tmp_path / "out.bin"))
            page = np.fromfile(tmp_path / "out.bin", "<f4").reshape(height, width, 3)
            tensorflow = resize_tensor(rgb, height=height, width=width).numpy()
            difference = np.abs(page - tensorflow).max()
            assert difference <= 2e-6, f"{photo.name} -> {height}x{width}: max difference {difference}"
            assert np.abs(page - resize(rgb, height=height, width=width)).max() <= RESIZE_TOLERANCE


def _check_web_page() -> Any:
    spec = importlib.util.spec_from_file_location("check_web_page", ROOT / "benchmarks" / "check_web_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_web_page_agrees_with_label_image(node_modules: Path, small: dict[str, Any], tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    photos = held_out(small, 10)
    assert len(photos) == 50
    screenshot = tmp_path / "page.png"
    checker = _check_web_page()
    # As the README has it, the export may already sit in the page's folder as `model/` (a traceback, probe BB).
    checker.WEB = tmp_path / "web"
    shutil.copytree(ROOT / "examples" / "web", checker.WEB, ignore=shutil.ignore_patterns("model"))
    shutil.copytree(small["tfjs"], checker.WEB / "model")
    summary = checker.check_page(model_dir=small["tfjs"], graph=small["graph"], labels=small["labels"],
                                 photos=photos, screenshot=screenshot)
    print(json.dumps({key: value for key, value in summary.items() if key != "rows"}, indent=2))
    assert summary["total"] == 50
    assert summary["agree"] >= 49, summary["disagreements"]
    assert summary["console_errors"] == []
    assert all(row["state"] == "done" for row in summary["rows"])
    assert {row["via"] for row in summary["rows"]} == {"choose", "drop"}
    assert screenshot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.integration
def test_web_page_shows_a_multi_label_models_labels_at_their_thresholds(node_modules: Path, flowers_bottlenecks: Path,
                                                                         tmp_path: Path) -> None:
    """A multi-label model (a CSV: each flower's class, and 'yellow' for daisies, dandelions and sunflowers):
    the page shows, per photo, exactly the labels label-image gives, those at or above their thresholds, not the
    top 5 of its 6 labels."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    classes = sorted(p for p in require(FLOWERS).iterdir() if p.is_dir())
    rows = ["path,labels"]
    for class_dir in classes:
        yellow = " yellow" if class_dir.name in ("daisy", "dandelion", "sunflowers") else ""
        rows += [f"{class_dir.name}/{photo.name},{class_dir.name}{yellow}"
                 for photo in sorted(class_dir.iterdir())[:TRAIN_PER_CLASS]]
    table = tmp_path / "tags.csv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    run_script("-m", "retrain", *flags(
        image_dir=FLOWERS, labels_csv=table, tfhub_module=require(MODULES / "mobilenet_v2_035_224"),
        how_many_training_steps=200, output_graph=out / "graph.pb", output_labels=out / "labels.txt",
        summaries_dir=out / "logs", bottleneck_dir=flowers_bottlenecks, checkpoint_path=out / "checkpoint" / "ckpt",
        output_tfjs=out / "web"))
    assert "thresholds" in json.loads((out / "web" / "model.json").read_text())["userDefinedMetadata"]
    photos = [p for d in classes for p in sorted(d.iterdir())[TRAIN_PER_CLASS:TRAIN_PER_CLASS + 2]]
    summary = _check_web_page().check_page(model_dir=out / "web", graph=out / "graph.pb", labels=out / "labels.txt",
                                           photos=photos)
    print(json.dumps(summary["rows"], indent=2))
    assert summary["total"] == 10
    assert summary["agree"] == 10, summary["disagreements"]
    assert summary["console_errors"] == []
    assert all(isinstance(row["page"], list) for row in summary["rows"])
    assert any(len(row["page"]) < 5 for row in summary["rows"])  # thresholds, not the top 5, decide


def test_output_tfjs_refuses_a_model_tfjs_cannot_run_before_any_work(colour_tree: Path, outputs,
                                                                     tmp_path: Path) -> None:
    """A module whose graph holds an op TF.js lacks (here tf.image.resize's antialiased ScaleAndTranslate): said
    before the vectors are computed, not after training with the other outputs written."""
    from retrain.cli import retrain_command
    from tests.conftest import invoke

    tf = _tf()

    class Resizing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images: Any) -> Any:
            return tf.reduce_mean(tf.image.resize(images, [16, 16], antialias=True), [1, 2])

    tf.saved_model.save(Resizing(), str(tmp_path / "resizing"))
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tmp_path / "resizing",
                                           output_tfjs=tmp_path / "web", **outputs), expect=1)
    assert "--output_tfjs: TF.js 4.22.0 cannot run ScaleAndTranslate, which this model needs" in result.stderr
    assert "Bottlenecks" not in result.stderr and not (tmp_path / "web").exists()
    assert not outputs["output_graph"].exists()


def test_tfjs_holds_a_mix_of_modules_of_different_sizes(mixed_sizes: dict[str, Any]) -> None:
    """The members' resize is matrix products TF.js runs: the model is written, and the graph rebuilt from it
    gives the frozen graph's scores (the real TF.js runs it in the integration test below)."""
    graph_bytes = mixed_sizes["graph"].read_bytes()
    assert unsupported_ops(graph_bytes) == []
    model = json.loads((mixed_sizes["web"] / "model.json").read_text())
    assert model["signature"]["inputs"]["image"]["tensorShape"]["dim"][1:] == [{"size": "32"}] * 2 + [{"size": "3"}]
    images = mixed_sizes["images"]
    expected = run_graph(parse_graph(graph_bytes), images)
    assert np.abs(run_graph(rebuild_graph_def(mixed_sizes["web"]), images) - expected).max() <= 1e-5


@pytest.mark.integration
def test_tfjs_in_node_runs_a_mix_of_modules_of_different_sizes(node_modules: Path, mixed_sizes: dict[str, Any],
                                                               tmp_path: Path) -> None:
    images = mixed_sizes["images"]
    images.astype("<f4").tofile(tmp_path / "inputs.bin")
    answer = json.loads(node("run_model.mjs", str(mixed_sizes["web"]), str(tmp_path / "inputs.bin"),
                             str(len(images))))
    expected = run_graph(parse_graph(mixed_sizes["graph"].read_bytes()), images)
    assert answer["input"]["shape"] == [-1, 32, 32, 3]
    assert np.abs(np.array(answer["probabilities"], dtype=np.float32) - expected).max() <= 1e-4


def test_tfjs_names_a_local_module_by_its_folder_however_it_was_given(colour_tree: Path, tiny_module: Path, outputs,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The web model is published: a relative path to the module (`./mods/x/`, `../../alice/models/x`) went out
    in its metadata as typed; only an absolute one was reduced to the folder's name (probe XXX)."""
    from retrain.cli import retrain_command
    from tests.conftest import invoke

    monkeypatch.chdir(tiny_module.parent)
    given = f"./{tiny_module.name}/"
    invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=given, how_many_training_steps=5,
                                  output_tfjs=tmp_path / "web", **outputs))
    model = json.loads((tmp_path / "web" / "model.json").read_text())
    assert model["userDefinedMetadata"]["module"] == tiny_module.name
