"""Hostile image trees and flag values: one clear line, the right exit status, never a traceback.

Usage errors (exit 2) stop before any work: no TensorFlow module is loaded and
no bottleneck is computed. Trees that can still train do, with a warning.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from retrain.cli import retrain_command
from retrain.config import RetrainConfig
from retrain.pipeline import run
from tests.conftest import retrain_cli as retrain, COLOURS, EARLIER_GRAPH, colour_photo, flags, invoke, \
    make_colour_tree, run_script, save_tiny_module


def no_work_done(outputs: dict[str, Path]) -> bool:
    """Nothing computed or written: no bottleneck shard, no model file."""
    shards = list(outputs["bottleneck_dir"].rglob("shard-*")) if outputs["bottleneck_dir"].exists() else []
    return not shards and not outputs["output_graph"].exists() and not outputs["output_labels"].exists()


# --- trees ------------------------------------------------------------------------------------------

def test_empty_image_dir(tmp_path: Path, tiny_module: Path, outputs) -> None:
    (tmp_path / "empty").mkdir()
    error = retrain(tmp_path / "empty", tiny_module, outputs, expect=1)
    assert "found no class folders with images in --image_dir" in error and "need at least 2 sub-folders" in error
    assert no_work_done(outputs)


def test_missing_image_dir(tmp_path: Path, tiny_module: Path, outputs) -> None:
    error = retrain(tmp_path / "nowhere", tiny_module, outputs, expect=2)
    assert error == (f"retrain: error: --image_dir {tmp_path / 'nowhere'} does not exist; "
                     "expected a folder with one sub-folder per class")
    assert no_work_done(outputs)


def test_file_instead_of_image_dir(tmp_path: Path, tiny_module: Path, outputs) -> None:
    photo = colour_photo(tmp_path / "one.jpg", COLOURS["red"], seed=1)
    error = retrain(photo, tiny_module, outputs, expect=2)
    assert f"--image_dir {photo} is a file; expected a folder" in error
    assert no_work_done(outputs)


def test_one_class_only(tmp_path: Path, tiny_module: Path, outputs) -> None:
    tree = make_colour_tree(tmp_path / "photos", classes={"red": COLOURS["red"]})
    error = retrain(tree, tiny_module, outputs, expect=1)
    assert "found 1 class folder with images in --image_dir" in error and "need at least 2" in error
    assert no_work_done(outputs)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_tiny_class_still_trains(tmp_path: Path, tiny_module: Path, outputs, count: int) -> None:
    tree = make_colour_tree(tmp_path / "photos", classes={"red": COLOURS["red"], "green": COLOURS["green"]})
    for i in range(count):
        colour_photo(tree / "blue" / f"blue_{i}.jpg", COLOURS["blue"], seed=500 + i)
    result = retrain(tree, tiny_module, outputs)
    assert outputs["output_labels"].read_text() == "blue\ngreen\nred\n"
    assert re.search(rf"class 'blue' has (only )?{count} image\(s\)", result.stderr), result.stderr
    assert "Final test accuracy" in result.stdout


def test_many_small_classes_get_one_warning_and_no_repeats(tmp_path: Path, tiny_module: Path, outputs) -> None:
    tree = make_colour_tree(tmp_path / "photos", per_class=4,
                            classes={"red": COLOURS["red"], "green": COLOURS["green"]})
    for i in range(6):  # six one-photo classes: one warning names three and counts the rest
        colour_photo(tree / f"tiny_{i}" / "only.jpg", COLOURS["blue"], seed=700 + i)
    result = retrain(tree, tiny_module, outputs, testing_percentage=60, validation_percentage=30)
    small = [line for line in result.stderr.splitlines() if "training on all" in line]
    assert len(small) == 1, result.stderr  # not one line per class, and not again once the vectors are in
    assert re.search(r"\d+ classes have too few images to fill every split and none in training; training on all "
                     r"their images .*: '\w+', '\w+', '\w+' and [1-9]\d* more", small[0]), small[0]


def test_a_misclassified_listing_keeps_one_line_per_image(tmp_path: Path, tiny_module: Path, outputs) -> None:
    tree = make_colour_tree(tmp_path / "photos", per_class=12)
    for path in sorted(tree.rglob("*.jpg")):
        path.rename(path.with_name(path.stem + "\nsecond line.jpg"))
    result = retrain(tree, tiny_module, outputs, how_many_training_steps=1, learning_rate=1e-6,
                     print_misclassified_test_images=True, testing_percentage=40)
    listed = result.stdout.split("=== MISCLASSIFIED TEST IMAGES ===\n")[1].split("Wrote ")[0].strip().splitlines()
    assert listed and all("\\nsecond line.jpg" in line and line.split()[-1] in COLOURS for line in listed), listed


def test_the_misclassified_listing_tells_look_alike_labels_apart(tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Probe ZZS: `dog` and `dog ` were listed alike, where the table said `dog #2` and `dog  #3`."""
    tree = make_colour_tree(tmp_path / "photos", per_class=12, classes={"cat": COLOURS["blue"], "dog": COLOURS["red"],
                                                                        "dog ": COLOURS["red"]})  # confused
    result = retrain(tree, tiny_module, outputs, print_misclassified_test_images=True, testing_percentage=40)
    listed = result.stdout.split("=== MISCLASSIFIED TEST IMAGES ===\n")[1].split("Wrote ")[0].strip().splitlines()
    predicted = [name for line in listed for name in ("cat", "dog #2", "dog  #3") if line.endswith(f".jpg  {name}")]
    assert listed and len(predicted) == len(listed) and {"dog #2", "dog  #3"} & set(predicted), listed


def test_a_tilde_is_the_home_folder_even_where_the_shell_leaves_it(tmp_path: Path, tiny_module: Path, outputs,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    make_colour_tree(tmp_path / "photos", per_class=6)
    result = invoke(retrain_command, ["--image_dir=~/photos", f"--tfhub_module={tiny_module}",
                                      "--how_many_training_steps=5", "--logging_verbosity=WARNING",
                                      *flags(**outputs)])
    assert "Final test accuracy" in result.stdout and "INFO" not in result.stderr


def test_an_output_folder_that_is_a_file_is_called_a_file(colour_tree: Path, tiny_module: Path, outputs,
                                                          tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("not a folder")
    error = retrain(colour_tree, tiny_module, outputs, expect=2, output_graph=tmp_path / "notes" / "graph.pb")
    assert f"folder {tmp_path / 'notes'} is a file, not a folder" in error, error
    error = retrain(colour_tree, tiny_module, outputs, expect=2, bottleneck_dir="/dev/null")  # it was "a file"
    assert error == "retrain: error: --bottleneck_dir /dev/null is a device or a pipe; expected a folder"


def test_empty_class_folder_is_left_out(tmp_path: Path, tiny_module: Path, outputs) -> None:
    tree = make_colour_tree(tmp_path / "photos")
    (tree / "purple").mkdir()
    (tree / "purple" / "notes.txt").write_text("to do: take photos")
    (tree / "jfif").mkdir()  # JPEGs as Windows may save them: the warning says what the folder holds
    for index in range(3):
        shutil.copy(next((tree / "red").iterdir()), tree / "jfif" / f"photo{index}.JFIF")
    (tree / "jfif" / "readme").write_text("from my phone")
    (tree / "scans").mkdir()  # a format retrain does not read: renaming would not help
    for index in range(2):
        (tree / "scans" / f"scan{index}.tiff").write_bytes(b"II*\x00")
    result = retrain(tree, tiny_module, outputs)
    assert f"class folder {tree / 'scans'} has no images (.bmp, .gif, .jpeg, .jpg, .png, .webp), only 2 .tiff " \
           "file(s): photos in a format retrain does not read; convert them to JPEG or PNG; skipping it" \
        in result.stderr
    assert f"class folder {tree / 'purple'} has no images (.bmp, .gif, .jpeg, .jpg, .png, .webp), only 1 .txt " \
           "file(s): if they are photos in one of those formats, rename them; skipping it" in result.stderr
    assert f"class folder {tree / 'jfif'} has no images (.bmp, .gif, .jpeg, .jpg, .png, .webp), only 3 .jfif and " \
           "1 extension-less file(s)" in result.stderr
    assert outputs["output_labels"].read_text() == "blue\ngreen\nred\n"


def test_class_names_with_spaces_unicode_and_dots(tmp_path: Path, tiny_module: Path, outputs) -> None:
    names = {"sun flowers": COLOURS["red"], "café ☕ 花": COLOURS["green"], "v1.2.jpg": COLOURS["blue"]}
    tree = make_colour_tree(tmp_path / "photos", classes=names)
    retrain(tree, tiny_module, outputs)
    assert outputs["output_labels"].read_text(encoding="utf-8").splitlines() == sorted(names)


def test_nested_folders_belong_to_their_class(tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Chosen behaviour (kept from before): images in sub-folders of a class folder count for that class."""
    tree = make_colour_tree(tmp_path / "photos", per_class=6)
    nested = [colour_photo(tree / "red" / "2019" / "trip" / f"deep_{i}.jpg", COLOURS["red"], seed=900 + i)
              for i in range(4)]
    config = RetrainConfig(image_dir=tree, tfhub_module=str(tiny_module), how_many_training_steps=20,
                           **{k: v for k, v in outputs.items()})
    result = run(config)
    assert result.labels == ["blue", "green", "red"]  # no class named "2019" or "trip"
    red = result.labels.index("red")
    red_paths = {p for split in result.splits.values() for p, label in zip(split.paths, split.targets.ids) if label == red}
    assert set(nested) <= red_paths and len(red_paths) == 10


def test_folders_differing_only_by_case(tmp_path: Path, tiny_module: Path, outputs) -> None:
    tree = make_colour_tree(tmp_path / "photos", classes={"Red": COLOURS["red"], "red": (150, 20, 20),
                                                           "blue": COLOURS["blue"]})
    result = retrain(tree, tiny_module, outputs)
    assert "class folders 'Red' and 'red' differ only by letter case; they are trained as two classes" in result.stderr
    assert outputs["output_labels"].read_text() == "Red\nblue\nred\n"


# --- flags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"testing_percentage": 50, "validation_percentage": 50},
     "--testing_percentage 50 + --validation_percentage 50 leave no images for training; keep their sum below 100"),
    ({"testing_percentage": 60, "validation_percentage": 45}, "leave no images for training"),
    ({"testing_percentage": -5}, "--testing_percentage must be at least 0 and below 100, got -5"),
    ({"validation_percentage": 100}, "--validation_percentage must be at least 0 and below 100, got 100"),
    ({"how_many_training_steps": 0}, "--how_many_training_steps must be positive, got 0"),
    ({"how_many_training_steps": -10}, "--how_many_training_steps must be positive, got -10"),
    ({"train_batch_size": 0}, "--train_batch_size must be positive, got 0"),
    ({"train_batch_size": -2}, "--train_batch_size must be positive, got -2"),  # (-1: the classic meaning, said)
    ({"validation_batch_size": 0}, "--validation_batch_size must be positive, or -1 for the whole set; got 0"),
    ({"test_batch_size": -7}, "--test_batch_size must be positive, or -1 for the whole set; got -7"),
    ({"bottleneck_batch_size": 0}, "--bottleneck_batch_size must be positive, got 0"),
    ({"eval_step_interval": 0}, "--eval_step_interval must be positive, got 0"),
    ({"learning_rate": 0}, "--learning_rate must be positive, got 0.0"),  # a run that trains nothing
    ({"intermediate_store_frequency": -1}, "--intermediate_store_frequency must be 0 (never) or positive, got -1"),
])
def test_bad_numbers_stop_before_any_work(colour_tree: Path, tiny_module: Path, outputs, values, message) -> None:
    error = retrain(colour_tree, tiny_module, outputs, expect=2, **values)
    assert message in error
    assert no_work_done(outputs) and not outputs["bottleneck_dir"].exists()


def test_output_in_missing_folder(colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path) -> None:
    graph = tmp_path / "no" / "such" / "graph.pb"
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": graph}, expect=2)
    assert error == (f"retrain: error: --output_graph {graph}: folder {graph.parent} does not exist; "
                     "create it or choose another --output_graph")
    assert no_work_done(outputs)


def test_an_empty_optional_path_means_not_set_as_the_classic_saved_model_dir(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path, monkeypatch) -> None:
    """The classic default was `--saved_model_dir ''`: scripts that spell it out get no SavedModel, never one
    written into (or refused from) the current folder."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "mine.txt").write_text("the user's")
    monkeypatch.chdir(here)
    retrain(colour_tree, tiny_module, outputs, saved_model_dir="", output_tflite="", output_tfjs="", labels_csv="")
    assert outputs["output_graph"].is_file() and outputs["output_labels"].read_text().split() == sorted(COLOURS)
    assert sorted(p.name for p in here.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("flag", ["image_dir", "output_graph", "output_labels", "summaries_dir", "bottleneck_dir",
                                  "intermediate_output_graphs_dir", "checkpoint_path"])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
        colour_tree: Path, tiny_module: Path, outputs, flag: str, monkeypatch) -> None:
    monkeypatch.chdir(colour_tree)  # a tree that would train, were '' taken for '.'
    before = sorted(colour_tree.rglob("*"))
    error = retrain(colour_tree, tiny_module, {**outputs, flag: ""}, expect=2)  # (image_dir too: outputs come later)
    assert error == f"retrain: error: --{flag} is empty; give a path"
    assert no_work_done(outputs) and sorted(colour_tree.rglob("*")) == before


@pytest.mark.parametrize("flag", ["graph", "labels", "image"])
def test_label_image_refuses_an_empty_path(tmp_path: Path, flag: str) -> None:
    from retrain.cli import label_image_command

    values = {"graph": tmp_path / "graph.pb", "labels": tmp_path / "labels.txt", "image": tmp_path / "a.jpg", flag: ""}
    result = invoke(label_image_command, flags(**values), expect=2)
    assert result.stderr.strip() == f"label-image: error: --{flag} is empty; give a path"


# /sys refuses new files even to root (EACCES): an honest unwritable folder whoever runs the tests.
@pytest.mark.parametrize("flag, path, message", [
    ("output_graph", "/sys/graph.pb", "--output_graph /sys/graph.pb: cannot write in /sys (Permission denied)"),
    ("output_labels", "/sys/labels.txt", "--output_labels /sys/labels.txt: cannot write in /sys"),
    ("summaries_dir", "/sys/retrain_logs", "--summaries_dir /sys/retrain_logs: cannot write in /sys (Permission "
                                           "denied)"),
    ("checkpoint_path", "/sys/ckpt/ckpt", "--checkpoint_path /sys/ckpt: cannot write in /sys (Permission denied)"),
    ("saved_model_dir", "/sys/model", "--saved_model_dir /sys/model: cannot write in /sys"),
])
def test_output_in_unwritable_folder(colour_tree: Path, tiny_module: Path, outputs, flag, path, message) -> None:
    error = retrain(colour_tree, tiny_module, {**outputs, flag: Path(path)}, expect=2)
    assert message in error
    assert no_work_done(outputs)


@pytest.mark.parametrize("flag", ["bottleneck_dir", "summaries_dir", "intermediate_output_graphs_dir",
                                  "saved_model_dir", "output_tfjs", "checkpoint_path", "output_graph"])
def test_a_folder_output_at_a_broken_link_is_refused_before_any_work(colour_tree: Path, tiny_module: Path,
                                                                      outputs, tmp_path: Path, flag: str) -> None:
    """Not 'cannot be created (File exists)', nor, for the exports, 'Not a directory' once the rest is written.
    Below a broken link too (`gone/logs`, `gone/../logs`): --summaries_dir hung for ever at the end of the run,
    taking the error for another run's folder of that name, and the other folders failed after training, with
    'File exists' naming the link."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "unmounted" / "disk")
    extra = {"intermediate_store_frequency": 5} if flag == "intermediate_output_graphs_dir" else {}
    broken = f"is a broken link (to {tmp_path / 'unmounted' / 'disk'}); create its target or choose another --{flag}"
    if flag not in ("checkpoint_path", "output_graph"):  # these two name a file or a prefix in a folder
        error = retrain(colour_tree, tiny_module, {**outputs, flag: link, **extra}, expect=2)
        assert error.strip().endswith(f"--{flag} {link} {broken}"), error
    for below in ([link / "out" / "x"] if flag == "checkpoint_path" else [link / "x"] if flag == "output_graph" else
                  [link / "out", link / "deeper" / "out", Path(f"{link}/../out")]):
        error = retrain(colour_tree, tiny_module, {**outputs, flag: below, **extra}, expect=2)
        shown = below.parent if flag == "checkpoint_path" else below
        assert error.strip().endswith(f"--{flag} {shown}: {link} {broken}"), error
    assert no_work_done(outputs) and link.is_symlink() and not (tmp_path / "unmounted").exists()
    if flag == "summaries_dir":  # a link broken after the checks: the run folder is not taken for another run's
        from retrain.errors import RetrainError
        from retrain.insight.summaries import claim_run_dir

        with pytest.raises(RetrainError, match=f"cannot create the TensorBoard run folder {link}/out/run "
                                               r"\(--summaries_dir\): File exists"):
            claim_run_dir(link / "out" / "run")


def test_unreachable_module_handle(colour_tree: Path, outputs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    handle = "https://invalid.invalid/google/imagenet/mobilenet_v2/feature_vector/5"
    error = retrain(colour_tree, handle, outputs, expect=1)
    assert f"cannot fetch module --tfhub_module {handle}" in error
    assert f"TFHUB_CACHE_DIR={tmp_path / 'hub_cache'}" in error and "local SavedModel folder" in error
    assert no_work_done(outputs)


def test_module_folder_that_is_not_a_saved_model(colour_tree: Path, outputs, tmp_path: Path) -> None:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "README.txt").write_text("weights coming soon")
    error = retrain(colour_tree, folder, outputs, expect=2)
    assert f"--tfhub_module {folder} is not a SavedModel folder (no saved_model.pb inside)" in error
    assert no_work_done(outputs)
    error = retrain(colour_tree, folder / "README.txt", outputs, expect=2)  # a file: said so, not "no ... inside"
    assert f"--tfhub_module {folder / 'README.txt'} is a file; expected a folder holding a TF2 image" in error


def test_module_that_outputs_feature_maps(colour_tree: Path, outputs, tmp_path: Path) -> None:
    """A SavedModel mapping [N, 32, 32, 3] to [N, 8, 8, 4] feature maps, not [N, D] vectors."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class FeatureMaps(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            pooled = tf.nn.avg_pool2d(images, 4, 4, "VALID")
            return tf.concat([pooled, tf.reduce_mean(pooled, axis=3, keepdims=True)], axis=3)

    module = tmp_path / "feature_maps"
    tf.saved_model.save(FeatureMaps(), str(module))
    error = retrain(colour_tree, module, outputs, expect=1)
    assert f"--tfhub_module {module} outputs float32 [1, 8, 8, 4]; expected a float feature vector [N, D]" in error
    assert no_work_done(outputs)


@pytest.mark.parametrize("fails_on", ["photos", "every image"])
def test_a_module_that_fails_on_images_is_one_line_naming_its_cause(colour_tree: Path, outputs, tmp_path: Path,
                                                                    fails_on: str) -> None:
    """Probe ZZK: a module whose own check passes the blank probe image but fails on photos ended in a 40-line
    traceback; one that fails on every image was said to fail with 'Graph execution error:', TensorFlow's header."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class Picky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            features = tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])], axis=1)
            refused = tf.reduce_max(images) > 0.05 if fails_on == "photos" else tf.constant(True)
            tf.debugging.Assert(tf.logical_not(refused), ["this module refuses the input"])
            return features

    module = tmp_path / "picky"
    tf.saved_model.save(Picky(), str(module))
    error = retrain(colour_tree, module, outputs, expect=1)
    when, hint = ("a batch of 32 images", " (one that fails only on large batches takes a smaller "
                  "--bottleneck_batch_size)") if fails_on == "photos" else ("a [1, 32, 32, 3] float image batch", "")
    assert error == (f"retrain: error: --tfhub_module {module} failed on {when} (assertion failed: [this module "
                     f"refuses the input]); expected an image feature-vector module{hint}")
    assert not outputs["output_graph"].exists()


@pytest.mark.parametrize("kind", ["asserts", "nan", "nan_later", "nan_member", "pools", "pools_multi_label"])
def test_a_module_that_fails_only_on_distorted_images_is_one_line(colour_tree: Path, outputs, tmp_path: Path,
                                                                  tiny_module: Path, kind: str) -> None:
    """Probe ZZM: a module refusing pixels above 1 (brightness distortions give them) ended in a traceback when
    distorting on the fly; one giving NaN for them was blamed on --learning_rate at step 0 (and, when its NaN
    came at a later step, still was)."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class InRangeOnly(tf.Module):
        def __init__(self):
            super().__init__()
            self.training_batches = tf.Variable(0)

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            features = tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])], axis=1)
            bright = tf.reduce_max(images, axis=[1, 2, 3], keepdims=False)[:, None] > 1.0
            if kind == "nan_later":  # NaN from the 4th training batch (100 images; the cache's batches are 32)
                counted = tf.cond(tf.shape(images)[0] == 100, lambda: self.training_batches.assign_add(1),
                                  lambda: self.training_batches.read_value())
                bright = tf.logical_and(bright, counted > 3)
            if kind == "asserts":
                tf.debugging.Assert(tf.logical_not(tf.reduce_any(bright)), ["pixel above 1"])
                return features
            if kind.startswith("pools"):  # one vector for a batch of distorted images (probe ZZN: a multi-label
                return tf.cond(tf.reduce_any(bright), lambda: features[:1], lambda: features)  # loss broadcast it)
            return tf.where(bright, tf.fill(tf.shape(features), float("nan")), features)

    module = tmp_path / kind
    tf.saved_model.save(InRangeOnly(), str(module))
    modules = f"{tiny_module},{module}" if kind == "nan_member" else module  # (probe ZZS: which member, said)
    error = retrain(colour_tree, modules, outputs, expect=1, random_brightness=60, distortion_mode="on_the_fly",
                    multi_label=kind == "pools_multi_label")
    if not kind.startswith("nan"):
        cause = "assertion failed: [pixel above 1]" if kind == "asserts" else \
            "assertion failed: [the module gave another number of vectors than images]"
        assert error.startswith(f"retrain: error: --tfhub_module {module} failed during a training step on 100 "
                                f"images ({cause}"), error
        assert error.endswith("expected an image feature-vector module (one that fails only on large batches "
                              "takes a smaller --train_batch_size)"), error
    else:
        assert error == (f"retrain: error: training stopped at step {3 if kind == 'nan_later' else 0}: --tfhub_module "
                         f"{module} gave vectors holding NaN or infinity for that step's batch of training images; "
                         "check the module; nothing was exported")
    assert not outputs["output_graph"].exists()


def test_a_module_that_cannot_be_frozen_stops_at_its_first_intermediate_graph_in_one_line(
        colour_tree: Path, outputs, tmp_path: Path) -> None:
    """Probe ZZS: a module that counts its calls in a variable cannot be frozen into a graph; the final export said
    so in one line, but an intermediate graph's store ended the run in two tracebacks."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class Counting(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0)

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            self.calls.assign_add(1)
            return tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])], axis=1)

    module = tmp_path / "counting"
    tf.saved_model.save(Counting(), str(module))
    error = retrain(colour_tree, module, outputs, expect=1, intermediate_store_frequency=5)
    assert error.startswith("retrain: error: cannot write --intermediate_output_graphs_dir (ValueError: "), error
    assert not outputs["output_graph"].exists() and not list(outputs["intermediate_output_graphs_dir"].glob("*.pb"))


def test_a_module_that_gives_one_vector_too_few_caches_nothing(colour_tree: Path, outputs, tmp_path: Path) -> None:
    """Probe ZZM: a module dropping a row of large batches had its vectors stored under the wrong images' keys
    (then a KeyError traceback); the rerun trained on them, exit 0."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class DropsOne(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
        def __call__(self, images):
            features = tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])], axis=1)
            return tf.cond(tf.shape(images)[0] > 4, lambda: features[1:], lambda: features)

    module = tmp_path / "drops_one"
    tf.saved_model.save(DropsOne(), str(module))
    error = retrain(colour_tree, module, outputs, expect=1)
    assert error == (f"retrain: error: --tfhub_module {module} gave (31, 6) vectors for a batch of 32 images, "
                     "expected [32, 6]: one vector per image; expected an image feature-vector module")
    assert not list(outputs["bottleneck_dir"].rglob("shard-*"))


# --- nothing the user owns is deleted -----------------------------------------------------------------

def test_earlier_summaries_and_outputs_survive(colour_tree: Path, tiny_module: Path, outputs) -> None:
    logs = outputs["summaries_dir"]
    (logs / "my_old_run" / "train").mkdir(parents=True)
    (logs / "my_old_run" / "train" / "events.out.tfevents.1").write_bytes(b"precious")
    (logs / "notes.md").write_text("my notes")
    outputs["output_graph"].write_bytes(EARLIER_GRAPH)
    retrain(colour_tree, tiny_module, outputs)
    retrain(colour_tree, tiny_module, outputs)
    assert (logs / "my_old_run" / "train" / "events.out.tfevents.1").read_bytes() == b"precious"
    assert (logs / "notes.md").read_text() == "my notes"
    runs = [p for p in logs.iterdir() if p.is_dir() and p.name != "my_old_run"]
    assert len(runs) == 2 and all((run / "train").is_dir() for run in runs)
    assert outputs["output_graph"].read_bytes() != EARLIER_GRAPH  # replaced by a complete new graph
    leftovers = [p.name for p in outputs["output_graph"].parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_symlink_loops_inside_a_class_end(tmp_path: Path) -> None:
    """Two links back to their own folder would make a link-following walk branch 2^40 ways; it must stop."""
    tree = make_colour_tree(tmp_path / "photos", per_class=3)
    (tree / "red" / "again").symlink_to(".")
    (tree / "red" / "and_again").symlink_to(".")
    script = ("from pathlib import Path; from retrain.labels.folder import FolderSource; "
              f"tree = FolderSource(Path({str(tree)!r}), validation_percentage=0, testing_percentage=0).scan(); "
              "import collections; counts = collections.Counter(e.labels[0] for e in tree.examples); "
              "print(*(f'{label}={counts[label]}' for label in tree.names))")
    result = run_script("-c", script, timeout=60)
    assert result.stdout.split() == ["blue=3", "green=3", "red=3"]
    assert "leads back to a folder already scanned" in result.stderr


# --- several modules, CSV splits (a new user's findings) --------------------------------------------

def test_a_module_folder_whose_name_holds_a_comma_stays_whole_in_every_form(tmp_path: Path, colour_tree: Path,
                                                                           outputs) -> None:
    """The repeated flag and the API's list arrive joined by commas: a member folder 'tiny,8' is not split."""
    from retrain.config import module_list

    comma = save_tiny_module(tmp_path / "mods" / "tiny,8", feature_dim=8)
    other = save_tiny_module(tmp_path / "mods" / "other", feature_dim=4)
    assert module_list(f"{comma},{other}") == (str(comma), str(other))
    assert module_list(f"{other},{comma}") == (str(other), str(comma))
    assert module_list(f"{other}, {comma} ") == (str(other), str(comma))
    result = invoke(retrain_command, [*flags(image_dir=colour_tree, how_many_training_steps=20, **outputs),
                                      "--tfhub_module", str(comma), "--tfhub_module", str(other)])
    assert re.search(rf"feature source: {re.escape(str(comma))} \(8\) \+ {re.escape(str(other))} \(4\) -> 12 "
                     "features", result.stderr), result.stderr


def test_an_image_size_no_module_takes_is_refused_and_leaves_no_folder(tmp_path: Path, colour_tree: Path,
                                                                       outputs) -> None:
    """With one module that fixes its size a different --image_size is refused; with several that all fix theirs,
    too (it was ignored). Refused once the modules have loaded: no cache or summaries folder is left behind."""
    first = save_tiny_module(tmp_path / "mods" / "a", size=32, feature_dim=8)
    second = save_tiny_module(tmp_path / "mods" / "b", size=20, feature_dim=4)
    error = retrain(colour_tree, f"{first},{second}", outputs, expect=2, image_size=48)
    assert error == ("retrain: error: --image_size 48 has no effect: every --tfhub_module member fixes its input "
                     "size (32x32, 20x20); drop --image_size")
    assert not outputs["bottleneck_dir"].exists() and not outputs["summaries_dir"].exists()
    assert no_work_done(outputs)


def test_a_module_named_twice_in_two_spellings_is_refused_before_it_loads(tiny_module: Path, colour_tree: Path,
                                                                          outputs) -> None:
    error = retrain(colour_tree, f"{tiny_module},{tiny_module}/", outputs, expect=2)
    assert error == f"retrain: error: --tfhub_module {tiny_module},{tiny_module}/ names a module twice; give each " \
                    "module once"
    assert not outputs["bottleneck_dir"].exists() and not outputs["summaries_dir"].exists()


def _split_table(tree: Path, *, leave_one_to_the_hash: bool) -> Path:
    photos = sorted(p.relative_to(tree) for p in tree.rglob("*.jpg"))
    splits = ["training", "training", "validation", "testing"]
    rows = [[str(p), p.parent.name, splits[i % 4]] for i, p in enumerate(photos)]
    if leave_one_to_the_hash:
        rows[0][2] = ""
    table = tree.parent / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "labels", "split"], *rows])
    return table


def test_split_percentages_are_refused_when_every_csv_row_names_its_split(colour_tree: Path, tiny_module: Path,
                                                                          outputs) -> None:
    table = _split_table(colour_tree, leave_one_to_the_hash=False)
    error = retrain(colour_tree, tiny_module, outputs, expect=2, labels_csv=table, testing_percentage=30)
    assert error == (f"retrain: error: --testing_percentage 30 has no effect: every row of --labels_csv {table} "
                     "names its split; drop --testing_percentage or empty the split cells the percentages should "
                     "decide")
    assert no_work_done(outputs)
    # Typed at its default value, as the README promises for every flag with no effect (it was ignored, probe JJ);
    # the API's keyword likewise.
    error = retrain(colour_tree, tiny_module, outputs, expect=2, labels_csv=table, validation_percentage=10)
    assert error.startswith("retrain: error: --validation_percentage 10 has no effect: every row of --labels_csv")
    from retrain.api import retrain as retrain_api
    from retrain.errors import UsageError

    with pytest.raises(UsageError, match="--testing_percentage 10 has no effect"):
        retrain_api(colour_tree, tfhub_module=str(tiny_module), labels_csv=table, testing_percentage=10,
                    **{name: str(path) for name, path in outputs.items()})
    assert no_work_done(outputs)
    table = _split_table(colour_tree, leave_one_to_the_hash=True)  # one row left to the percentages: they count
    retrain(colour_tree, tiny_module, outputs, labels_csv=table, validation_percentage=20)
    report = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    assert report["run"]["flags"]["validation_percentage"] == 20


def test_no_test_images_from_a_csv_that_names_every_split_says_what_to_do(colour_tree: Path, tiny_module: Path,
                                                                             outputs) -> None:
    """It said "raise --testing_percentage", a flag such a CSV refuses."""
    photos = sorted(colour_tree.rglob("*.jpg"))
    table = colour_tree.parent / "no_test.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "labels", "split"],
                                      *[[str(p), p.parent.name, "validation" if i % 4 == 0 else "training"]
                                        for i, p in enumerate(photos)]])
    result = retrain(colour_tree, tiny_module, outputs, labels_csv=table)
    assert (f"Final test accuracy = n/a (N=0): no test images; every row of --labels_csv {table} names its split, "
            "so name some 'testing'") in result.stdout
    result = retrain(colour_tree, tiny_module, outputs, testing_percentage=0)
    assert "Final test accuracy = n/a (N=0): no test images; raise --testing_percentage or add images" in result.stdout
    # Percentages that leave (almost) nothing for training: every class trains on all its images (the small-class
    # rule), so "raise --testing_percentage" was wrong advice, and "has only 12 images" named the wrong cause.
    result = retrain(colour_tree, tiny_module, outputs, testing_percentage=99, validation_percentage=0.5)
    assert ("Final test accuracy = n/a (N=0): no test images; --testing_percentage 99 and --validation_percentage "
            "0.5 leave 0.5% for training, so each class trained on all its images; lower them, or add images"
            ) in result.stdout
    assert ("class 'blue' has 12 image(s), none in the training split (--testing_percentage 99 and "
            "--validation_percentage 0.5 leave 0.5% for training); training on all of them") in result.stderr
    assert "has only" not in result.stderr


def test_a_labels_csv_that_never_ends_is_refused_in_one_line(colour_tree: Path, tiny_module: Path, outputs) -> None:
    """/dev/zero (or a multi-gigabyte file) as --labels_csv: read up to its cap, not until memory runs out."""
    error = retrain(colour_tree, tiny_module, outputs, expect=2, labels_csv="/dev/zero")
    assert error == ("retrain: error: --labels_csv /dev/zero holds more than 1 GB; expected a CSV of image paths and "
                     "labels (split a larger table over several runs)")
    assert no_work_done(outputs)


def test_a_folder_given_as_the_graph_is_said_so_not_called_a_clash(colour_tree: Path, tiny_module: Path,
                                                                   outputs) -> None:
    """`--output_graph out/` with the checkpoint inside out/: it said '--checkpoint_path out/ck overlaps
    --output_graph out'."""
    out = outputs["output_graph"].parent
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": Path(f"{out}/"),
                                               "checkpoint_path": out / "ck"}, expect=2)
    assert error == (f"retrain: error: --output_graph {out} is a folder; expected a file path (move the folder or "
                     "choose another --output_graph)")


def test_a_labels_file_refused_beside_another_models_report_says_why(colour_tree: Path, tiny_module: Path,
                                                                     outputs) -> None:
    """Two models sharing a folder: the report beside the labels file is the other model's, so it cannot vouch for
    the file; the refusal says so instead of only calling the file foreign."""
    out = outputs["output_graph"].parent
    other = make_colour_tree(colour_tree.parent / "other", per_class=6, classes={"cyan": (0, 200, 200),
                                                                                "red": COLOURS["red"]})
    retrain(other, tiny_module, {**outputs, "output_graph": out / "b.pb", "output_labels": out / "b.txt"})
    outputs["output_labels"].write_text("blue\nred\n")  # this model's labels from before a class was added
    error = retrain(colour_tree, tiny_module, outputs, expect=2)
    hint = (f"move the file or choose another --output_labels (the {out / 'report.json'} beside it lists other "
            "labels, so it cannot vouch for this file: if retrain wrote it for another model in that folder, give "
            "each model its own folder)")
    assert error.endswith(hint), error
    link = colour_tree.parent / "elsewhere" / "labels.txt"  # judged by the file it leads to, hint and all
    link.parent.mkdir()
    link.symlink_to(outputs["output_labels"])
    error = retrain(colour_tree, tiny_module, {**outputs, "output_graph": link.with_name("g.pb"),
                                               "output_labels": link}, expect=2)
    assert error.endswith(hint), error
    shutil.copyfile(next((colour_tree / "red").iterdir()), outputs["output_labels"])  # a photo: no one's labels
    error = retrain(colour_tree, tiny_module, outputs, expect=2)
    assert error.endswith("(it is a JPEG image); retrain replaces only such a file there: move the file or choose "
                          "another --output_labels"), error
