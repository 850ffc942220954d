"""The run's insight pieces: report figures and report.json, the pictures, and what TensorBoard reads back.

Synthetic predictions over Pillow-drawn photos and a few real fixture photos.
Event files are read with TensorBoard's own EventAccumulator; the projector and
HParams data go through TensorBoard's own plugins (on its data provider), so a
path or format the real dashboard would refuse fails here. The test that starts
a real `tensorboard` process is marked integration.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
import unicodedata
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.errors import RetrainError
from retrain.insight import pictures
from retrain.insight.report import (class_report, confusion_matrix, format_table, report_dict,
                                    write_report_json)
from tests.conftest import FLOWERS, colour_photo, require

LABELS = ["blue", "daisy", "green", "red", "roses"]
RGB = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}


# ---------------------------------------------------------------- report (pure numpy)

def test_report_figures_undefined_precision_and_most_confused() -> None:
    labels = ["cat", "dog", "fox", "owl"]
    # cat: 3 right, 1 as dog; dog: 2 right, 2 as cat, 1 as fox; fox: never predicted (1 as dog); owl: absent.
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 0, 0, 3, 1])
    report = class_report(labels=labels, truth=truth, predicted=predicted)
    cat, dog, fox, owl = report.classes
    assert report.matrix.tolist() == [[3, 1, 0, 0], [2, 2, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert (cat.precision, cat.recall, cat.support) == (3 / 5, 3 / 4, 4)
    assert cat.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert (cat.most_confused_with, cat.most_confused_count) == ("dog", 1)
    assert (dog.most_confused_with, dog.most_confused_count) == ("cat", 2)
    assert fox.precision is None and fox.recall == 0.0 and fox.f1 == 0.0  # present, never predicted
    assert owl.precision == 0.0 and owl.recall is None and owl.f1 == 0.0  # absent, predicted once (wrongly)
    assert (report.accuracy, report.correct, report.total) == (0.5, 5, 10)
    # Averages over present classes (cat, dog, fox); fox's undefined precision counts as 0.
    assert report.macro["precision"] == pytest.approx((0.6 + 0.5 + 0.0) / 3)
    assert report.weighted["recall"] == pytest.approx(report.accuracy)

    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["class", "precision", "recall", "f1", "support"]
    assert re.match(r"cat\s+0\.600\s+0\.750\s+0\.667\s+4\s+dog \(1\)$", lines[1])
    assert re.match(r"fox\s+-\s+0\.000\s+0\.000\s+1\s+dog \(1\)$", lines[3])
    assert re.match(r"accuracy\s+0\.500\s+10$", lines[6])


def test_report_rejects_mismatched_inputs() -> None:
    with pytest.raises(RetrainError, match="3 true labels but 2 predictions"):
        class_report(labels=["a", "b"], truth=np.array([0, 1, 1]), predicted=np.array([0, 1]))
    with pytest.raises(RetrainError, match=r"in \[0, 2\)"):
        confusion_matrix(truth=np.array([0, 2]), predicted=np.array([0, 1]), class_count=2)


def test_report_json_is_strict_ordered_and_atomic(tmp_path: Path) -> None:
    labels = ["zebra", "ant", "Ünïcode label"]
    report = class_report(labels=labels, truth=np.array([0, 1, 1, 2]), predicted=np.array([0, 1, 0, 0]))
    path = tmp_path / "report.json"
    path.write_text("an older report")
    extra = {"model": Path("/models/m"), "flags": {"learning_rate": 0.01, "seed": np.int64(3)},
             "split_sizes": {"test": 4}, "loss": float("nan"), "files": (Path("a.pb"), "b.txt")}
    write_report_json(path, report_dict(report, extra=extra))
    text = path.read_text(encoding="utf-8")
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    assert (document["format"], document["version"]) == ("retrain-report", 1)
    assert document["labels"] == labels and list(document["classes"]) == labels  # label order, not sorted
    assert document["classes"]["Ünïcode label"]["precision"] is None  # never predicted
    assert document["classes"]["zebra"] == {
        "index": 0, "precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1, "predicted": 3, "correct": 1,
        "most_confused_with": None, "most_confused_count": 0}
    assert document["overall"]["accuracy"] == 0.5 and document["overall"]["total"] == 4
    assert sum(map(sum, document["confusion_matrix"])) == 4
    assert document["run"] == {"model": "/models/m", "flags": {"learning_rate": 0.01, "seed": 3},
                               "split_sizes": {"test": 4}, "loss": None, "files": ["a.pb", "b.txt"]}
    assert "Ünïcode" in text  # UTF-8, not \u escapes
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left
    assert report_dict(report, extra={})["run"] == {}

    (tmp_path / "a_file").write_text("")
    with pytest.raises(RetrainError, match="cannot write --output_labels .*report.json"):
        write_report_json(tmp_path / "a_file" / "report.json", report_dict(report, extra={}))
    with pytest.raises(RetrainError, match=r"run\.when is a object"):
        report_dict(report, extra={"when": object()})


def test_a_report_of_thousands_of_classes_holds_the_cells_that_are_not_zero(tmp_path: Path) -> None:
    """The whole confusion matrix grows with the square of the class count: from about 4,600 classes report.json
    passed filekinds.MAX_REPORT_BYTES, so retrain and label-image took the run's own report for another file (the
    next run in that folder was refused, the labels lookup failed). Beyond DENSE_MATRIX_CLASSES the report holds
    the matrix's cells that are not zero; up to it, the whole matrix as before."""
    from retrain.filekinds import read_report
    from retrain.insight import report as reports

    count, images = 5000, 20000
    rng = np.random.default_rng(0)
    truth = rng.integers(0, count, images)
    predicted = np.where(rng.random(images) < 0.8, truth, rng.integers(0, count, images))
    labels = [f"class {i}" for i in range(count)]
    report = class_report(labels=labels, truth=truth, predicted=predicted)
    path = tmp_path / "report.json"
    write_report_json(path, report_dict(report, extra={}))
    document = read_report(path)
    assert document is not None, f"{path.stat().st_size} bytes: not taken for a report"
    assert document["confusion_matrix"] is None
    rebuilt = np.zeros((count, count), dtype=np.int64)
    for row, column, cell in document["confusion_cells"]:
        rebuilt[row, column] = cell
    reference = confusion_matrix(truth=truth, predicted=predicted, class_count=count)
    assert (rebuilt == reference).all() and len(document["confusion_cells"]) == np.count_nonzero(reference)
    assert document["confusion_cells"] == sorted(document["confusion_cells"])  # row order
    dense_classes = reports.DENSE_MATRIX_CLASSES
    few = class_report(labels=labels[:dense_classes], truth=truth % dense_classes, predicted=predicted % dense_classes)
    dense = report_dict(few, extra={})
    assert "confusion_cells" not in dense and dense["confusion_matrix"] == few.matrix.tolist()


def test_report_figures_match_the_whole_matrix_and_take_memory_in_images_not_classes_squared() -> None:
    """The report is worked out from the matrix's cells that are not zero: its figures are those of the whole
    matrix (most confused ties to the first class), and 20,000 classes no longer build a 3.2 GB matrix."""
    import tracemalloc

    rng = np.random.default_rng(1)
    count = 12
    truth = rng.integers(0, count, 400)
    predicted = np.where(rng.random(400) < 0.5, truth, rng.integers(0, 3, 400))  # many ties among mistakes
    report = class_report(labels=[str(i) for i in range(count)], truth=truth, predicted=predicted)
    whole = confusion_matrix(truth=truth, predicted=predicted, class_count=count)
    assert (report.matrix == whole).all()
    for i, c in enumerate(report.classes):
        errors = whole[i].copy()
        errors[i] = -1
        expected = (str(int(np.argmax(errors))), int(errors.max())) if errors.max() > 0 else (None, 0)
        assert (c.most_confused_with, c.most_confused_count) == expected
        assert (c.support, c.predicted, c.correct) == (whole[i].sum(), whole[:, i].sum(), whole[i, i])

    count, images = 20000, 80000
    truth = rng.integers(0, count, images)
    predicted = np.where(rng.random(images) < 0.8, truth, rng.integers(0, count, images))
    tracemalloc.start()
    try:
        report = class_report(labels=[f"class {i}" for i in range(count)], truth=truth, predicted=predicted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200e6, f"{peak / 1e6:.0f} MB for {count} classes"
    assert report.correct == int((truth == predicted).sum()) and len(report.classes) == count


# ---------------------------------------------------------------- pictures (Pillow)

def _colour_present(image: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    """Whether some pixel has exactly this colour."""
    return bool(np.all(image == np.array(rgb, dtype=np.uint8), axis=-1).any())


def test_confusion_matrix_colours_are_row_normalised_and_sizes_stay_readable() -> None:
    darkest = tuple(int(c) for c in pictures._row_colours(np.array(1.0)))
    half = tuple(int(c) for c in pictures._row_colours(np.array(0.5)))
    # One image of class a, all right; 200 of class b, split evenly: the lone count is the darkest cell.
    image = pictures.confusion_matrix_image(labels=["a", "b"], matrix=np.array([[1, 0], [100, 100]]))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert _colour_present(image, darkest) and _colour_present(image, half)
    evenly = pictures.confusion_matrix_image(labels=["a", "b"], matrix=np.array([[5, 5], [5, 5]]))
    assert not _colour_present(evenly, darkest) and _colour_present(evenly, half)

    long_name = "a class name far too long to print whole " * 5
    short = pictures.confusion_matrix_image(labels=["x" * 30, "b"], matrix=np.eye(2, dtype=int))
    elided = pictures.confusion_matrix_image(labels=[long_name, "b"], matrix=np.eye(2, dtype=int))
    assert elided.shape[1] <= short.shape[1] + 2 * pictures.MAX_LABEL_PIXELS
    big = pictures.confusion_matrix_image(labels=[f"class {i}" for i in range(50)],
                                          matrix=np.random.default_rng(0).integers(0, 30, (50, 50)))
    assert 900 < big.shape[0] < 1400 and 900 < big.shape[1] < 1400
    with pytest.raises(ValueError):
        pictures.confusion_matrix_image(labels=["a", "b", "c"], matrix=np.eye(2, dtype=int))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Pillow-drawn colour photos, real flower photos and hostile files, per class (plus 'bad')."""
    root = tmp_path_factory.mktemp("photos")
    found: dict[str, list[Path]] = {}
    for c, (label, rgb) in enumerate(RGB.items()):
        found[label] = [colour_photo(root / label / f"{i}.jpg", rgb, seed=10 * c + i, size=(60, 40)) for i in range(4)]
    for label in ("daisy", "roses"):
        found[label] = sorted(require(FLOWERS / label).glob("*.jpg"))[:4]
    (root / "text.jpg").write_text("not an image")
    (root / "a folder.jpg").mkdir()
    os.mkfifo(root / "pipe.jpg")
    found["bad"] = [root / "text.jpg", root / "a folder.jpg", root / "pipe.jpg", root / "missing.jpg"]
    return found


def test_class_names_are_drawn_in_glyphs_the_font_has_never_as_boxes() -> None:
    """Pillow's built-in font has ASCII only: café, Straße and 猫 were drawn with boxes in the confusion matrix and
    the misclassified grid. Pictures now use a system font with wide coverage when there is one, and a character
    the font lacks becomes a readable stand-in."""
    from PIL import ImageFont

    names = ["café", "Straße", "猫", 'rosé "red"', "Ωμέγα", "daisy", "two\nlines\t.jpg"]
    for font in (pictures._font(14), ImageFont.load_default(size=14)):
        for name in names:
            drawn = pictures._drawable(name, font)
            assert all(pictures._has_glyph(font, character) for character in drawn), (name, drawn)
            assert pictures._elide(name, font, 1000) == drawn
        assert pictures._drawable("daisy", font) == "daisy"
    builtin = ImageFont.load_default(size=14)  # Pillow's own, the same everywhere
    assert [pictures._drawable(name, builtin) for name in names[:4]] == [
        "cafe", "Stra<U+00DF>e", "<U+732B>", 'rose "red"']
    # Decomposed, as macOS spells file names (e + U+0301): an accent without a glyph is left out, as for é.
    assert pictures._drawable("cafe\u0301 x\u0301\u0302", builtin) == "cafe x"
    assert not pictures._has_glyph(builtin, "é") and pictures._has_glyph(builtin, "e")
    # A name that starts with an accent: nothing to put it on (it raised IndexError, losing every picture).
    assert pictures._drawn_pieces("\u0301ab", builtin) == ["<U+0301>", "a", "b"]


def test_a_decomposed_accent_is_drawn_as_the_composed_letter_a_font_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """A font with é but without the combining accent (many have no combining marks): e + U+0301 is drawn é,
    not e with its accent left out."""
    from PIL import ImageFont

    monkeypatch.setattr(pictures, "_has_glyph", lambda font, character: character != "\u0301")
    assert pictures._drawable("cafe\u0301", ImageFont.load_default(size=14)) == "café"


def test_a_file_named_like_a_font_in_the_current_folder_is_never_opened(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow opens a bare font name in the current folder first: a pipe named DejaVuSans.ttf there hung the run
    after training, and any file of that name became the pictures' font. Fonts come from system folders only."""
    from PIL import ImageFont

    for name in pictures._FONT_FILES:
        (tmp_path / name).write_bytes(ImageFont.load_default(size=12).font_bytes)  # a real font, in the way
    monkeypatch.chdir(tmp_path)
    pictures._font_files.cache_clear()
    pictures._font.cache_clear()
    try:
        path = getattr(pictures._font(13), "path", None)
        assert path is None or (Path(path).is_absolute() and Path(path).parent != tmp_path), path
    finally:
        pictures._font_files.cache_clear()
        pictures._font.cache_clear()


def test_a_damaged_font_or_a_deep_font_folder_costs_no_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged DejaVuSans.ttf loaded, then failed to draw: the run stopped at step 0 with no model ('invalid
    outline'). A font folder linked to / was walked whole (42 s)."""
    from PIL import ImageFont

    good = ImageFont.load_default(size=12).font_bytes
    damaged = bytearray(good)  # its outlines (the glyf table) 30 % random: it loads, then fails to draw
    tables = {bytes(damaged[12 + 16 * i:16 + 16 * i]): struct.unpack(">II", damaged[20 + 16 * i:28 + 16 * i])
              for i in range(struct.unpack(">H", damaged[4:6])[0])}
    start, length = tables[b"glyf"]
    noise = random.Random(0)
    for i in range(start, start + length):
        if noise.random() < 0.3:
            damaged[i] = noise.randrange(256)
    deep = tmp_path / "fonts" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "DejaVuSans.ttf").write_bytes(good)  # four folders down: not looked for
    (tmp_path / "fonts" / "a" / "NotoSans-Regular.ttf").write_bytes(bytes(damaged))
    (tmp_path / "fonts" / "a" / "b" / "LiberationSans-Regular.ttf").write_bytes(good)
    os.mkfifo(tmp_path / "fonts" / "a" / "b" / "Arial Unicode.ttf")  # a pipe named like a font: opening it hangs
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "Arial.ttf").write_bytes(good)  # the last choice, in the first folder looked in
    monkeypatch.setattr(pictures, "_FONT_FOLDERS", (str(tmp_path / "first"), str(tmp_path / "fonts")))
    monkeypatch.setenv("WINDIR", str(tmp_path / "fonts" / "a"))  # looked in on Windows only
    pictures._font_files.cache_clear()
    pictures._font.cache_clear()
    try:
        assert pictures._font_folders() == [str(tmp_path / "first"), str(tmp_path / "fonts")]
        assert [Path(path).parent.name + "/" + Path(path).name for path in pictures._font_files()] == [
            "a/NotoSans-Regular.ttf", "b/LiberationSans-Regular.ttf", "first/Arial.ttf"]  # in the order preferred
        font = pictures._font(12)
        assert Path(font.path).name == "LiberationSans-Regular.ttf"  # the damaged one passed over
        pictures.confusion_matrix_image(labels=["café", "b"], matrix=np.array([[1, 0], [0, 1]]))
    finally:
        pictures._font_files.cache_clear()
        pictures._font.cache_clear()


def test_a_tile_caption_cuts_only_the_name_and_keeps_the_score() -> None:
    """A 96-pixel tile's `pred: sunflowers 51%` was cut as a whole, `pred: s…rs 51%`, the name lost (probe EE):
    the tiles drop the `true:`/`pred:` words (the heading says which line is which) and cut only the name."""
    font = pictures._font(12)
    assert pictures._caption("sunflowers", " 51%", font, 96) == "sunflowers 51%"
    long = pictures._caption("a_very_long_category_name", " 51%", font, 96)
    assert long.startswith("a_") and long.endswith("e 51%") and "…" in long
    assert pictures._text_width(long, font) <= 96
    heading_font = pictures._font(15)
    grid = pictures.misclassified_grid([(Path("nowhere.jpg"), "roses", "sunflowers", 0.51)], thumbnail=96)
    assert grid.shape[1] >= pictures._text_width("1 misclassified image: true label, then predicted (red) and its "
                                                 "score", heading_font)


def test_a_cut_name_keeps_its_stand_ins_whole() -> None:
    """Tiles cut names in the middle: `<U+96DB>` was cut into `…+9999>`, which names nothing. A cut name fits its
    width, keeps the longer half at its start, and never leaves an accent apart from its letter."""
    from PIL import ImageFont

    from retrain.insight.report import cut_middle

    builtin = ImageFont.load_default(size=10)
    for width in range(30, 200, 7):
        cut = pictures._elide("pred: 雏菊玫瑰郁金香 66%", builtin, width)
        assert re.fullmatch(r"([^<>]|<U\+[0-9A-F]{4,6}>)*", cut), cut
    assert (cut_middle("abcdef", 1), cut_middle("abcdefgh", 3), cut_middle(["<a>", "b", "<c>"], 2)) == (
        "a…", "ab…h", "<a>…<c>")
    for font in (builtin, pictures._font(12)):
        for width in range(20, 260, 9):
            for name in ("猫猫猫猫猫猫", "résumé_été_été_résumé_été".replace("é", "e\u0301"), "x\u0301q\u0323" * 9):
                cut = pictures._elide(name, font, width)
                assert pictures._text_width(cut, font) <= width or len(cut) <= 2, (name, width, cut)
                assert not re.search("…[\u0300-\u036f]", unicodedata.normalize("NFD", cut)), (width, cut)


def test_misclassified_grid_survives_unreadable_images_and_caps(photos: dict[str, list[Path]]) -> None:
    good = [(p, "daisy", "roses", 0.9) for p in photos["daisy"]]
    bad = [(p, "red", "blue", 0.5) for p in photos["bad"]]
    grid = pictures.misclassified_grid(bad + good, thumbnail=48, columns=4)  # a pipe must not hang it
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    placeholder = np.array(pictures._PLACEHOLDER, dtype=np.uint8)
    assert (np.all(grid == placeholder, axis=-1).sum() > 4 * 48 * 48 * 0.5)  # four grey tiles
    capped = pictures.misclassified_grid((bad + good) * 3, thumbnail=48, columns=4, limit=8)
    uncapped = pictures.misclassified_grid((bad + good) * 3, thumbnail=48, columns=4, limit=24)
    assert capped.shape[0] == grid.shape[0] < uncapped.shape[0]  # 24 items, 8 tiles: the rows of 8 items
    assert capped.shape[1] > grid.shape[1]  # a longer heading: "8 of 24 ... (+16 more)"
    empty = pictures.misclassified_grid([])
    assert empty.shape[0] < 100


def test_sprite_puts_thumbnails_row_by_row(photos: dict[str, list[Path]]) -> None:
    paths = photos["red"][:2] + photos["bad"][:1] + photos["roses"][:2]
    sheet = pictures.sprite(paths, size=16)
    assert sheet.shape == (48, 48, 3)  # 5 images -> a 3 x 3 grid
    cells = sheet.reshape(3, 16, 3, 16, 3).transpose(0, 2, 1, 3, 4).reshape(9, 16, 16, 3)
    assert cells[0].mean(axis=(0, 1))[0] > 150 and cells[0].mean(axis=(0, 1))[2] < 120  # red photo
    assert np.all(cells[2][0, 2] == pictures._PLACEHOLDER)  # unreadable
    assert np.all(cells[5:] == 255)  # unused cells stay white
    assert pictures.sprite([], size=16).shape == (0, 0, 3)


def test_the_sprite_shows_progress_when_it_takes_long(photos: dict[str, list[Path]], monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Each photo is decoded in full: 2,000 large test photos took minutes without a word after the run's last
    line (probe PP). Past a few seconds, a progress line says how far it is."""
    import itertools
    import logging

    caplog.set_level(logging.INFO, logger="retrain")
    monkeypatch.setattr("retrain.progress.time.monotonic", itertools.count(0, 4.0).__next__)  # 4 s a photo
    pictures.sprite(photos["red"][:3], size=16)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("Drawing the Embedding Projector's thumbnails: 3/3 images in "), lines


def test_a_16_bit_photo_is_drawn_as_training_reads_it_not_white(tmp_path: Path) -> None:
    """A 16-bit greyscale PNG (a scan, a microscope image) was a blank white tile in the sprite and the
    misclassified grid: Pillow's convert("RGB") clips its values, where training keeps the high byte (probe EE)."""
    from PIL import Image

    from retrain.images import decode_rgb

    path = tmp_path / "scan.png"
    Image.fromarray(np.full((40, 48), 200 * 256, np.uint16)).save(path)
    trained = decode_rgb(path.read_bytes()).mean()
    assert abs(trained - 200) < 1
    assert np.abs(pictures.sprite([path], size=16)[8, 8].astype(int) - 200).max() <= 1  # its middle
    grid = pictures.misclassified_grid([(path, "a", "b", 0.5)], thumbnail=48)
    assert (np.abs(grid.astype(int) - 200) <= 1).all(axis=-1).sum() > 40 * 40  # the tile, grey as trained on


def test_picture_steps_are_few_evenly_spaced_and_include_the_last() -> None:
    from retrain.insight.tensorboard import picture_steps

    chosen = picture_steps(steps=4000, interval=10, limit=10)
    assert len(chosen) == 10 and 0 in chosen and 3999 in chosen
    assert all(step % 10 == 0 for step in chosen - {3999})
    assert picture_steps(steps=21, interval=10, limit=10) == {0, 10, 20}
    assert picture_steps(steps=25, interval=10, limit=10) == {0, 10, 20, 24}
    assert picture_steps(steps=4000, interval=10, limit=0) == frozenset()
    assert len(picture_steps(steps=10**9, interval=10, limit=10)) == 10  # computed, not listed


# ---------------------------------------------------------------- TensorBoard (real writers and readers)

@pytest.fixture(scope="module")
def run(photos: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run folder written by every writer, from synthetic predictions over the photos."""
    from retrain.insight import tensorboard as insight
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(1)
    paths = [p for label in LABELS for p in photos[label]] + photos["bad"][:1]
    truth = np.array([LABELS.index(label) for label in LABELS for _ in photos[label]] + [LABELS.index("red")])
    logits = 3.0 * np.eye(len(LABELS))[truth] + rng.normal(0, 1.2, (len(truth), len(LABELS)))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    report = class_report(labels=LABELS, truth=truth, predicted=predicted)
    vectors = rng.normal(0, 1, (len(truth), 24)).astype(np.float32)
    run_dir = tmp_path_factory.mktemp("logs") / "20261125-101652"
    with tf.summary.create_file_writer(str(run_dir / "validation")).as_default(step=90):
        tf.summary.scalar("accuracy", 0.8)  # what the training loop writes
    wrong = [(paths[i], LABELS[truth[i]], LABELS[predicted[i]], float(probabilities[i, predicted[i]]))
             for i in np.flatnonzero(predicted != truth)]
    assert wrong, "the synthetic predictions should hold some mistakes"
    insight.write_confusion_matrix(run_dir, split="test", labels=LABELS, matrix=report.matrix, step=100)
    insight.write_confusion_matrix(run_dir, split="validation", labels=LABELS, matrix=report.matrix[::-1], step=90)
    insight.write_pr_curves(run_dir, split="test", labels=LABELS, truth=truth, probabilities=probabilities, step=100)
    insight.write_misclassified(run_dir, items=wrong, step=100)
    insight.write_hparams(run_dir, hparams={"learning_rate": 0.01, "flip_left_right": False, "saved_model_dir": None,
                                            "tfhub_module": Path("/m/mobilenet"), "how_many_training_steps": 100},
                          metrics={"test/accuracy": report.accuracy, "test/macro_f1": report.macro["f1"]}, step=100)
    config = insight.write_projector(run_dir, vectors=vectors, labels=[LABELS[t] for t in truth], paths=paths,
                                     predicted=[LABELS[p] for p in predicted])
    return {"dir": run_dir, "truth": truth, "probabilities": probabilities, "report": report, "wrong": wrong,
            "vectors": vectors, "config": config}


def _accumulator(folder: Path):
    """TensorBoard's own event reader over one run folder, keeping everything."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={k: 0 for k in
                                   ("compressedHistograms", "images", "audio", "scalars", "histograms", "tensors")})
    return accumulator.Reload()


def _png(event) -> np.ndarray:
    """The picture inside a TF2 image summary (string tensor: width, height, PNG)."""
    width, height, encoded = event.tensor_proto.string_val
    image = np.asarray(Image.open(io.BytesIO(encoded)))
    assert image.shape[:2] == (int(height), int(width))
    return image


def test_confusion_matrices_read_back(run: dict) -> None:
    from tensorboard.util import tensor_util

    test = _accumulator(run["dir"] / "test")
    assert test.SummaryMetadata("confusion_matrix").plugin_data.plugin_name == "images"
    (event,) = test.Tensors("confusion_matrix")
    assert event.step == 100
    matrix = run["report"].matrix
    drawn = pictures.confusion_matrix_image(labels=LABELS, matrix=matrix,
                                            title=f"Confusion matrix: test, step 100 (N={len(run['truth'])})")
    assert np.array_equal(_png(event), drawn)
    (counts,) = test.Tensors("confusion_matrix/counts")
    table = tensor_util.make_ndarray(counts.tensor_proto).item().decode()
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    read = np.array([[int(cell) for cell in row[1:-1]] for row in rows])
    assert [row[0].strip() for row in rows] == LABELS
    assert np.array_equal(read, matrix) and read.sum() == len(run["truth"])  # counts sum to the test split

    validation = _accumulator(run["dir"] / "validation")
    assert [e.step for e in validation.Tensors("confusion_matrix")] == [90]
    assert "accuracy" in validation.Tags()["tensors"]  # beside the training loop's scalars


def test_pr_curves_read_back(run: dict) -> None:
    from tensorboard.util import tensor_util

    test = _accumulator(run["dir"] / "test")
    truth = run["truth"]
    for index, label in enumerate(LABELS):
        tag = f"{label}/pr_curves"
        assert test.SummaryMetadata(tag).plugin_data.plugin_name == "pr_curves"
        (event,) = test.Tensors(tag)
        tp, fp, tn, fn, precision, recall = tensor_util.make_ndarray(event.tensor_proto)
        support = int((truth == index).sum())
        assert tp[0] == support and fp[0] == len(truth) - support  # threshold 0: everything is positive
        assert np.all(tp + fn == support) and np.all(fp + tn == len(truth) - support)
        assert np.all(np.diff(recall) <= 1e-6) and recall[0] == 1.0


def test_misclassified_grid_reads_back(run: dict) -> None:
    test = _accumulator(run["dir"] / "test")
    (event,) = test.Tensors("misclassified")
    ordered = sorted(run["wrong"], key=lambda item: -item[3])
    assert np.array_equal(_png(event), pictures.misclassified_grid(ordered))


def _plugin_context(logdir: Path):
    """TensorBoard's own data provider over `logdir`, as the dashboard plugins see it."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer,
                                 data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)))


def _call(app, path: str, *, body: dict | None = None) -> bytes:
    """One request to a plugin's WSGI route; a non-200 answer fails the test."""
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    client = Client(app, Response)
    response = client.post(path, json=body) if body is not None else client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data()


def test_hparams_dashboard_sees_flags_and_metrics(run: dict) -> None:
    from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin

    apps = HParamsPlugin(_plugin_context(run["dir"].parent)).get_plugin_apps()
    groups = json.loads(_call(apps["/session_groups"], "/session_groups", body={
        "startIndex": 0, "sliceSize": 10, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}))
    (group,) = groups["sessionGroups"]
    assert group["name"] == run["dir"].name
    assert group["hparams"] == {"learning_rate": 0.01, "flip_left_right": False, "saved_model_dir": "none",
                                "tfhub_module": "/m/mobilenet", "how_many_training_steps": 100.0}
    metrics = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]}
    assert metrics[("", "test/accuracy")] == pytest.approx(run["report"].accuracy)
    assert metrics[("", "test/macro_f1")] == pytest.approx(run["report"].macro["f1"])
    assert metrics[("validation", "accuracy")] == pytest.approx(0.8)  # the training curves count too


def test_projector_serves_tensor_metadata_and_sprite(run: dict) -> None:
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    assert run["config"] == run["dir"] / "test" / "projector_config.pbtxt"
    plugin = ProjectorPlugin(_plugin_context(run["dir"].parent))
    apps = plugin.get_plugin_apps()
    name = f"{run['dir'].name}/test"
    query = f"?run={name}&name=test%20bottlenecks"
    info = json.loads(_call(apps["/info"], "/info?run=" + name))
    (embedding,) = info["embeddings"]
    rows = len(run["truth"])
    assert embedding["tensorShape"] == [rows, 24]
    tensor = np.frombuffer(_call(apps["/tensor"], "/tensor" + query), dtype=np.float32).reshape(rows, 24)
    np.testing.assert_allclose(tensor, run["vectors"], rtol=1e-4, atol=1e-6)
    metadata = _call(apps["/metadata"], "/metadata" + query).decode().splitlines()
    assert metadata[0] == "label\tpredicted\tfile" and len(metadata) == rows + 1
    assert [line.split("\t")[0] for line in metadata[1:]] == [LABELS[t] for t in run["truth"]]
    sheet = Image.open(io.BytesIO(_call(apps["/sprite_image"], "/sprite_image" + query)))
    side = int(np.ceil(np.sqrt(rows)))
    assert sheet.size == (side * embedding["sprite"]["singleImageDim"][0],) * 2


def test_projector_caps_rows_and_says_so(tmp_path: Path, photos: dict[str, list[Path]]) -> None:
    from tensorboard.util import tensor_util

    from retrain.insight.tensorboard import write_projector

    paths = photos["green"] * 3
    vectors = np.arange(len(paths) * 2, dtype=np.float32).reshape(-1, 2)
    config = write_projector(tmp_path / "run", vectors=vectors, labels=["green"] * len(paths), paths=paths, limit=5)
    kept = np.loadtxt(config.parent / "projector" / "tensors.tsv", delimiter="\t", ndmin=2)
    assert kept.shape == (5, 2) and np.all(np.diff(kept[:, 0]) > 0)  # a sample, in the original order
    (note,) = _accumulator(tmp_path / "run" / "test").Tensors("projector")
    assert "5 of 12 test bottlenecks" in tensor_util.make_ndarray(note.tensor_proto).item().decode()
    assert write_projector(tmp_path / "empty", vectors=np.zeros((0, 2)), labels=[], paths=[]) is None


def test_unwritable_summaries_folder_is_a_clean_error(tmp_path: Path) -> None:
    from retrain.insight.tensorboard import write_confusion_matrix

    (tmp_path / "a_file").write_text("")
    with pytest.raises(RetrainError, match="choose a writable --summaries_dir"):
        write_confusion_matrix(tmp_path / "a_file", split="test", labels=["a", "b"], matrix=np.eye(2, dtype=int),
                               step=0)


# ---------------------------------------------------------------- a real TensorBoard (integration)

def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.integration
def test_tensorboard_serves_the_run(run: dict, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "tensorboard.log"
    with log.open("wb") as sink:  # a file, not a pipe: nothing can block on a full pipe or on reading a live one
        process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run["dir"].parent),
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/data/runs", timeout=2) as answer:
                    runs = json.load(answer)
                if runs:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tensorboard did not answer on {base}:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        with urllib.request.urlopen(base + "/data/plugin/images/tags", timeout=10) as answer:
            tags = json.load(answer)
        assert {"confusion_matrix", "misclassified"} <= set(tags[f"{run['dir'].name}/test"])
        with urllib.request.urlopen(base + "/data/plugin/pr_curves/tags", timeout=10) as answer:
            assert f"{LABELS[0]}/pr_curves" in json.load(answer)[f"{run['dir'].name}/test"]
        with urllib.request.urlopen(f"{base}/data/plugin/projector/info?run={run['dir'].name}/test", timeout=30) as answer:
            assert json.load(answer)["embeddings"][0]["tensorName"] == "test bottlenecks"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
