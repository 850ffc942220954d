"""Multi-label retraining from a CSV, end to end on real photos: mosaics of 2-4 fixture flowers, labelled with
their tiles' classes. One module-scoped run (MobileNet V2 0.35) writes every export; the tests read them
(integration tests: about a minute; CI runs them). The same path on Pillow-drawn photos and the home-made
module runs in the default suite (test_a_tiny_multi_label_run...)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import label_image_command, retrain_command
from retrain.config import RetrainConfig
from retrain.images import load_image
from retrain.labels.multilabel import frequency_baseline
from retrain.names import thresholds_path
from retrain.tfenv import import_tensorflow
from tests.conftest import COLOURS, FLOWERS, MODULES, flags, frozen_graph_scores, invoke, require
from tests.mosaics import make_mosaics, partition_photos


def build_mosaic_set(root: Path) -> tuple[Path, Path]:
    """Training, validation and test mosaics from disjoint photos, in one CSV with a split column."""
    parts = partition_photos(require(FLOWERS), fractions=(0.6, 0.2, 0.2), seed=3)
    rows: list[list[str]] = []
    for photos, split, count in zip(parts, ("training", "validation", "testing"), (240, 60, 60)):
        written = make_mosaics(photos, root, count=count, seed=len(rows), prefix=split, csv_name=f"{split}.csv",
                               split=split)
        with written.open() as handle:
            rows += list(csv.reader(handle))[1:]
    table = root / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows([["path", "labels", "split"], *rows])  # CRLF, as Excel
    return root / "images", table


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mosaics")
    images, table = build_mosaic_set(root)
    out = root / "out"
    out.mkdir()
    config = RetrainConfig(image_dir=images, labels_csv=table, tfhub_module=str(require(MODULES / "mobilenet_v2_035_224")),
                           output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
                           bottleneck_dir=out / "bottlenecks", checkpoint_path=out / "ckpt" / "c",
                           saved_model_dir=out / "saved", output_tflite=out / "model.tflite")
    from retrain.pipeline import run

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        result = run(config)
    return config, result, stdout.getvalue()


@pytest.mark.integration
def test_a_multi_label_run_beats_the_most_frequent_labels_by_a_wide_margin(multi) -> None:
    _config, result, stdout = multi
    assert result.labels == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert result.head.thresholds is not None and result.head.thresholds.shape == (5,)
    test = result.evaluations["testing"]
    baseline = frequency_baseline(train=result.splits["training"].targets,
                                  validation=result.splits["validation"].targets)
    floor = baseline.metrics(result.splits["testing"].targets).micro_f1
    print(f"\n[multi-label] test micro F1 {test.metrics['micro_f1']:.3f}, macro F1 {test.metrics['macro_f1']:.3f}, "
          f"mAP {test.metrics['mean_average_precision']:.3f}; most-frequent-labels baseline micro F1 {floor:.3f}")
    assert test.count == 60
    assert test.metrics["micro_f1"] >= floor + 0.03
    for name in ("micro F1", "macro F1", "mean average precision"):
        assert re.search(rf"^Final test {name} = \d+\.\d% \(N=60\)$", stdout, re.M), name


@pytest.mark.integration
def test_thresholds_are_written_beside_the_labels_and_inside_the_models(multi) -> None:
    config, result, _ = multi
    written = [float(line) for line in thresholds_path(config.output_labels).read_text().split()]
    np.testing.assert_array_equal(np.float32(written), result.head.thresholds)
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(config.output_graph.read_bytes())
    nodes = {node.name: node for node in graph_def.node}
    assert nodes["final_result"].op == "Sigmoid"
    np.testing.assert_array_equal(tf.make_ndarray(nodes["thresholds"].attr["value"].tensor), result.head.thresholds)
    saved = tf.saved_model.load(str(config.saved_model_dir))
    np.testing.assert_array_equal(saved.signatures["thresholds"]()["thresholds"].numpy(), result.head.thresholds)


@pytest.mark.integration
def test_every_export_agrees_with_the_in_process_model(multi) -> None:
    config, result, _ = multi
    tf = import_tensorflow()
    test = result.splits["testing"]
    expected = result.head.probabilities(test.vectors)
    images = np.stack([load_image(p, height=224, width=224) for p in test.paths])
    frozen = frozen_graph_scores(config.output_graph, images)
    saved = tf.saved_model.load(str(config.saved_model_dir))
    served = saved.signatures["serving_default"](image=tf.constant(images))["prediction"].numpy()
    from_bytes = saved.signatures["serving_bytes"](image_bytes=tf.constant([p.read_bytes() for p in test.paths]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_path=str(config.output_tflite)).get_signature_runner("serving_default")
    lite = runner(image=images)["prediction"]
    for name, scores in (("frozen graph", frozen), ("SavedModel", served),
                         ("SavedModel bytes", from_bytes["prediction"].numpy()), ("TFLite", lite)):
        np.testing.assert_allclose(scores, expected, atol=1e-4, err_msg=name)


@pytest.mark.integration
def test_label_image_prints_the_labels_at_or_above_their_thresholds(multi) -> None:
    config, result, _ = multi
    test = result.splits["testing"]
    photos = list(test.paths[:6])
    scores = result.head.probabilities(test.vectors[:6])
    expected = [[result.labels[i] for i in np.argsort(-row, kind="stable") if row[i] >= result.head.thresholds[i]]
                for row in scores]
    common = ["--graph", str(config.output_graph), "--labels", str(config.output_labels)]
    records = json.loads(invoke(label_image_command, [*common, "--json", *map(str, photos)]).stdout)
    assert [r["labels"] for r in records] == expected
    assert all(len(r["predictions"]) == 5 for r in records)  # every label, best first
    text = invoke(label_image_command, [*common, str(photos[0])]).stdout.splitlines()
    assert [line.split()[0] for line in text] == expected[0]
    top = invoke(label_image_command, [*common, "--top_k", "2", str(photos[0])]).stdout.splitlines()
    assert len(top) == 2
    for model in (config.saved_model_dir, config.output_tflite):  # the same from every model kind
        again = json.loads(invoke(label_image_command, ["--graph", str(model), "--labels", str(config.output_labels),
                                                        "--json", *map(str, photos)]).stdout)
        assert [r["labels"] for r in again] == expected, model


def test_a_single_label_csv_is_just_another_way_to_give_classes(colour_tree: Path, tiny_module: Path,
                                                                outputs) -> None:
    table = colour_tree / "my_labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["labels", "path"])  # any column order
        for photo in sorted(colour_tree.rglob("*.jpg")):
            writer.writerow([photo.parent.name.upper(), photo.relative_to(colour_tree).as_posix()])
    outputs["output_graph"].parent.joinpath("ckpt").mkdir()
    result = invoke(retrain_command, flags(image_dir=colour_tree, labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=30, **outputs))
    assert "Final test accuracy" in result.stdout and "Train accuracy" in result.stderr
    assert outputs["output_labels"].read_text() == "BLUE\nGREEN\nRED\n"
    assert not thresholds_path(outputs["output_labels"]).exists()


def test_a_tiny_multi_label_run_exports_thresholds_and_label_image_reads_them(tmp_path: Path, tiny_module: Path,
                                                                               outputs) -> None:
    """The whole multi-label path, fast: photos of two colour halves, labelled with their colours."""
    from PIL import Image

    colours = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40), "white": (240, 240, 240)}
    names, rows = sorted(colours), []
    random = np.random.default_rng(5)
    image_dir = tmp_path / "photos"  # outputs go beside, never inside the photos
    image_dir.mkdir()
    for index in range(72):
        left, right = (names[i] for i in random.choice(4, 2, replace=index % 3 == 0))
        pixels = np.zeros((40, 48, 3))
        pixels[:, :24], pixels[:, 24:] = colours[left], colours[right]
        pixels = np.clip(pixels + random.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{index:03d}.png")
        rows.append([f"{index:03d}.png", " ".join(sorted({left, right}))])
    table = image_dir / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "labels"], *rows])
    result = invoke(retrain_command, flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=200, learning_rate=0.1,
                                           intermediate_store_frequency=100, saved_model_dir=tmp_path / "sm",
                                           **outputs))
    assert re.search(r"Step 199: Train micro F1 = \d+\.\d%", result.stderr)
    assert re.search(r"^Final test micro F1 = \d+\.\d% \(N=\d+\)$", result.stdout, re.M)
    assert outputs["output_labels"].read_text() == "".join(f"{name}\n" for name in names)
    thresholds = np.float32([float(t) for t in thresholds_path(outputs["output_labels"]).read_text().split()])
    assert thresholds.shape == (4,) and np.all((thresholds > 0) & (thresholds < 1))
    photos = [image_dir / f"{index:03d}.png" for index in range(6)]
    scores = frozen_graph_scores(outputs["output_graph"], np.stack([load_image(p, height=32, width=32)
                                                                    for p in photos]))
    records = json.loads(invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                                      str(outputs["output_labels"]), "--json",
                                                      *map(str, photos)]).stdout)
    for record, row in zip(records, scores):
        assert [p["label"] for p in record["predictions"]] == [names[i] for i in np.argsort(-row, kind="stable")]
        assert record["labels"] == [names[i] for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
    report = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    assert report["objective"] == "sigmoid" and set(report["classes"]) == set(names)
    # An intermediate graph has no thresholds of its own: those beside the labels are the final model's, said
    # (probe FFF: nothing was), and the final model's own are not.
    final = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), str(photos[0])])
    assert "WARNING" not in final.stderr, final.stderr
    # The model's own thresholds come first, in the graph and in the SavedModel's `thresholds` signature (probe
    # ZZO: label-image reading only the file beside the labels, and a SavedModel without the signature, passed).
    from retrain.tfenv import import_tensorflow

    signature = import_tensorflow().saved_model.load(str(tmp_path / "sm")).signatures["thresholds"]
    np.testing.assert_array_equal(next(iter(signature().values())).numpy(), thresholds)
    beside = thresholds_path(outputs["output_labels"])
    kept = beside.read_bytes()
    beside.write_text("0.999\n" * 4)
    for model in (outputs["output_graph"], tmp_path / "sm"):
        again = json.loads(invoke(label_image_command, ["--graph", str(model), "--labels",
                                                        str(outputs["output_labels"]), "--json",
                                                        *map(str, photos)]).stdout)
        assert [r["labels"] for r in again] == [r["labels"] for r in records], model
    beside.write_bytes(kept)
    snapshot = outputs["intermediate_output_graphs_dir"] / "intermediate_100.pb"
    said = invoke(label_image_command, ["--graph", str(snapshot), str(photos[0])]).stderr
    assert (f"the thresholds in {thresholds_path(outputs['output_labels'])} were chosen on validation for the final "
            f"model of the run that wrote --graph {snapshot}, one of its intermediate graphs, which has none of its "
            "own: its labels are chosen by another model's thresholds") in " ".join(said.split()), said
    # The same for a copy of it beside the report, and for one in a folder of its own given the labels (probe OOO).
    elsewhere = image_dir.parent / "elsewhere"
    elsewhere.mkdir()
    for copy, labels in ((outputs["output_labels"].parent / "step_100.pb", []),
                         (elsewhere / "intermediate_100.pb", ["--labels", str(outputs["output_labels"])])):
        shutil.copyfile(snapshot, copy)
        said = invoke(label_image_command, ["--graph", str(copy), *labels, str(photos[0])]).stderr
        assert "one of its intermediate graphs, which has none of its own" in " ".join(said.split()), (copy, said)
    # The thresholds node is a constant beside the output, not scores: refused as an --output_layer.
    refused = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                           str(outputs["output_labels"]), "--output_layer", "thresholds",
                                           str(photos[0])], expect=1)
    assert "--output_layer thresholds is Const [4], not scores per image [N, classes]" in refused.stderr
    assert refused.stdout == ""


def colour_csv(image_dir: Path, count: int, labels: Callable[[int, str, str], str], *, splits: bool = True) -> Path:
    """`count` noisy photos of one colour each in a new `image_dir`, and their labels CSV: photo i's labels are
    labels(i, its colour, its split), its split one of five (three training), in a split column if `splits`."""
    from PIL import Image

    image_dir.mkdir()
    rows, random = [], np.random.default_rng(7)
    for index in range(count):
        colour = ("blue", "red", "green")[index % 3]
        split = ("training", "training", "training", "validation", "testing")[index % 5]
        pixels = np.clip(np.array(COLOURS[colour]) + random.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{index:03d}.png")
        rows.append([f"{index:03d}.png", labels(index, colour, split), *([split] if splits else [])])
    table = image_dir / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "labels", *(["split"] if splits else [])], *rows])
    return table


def test_a_label_with_no_training_image_is_never_predicted(tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Its threshold cannot be chosen on validation (the layer never learned it): it is set above any score."""
    image_dir = tmp_path / "photos"
    table = colour_csv(image_dir, 60, lambda index, colour, split:  # "rare" never in training
                       colour + (" rare" if split != "training" and index % 2 else ""))
    result = invoke(retrain_command, flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=50, **outputs))
    assert "1 label(s) have no training image and will never be predicted: 'rare'" in result.stderr
    names = outputs["output_labels"].read_text().split()
    thresholds = np.float32(thresholds_path(outputs["output_labels"]).read_text().split())
    assert thresholds[names.index("rare")] > 1
    report = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    assert report["classes"]["rare"]["predicted"] == 0 and report["classes"]["rare"]["threshold"] > 1
    records = json.loads(invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                                      str(outputs["output_labels"]), "--json",
                                                      str(image_dir)]).stdout)
    assert len(records) == 60 and not any("rare" in record["labels"] for record in records)


def test_thresholds_with_no_validation_images_to_choose_them_on_are_said(tmp_path: Path, tiny_module: Path,
                                                                          outputs) -> None:
    """With --validation_percentage 0 every label's threshold was 0.5, without a word (probe PP)."""
    table = colour_csv(tmp_path / "photos", 30, lambda index, colour, split: colour + (" dark" if index % 2 else ""),
                       splits=False)
    result = invoke(retrain_command, flags(image_dir=tmp_path / "photos", labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=20, validation_percentage=0, **outputs))
    assert ("no validation images to choose each label's threshold on: every label's is 0.5; give "
            "--validation_percentage (or validation rows in --labels_csv) to choose them") in result.stderr
    assert set(thresholds_path(outputs["output_labels"]).read_text().split()) == {"0.5"}


def test_a_label_with_no_validation_image_is_said_to_keep_the_threshold_half(tmp_path: Path, tiny_module: Path,
                                                                             outputs) -> None:
    """A label with training images but none in validation got the threshold 0.5 without a word, though the
    README said it is said (probe ZZD)."""
    table = colour_csv(tmp_path / "photos", 60, lambda index, colour, split:
                       colour + (" dark" if index % 2 else "") + (" shiny" if split == "training" and index % 4 == 0
                                                                    else ""))
    result = invoke(retrain_command, flags(image_dir=tmp_path / "photos", labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=20, **outputs))
    assert ("1 label(s) have no image in the validation split, so their threshold cannot be chosen there and is "
            "0.5: 'shiny'") in result.stderr
    names = outputs["output_labels"].read_text().split()
    thresholds = thresholds_path(outputs["output_labels"]).read_text().split()
    assert thresholds[names.index("shiny")] == "0.5"


def test_thresholds_are_written_with_the_digits_that_read_back_the_same_float32() -> None:
    """label-image reads the thresholds file as float32: a threshold written short would move, and a score
    exactly at it would change sides."""
    from retrain.exporters.labels import thresholds_text
    from retrain.labels.multilabel import grid_thresholds

    thresholds = np.concatenate([grid_thresholds(1000), np.float32([1 / 3, 0.1, 0.7071068, 1e-7])])
    read = np.float32([float(line) for line in thresholds_text(thresholds).decode("ascii").splitlines()])
    np.testing.assert_array_equal(read, thresholds)


def test_a_figure_the_test_split_cannot_define_is_n_a_not_nan(tmp_path: Path, tiny_module: Path, outputs) -> None:
    """Test images with no labels: no label has a positive there, so the mean average precision is not defined.
    stdout printed `Final test mean average precision = nan%` and TensorBoard plotted NaN (probe BB, on the
    README's own three-row CSV); report.json already said null. Each is listed as misclassified with
    `(true: (none))`, as a prediction of no label is (it said `(true: )`)."""
    image_dir = tmp_path / "photos"
    table = colour_csv(image_dir, 30, lambda _, colour, split: "" if split == "testing" else f"{colour} bright")
    result = invoke(retrain_command, flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module,
                                           how_many_training_steps=20, print_misclassified_test_images=True,
                                           **outputs))
    assert "Final test mean average precision = n/a (N=6)" in result.stdout, result.stdout
    listed = result.stdout.split("=== MISCLASSIFIED TEST IMAGES ===\n")[1].split("Wrote ")[0].splitlines()
    assert len(listed) == 6 and all(line.endswith("  (true: (none))") and "bright" in line for line in listed), listed
    assert "nan" not in result.stdout.lower()
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = next(p for p in outputs["summaries_dir"].iterdir() if p.is_dir())
    values = []
    for events in run.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            arrays = [tf.make_ndarray(event.tensor_proto) for event in accumulator.Tensors(tag)]
            values += [float(array) for array in arrays if array.size == 1 and array.dtype.kind == "f"]
    assert values and all(np.isfinite(values))


def test_new_thresholds_that_an_earlier_tflite_model_would_read_are_refused(tmp_path: Path, tiny_module: Path,
                                                                          outputs) -> None:
    """A multi-label model with a TFLite export, then a run of the same labels without --output_tflite: the new
    thresholds file judged the old TFLite model's scores, which then named other labels than its own SavedModel
    did, exit 0 (probe BB). The second run is refused before any work; with --output_tflite again it runs."""
    image_dir = tmp_path / "photos"
    table = colour_csv(image_dir, 30, lambda index, colour, _: f"{colour} bright" if index % 2 else colour,
                       splits=False)
    tflite = outputs["output_graph"].parent / "m.lite"  # a TFLite model by its contents, whatever its name
    run = flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module, how_many_training_steps=10,
                **outputs)
    invoke(retrain_command, [*run, "--output_tflite", str(tflite)])
    thresholds = thresholds_path(outputs["output_labels"]).read_bytes()
    refused = invoke(retrain_command, [*run, "--learning_rate", "0.5"], expect=2).stderr
    assert (f"this run writes new thresholds to {thresholds_path(outputs['output_labels'])} but leaves the TFLite "
            f"model {tflite} of the earlier model") in refused
    assert thresholds_path(outputs["output_labels"]).read_bytes() == thresholds
    invoke(retrain_command, [*run, "--learning_rate", "0.5", "--output_tflite", str(tflite)])


def test_a_tflite_model_moved_without_its_thresholds_file_takes_those_its_report_records(tmp_path: Path,
                                                                                       tiny_module: Path,
                                                                                       outputs) -> None:
    """A multi-label TFLite model moved with copies of its labels and report, as the README says (but not its
    thresholds file): every label was judged at 0.5, with a warning, though the report beside it, which label-image
    found for the labels, records the run's thresholds: labels dropped, exit 0 (probe ZZD)."""
    image_dir = tmp_path / "photos"
    table = colour_csv(image_dir, 40, lambda index, colour, _: f"{colour} bright" if index % 2 else colour)
    tflite = outputs["output_graph"].parent / "m.tflite"
    invoke(retrain_command, [*flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module,
                                    how_many_training_steps=10, **outputs), "--output_tflite", str(tflite)])
    photos = [str(path) for path in sorted(image_dir.glob("*.png"))[:12]]
    here = json.loads(invoke(label_image_command, ["--graph", str(tflite), "--json", *photos]).stdout)
    thresholds = [float(line) for line in thresholds_path(outputs["output_labels"]).read_text().split()]
    assert any(value != 0.5 for value in thresholds)
    moved = tmp_path / "deploy"
    moved.mkdir()
    for path in (tflite, outputs["output_labels"], outputs["output_labels"].with_name("report.json")):
        (moved / path.name).write_bytes(path.read_bytes())
    there = invoke(label_image_command, ["--graph", str(moved / "m.tflite"), "--json", *photos])
    assert "WARNING" not in there.stderr, there.stderr
    assert json.loads(there.stdout) == here
    report = json.loads((moved / "report.json").read_text())  # one label's threshold not recorded: 0.5 for it,
    missing = next(iter(report["classes"]))  # said (probe ZZF: every label was judged at 0.5, said as if none were)
    del report["classes"][missing]["threshold"]
    (moved / "report.json").write_text(json.dumps(report))
    partly = invoke(label_image_command, ["--graph", str(moved / "m.tflite"), "--json", *photos])
    assert f"it records none for {missing!r}: 0.5 for those" in partly.stderr, partly.stderr
    names = outputs["output_labels"].read_text().split()
    expected = [value if name != missing else 0.5 for name, value in zip(names, thresholds)]
    for record in json.loads(partly.stdout):
        scores = {p["label"]: p["score"] for p in record["predictions"]}
        assert set(record["labels"]) == {name for name, value in zip(names, expected)
                                         if np.float32(scores[name]) >= np.float32(value)}
    report["classes"][missing]["threshold"] = float("nan")  # one not a finite number: as none (probe ZZH: taken)
    (moved / "report.json").write_text(json.dumps(report))
    said = invoke(label_image_command, ["--graph", str(moved / "m.tflite"), photos[0]]).stderr
    assert f"it records none for {missing!r}: 0.5 for those" in said, said
    (moved / "report.json").unlink()  # nothing records them: 0.5, said
    said = invoke(label_image_command, ["--graph", str(moved / "m.tflite"), "--labels",
                                        str(moved / outputs["output_labels"].name), photos[0]]).stderr
    assert "multi-label model without thresholds" in said and "using 0.5 for every label" in said


def test_another_runs_thresholds_beside_a_tflite_models_labels_are_said(tmp_path: Path, tiny_module: Path,
                                                                         outputs) -> None:
    """Another run's thresholds file beside the labels (that of a run of the same labels, put back from a
    backup): the TFLite model, which reads its thresholds there, had its labels chosen by them without a word
    (probe XX). Its report records its own: said."""
    image_dir = tmp_path / "photos"
    table = colour_csv(image_dir, 40, lambda index, colour, _: f"{colour} bright" if index % 2 else colour)
    tflite = outputs["output_graph"].parent / "m.tflite"
    run = flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module, how_many_training_steps=10,
                **outputs)
    other = {**outputs, "output_graph": tmp_path / "b" / "g.pb", "output_labels": tmp_path / "b" / "labels.txt",
             "checkpoint_path": tmp_path / "b" / "ck"}
    (tmp_path / "b").mkdir()
    invoke(retrain_command, [*run, "--output_tflite", str(tflite)])
    invoke(retrain_command, flags(image_dir=image_dir, labels_csv=table, tfhub_module=tiny_module,
                                  how_many_training_steps=40, learning_rate=0.5, **other))
    own, theirs = (thresholds_path(labels).read_bytes() for labels in (outputs["output_labels"],
                                                                        other["output_labels"]))
    assert own != theirs
    args = ["--graph", str(tflite), "--image", str(image_dir / "000.png")]
    assert "WARNING" not in invoke(label_image_command, args).stderr
    thresholds_path(outputs["output_labels"]).write_bytes(theirs)
    said = (f"the thresholds in {thresholds_path(outputs['output_labels'])} are not those that the report listing "
            f"--graph {tflite} records for its labels")
    assert said in invoke(label_image_command, args).stderr
    report = outputs["output_labels"].with_name("report.json")  # one label's threshold not recorded (edited by
    data = json.loads(report.read_text())  # hand): the others still checked (it said nothing: probe YY)
    del data["classes"][next(iter(data["classes"]))]["threshold"]
    report.write_text(json.dumps(data))
    assert said in invoke(label_image_command, args).stderr
