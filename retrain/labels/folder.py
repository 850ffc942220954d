"""The folder tree as a label source: each direct sub-folder of `--image_dir` is a class.

Pure Python, no TensorFlow. Classes and files are sorted, so label order and
the split are stable. Names that cannot be labels or paths are skipped with a
warning: a file or folder whose name is not valid UTF-8 (it could not be
hashed for the split, printed or written to the labels file), and a class
folder whose name holds a line break or another control character (the labels
file has exactly one line per class).

Links are followed (users link class folders from other disks), except a link
back to the image root or to a folder holding it, which would scan the tree
again under the wrong label (or, for `/`, the whole disk). What is not used is
said: a broken class-folder link and images lying directly in the root are
warned about; genuine non-image files get one INFO line.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import re
import shlex
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain.errors import RetrainError, UsageError
from retrain.names import seeming, shown, spelt_otherwise, unreadable_name, valid_name
from retrain.labels import Example, LabelSet, build
from retrain.labels.split import scant_training, split_of

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
# Photos in formats retrain does not read (TensorFlow's decoders, which serving uses, do not): a warning, not the
# INFO line of other files, since the user meant them as training photos.
OTHER_PHOTO_EXTENSIONS = frozenset({".tif", ".tiff", ".heic", ".heif", ".avif", ".avifs", ".jp2", ".j2k", ".j2c",
                                    ".jpc", ".jpf", ".jpx", ".jxl", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi",
                                    ".apng", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"})
# JPEGs by another name (browsers on Windows save .jfif): a warning too, since a new name is all they need.
JPEG_OTHER_EXTENSIONS = frozenset({".jfif", ".jpe", ".jif", ".pjpeg", ".pjp"})


WALK_NOTE_SECONDS = 10.0  # how often a long walk of the image folders says how far it has got


# What file managers, systems and NAS boxes keep beside photos (macOS's own start with "."): never photos nor
# classes. A USB stick or share used as --image_dir made `$RECYCLE.BIN` a class and Synology's `@eaDir`
# thumbnails roses (probe NNN). Compared case-blind, as Windows names them; only names no one gives a class
# (probe QQQ: `recycled`, a waste-sorting class, was left out as Windows XP's RECYCLED).
_SYSTEM_FILES = frozenset(name.casefold() for name in ("Thumbs.db", "desktop.ini"))
_SYSTEM_FOLDERS = frozenset(name.casefold() for name in (
    "__MACOSX", "$RECYCLE.BIN", "System Volume Information", "lost+found", "@eaDir", "#recycle", "#snapshot",
    "@Recycle", "@Recently-Snapshot", "@__thumb",
    # hidden ones (probe ZZS: netatalk's copies named as the photos, QNAP's thumbnails were said to be classes
    # to rename): counted with the others, never said to hold photos
    ".AppleDouble", ".@__thumb", ".@__qini", ".Trashes", ".Trash", ".Spotlight-V100", ".fseventsd",
    ".TemporaryItems", ".DocumentRevisions-V100", ".thumbnails", ".picasaoriginals", ".dtrash", ".streams"))
_TRASH = re.compile(r"\.trash-\d+")  # a Linux desktop's trash on another disk, per user: .Trash-1000
_SYSTEM_NAMES = _SYSTEM_FILES | _SYSTEM_FOLDERS


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.casefold() in _SYSTEM_NAMES


def _passed_over(entry: os.DirEntry, system: list[str]) -> bool:
    """Whether to pass over a folder entry (`_is_hidden`); a system folder is added to `system`, for one INFO
    line (`_say_system`)."""
    if not _is_hidden(entry.name):
        return False
    if _is_system(entry.name):
        system.append(entry.path)
    return True


def _is_system(name: str) -> bool:
    return name.casefold() in _SYSTEM_FOLDERS or bool(_TRASH.fullmatch(name.casefold()))


def _holds_images(entry: os.DirEntry) -> bool:
    """Whether a folder holds image files directly (a look at its own entries, not below)."""
    try:
        if not entry.is_dir():
            return False
        with os.scandir(entry.path) as inner:
            return any(Path(found.name).suffix.lower() in IMAGE_EXTENSIONS for found in inner)
    except OSError:
        return False


def _say_system(system: Sequence[str], root: Path) -> None:
    """One INFO line for the system and NAS folders a walk passed over (probe SSS: a NAS tree has `@eaDir` in
    every folder, and a line each)."""
    if system:
        log.info("ignored %d folder(s) systems and NAS boxes keep beside photos under %s, e.g. %s", len(system), root,
                 shown(system[0]))


def label_problem(label: str) -> str:
    """Why a name cannot be a label ('' when it can): the labels file holds one label per line."""
    if not seeming(label):  # (probe ZZT: a blank braille cell, a zero-width space)
        return "it is blank" if not label.strip() else "it prints as blank"
    for char in label:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"it holds the control or line-break character {char!r}"
    return ""


_Key = tuple[int, int]  # (st_dev, st_ino): one folder or file, however it is reached


def _key(path: str | Path) -> _Key:
    """The identity of what `path` leads to (links followed); raises OSError."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _folders_holding(root: Path) -> dict[_Key, Path]:
    """`root` and every folder above it, as spelled and as resolved: a link to one would walk `root` again."""
    found: dict[_Key, Path] = {}
    for spelled in (Path(os.path.abspath(root)), Path(os.path.realpath(root))):
        for folder in (spelled, *spelled.parents):
            try:
                found.setdefault(_key(folder), folder)
            except OSError:
                continue
    return found


def _is_broken_link(entry: os.DirEntry) -> bool:
    """A link whose target is missing (or a loop of links): nothing behind it can be read."""
    return entry.is_symlink() and not os.path.exists(entry.path)


def _link_target(path: str | Path) -> str:
    try:
        return shown(os.readlink(path))
    except OSError:
        return "?"


class _Walk:
    """A sorted, link-following, loop-safe walk under `root` that remembers what it ignored.

    `flag` names `root` in messages (--image_dir, --image). `any_name`: also names that are not valid UTF-8
    (label-image reads such a file as it does when it is named; a run's labels, cache index and report cannot).
    """

    def __init__(self, root: Path, *, flag: str, any_name: bool = False,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> None:
        self.root = root
        self.flag = flag
        self.any_name = any_name
        self.extensions = extensions
        self.root_key = _key(root)
        self.holding = _folders_holding(root)
        self.visited: set[_Key] = set()
        self.entered: list[Path] = []  # every folder walked, with or without images
        self.ignored: list[str] = []
        self.broken: list[str] = []
        self.system: list[str] = []  # system and NAS folders passed over
        self.found = 0
        self._note = time.monotonic() + WALK_NOTE_SECONDS  # a line every so often: a million files take 20 s

    def leads_back(self, path: Path, *, then: str = "") -> bool:
        """Whether `path` leads to the root or a folder holding it; says so (a warning) when it does."""
        try:
            key = _key(path)
        except OSError:
            return False
        if key == self.root_key:
            where = f"back to {self.flag} {shown(self.root)} itself"
        elif key in self.holding:
            where = f"to {shown(self.holding[key])}, which holds {self.flag} {shown(self.root)}"
        else:
            return False
        log.warning("not following %s: it leads %s%s", shown(path), where, then)
        return True

    def files(self, folder: Path) -> list[Path]:
        found = list(self._walk(folder))
        return sorted(found, key=lambda p: p.relative_to(folder).as_posix())

    def _walk(self, folder: Path) -> Iterator[Path]:
        try:
            key = _key(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        if key in self.visited:
            # A link back to a folder already walked (e.g. `loop -> ..`): following it would never end.
            log.warning("not following %s: it leads back to a folder already scanned", shown(folder))
            return
        self.visited.add(key)
        self.entered.append(folder)
        for entry in entries:
            if _passed_over(entry, self.system):
                continue
            if not self.any_name and not valid_name(entry.name):
                log.warning("skipping %s: %s", shown(entry.path), unreadable_name(entry.name))
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False  # e.g. a link to itself: reading it later says why it cannot be used
            if is_dir:
                if not self.leads_back(path):
                    yield from self._walk(path)
            elif path.suffix.lower() in self.extensions:
                self.found += 1
                if self.found % 1024 == 0 and time.monotonic() >= self._note:
                    log.info("looking for images in %s %s: %d so far", self.flag, shown(self.root), self.found)
                    self._note = time.monotonic() + WALK_NOTE_SECONDS
                yield path  # even behind a broken link: reading it says "file not found (a broken link?)"
            elif _is_broken_link(entry):
                self.broken.append(str(path))
            else:
                self.ignored.append(str(path))


def _what_else(paths: list[str]) -> str:
    """What a class folder with no images holds instead, for its warning: `, only 6 .jfif and 1 .txt file(s)`."""
    if not paths:
        return ""
    kinds = collections.Counter(Path(path).suffix.lower() or "extension-less" for path in paths)
    listed = " and ".join(f"{count} {suffix}" for suffix, count in kinds.most_common(2))
    more = f" (and {len(kinds) - 2} other kinds)" if len(kinds) > 2 else ""
    if kinds.most_common(1)[0][0] in OTHER_PHOTO_EXTENSIONS:  # TIFF, HEIC...: a new name would not decode them
        return f", only {listed}{more} file(s): photos in a format retrain does not read; convert them to JPEG or PNG"
    return f", only {listed}{more} file(s): if they are photos in one of those formats, rename them"


@functools.cache
def label_image_extensions() -> frozenset[str]:
    """What label-image's walk of a folder takes: also the photos it reads when each is named, those Pillow has a
    decoder for here (TIFF, JPEG 2000, AVIF...) and JPEGs by other names (they were skipped without a word)."""
    from PIL import Image  # label-image's only: Pillow decodes what it classifies

    return IMAGE_EXTENSIONS | JPEG_OTHER_EXTENSIONS | (OTHER_PHOTO_EXTENSIONS & set(Image.registered_extensions()))


def image_files(root: Path) -> list[Path]:
    """All image files under an --image folder, nested folders included, hidden ones skipped, sorted
    (`label_image_extensions`); photos of other formats (HEIC, raw, wherever Pillow has no decoder) are said."""
    walk = _Walk(root, flag="--image", any_name=True, extensions=label_image_extensions())
    files = walk.files(root)
    _say_system(walk.system, root)
    _warn_unread_photos(walk.ignored, root, purpose="classify them")
    return files


def _warn_unread_photos(ignored: Sequence[str], root: Path, *, purpose: str = "train on them") -> None:
    """Warn about the photos a walk left out for their names: other formats (TIFF, HEIC, raw) and JPEGs by
    another name (.jfif, which browsers on Windows save)."""
    for suffixes, what, change in ((OTHER_PHOTO_EXTENSIONS, "in formats retrain does not read",
                                    "convert them to JPEG or PNG"),
                                   (JPEG_OTHER_EXTENSIONS, "named as retrain does not read",
                                    "rename them .jpg (they are JPEGs)")):
        photos = [path for path in ignored if Path(path).suffix.lower() in suffixes]
        if photos:
            kinds = " ".join(sorted({Path(path).suffix.lower() for path in photos}))
            log.warning("ignored %d photo(s) %s (%s) under %s, e.g. %s: %s to %s", len(photos), what, kinds, root,
                        shown(photos[0]), change, purpose)


def check_image_dir(image_dir: Path) -> None:
    """Raise UsageError unless `image_dir` is an existing folder (checked before any work)."""
    if not image_dir.exists():
        raise UsageError(f"--image_dir {image_dir} does not exist{spelt_otherwise(image_dir)}; expected a folder with "
                         "one sub-folder per class")
    if not image_dir.is_dir():
        raise UsageError(f"--image_dir {image_dir} is a file; expected a folder with one sub-folder per class")


@dataclass(frozen=True)
class FolderSource:
    """A folder-per-class tree under `image_dir`, split by the classic hash of each relative path."""

    image_dir: Path
    validation_percentage: float
    testing_percentage: float
    multi_label: bool = False  # one sigmoid per class (each image still has one label)

    def scan(self) -> LabelSet:
        """Walk the tree and split every class deterministically.

        Each direct sub-folder is a class named after the folder; images in
        nested folders belong to the class they sit in. Hidden files and files
        without an image extension are ignored. A class whose training split
        would be empty is trained on all its images, with a warning.
        """
        image_dir = self.image_dir
        check_image_dir(image_dir)
        try:
            entries = sorted(os.scandir(image_dir), key=lambda e: e.name)
        except OSError as error:
            raise RetrainError(f"cannot read --image_dir {image_dir}: {error.strerror}") from None
        walk = _Walk(image_dir, flag="--image_dir")
        examples: list[Example] = []
        labels: list[str] = []
        loose: list[Path] = []
        dotted: list[str] = []  # hidden folders holding images: never classes, but said (probe ZZQ: `.NET`)
        nested: list[Path] = []  # images in folders inside class folders, which the classic script left out
        for entry in entries:
            if _passed_over(entry, walk.system):
                if entry.name.startswith(".") and not _is_system(entry.name) and _holds_images(entry):
                    dotted.append(entry.path)
                continue
            class_dir = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False  # a loop of links: reported as broken below
            if not is_dir:
                if class_dir.suffix.lower() in IMAGE_EXTENSIONS:
                    loose.append(class_dir)
                elif _is_broken_link(entry):
                    log.warning("%s is a broken link (to %s); class skipped", shown(class_dir), _link_target(class_dir))
                else:
                    walk.ignored.append(entry.path)
                continue
            if not valid_name(entry.name):
                log.warning("skipping class folder %s: %s", shown(entry.path), unreadable_name(entry.name))
                continue
            problem = label_problem(entry.name)
            if problem:
                log.warning("skipping class folder %r: %s, and the labels file holds one label per line; "
                            "rename it to use it", entry.name, problem)
                continue
            if walk.leads_back(class_dir, then="; class skipped"):
                continue
            walk.visited = set()  # each class is walked on its own, as if it were the only one
            ignored_before = len(walk.ignored)
            files = walk.files(class_dir)
            if not files:
                log.warning("class folder %s has no images (%s)%s; skipping it", class_dir,
                            ", ".join(sorted(IMAGE_EXTENSIONS)), _what_else(walk.ignored[ignored_before:]))
                continue
            labels.append(entry.name)
            nested += [path for path in files if len(path.relative_to(class_dir).parts) > 1]
            for path in files:
                split = split_of(path.relative_to(image_dir).as_posix(),
                                 validation_percentage=self.validation_percentage,
                                 testing_percentage=self.testing_percentage)
                examples.append(Example(path=path, labels=(entry.name,), split=split))
        if loose:
            log.warning("%d image(s) directly in --image_dir belong to no class (e.g. %s); put them in a sub-folder "
                        "named after their class", len(loose), shown(loose[0]))
        if nested:  # (probe ZZP: a classic user's `roses/rejected` trained as roses, unsaid)
            log.info("%d image(s) in folders inside class folders are trained as their class (e.g. %s); the classic "
                     "retrain.py left such folders out, so move out any you keep apart", len(nested),
                     shown(nested[0].parent))
        if dotted:
            log.warning("%d folder(s) in --image_dir hold images but are hidden (their names start with '.'), so they "
                        "are not classes (e.g. %s); rename one without the '.' to train it", len(dotted),
                        shown(dotted[0]))
        if walk.broken:
            log.warning("skipped %d broken link(s) inside class folders (e.g. %s, to %s)", len(walk.broken),
                        shown(walk.broken[0]), _link_target(walk.broken[0]))
        _warn_case_collisions(labels)
        if len(labels) < 2:
            found = f"{len(labels)} class folder with images" if labels else "no class folders with images"
            raise RetrainError(f"found {found} in --image_dir {image_dir}; need at least 2 sub-folders, one per "
                               f"class, each holding images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                               + (_deeper_hint(image_dir / labels[0]) if labels else ""))
        _warn_split_folders(image_dir, labels)
        _say_system(walk.system, image_dir)
        _warn_unread_photos(walk.ignored, image_dir)
        others = [path for path in walk.ignored
                  if Path(path).suffix.lower() not in OTHER_PHOTO_EXTENSIONS | JPEG_OTHER_EXTENSIONS]
        if others:
            log.info("ignored %d non-image file(s) under %s, e.g. %s", len(others), image_dir, shown(others[0]))
        expected = {name for name, percent in (("validation", self.validation_percentage),
                                               ("testing", self.testing_percentage)) if percent > 0}
        scant = scant_training(validation_percentage=self.validation_percentage,
                               testing_percentage=self.testing_percentage)
        return dataclasses.replace(build(examples, source=f"--image_dir {image_dir}", multi_label=self.multi_label,
                                         expected_splits=expected, scant=scant), walked=tuple(walk.entered))


def _deeper_hint(folder: Path) -> str:
    """For a tree of one class folder: when that folder holds sub-folders, it may be the tree meant (a
    `data/flowers/<class>` tree given as `--image_dir data`)."""
    try:
        inner = [entry.name for entry in os.scandir(folder) if entry.is_dir() and not _is_hidden(entry.name)]
    except OSError:
        return ""
    return (f"; if the classes are the sub-folders of {folder}, pass --image_dir {shlex.quote(str(folder))}"
            if len(inner) > 1 else "")  # quoted as a shell needs it: `My Flowers`


# Folder names of a dataset split already, each holding the class folders: Kaggle's train/ and test/, and as
# datasets spell them (training_set/ and test_set/, seg_train/, test1/, Validation-Images/: probe SS; trainval/,
# train_v2/, train-jpg/, and the unlabelled photos beside them, seg_pred/, holdout/: probe UU).
_SPLIT_NAME = re.compile(r"((seg|data(set)?|images?|imgs)[ ._-]?)?(train(ing)?(val)?|trn|test(ing)?|tst|"
                         r"val(id(ation)?)?|dev|eval(uation)?|pred(ict(ions?)?)?|unlabell?ed|holdout)"
                         r"([ ._-]?(sets?|data(set)?|images?|imgs|jpe?g|split|aug|v?\d+))*", re.IGNORECASE)


def _warn_split_folders(image_dir: Path, labels: list[str]) -> None:
    """Class folders all named as splits (train, test) are most likely a split dataset's: a model telling
    `train` photos from `test` ones is not what was meant (probe PP)."""
    if all(_SPLIT_NAME.fullmatch(label) for label in labels):
        log.warning("the class folders %s of --image_dir %s are named as splits: this run trains a model telling "
                    "them apart, not the classes inside them; if they hold the class folders, pass one of them as "
                    "--image_dir (retrain splits it itself), or list the photos with --labels_csv and a split "
                    "column", ", ".join(labels), image_dir)


def _case_only(a: str, b: str) -> bool:
    """Whether two characters are one letter in two cases: not a sign that only looks like one (the Kelvin sign,
    the Angstrom sign, the micro sign: probe ZZT)."""
    return a == b or (a.lower() == b.lower() or a.upper() == b.upper()) and all(
        unicodedata.normalize("NFKC", c) == c for c in (a, b))


def count_words(count: int) -> str:
    """`count` as the messages say it: a word up to ten."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[count] if 0 <= count < len(words) else str(count)


def _warn_case_collisions(labels: list[str]) -> None:
    """Folders that look alike stay separate classes; say so, since that surprises people."""
    for names, count, how in look_alikes(labels):
        log.warning("class folders %s differ only %s; they are trained as %s classes", names, how,
                    count_words(count))


def look_alikes(labels: Iterable[str]) -> Iterator[tuple[str, int, str]]:
    """(the labels quoted, how many, how they differ) for each group of labels that differ only in what a reader
    may not see: letter case, spaces, the Unicode form (an accented letter as one character or two, a ligature),
    invisible characters (probe ZZS: one line a pair flooded the log). Quoted with escapes (`'cafe\\u0301'`)
    unless they differ by case only."""
    alike: dict[str, list[str]] = {}
    for label in labels:  # (lower case, not casefold: `straße` and `strasse` do not print alike)
        alike.setdefault(seeming(label).lower(), []).append(label)
    for group in (group for group in alike.values() if len(group) > 1):
        first = group[0]
        if all(len(other) == len(first) and all(_case_only(a, b) for a, b in zip(other, first)) for other in group):
            how, quoted = "by letter case", [repr(label) for label in group]
        else:  # escaped, as they may print the same
            case = "" if len({seeming(label) for label in group}) == 1 else "letter case, "
            how, quoted = f"in {case}spaces, Unicode form or invisible characters", [ascii(label) for label in group]
        yield f"{', '.join(quoted[:-1])} and {quoted[-1]}", len(group), how
