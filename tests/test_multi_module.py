"""Several modules at once on the real fixture modules: MobileNet V2 1.0 (1,280 features) + MobileNet V1 0.75
(768), both at 224. Each member is cached on its own; every export holds both and agrees with the in-process model."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import label_image_command
from retrain.config import RetrainConfig
from retrain.images import load_image
from retrain.tfenv import import_tensorflow
from tests.conftest import FLOWERS, MODULES, frozen_graph_scores, invoke, require

# Three retrains with two real modules and every export: about a minute, so with the integration tests
# (CI runs them); tests/test_seams.py covers two members with the home-made module in the default run.
pytestmark = pytest.mark.integration

MEMBERS = ("mobilenet_v2_100_224", "mobilenet_v1_075_224")
PER_CLASS = 16


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("two_modules") / "photos"
    for class_dir in sorted(p for p in require(FLOWERS).iterdir() if p.is_dir()):
        (tree / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:PER_CLASS]:
            shutil.copyfile(photo, tree / class_dir.name / photo.name)
    return tree


def retrain(photos: Path, out: Path, modules: list[str], **extra: object):
    from retrain.pipeline import run

    config = RetrainConfig(image_dir=photos, tfhub_module=",".join(str(require(MODULES / m)) for m in modules),
                           output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
                           bottleneck_dir=out.parent / "cache", checkpoint_path=out / "ckpt" / "c",
                           how_many_training_steps=300, testing_percentage=30, **extra)
    stderr, stdout = io.StringIO(), io.StringIO()
    handler = __import__("logging").StreamHandler(stderr)
    logger = __import__("logging").getLogger("retrain")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel("INFO")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            result = run(config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return config, result, stderr.getvalue()


@pytest.fixture(scope="module")
def both(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    """First one member alone, then the pair: the pair computes only the second member's vectors."""
    root = tmp_path_factory.mktemp("runs")
    (root / "alone").mkdir()
    _, _, alone = retrain(photos, root / "alone", [MEMBERS[0]])
    (root / "both").mkdir()
    config, result, log = retrain(photos, root / "both", list(MEMBERS), saved_model_dir=root / "both" / "saved",
                                  output_tflite=root / "both" / "model.tflite")
    return config, result, alone, log, root


def computed(log: str) -> dict[str, int]:
    """Vectors each member had to compute, from the 'Bottlenecks (...): X cached, Y to compute' lines."""
    return {Path(name).name: int(count) for name, count in
            re.findall(r"Bottlenecks \(([^)]+)\): \d+ cached, (\d+) to compute", log)}


def test_each_member_is_cached_on_its_own(both, photos: Path) -> None:
    config, result, alone, log, root = both
    assert "80 to compute" in alone
    assert computed(log) == {MEMBERS[1]: 5 * PER_CLASS}  # the first member came from the cache
    assert result.source.dim == 1280 + 768 and result.head.weights.shape == (2048, 5)
    (root / "reversed").mkdir()
    _, _, reversed_log = retrain(photos, root / "reversed", list(reversed(MEMBERS)))
    assert "to compute" not in reversed_log, "B,A after A,B computes nothing"


def test_every_export_holds_both_members_and_agrees_with_the_in_process_model(both) -> None:
    config, result, _, _, _ = both
    tf = import_tensorflow()
    test = result.splits["testing"]
    expected = result.head.probabilities(test.vectors)
    images = np.stack([load_image(p, height=224, width=224) for p in test.paths])
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(config.output_graph.read_bytes())
    names = {node.name: node for node in graph_def.node}
    assert names["Placeholder"].op == "Placeholder" and names["final_result"].op == "Softmax"
    frozen = frozen_graph_scores(config.output_graph, images)
    saved = tf.saved_model.load(str(config.saved_model_dir))
    served = saved.signatures["serving_default"](image=tf.constant(images))["prediction"].numpy()
    from_bytes = saved.signatures["serving_bytes"](
        image_bytes=tf.constant([p.read_bytes() for p in test.paths]))["prediction"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_path=str(config.output_tflite)).get_signature_runner("serving_default")
    lite = runner(image=images)["prediction"]
    for name, scores in (("frozen graph", frozen), ("SavedModel", served), ("SavedModel bytes", from_bytes),
                         ("TFLite", lite)):
        np.testing.assert_allclose(scores, expected, atol=1e-4, err_msg=name)


def test_label_image_runs_the_pair_with_no_layer_or_size_flag(both) -> None:
    config, result, _, _, _ = both
    test = result.splits["testing"]
    expected = result.head.probabilities(test.vectors[:4])
    for model in (config.output_graph, config.saved_model_dir, config.output_tflite):
        records = json.loads(invoke(label_image_command, ["--graph", str(model), "--labels", str(config.output_labels),
                                                          "--json", *map(str, test.paths[:4])]).stdout)
        scores = np.array([[next(p["score"] for p in r["predictions"] if p["label"] == label)
                            for label in result.labels] for r in records])
        np.testing.assert_allclose(scores, expected, atol=1e-4, err_msg=str(model))
