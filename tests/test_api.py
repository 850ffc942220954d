"""The Python API (retrain.api) and the quickstart example: the same run, checks and files as the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain import api
from retrain.cli import label_image_command, retrain_command
from retrain.config import RetrainConfig
from tests.conftest import FIXTURES, FLOWERS, flags, invoke, require, run_script

ROOT = Path(__file__).resolve().parents[1]


def test_retrain_returns_labels_head_accuracy_per_split_and_files(colour_tree: Path, tiny_module: Path,
                                                                  outputs) -> None:
    result = api.retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=200,
                         learning_rate=0.1, log_level=None, **outputs)
    assert result.labels == ["blue", "green", "red"]
    assert result.head.weights.shape == (8, 3) and result.head.biases.shape == (3,)
    assert set(result.accuracy) == {"training", "validation", "testing"}
    train = result.splits["training"]
    expected = float(np.mean(result.head.probabilities(train.vectors).argmax(1) == train.targets.ids))
    assert result.accuracy["training"] == pytest.approx(expected) and expected >= 0.9
    assert list(result.written) == [outputs["output_graph"], outputs["output_labels"],
                                    outputs["output_labels"].parent / "report.json"]
    assert all(path.exists() for path in result.written)


def test_classify_gives_what_label_image_json_prints(colour_tree: Path, tiny_module: Path, outputs) -> None:
    api.retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=50, log_level=None, **outputs)
    photos = sorted(colour_tree.rglob("*_001.jpg"))
    records = api.classify(photos, graph=outputs["output_graph"], labels=outputs["output_labels"], top_k=2)
    printed = json.loads(invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                                      str(outputs["output_labels"]), "--top_k", "2", "--json",
                                                      *map(str, photos)]).stdout)
    assert records == printed and len(records) == 3 and len(records[0]["predictions"]) == 2


@pytest.mark.parametrize("flags_, message", [
    ({"learning_rate": float("nan")}, "--learning_rate must be a finite number, got nan"),
    ({"how_many_training_steps": 0}, "--how_many_training_steps must be positive, got 0"),
    ({"tflite_quantization": "int4", "output_tflite": "/tmp/m.tflite"}, "--tflite_quantization int4: expected"),
])
def test_bad_values_raise_the_command_lines_message_before_any_work(colour_tree: Path, outputs, flags_,
                                                                    message: str) -> None:
    with pytest.raises(api.UsageError) as error:
        api.retrain(colour_tree, log_level=None, **{**outputs, **flags_})
    cli_flags = {k: v for k, v in flags_.items()}
    printed = invoke(retrain_command, flags(image_dir=colour_tree, **outputs, **cli_flags), expect=2).stderr
    assert message in str(error.value) and f"retrain: error: {error.value}" in printed
    assert not outputs["bottleneck_dir"].exists()


@pytest.mark.parametrize("flags_, message", [
    ({"how_many_training_step": 100}, "retrain() has no flag 'how_many_training_step'; did you mean "
                                      "'how_many_training_steps'?"),
    ({"how_many_training_steps": "100"}, "--how_many_training_steps must be a whole number, got '100'"),
    ({"learning_rate": "0.1"}, "--learning_rate must be a number, got '0.1'"),
    ({"flip_left_right": "yes"}, "--flip_left_right must be True or False, got 'yes'"),
    ({"image_size": 224.5}, "--image_size must be a whole number, got 224.5"),
    ({"output_graph": 5}, "--output_graph must be a path, got 5"),
])
def test_wrong_names_and_types_from_python_are_one_line_before_any_work(colour_tree: Path, outputs, flags_,
                                                                         message: str) -> None:
    with pytest.raises(api.UsageError) as error:
        api.retrain(colour_tree, log_level=None, **{**outputs, **flags_})
    assert str(error.value) == message
    assert not outputs["bottleneck_dir"].exists()


def test_numpy_numbers_and_lists_are_fine_from_python(colour_tree: Path, outputs) -> None:
    config = RetrainConfig(colour_tree, how_many_training_steps=np.int64(5), learning_rate=np.float32(0.5),
                           tflite_quantization=["float32", "int8"], output_tflite="m.tflite", **outputs)
    assert (config.how_many_training_steps, config.tflite_quantization) == (5, ("float32", "int8"))


def test_classify_names_a_wrong_flag_and_type(tmp_path: Path) -> None:
    with pytest.raises(api.UsageError, match=r"^classify\(\) has no flag 'topk'; did you mean 'top_k'\?$"):
        api.classify([tmp_path / "a.jpg"], topk=3)
    with pytest.raises(api.UsageError, match=r"^--top_k must be a whole number, got '3'$"):
        api.classify([tmp_path / "a.jpg"], top_k="3")


@pytest.mark.integration  # a fresh process, a real module and 75 photos: CI runs it with the integration tests
def test_the_quickstart_example_runs_the_whole_job(tmp_path: Path) -> None:
    """`python examples/quickstart.py`: here on 15 fixture photos per class, the module by its short name
    resolved offline through a pre-filled TFHUB_CACHE_DIR, as a user's machine resolves it online."""
    photos = tmp_path / "flower_photos"
    for class_dir in sorted(p for p in require(FLOWERS).iterdir() if p.is_dir()):
        (photos / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:15]:
            shutil.copyfile(photo, photos / class_dir.name / photo.name)
    hub_cache = tmp_path / "hub_cache"
    shutil.copytree(require(FIXTURES / "tfhub_cache"), hub_cache)
    result = run_script(str(ROOT / "examples" / "quickstart.py"), "--image_dir", str(photos), "--output_dir",
                        str(tmp_path / "out"), "--steps", "300", env={"TFHUB_CACHE_DIR": str(hub_cache)},
                        timeout=600)
    assert "Accuracy per split: training" in result.stdout
    assert "(a held-out photo of " in result.stdout and "Next: label-image" in result.stdout
    assert (tmp_path / "out" / "graph.pb").exists() and (tmp_path / "out" / "saved_model" / "saved_model.pb").exists()


def test_the_quickstart_example_says_in_one_line_when_it_cannot_fetch_the_photos(tmp_path: Path) -> None:
    result = run_script(str(ROOT / "examples" / "quickstart.py"), "--image_dir", str(tmp_path / "flower_photos"),
                        "--output_dir", str(tmp_path / "out"), check=1, timeout=120)
    assert result.stderr.strip().startswith("Downloading ")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("quickstart: error: cannot fetch the flower photos") and "--image_dir" in last
    assert not (tmp_path / "flower_photos").exists()
