"""The folder walk on hostile trees: links, broken links, loose images, shared files; and noisy EXIF.

Real files and real symlinks in tmp_path; the folder label source is called directly (no training, no
TensorFlow), so each test takes a fraction of a second.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain.labels.folder import FolderSource, image_files
from tests.conftest import COLOURS, colour_photo, make_colour_tree, run_script


def scan(tree: Path):
    return FolderSource(tree, validation_percentage=0, testing_percentage=0).scan()


def counts(labels) -> dict[str, int]:
    """Images per class, as the run would train them."""
    found = collections.Counter(e.labels[0] for e in labels.examples)
    return {name: found[name] for name in labels.names}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_colour_tree(tmp_path / "photos", per_class=3)


# --- links that lead back up are not followed; links elsewhere are -----------------------------------

def test_a_link_back_to_the_image_root_is_not_followed(tree: Path, caplog) -> None:
    """Inside a class or as a class of its own: following it would train every class again under its name."""
    (tree / "red" / "up").symlink_to(tree)
    (tree / "red" / "up_relative").symlink_to(Path("..", "..", "photos"))
    (tree / "self").symlink_to(tree)
    labels = scan(tree)
    assert counts(labels) == {"blue": 3, "green": 3, "red": 3}
    assert f"not following {tree / 'red' / 'up'}: it leads back to --image_dir {tree} itself" in warnings_of(caplog)
    assert f"not following {tree / 'red' / 'up_relative'}: it leads back to --image_dir {tree} itself" \
        in warnings_of(caplog)
    assert (f"not following {tree / 'self'}: it leads back to --image_dir {tree} itself; class skipped"
            in warnings_of(caplog))


def test_a_link_to_a_folder_holding_the_image_root_is_not_followed(tree: Path, tmp_path: Path, caplog) -> None:
    """`ln -s / photos/red/root` walked the whole filesystem (51,744 'training images') under 'red'."""
    (tree / "red" / "root").symlink_to("/")
    (tree / "red" / "parent").symlink_to(tmp_path)
    (tree / "everything").symlink_to(tmp_path.parent)
    labels = scan(tree)
    assert counts(labels) == {"blue": 3, "green": 3, "red": 3}
    assert warnings_of(caplog) == [
        (f"not following {tree / 'everything'}: it leads to {tmp_path.parent}, which holds --image_dir {tree}; "
         "class skipped"),
        f"not following {tree / 'red' / 'parent'}: it leads to {tmp_path}, which holds --image_dir {tree}",
        f"not following {tree / 'red' / 'root'}: it leads to /, which holds --image_dir {tree}",
    ]


def test_the_root_is_recognised_however_it_is_spelled(tmp_path: Path, caplog) -> None:
    """--image_dir given through a link: a link to the folder holding the link is an ancestor too."""
    tree = make_colour_tree(tmp_path / "real" / "photos", per_class=2)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "shortcut").symlink_to(tree)
    spelled = tmp_path / "links" / "shortcut"
    (tree / "red" / "links").symlink_to(tmp_path / "links")  # holds the path as spelled, not the real folder
    labels = scan(spelled)
    assert counts(labels) == {"blue": 2, "green": 2, "red": 2}
    assert warnings_of(caplog) == [(f"not following {spelled / 'red' / 'links'}: it leads to {tmp_path / 'links'},"
                                    f" which holds --image_dir {spelled}")]


def test_links_to_folders_elsewhere_keep_working(tree: Path, tmp_path: Path, caplog) -> None:
    """Users link class folders (and folders inside them) from other disks."""
    elsewhere = tmp_path / "other_disk"
    for i in range(4):
        colour_photo(elsewhere / "purple" / f"p{i}.jpg", (150, 40, 200), seed=70 + i)
        colour_photo(elsewhere / "more_red" / f"r{i}.jpg", COLOURS["red"], seed=80 + i)
    (tree / "purple").symlink_to(elsewhere / "purple")
    (tree / "red" / "2019").symlink_to(elsewhere / "more_red")
    labels = scan(tree)
    assert counts(labels) == {"blue": 3, "green": 3, "purple": 4, "red": 7}
    assert warnings_of(caplog) == []


def test_label_image_folders_do_not_follow_links_back_up(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "to_label"
    colour_photo(folder / "a.jpg", COLOURS["red"], seed=1)
    (folder / "up").symlink_to(tmp_path)
    (folder / "again").symlink_to(folder)
    assert image_files(folder) == [folder / "a.jpg"]
    assert f"not following {folder / 'again'}: it leads back to --image {folder} itself" in warnings_of(caplog)


# --- what is not used is said, accurately -----------------------------------------------------------

def test_a_broken_class_link_is_a_warning_not_a_non_image_file(tree: Path, caplog) -> None:
    (tree / "purple").symlink_to("/nonexistent/purple")
    (tree / "loop").symlink_to("loop")  # a link to itself was a traceback (ELOOP)
    (tree / "notes.txt").write_text("my notes")
    with caplog.at_level(logging.INFO):
        labels = scan(tree)
    assert labels.names == ("blue", "green", "red")
    assert f"{tree / 'purple'} is a broken link (to /nonexistent/purple); class skipped" in warnings_of(caplog)
    assert f"{tree / 'loop'} is a broken link (to loop); class skipped" in warnings_of(caplog)
    assert f"ignored 1 non-image file(s) under {tree}, e.g. {tree / 'notes.txt'}" in caplog.text


def test_a_broken_link_inside_a_class_is_a_warning(tree: Path, caplog) -> None:
    (tree / "red" / "2019").symlink_to("/unmounted/disk/2019")
    with caplog.at_level(logging.INFO):
        scan(tree)
    assert (f"skipped 1 broken link(s) inside class folders (e.g. {tree / 'red' / '2019'}, to /unmounted/disk/2019)"
            in warnings_of(caplog))
    assert "non-image" not in caplog.text


def test_images_directly_in_the_image_dir_are_a_warning(tree: Path, caplog) -> None:
    for i in range(15):
        colour_photo(tree / f"x{i:02d}.jpg", COLOURS["red"], seed=300 + i)
    (tree / "README.md").write_text("my photos")
    with caplog.at_level(logging.INFO):
        labels = scan(tree)
    assert counts(labels) == {"blue": 3, "green": 3, "red": 3}
    assert (f"15 image(s) directly in --image_dir belong to no class (e.g. {tree / 'x00.jpg'}); put them in a "
            "sub-folder named after their class") in warnings_of(caplog)
    assert f"ignored 1 non-image file(s) under {tree}, e.g. {tree / 'README.md'}" in caplog.text


def test_only_loose_images_warns_before_the_error(tmp_path: Path, caplog) -> None:
    from retrain.errors import RetrainError

    for i in range(3):
        colour_photo(tmp_path / "flat" / f"x{i}.jpg", COLOURS["red"], seed=i)
    with pytest.raises(RetrainError, match="found no class folders with images"):
        scan(tmp_path / "flat")
    assert any(line.startswith("3 image(s) directly in --image_dir") for line in warnings_of(caplog))


def test_a_tree_one_folder_too_high_or_already_split_is_said(tree: Path, tmp_path: Path, caplog) -> None:
    """`data/flowers/<classes>` given as `--image_dir data`: one class folder, and no hint where the classes
    are. Kaggle's `train/<classes>` and `test/<classes>`: a model telling train photos from test ones, exit 0,
    no word (probe PP)."""
    from retrain.errors import RetrainError

    shutil.move(tree, tmp_path / "data" / "my flowers")
    with pytest.raises(RetrainError) as error:
        scan(tmp_path / "data")
    assert str(error.value).endswith(f"; if the classes are the sub-folders of {tmp_path / 'data' / 'my flowers'}, "
                                     f"pass --image_dir '{tmp_path / 'data' / 'my flowers'}'")  # as a shell takes it
    for split in ("train", "Test"):
        shutil.copytree(tmp_path / "data" / "my flowers", tmp_path / "kaggle" / split)
    with caplog.at_level(logging.INFO):
        assert scan(tmp_path / "kaggle").names == ("Test", "train")
    assert warnings_of(caplog) == [
        f"the class folders Test, train of --image_dir {tmp_path / 'kaggle'} are named as splits: this run trains a "
        "model telling them apart, not the classes inside them; if they hold the class folders, pass one of them as "
        "--image_dir (retrain splits it itself), or list the photos with --labels_csv and a split column"]
    for names in (("training_set", "test_set"), ("seg_train", "seg_test"), ("train", "test1"),  # as datasets
                  ("seg_pred", "seg_test", "seg_train"), ("trainval", "test"), ("train_v2", "test-jpg")):
        caplog.clear()  # spell them (probes SS, UU), and unlabelled photos beside them
        for split in names:
            shutil.copytree(tmp_path / "data" / "my flowers", tmp_path / names[0] / split)
        scan(tmp_path / names[0])
        assert [m for m in warnings_of(caplog) if "are named as splits" in m], names
    caplog.clear()
    scan(make_colour_tree(tmp_path / "named", per_class=2, classes={"train": (0, 0, 255), "cat": (0, 255, 0)}))
    scan(make_colour_tree(tmp_path / "alike", per_class=2, classes={"trains": (0, 0, 255), "tests": (0, 255, 0)}))
    assert warnings_of(caplog) == []  # a class of that name among others, or names like them: as named


# --- the same file in two classes ---------------------------------------------------------------------

def identical(labels, caplog) -> list[str]:
    """The warnings about identical photos, with the content keys the cache computes (SHA-1 of the bytes)."""
    import concurrent.futures

    from retrain.features.extract import content_keys
    from retrain.labels import warn_identical_files

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        keys, _ = content_keys(labels.all_files(), file_keys=None, pool=pool)
    caplog.clear()
    paths = list(keys)
    warn_identical_files(labels, paths, np.array([keys[p] for p in paths], dtype="S40"))
    return warnings_of(caplog)


def test_the_same_photo_in_two_classes_is_one_warning(tree: Path, caplog) -> None:
    """A class folder linked under a second name, a hard link and a plain copy: two labels for the same pixels."""
    (tree / "Red").symlink_to(tree / "red")
    os.link(tree / "green" / "green_000.jpg", tree / "blue" / "looks_blue.jpg")
    shutil.copy(tree / "red" / "red_001.jpg", tree / "green" / "copied.jpg")
    labels = scan(tree)
    assert counts(labels) == {"Red": 3, "blue": 4, "green": 4, "red": 3}  # warned, not changed
    said = [line for line in identical(labels, caplog) if "under two labels" in line]
    assert len(said) == 1 and said[0].startswith("4 photo(s) appear under two labels with identical content"), said


def test_a_copy_in_another_split_of_its_class_is_a_leak_not_a_second_label(tmp_path: Path, caplog) -> None:
    from retrain.labels.split import split_of

    tree = make_colour_tree(tmp_path / "photos", per_class=3)
    names = [f"copy_{i}.jpg" for i in range(200)]
    held_out = next(n for n in names if split_of(f"red/{n}", validation_percentage=10, testing_percentage=10)
                    == "testing")
    original = next(p for p in sorted((tree / "red").iterdir())
                    if split_of(f"red/{p.name}", validation_percentage=10, testing_percentage=10) == "training")
    shutil.copy(original, tree / "red" / held_out)
    said = identical(FolderSource(tree, validation_percentage=10, testing_percentage=10).scan(), caplog)
    assert not [line for line in said if "under two labels" in line]
    assert [line for line in said if line.startswith("1 photo(s) in the testing split are identical to training "
                                                     f"photos (e.g. {tree / 'red' / held_out} and {original})")], said


# --- noisy EXIF -----------------------------------------------------------------------------------------

# Orientation 6 (rotate 90 clockwise) and a Make tag (271) whose data lies past the end of the block.
BAD_TAG = (b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x02\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
           b"\x01\x0f\x00\x02\x00\x00\x00\x40\x00\x00\x01\x00\x00\x00\x00\x00")
# Orientation 6, then the block ends though it announces five tags ("Corrupt EXIF data").
TRUNCATED = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"


def test_broken_exif_tags_print_nothing_and_the_orientation_still_applies(tmp_path: Path) -> None:
    """Pillow printed a bare UserWarning with no file name; the image decodes in full, so nothing is said.

    In a fresh process (pytest resets warning filters per test) and in worker threads, as training decodes.
    """
    from PIL import Image

    for name, exif in (("bad_tag.jpg", BAD_TAG), ("truncated.jpg", TRUNCATED)):
        Image.new("RGB", (64, 32), (200, 30, 30)).save(tmp_path / name, exif=exif)
    script = ("import concurrent.futures, sys; from pathlib import Path; from retrain.images import decode_rgb, "
              "load_image, read_bytes; paths = [Path(p) for p in sys.argv[1:]] * 4; "
              "pool = concurrent.futures.ThreadPoolExecutor(4); "
              "print(set(pool.map(lambda p: decode_rgb(read_bytes(p)).shape, paths))); "
              "print(set(pool.map(lambda p: load_image(p, height=16, width=16).shape, paths)))")
    result = run_script("-c", script, str(tmp_path / "bad_tag.jpg"), str(tmp_path / "truncated.jpg"), timeout=120)
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["{(64, 32, 3)}", "{(16, 16, 3)}"]  # decoded upright: 64 high, 32 wide
