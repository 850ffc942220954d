"""The image tree walk and the deterministic split (no TensorFlow)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from retrain.errors import RetrainError
from retrain.labels.folder import FolderSource
from retrain.labels.split import MAX_NUM_IMAGES_PER_CLASS, SPLITS, split_of


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def scan(root: Path, validation: float = 10, testing: float = 10):
    return FolderSource(root, validation_percentage=validation, testing_percentage=testing).scan()


def files_of(labels, name: str, split: str = "training") -> list[Path]:
    """The files of one class in one split, in order."""
    index = labels.names.index(name)
    return [p for p, i in zip(labels.files[split], labels.targets[split].ids) if i == index]


def split_map(labels, root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): name for name in SPLITS for p in labels.files[name]}


def classic_split(name: str, validation: float, testing: float) -> str:
    """The classic retrain.py formula, written out independently."""
    value = int(hashlib.sha1(name.encode()).hexdigest(), 16)
    percent = (value % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    return "validation" if percent < validation else "testing" if percent < validation + testing else "training"


def test_split_matches_classic_formula_on_relative_path():
    for i in range(200):
        name = f"roses/img_{i}.jpg"
        assert split_of(name, validation_percentage=10, testing_percentage=10) == classic_split(name, 10, 10)


def test_the_split_is_strict_at_its_boundaries_as_the_classic_formula() -> None:
    """An image whose percentage is exactly --validation_percentage (or the sum) is not in that split, as in
    the classic `percentage_hash < validation_percentage` (probe ZZI: `<=` went unnoticed)."""
    name = "roses/img_7.jpg"
    value = int(hashlib.sha1(name.encode()).hexdigest(), 16)
    percent = (value % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    assert split_of(name, validation_percentage=percent, testing_percentage=1) == "testing"
    assert split_of(name, validation_percentage=0, testing_percentage=percent) == "training"
    assert split_of(name, validation_percentage=percent + 1e-9, testing_percentage=0) == "validation"


def test_the_split_hashes_the_composed_unicode_form_as_the_readme_says() -> None:
    """README: the path is hashed in its NFC form (probe ZZI: hashing both spellings as NFD agreed with itself
    and went unnoticed, but moved every accented name's split away from the documented one)."""
    import unicodedata

    for i in range(40):
        name = f"caf\u00e9/cr\u00e8me_{i}.jpg"
        for spelt in (name, unicodedata.normalize("NFD", name)):
            assert split_of(spelt, validation_percentage=30, testing_percentage=30) == classic_split(name, 30, 30)


def test_classes_are_in_the_classic_order_of_their_folder_names(tmp_path: Path) -> None:
    """The labels file's order is the model's output order: the classic script sorted the folder paths by code
    point, capitals first (probe ZZI: a case-folded sort went unnoticed, and would renumber every old model's
    classes)."""
    for name in ("apple", "Zebra", "Mango", "banana"):
        for photo in ("a.jpg", "b.jpg"):
            touch(tmp_path / name / photo)
    assert scan(tmp_path, 0, 0).names == ("Mango", "Zebra", "apple", "banana")


def test_a_label_sources_classes_are_sorted_whatever_order_it_gives_them_in(tmp_path: Path) -> None:
    """A CSV lists its rows in any order; the classes are still sorted, as the folder source's are (probe ZZI:
    taking them in the order met went unnoticed)."""
    from retrain.labels import Example, build

    examples = [Example(tmp_path / f"{label}_{i}.jpg", (label,), "training")
                for label in ("zebra", "Mango", "apple") for i in range(2)]
    assert build(examples, source="--labels_csv l.csv", multi_label=False).names == ("Mango", "apple", "zebra")


def test_a_half_left_for_training_is_not_called_scant() -> None:
    from retrain.labels.split import scant_training

    assert scant_training(validation_percentage=25, testing_percentage=25) == ""
    assert scant_training(validation_percentage=25, testing_percentage=25.5) == \
        "--testing_percentage 25.5 and --validation_percentage 25 leave 49.5% for training"


def test_classes_and_files_sorted_extensions_any_case(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    for name in ["b.JPG", "a.jpeg", "c.Png", "d.gif", "e.BMP", "f.webp", "notes.txt", ".DS_Store", "Thumbs.db"]:
        touch(tmp_path / "zebra" / name)
        touch(tmp_path / "apple" / name)
    touch(tmp_path / "README.md")
    with caplog.at_level(logging.INFO):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("apple", "zebra")
    assert [p.name for p in files_of(labels, "apple")] == ["a.jpeg", "b.JPG", "c.Png", "d.gif", "e.BMP", "f.webp"]
    assert "ignored 3 non-image file(s)" in caplog.text


def test_the_folders_systems_and_nas_boxes_keep_beside_photos_are_neither_classes_nor_photos(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Probe NNN: a USB stick used as --image_dir made `$RECYCLE.BIN` (deleted photos) and `System Volume
    Information` classes, exit 0, and Synology's `@eaDir/<photo>/SYNOPHOTO_THUMB_M.jpg` thumbnails roses."""
    for folder in ["$RECYCLE.BIN/S-1-5-21-1", "System Volume Information", "lost+found", "#recycle", "@Recycle"]:
        touch(tmp_path / folder / "deleted.jpg")
    touch(tmp_path / "$Recycle.Bin" / "x.jpg")  # (Windows names it in either case)
    for name in ["a.jpg", "@eaDir/a.jpg/SYNOPHOTO_THUMB_M.jpg", "@__thumb/a.jpg", "#snapshot/old.jpg"]:
        touch(tmp_path / "roses" / name)
    touch(tmp_path / "tulips" / "b.jpg")
    touch(tmp_path / "recycled" / "c.jpg")  # a class (probe QQQ: dropped as Windows XP's RECYCLED)
    with caplog.at_level(logging.INFO):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("recycled", "roses", "tulips") and [p.name for p in files_of(labels, "roses")] == ["a.jpg"]
    assert caplog.text.count("folder(s) systems and NAS boxes keep") == 1, caplog.text  # one line (probe SSS)
    assert f"ignored 9 folder(s) systems and NAS boxes keep beside photos under {tmp_path}, e.g. " in caplog.text


def test_a_class_folder_whose_name_prints_as_blank_is_skipped_and_said(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture):
    """Probe ZZT: `' '` was refused as blank, but a blank braille cell or a zero-width space was trained, its row
    and its line in the labels file empty to the eye."""
    for name in ("\u2800", "\u200b", " ", "red", "blue", "\u06dd"):  # (the end of ayah sign prints: probe ZZV)
        touch(tmp_path / name / "a.jpg")
    with caplog.at_level(logging.WARNING):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("blue", "red", "\u06dd")
    said = sorted(r.getMessage() for r in caplog.records if "skipping class folder" in r.getMessage())
    assert said == [f"skipping class folder {name!r}: it {how}, and the labels file holds one label per line; rename "
                    "it to use it" for name, how in ((" ", "is blank"), ("\u200b", "prints as blank"),
                                                     ("\u2800", "prints as blank"))], said


def test_a_hidden_folder_holding_images_is_no_class_but_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Probe ZZQ: a class folder `.NET` was dropped with its photos, exit 0, with nothing said. Hidden folders
    stay no class (`.git`, a file manager's `.thumbnails`); one holding images is named in a warning."""
    for name in (".NET/a.jpg", ".my thumbs/b.PNG", ".git/config", ".empty/notes.txt", "java/c.jpg", "go/d.jpg",
                 ".AppleDouble/c.jpg", ".@__thumb/c.jpg", ".Trash-1000/e.jpg", "java/.AppleDouble/c.jpg"):
        touch(tmp_path / name)
    touch(tmp_path / ".hidden.jpg")  # a hidden file: not a folder
    with caplog.at_level(logging.INFO):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("go", "java") and [p.name for p in files_of(labels, "java")] == ["c.jpg"]
    said = [r.getMessage() for r in caplog.records if "are hidden" in r.getMessage()]
    assert said == [f"2 folder(s) in --image_dir hold images but are hidden (their names start with '.'), so they "
                    f"are not classes (e.g. {tmp_path / '.NET'}); rename one without the '.' to train it"], said
    # The systems' own (probe ZZS: netatalk's, QNAP's, a desktop's trash) are counted with the other system folders.
    assert f"ignored 4 folder(s) systems and NAS boxes keep beside photos under {tmp_path}" in caplog.text


def test_a_class_whose_validation_or_test_images_all_prove_unusable_is_said_to_have_none_left(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Probe NNN: 150 online-only placeholders (empty files) beside 10 photos gave the class all its validation
    and test images from the walk; once they were dropped it had none, and nothing said so (with 10 photos
    alone, the walk's warning did)."""
    for name in ("roses", "tulips"):
        for i in range(30):
            touch(tmp_path / name / f"{name}_{i}.jpg")
    labels = scan(tmp_path, 20, 20)
    evaluated = files_of(labels, "roses", "validation") + files_of(labels, "roses", "testing")
    assert evaluated and files_of(labels, "tulips", "testing")
    usable = set(labels.all_files()) - set(evaluated) - set(files_of(labels, "tulips", "testing"))
    with caplog.at_level(logging.WARNING):
        kept = labels.keep(usable)
    assert kept.names == ("roses", "tulips") and not files_of(kept, "roses", "validation")
    assert [r.getMessage() for r in caplog.records] == [
        "class 'roses' has no usable image left in the validation or testing split (those there could not be used); "
        "add images for a fair evaluation",
        "class 'tulips' has no usable image left in the testing split (those there could not be used); add images "
        "for a fair evaluation"]


def test_photos_in_formats_retrain_does_not_read_get_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """TIFF scans or an iPhone's HEIC photos were left out of training with one INFO line among the others (label-
    image classifies a TIFF given by name): a user meant them as photos. JPEGs a browser saved as .jfif only need
    a new name. Other files keep their INFO line."""
    for name in ["a.jpg", "scan1.tif", "scan2.TIFF", "IMG_1.HEIC", "notes.txt", "saved.jfif", "old.JPE"]:
        touch(tmp_path / "apple" / name)
    touch(tmp_path / "zebra" / "b.jpg")
    with caplog.at_level(logging.INFO):
        labels = scan(tmp_path, 0, 0)
    assert [p.name for p in files_of(labels, "apple")] == ["a.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"ignored 3 photo(s) in formats retrain does not read (.heic .tif .tiff) under {tmp_path}, "
                        f"e.g. {tmp_path / 'apple' / 'IMG_1.HEIC'}: convert them to JPEG or PNG to train on them",
                        f"ignored 2 photo(s) named as retrain does not read (.jfif .jpe) under {tmp_path}, "
                        f"e.g. {tmp_path / 'apple' / 'old.JPE'}: rename them .jpg (they are JPEGs) to train on them"]
    assert f"ignored 1 non-image file(s) under {tmp_path}, e.g. {tmp_path / 'apple' / 'notes.txt'}" in caplog.text
    # label-image's walk of a folder left them out without a word, though it classifies each named alone (probe PP)
    from retrain.labels.folder import image_files

    # (it takes those it reads when each is named: TIFF, .jfif; probe QQ)
    caplog.clear()
    touch(tmp_path / "apple" / "x.jp2")  # and JPEG 2000, for which Pillow has a decoder (probe RR)
    for name in ("y.ppm", "z.TGA", "w.j2k"):  # netpbm, Targa, a raw JPEG 2000 stream: skipped silently (probe SS)
        touch(tmp_path / "apple" / name)
    assert [path.name for path in image_files(tmp_path / "apple")] == ["a.jpg", "old.JPE", "saved.jfif", "scan1.tif",
                                                                       "scan2.TIFF", "w.j2k", "x.jp2", "y.ppm",
                                                                       "z.TGA"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"ignored 1 photo(s) in formats retrain does not read (.heic) under {tmp_path / 'apple'}, e.g. "
        f"{tmp_path / 'apple' / 'IMG_1.HEIC'}: convert them to JPEG or PNG to classify them"]


def test_a_long_walk_of_the_image_folders_says_how_far_it_has_got(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A million photos took 20 s to find, in silence, before the first line of the run (probe Z)."""
    from retrain.labels import folder

    for i in range(2100):
        touch(tmp_path / ("apple" if i % 2 else "zebra") / f"p{i:05d}.jpg")
    monkeypatch.setattr(folder, "WALK_NOTE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO):
        scan(tmp_path, 0, 0)
    notes = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    assert notes == [f"looking for images in --image_dir {tmp_path}: {n} so far" for n in (1024, 2048)]


def test_split_stable_when_files_are_added_and_independent_of_location(tmp_path: Path):
    first = tmp_path / "one" / "images"
    for i in range(60):
        touch(first / "cats" / f"c{i}.jpg")
        touch(first / "dogs" / f"d{i}.jpg")
    before = split_map(scan(first), first)
    for i in range(60, 200):
        touch(first / "cats" / f"c{i}.jpg")
    after = split_map(scan(first), first)
    assert all(after[k] == v for k, v in before.items())
    # Same tree elsewhere, spelled with a trailing slash and '..': same split.
    moved = tmp_path / "two" / "deeper" / "images"
    moved.parent.mkdir(parents=True)
    first.rename(moved)
    spelled = Path(str(moved.parent / ".." / "deeper" / "images") + "/")
    assert split_map(scan(spelled), spelled) == after
    assert set(after.values()) == {"training", "validation", "testing"}


def test_nohash_files_share_a_split(tmp_path: Path):
    for i in range(40):
        for variant in range(4):
            touch(tmp_path / "speech" / f"clip{i}_nohash_{variant}.png")
        touch(tmp_path / "noise" / f"n{i}.png")
    labels = scan(tmp_path, 20, 20)
    by_clip: dict[str, set[str]] = {}
    for rel, split in split_map(labels, tmp_path).items():
        if rel.startswith("speech/"):
            by_clip.setdefault(rel.split("_nohash_")[0], set()).add(split)
    assert all(len(splits) == 1 for splits in by_clip.values())
    assert len({s for splits in by_clip.values() for s in splits}) == 3


def test_nohash_in_a_folder_name_does_not_put_the_whole_class_in_one_split(tmp_path: Path):
    """`_nohash_` groups files by their name; a class folder (or sub-folder) `b_nohash_2019` once hashed every
    photo in it as `b`, so the whole class landed in one split (no test images, or no training images)."""
    for i in range(60):
        touch(tmp_path / "b_nohash_2019" / f"p{i}.jpg")
        touch(tmp_path / "other" / "shoot_nohash_a" / f"q{i}.jpg")
    splits = split_map(scan(tmp_path, 20, 20), tmp_path)
    assert {split for rel, split in splits.items() if rel.startswith("b_nohash_2019/")} == set(SPLITS)
    assert {split for rel, split in splits.items() if rel.startswith("other/")} == set(SPLITS)
    assert split_of("b_nohash_2019/p1_nohash_0.jpg", validation_percentage=20, testing_percentage=20) == \
        split_of("b_nohash_2019/p1_nohash_7.jpg", validation_percentage=20, testing_percentage=20)


def test_small_class_is_trained_on_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    for i in range(30):
        touch(tmp_path / "big" / f"{i}.jpg")
    # Find a single file name that the hash puts in validation: the class has no training image.
    name = next(f"{i}.jpg" for i in range(1000)
                if split_of(f"tiny/{i}.jpg", validation_percentage=10, testing_percentage=10) == "validation")
    touch(tmp_path / "tiny" / name)
    with caplog.at_level(logging.WARNING):
        labels = scan(tmp_path)
    assert [p.name for p in files_of(labels, "tiny")] == [name] and not files_of(labels, "tiny", "validation")
    assert "tiny" in caplog.text and "training" in caplog.text


def test_nested_folders_belong_to_their_class_and_hidden_ones_are_skipped(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture):
    """Images in folders inside a class are the class's; said, as the classic script left them out (probe ZZP:
    a classic user's `roses/rejected` trained as roses without a word)."""
    touch(tmp_path / "cats" / "2019" / "a.jpg")
    touch(tmp_path / "cats" / "b.jpg")
    touch(tmp_path / "cats" / ".thumbnails" / "c.jpg")
    touch(tmp_path / "dogs" / "d.jpg")
    touch(tmp_path / "dogs" / "rejected" / "deep" / "e.jpg")
    with caplog.at_level(logging.INFO):
        labels = scan(tmp_path, 0, 0)
    assert [p.relative_to(tmp_path).as_posix() for p in files_of(labels, "cats")] == ["cats/2019/a.jpg", "cats/b.jpg"]
    said = [r.getMessage() for r in caplog.records if "inside class folders" in r.getMessage()]
    assert said == [f"2 image(s) in folders inside class folders are trained as their class (e.g. {tmp_path}/cats/"
                    "2019); the classic retrain.py left such folders out, so move out any you keep apart"], said


@pytest.mark.parametrize("layout, message", [
    ({}, "no class folders"),
    ({"only/a.jpg": b"x"}, "1 class folder"),
    ({"a/notes.txt": b"x", "b/x.jpg": b"x"}, "1 class folder"),
])
def test_fewer_than_two_classes_is_a_clear_error(tmp_path: Path, layout: dict[str, bytes], message: str):
    for name, data in layout.items():
        touch(tmp_path / name, data)
    with pytest.raises(RetrainError, match=message):
        scan(tmp_path)


def test_missing_or_file_image_dir(tmp_path: Path):
    with pytest.raises(RetrainError, match="does not exist"):
        scan(tmp_path / "nope")
    with pytest.raises(RetrainError, match="is a file"):
        scan(touch(tmp_path / "file.jpg"))


def test_names_that_are_not_utf8_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A file or class folder whose name is not valid UTF-8 is skipped, never a traceback."""
    root = os.fsencode(tmp_path)
    for name in (b"cats/a.jpg", b"cats/caf\xe9.jpg", b"dogs/d.jpg", b"bad\xff/x.jpg"):
        os.makedirs(os.path.dirname(root + b"/" + name), exist_ok=True)
        with open(root + b"/" + name, "wb") as handle:
            handle.write(b"x")
    with caplog.at_level(logging.WARNING):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("cats", "dogs")
    assert [p.name for p in files_of(labels, "cats")] == ["a.jpg"]
    assert "caf\\xe9.jpg: its name is not valid UTF-8" in caplog.text
    assert "bad\\xff: its name is not valid UTF-8" in caplog.text


@pytest.mark.parametrize("name", ["two\nlines", "carriage\rreturn", "tab\there", "sep\u2028arator", "   "])
def test_class_names_that_cannot_be_one_line_are_skipped(tmp_path: Path, name: str,
                                                        caplog: pytest.LogCaptureFixture):
    for folder in ("cats", "dogs", name):
        touch(tmp_path / folder / "a.jpg")
    with caplog.at_level(logging.WARNING):
        labels = scan(tmp_path, 0, 0)
    assert labels.names == ("cats", "dogs")
    assert f"skipping class folder {name!r}" in caplog.text and "one label per line" in caplog.text


def test_a_name_decomposed_as_macos_writes_it_splits_as_its_composed_spelling() -> None:
    """A tree copied from a Mac names `café.jpg` with `e` + U+0301: its images must stay in their splits."""
    import unicodedata

    names = [f"caf\u00e9/cr\u00e8me_br\u00fbl\u00e9e_{i}.jpg" for i in range(20)] + ["\u00c5ngstr\u00f6m/\u00f1.png"]
    for name in names:
        decomposed = unicodedata.normalize("NFD", name)
        assert decomposed != name
        assert split_of(decomposed, validation_percentage=50, testing_percentage=0) == \
            split_of(name, validation_percentage=50, testing_percentage=0), name
