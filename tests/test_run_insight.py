"""What a real run shows (the shared retrain of the fixture flowers): the stdout table, report.json, and the
TensorBoard pictures, read back with TensorBoard's own readers."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import retrain_cli


@pytest.fixture(scope="module")
def run(flowers_export):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config, result, stdout, _ = flowers_export
    folders = {name: EventAccumulator(str(result.run_folder / name), size_guidance={"tensors": 0, "images": 0}).Reload()
               for name in ("test", "validation")}
    root = EventAccumulator(str(result.run_folder), size_guidance={"tensors": 0}).Reload()
    return config, result, stdout, folders, root


def test_the_table_and_report_json_match_the_test_split(run) -> None:
    config, result, stdout, _, _ = run
    test = result.evaluations["testing"]
    lines = stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("class ")))
    assert "precision" in lines[start] and "most confused with" in lines[start]
    assert [line.split()[0] for line in lines[start + 1:start + 6]] == result.labels
    report = json.loads((config.output_labels.parent / "report.json").read_text())
    assert report["format"] == "retrain-report" and report["labels"] == result.labels
    assert sum(c["support"] for c in report["classes"].values()) == test.count
    assert report["overall"]["accuracy"] == pytest.approx(result.test_accuracy)
    truth, predicted = test.truth, test.predictions
    for index, label in enumerate(result.labels):
        figures = report["classes"][label]
        assert figures["support"] == int(np.sum(truth == index))
        assert figures["correct"] == int(np.sum((truth == index) & (predicted == index)))
    assert report["run"]["module"] == result.source.handle and str(config.output_graph) in report["run"]["files"]


def test_the_confusion_matrix_is_a_picture_whose_counts_sum_to_the_test_split(run) -> None:
    _, result, _, folders, _ = run
    test = folders["test"]
    assert "confusion_matrix" in test.Tags()["tensors"]  # TF2 image summaries are tensors
    (event,) = test.Tensors("confusion_matrix")
    width, height = (int(v) for v in event.tensor_proto.string_val[:2])
    assert width > 200 and height > 200
    (text,) = test.Tensors("confusion_matrix/counts")
    table = text.tensor_proto.string_val[0].decode()
    totals = [int(row.split("|")[-2]) for row in table.splitlines()[2:]]
    assert sum(totals) == result.evaluations["testing"].count
    assert "confusion_matrix" in folders["validation"].Tags()["tensors"]  # a few evaluations get one too


def test_pr_curves_misclassified_hparams_and_projector_are_there(run) -> None:
    config, result, _, folders, root = run
    tags = set(folders["test"].Tags()["tensors"])
    assert {f"{label}/pr_curves" for label in result.labels} <= tags
    assert "misclassified" in tags
    test = result.evaluations["testing"]  # the grid holds the mistakes (probe ZZO: the right ones passed the tests)
    mistakes = int(np.sum(test.predictions != test.truth))
    assert folders["test"].SummaryMetadata("misclassified").summary_description.startswith(
        f"{mistakes} misclassified test images, most confident first")
    hparams = [t for t in root.Tags()["tensors"] if t.startswith("_hparams_")]
    assert hparams and "test/accuracy" in root.Tags()["tensors"]
    from tensorflow.python.framework.tensor_util import MakeNdarray

    (final,) = root.Tensors("test/accuracy")
    assert float(MakeNdarray(final.tensor_proto)) == pytest.approx(result.test_accuracy)
    projector = result.run_folder / "test" / "projector_config.pbtxt"
    text = projector.read_text()
    assert "projector/tensors.tsv" in text and "projector/sprite.png" in text
    rows = (result.run_folder / "test" / "projector" / "metadata.tsv").read_text().splitlines()
    assert len(rows) == result.evaluations["testing"].count + 1 and re.match(r"label\tpredicted\tfile", rows[0])


# --------------------------------------------------------------------------- tiny runs (the home-made module), fast


def _two_colour_photos(root: Path, *, splits: tuple[str, ...]) -> tuple[Path, Path, dict[str, set[str]]]:
    """Photos of two colour halves in `root/photos`, labelled with both colours in a CSV whose split column cycles
    through `splits`: (image folder, CSV, labels per file name)."""
    from PIL import Image

    colours = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40), "white": (240, 240, 240)}
    names, random = sorted(colours), np.random.default_rng(5)
    image_dir, rows, truth = root / "photos", [], {}
    image_dir.mkdir(parents=True)
    for index in range(8 * len(splits)):
        left, right = (names[i] for i in random.choice(len(names), 2, replace=False))
        pixels = np.zeros((40, 48, 3))
        pixels[:, :24], pixels[:, 24:] = colours[left], colours[right]
        pixels = np.clip(pixels + random.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{index:03d}.png")
        truth[f"{index:03d}.png"] = {left, right}
        rows.append([f"{index:03d}.png", f"{left} {right}", splits[index % len(splits)]])
    table = root / "labels.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "labels", "split"], *rows])
    return image_dir, table, truth


@pytest.mark.parametrize("objective", ["softmax", "sigmoid"])
def test_report_json_without_test_images_keeps_every_key(objective: str, colour_tree: Path, tiny_module: Path,
                                                        outputs: dict[str, Path], tmp_path: Path) -> None:
    """An empty test split: the same keys as any report, with nothing in them, so readers need no special case."""
    if objective == "softmax":
        retrain_cli(colour_tree, tiny_module, outputs, testing_percentage=0)
        labels = ["blue", "green", "red"]
    else:
        image_dir, table, _ = _two_colour_photos(tmp_path / "multi", splits=("training", "training", "validation"))
        retrain_cli(image_dir, tiny_module, outputs, labels_csv=table)
        labels = ["blue", "green", "red", "white"]
    report = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    assert report["format"] == "retrain-report" and report["labels"] == labels
    assert report["objective"] == objective
    assert report["overall"] is None and report["classes"] == {}
    # The keys of a report with test images: a multi-label one has no confusion matrix.
    matrix = {"confusion_matrix"} if objective == "softmax" else set()
    assert set(report) == {"format", "version", "objective", "labels", "overall", "classes", "run"} | matrix
    assert report.get("confusion_matrix") is None
    assert report["run"]["images"]["testing"] == 0


def test_report_json_counts_the_test_split_not_the_test_batch_sample(colour_tree: Path, tiny_module: Path,
                                                                     outputs: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A sample larger than the split repeats images (the classic script's), said now (the figures counting
    1,000 images of 6 puzzled probe PP); and that it weighs the classes alike (probe ZZQ: 74 % for a split
    whose images were 95 % right, its 2 roses drawn 49 times)."""
    from retrain.api import retrain

    result = retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=20, test_batch_size=30,
                     log_level="WARN", **outputs)
    size = len(result.splits["testing"].paths)
    assert 0 < size < 30 and result.evaluations["testing"].count == 30  # a sample larger than the split
    assert (f"--test_batch_size 30 draws that many of the {size} test images, with repeats, each draw a class "
            "(every class alike), then one of its images, as the classic retrain.py did: every figure counts the "
            "draws; -1 evaluates each image once") in capsys.readouterr().err
    report = json.loads((outputs["output_labels"].parent / "report.json").read_text())
    assert report["run"]["images"]["testing"] == size
    assert report["run"]["images"]["validation"] == len(result.splits["validation"].paths)


def test_the_misclassified_listing_lines_up_wide_file_names_by_their_columns() -> None:
    """The classic listing right-aligns each path to 70 columns: `玫瑰 16.jpg` stuck out by one a CJK character
    (probe ZZE), padded by characters."""
    from retrain.insight.report import cells, pad

    for name in ("photos/roses/玫瑰 16.jpg", "photos/daisy/d.jpg", "photos/e\u0301clair.jpg", "x" * 80):
        shown = pad(name, 70, right=True)
        assert shown.endswith(name) and cells(shown) == max(70, cells(name)), (name, cells(shown))


def test_the_tables_columns_line_up_with_wide_and_combining_characters_in_the_labels() -> None:
    """A terminal shows CJK and emoji two columns wide and a combining accent in none: padding counts columns."""
    import unicodedata

    from retrain.insight.report import class_report, format_table
    from retrain.insight.run import _label_table

    labels = ["tülpen 🌷", "daisy", "日本語のラベル", "e\u0301clair"]

    def columns(text: str) -> int:
        return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
                   for ch in text)

    table = format_table(class_report(labels=labels, truth=np.array([0, 1, 2, 3, 0]),
                                      predicted=np.array([0, 1, 2, 3, 1])))

    def first_figure_at(lines: list[str]) -> set[int]:
        """The column where each row's first figure starts (every figure here has the same width)."""
        found = set()
        for line, label in zip(lines, labels):
            assert line.startswith(label)
            rest = line[len(label):]
            found.add(columns(label) + len(rest) - len(rest.lstrip(" ")))
        return found

    assert len(first_figure_at(table.splitlines()[1:5])) == 1, table

    class Details:
        thresholds = precision = recall = f1 = np.full(4, 0.5)
        support = np.ones(4)
        micro_precision = micro_recall = micro_f1 = 0.5
        rows = 4

    lines = _label_table(Details(), labels).splitlines()
    assert len(first_figure_at(lines[1:5])) == 1, lines


def test_the_multi_label_tables_figures_sit_under_their_headings() -> None:
    """Recall, F1 and support ran past their headings, each shifted to the right."""
    import re

    from retrain.insight.run import _label_table

    class Details:
        thresholds = np.array([0.211, 0.5])
        precision, recall, f1 = np.array([1.0, np.nan]), np.array([2 / 3, 0.5]), np.array([0.8, 0.25])
        support = np.array([3, 12])
        micro_precision, micro_recall, micro_f1, rows = 0.9, 0.6, 0.72, 15

    lines = _label_table(Details(), ["daisy", "roses"]).splitlines()
    right_edges = [[match.end() for match in re.finditer(r"\S+", line)][1:6] for line in lines]
    assert right_edges[1] == right_edges[2] == right_edges[0], "\n".join(lines)
    assert lines[1].split() == ["daisy", "0.211", "100.0%", "66.7%", "80.0%", "3"]


def test_long_labels_sharing_a_start_stay_apart_in_the_table_and_the_pictures() -> None:
    """Cut in the middle, not at the end: names that share a 40-character start differ by their ends."""
    from retrain.insight import pictures
    from retrain.insight.report import class_report, format_table

    start = "herbarium_specimen_collection_accession_"  # 40 characters
    labels = [f"{start}number_daisy", f"{start}number_roses", "tulips"]
    table = format_table(class_report(labels=labels, truth=np.array([0, 0, 1, 1, 2]),
                                      predicted=np.array([1, 0, 0, 1, 2])))
    rows = table.splitlines()[1:4]
    cells = [row.split("  ")[0] for row in rows]
    assert cells[0] != cells[1], table
    assert cells[0].startswith("herbarium_") and cells[0].endswith("daisy") and "…" in cells[0], table
    assert cells[1].endswith("roses") and len(cells[0]) == len(cells[1]) == 32, table
    confused = [row.rsplit("  ", 1)[1] for row in rows[:2]]  # most confused with: each other
    assert confused[0] != confused[1] and confused[0].endswith("roses (1)") and confused[1].endswith("daisy (1)")
    assert format_table(class_report(labels=["tulips", "roses"], truth=np.array([0]), predicted=np.array([0])))\
        .splitlines()[1].startswith("tulips ")  # short labels untouched

    font = pictures._font(12)
    drawn = [pictures._elide(label, font, pictures.MAX_LABEL_PIXELS) for label in labels[:2]]
    assert drawn[0] != drawn[1]
    for text, label in zip(drawn, labels):
        assert "…" in text and text.startswith("herb") and text.endswith(label[-5:])
        assert font.getlength(text) <= pictures.MAX_LABEL_PIXELS
    assert pictures._elide("tulips", font, pictures.MAX_LABEL_PIXELS) == "tulips"


def test_labels_that_would_show_alike_in_the_tables_get_their_line_in_the_labels_file() -> None:
    """Probe NNN: two long names elided to one, and `Café` in its two Unicode forms, gave two rows of one name in
    the table, the first one confused with itself."""
    from retrain.insight.report import class_report, format_table
    from retrain.insight.run import _label_table

    start, end = "Holiday in Brittany 2019 - ", " in the garden of the hotel"
    labels = [f"{start}roses{end}", f"{start}tulips{end}", "Caf\u00e9", "Cafe\u0301", "daisy"]
    table = format_table(class_report(labels=labels, truth=np.array([0, 0, 1, 2, 3, 4]),
                                      predicted=np.array([1, 0, 1, 3, 3, 4])))
    rows = [row.split("  ")[0].rstrip() for row in table.splitlines()[1:6]]
    assert rows[0].endswith(" #1") and rows[1].endswith(" #2") and len(rows[0]) == len(rows[1]) == 32, table
    assert rows[2:] == ["Caf\u00e9 #3", "Cafe\u0301 #4", "daisy"], table
    assert table.splitlines()[1].endswith(f"{rows[1]} (1)") and table.splitlines()[3].endswith("Cafe\u0301 #4 (1)")

    class Details:
        thresholds = precision = recall = f1 = np.full(5, 0.5)
        support = np.ones(5)
        micro_precision = micro_recall = micro_f1 = 0.5
        rows = 5

    names = [line.split("  ")[0].rstrip() for line in _label_table(Details(), labels).splitlines()[1:6]]
    assert names == rows


def test_labels_apart_only_in_spaces_or_invisible_characters_are_told_apart_in_tables_and_pictures() -> None:
    """Probe ZZQ: `dog`, `dog ` and `dog` with a zero-width space were three rows reading `dog`, with no `#N`
    (only the Unicode form was compared); the confusion matrix picture drew them, and two long names cut to
    one, alike too. The look-alike warning named ' dog' against 'Dog' and 'dog', never 'Dog' against 'dog'."""
    from retrain.insight import pictures
    from retrain.insight.report import table_names
    from retrain.labels.folder import look_alikes

    labels = ["dog", "dog ", "dog\u200b", "cat", "\ufb01sh", "fish"]
    assert list(table_names(labels).values()) == ["dog #1", "dog  #2", "dog\u200b #3", "cat", "\ufb01sh #5",
                                                  "fish #6"]
    assert list(table_names(labels, width=None).values()) == list(table_names(labels).values())  # label-image's
    font = pictures._font(12)
    long = ["A" + "x" * 60 + "1" + "x" * 60 + "Z", "A" + "x" * 60 + "2" + "x" * 60 + "Z"]
    drawn = pictures._axis_names([*labels, *long], font, pictures.MAX_LABEL_PIXELS)
    assert drawn[:6] == ["dog #1", "dog  #2", "dog<U+200B>", "cat", "\ufb01sh #5", "fish #6"]  # drawn as seen
    assert [name[-3:] for name in drawn[6:]] == [" #7", " #8"] and "…" in drawn[6]
    assert all(font.getlength(name) <= pictures.MAX_LABEL_PIXELS for name in drawn)

    # One line a group (probe ZZS: a group of 10 gave 45 lines), saying every way its names differ.
    assert list(look_alikes([" dog", "Dog", "dog", "cat", "Cat", "caf\u00e9", "cafe\u0301", "stra\u00dfe",
                             "strasse"])) == [
        ("' dog', 'Dog' and 'dog'", 3, "in letter case, spaces, Unicode form or invisible characters"),
        ("'cat' and 'Cat'", 2, "by letter case"),
        ("'caf\\xe9' and 'cafe\\u0301'", 2, "in spaces, Unicode form or invisible characters")]
    # Characters that print as nothing though not format characters (probe ZZS): told apart too.
    for unseen in ("\u034f", "\ufe0f", "\u3164", "\u2800"):
        assert list(table_names(["dog", f"dog{unseen}"]).values()) == ["dog #1", f"dog{unseen} #2"], ascii(unseen)
    # Inside a name, one that prints as nothing is no space, and one that prints as a blank is (probe ZZT).
    assert [names for names, _, _ in look_alikes(["ab", "a\ufe0fb", "a b", "a\u2800b", "a\u034fb"])] == [
        "'ab', 'a\\ufe0fb' and 'a\\u034fb'", "'a b' and 'a\\u2800b'"]
    # A sign that looks like a letter is not that letter in another case (probe ZZT: 'Å' and 'Å' "by letter case").
    assert list(look_alikes(["\u212b", "\u00c5", "\u212a", "K", "\u00b5m", "\u03bcm"])) == [
        ("'\\u212b' and '\\xc5'", 2, "in spaces, Unicode form or invisible characters"),
        ("'\\u212a' and 'K'", 2, "in spaces, Unicode form or invisible characters"),
        ("'\\xb5m' and '\\u03bcm'", 2, "in spaces, Unicode form or invisible characters")]


def test_the_multi_label_projector_joins_each_images_labels_with_a_bar(tmp_path: Path, tiny_module: Path,
                                                                       outputs: dict[str, Path]) -> None:
    """Projector metadata of a multi-label run: `blue | red`, one value TensorBoard can colour and search by."""
    image_dir, table, truth = _two_colour_photos(tmp_path, splits=("training", "training", "validation", "testing"))
    retrain_cli(image_dir, tiny_module, outputs, labels_csv=table)
    (run_folder,) = [p for p in outputs["summaries_dir"].iterdir() if (p / "test").is_dir()]
    rows = [line.split("\t") for line in (run_folder / "test" / "projector" / "metadata.tsv").read_text().splitlines()]
    assert rows[0] == ["label", "file"] and len(rows) == 1 + len(truth) // 4
    for label, file in rows[1:]:
        assert label == " | ".join(sorted(truth[Path(file).name])), (label, file)


def test_report_json_writes_a_negative_zero_as_zero() -> None:
    """A cross-entropy of 0 on a perfectly separated split came out as -0.0 (the sign of a negated 0)."""
    from retrain.insight.report import _json_ready

    assert json.dumps(_json_ready({"cross_entropy": -0.0, "loss": np.float32(-0.0), "nan": float("nan")},
                                  where="run")) == '{"cross_entropy": 0.0, "loss": 0.0, "nan": null}'


def test_many_classes_get_no_confusion_matrix_picture_and_report_json_keeps_a_row_a_line(tmp_path: Path,
                                                                                          tiny_module: Path) -> None:
    """The confusion matrix picture grows with the square of the class count (cells of 20 px at least): 2,800
    classes passed 16 GB while drawing, and the run would be killed (probe P); report.json, one number a line, passed
    filekinds.MAX_REPORT_BYTES from about 2,700 classes. Beyond MATRIX_PICTURE_CLASSES no matrix is drawn (a
    line says so) and the other pictures stay; report.json writes the matrix a row a line."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from retrain.insight.tensorboard import MATRIX_PICTURE_CLASSES
    from tests.conftest import make_colour_tree

    count = MATRIX_PICTURE_CLASSES + 1
    rng = np.random.default_rng(3)
    tree = make_colour_tree(tmp_path / "photos", per_class=3,
                            classes={f"c{i:03d}": tuple(int(v) for v in rng.integers(0, 256, 3)) for i in range(count)})
    out = tmp_path / "out"
    out.mkdir()
    outputs = {"output_graph": out / "graph.pb", "output_labels": out / "labels.txt", "summaries_dir": out / "logs",
               "bottleneck_dir": out / "bn", "checkpoint_path": out / "ck" / "ck"}
    result = retrain_cli(tree, tiny_module, outputs, testing_percentage=40, logging_verbosity="INFO")
    assert (f"no confusion matrix pictures: they are drawn for up to {MATRIX_PICTURE_CLASSES} classes, and this run "
            f"has {count}") in result.stderr
    (run_folder,) = (out / "logs").iterdir()
    test = EventAccumulator(str(run_folder / "test"), size_guidance={"tensors": 0}).Reload()
    validation = EventAccumulator(str(run_folder / "validation"), size_guidance={"tensors": 0}).Reload()
    assert "confusion_matrix" not in test.Tags()["tensors"] + validation.Tags()["tensors"]
    assert "c000/pr_curves" in test.Tags()["tensors"]
    text = (out / "report.json").read_text()
    report = json.loads(text)
    matrix = report["confusion_matrix"]
    assert len(matrix) == count and sum(map(sum, matrix)) == sum(c["support"] for c in report["classes"].values())
    rows = [line.strip().rstrip(",") for line in text.splitlines() if line.strip().startswith("[")]
    assert [json.loads(row) for row in rows] == matrix  # a row a line


def test_a_test_split_with_too_many_scores_to_keep_still_gets_the_pictures_that_need_none(
        colour_tree: Path, tiny_module: Path, outputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations keep the scores only up to KEEP_SCORES: beyond, the confusion matrix and the projector (which
    need none) are still drawn; the PR curves and the misclassified grid are not, and a line says so (probe AA)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from retrain import objectives

    monkeypatch.setattr(objectives, "KEEP_SCORES", 5)
    result = retrain_cli(colour_tree, tiny_module, outputs, logging_verbosity="INFO")
    assert "no PR curves or misclassified grid: the test split's" in result.stderr
    (run_folder,) = [p for p in outputs["summaries_dir"].iterdir() if (p / "test").is_dir()]
    tags = EventAccumulator(str(run_folder / "test"), size_guidance={"tensors": 0}).Reload().Tags()["tensors"]
    assert "confusion_matrix/counts" in tags and not [tag for tag in tags if tag.endswith("pr_curves")], tags
    assert (run_folder / "test" / "projector" / "metadata.tsv").is_file()


def test_classes_with_no_test_image_are_said_beside_the_figures(caplog: pytest.LogCaptureFixture) -> None:
    """Probe ZZQ: `Final test accuracy = 100.0%` for 200 yellow flowers and 6 roses, none of them in the test
    split; only a warning far above, at the split, said so. Probe ZZS: the split's labels, not a sample's; labels
    too; named as the table shows them."""
    import logging

    from retrain.insight.run import say_untested
    from retrain.labels import ClassIds
    from retrain.labels.multilabel import SparseLabels

    labels = ["yellow", "caf\u00e9", "tulips", "cafe\u0301", "iris"]
    with caplog.at_level(logging.WARNING):
        say_untested(labels, ClassIds(np.array([0, 0, 0, 2]), class_count=5), multi_label=False)
        say_untested(labels[:2], ClassIds(np.array([0, 1]), class_count=2), multi_label=False)
        say_untested(labels[:2], ClassIds(np.array([], np.int64), class_count=2), multi_label=False)  # n/a said
        say_untested(labels[:3], SparseLabels.from_lists([[0, 2], [2]], num_labels=3), multi_label=True)
    assert [r.getMessage() for r in caplog.records] == [
        "3 of the 5 classes have no test image ('caf\u00e9 #2', 'cafe\u0301 #4', 'iris'), so the test figures cannot "
        "tell how the model does on them; add images of them for a fair test",
        "1 of the 3 labels is on no test image ('caf\u00e9'), so the test figures cannot tell how the model does on "
        "them; add images of them for a fair test"]


def test_the_misclassified_grid_shows_the_most_confident_mistakes_first(tmp_path: Path, monkeypatch) -> None:
    """The README: most confident first, so the mistakes worth a look lead (probe ZZO: the least confident first
    passed the tests)."""
    from retrain.insight import pictures, tensorboard

    drawn = []
    monkeypatch.setattr(pictures, "misclassified_grid",
                        lambda items, limit: drawn.extend(items) or np.zeros((8, 8, 3), np.uint8))
    items = [(Path(f"{n}.jpg"), "cat", "dog", p) for n, p in enumerate([0.4, 0.9, float("nan"), 0.6])]
    tensorboard.write_misclassified(tmp_path, items=items, step=1)
    assert [path.name for path, *_ in drawn] == ["1.jpg", "3.jpg", "0.jpg", "2.jpg"]
