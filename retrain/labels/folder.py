"""The folder tree as a label source: each direct sub-folder of `--image_dir` is a class.

Pure Python, no TensorFlow. Classes and files are sorted, so label order and
the split are stable. Names that cannot be labels or paths are skipped with a
warning: a file or folder whose name is not valid UTF-8 (it could not be
hashed for the split, printed or written to the labels file), and a class
folder whose name holds a line break or another control character (the labels
file has exactly one line per class).
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retrain.errors import RetrainError, UsageError
from retrain.labels import Example, LabelSet, build
from retrain.labels.split import split_of

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini", "__MACOSX"}


def shown(path: str | Path) -> str:
    """A path for messages, even when its name is not valid UTF-8 (shown with \\x escapes)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def valid_name(name: str) -> bool:
    """Whether a file or folder name is valid UTF-8 (Python keeps undecodable bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def label_problem(label: str) -> str:
    """Why a name cannot be a label ('' when it can): the labels file holds one label per line."""
    if not label.strip():
        return "it is blank"
    for char in label:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"it holds the control or line-break character {char!r}"
    return ""


class _Walk:
    """A sorted, link-following, loop-safe walk that remembers what it ignored."""

    def __init__(self) -> None:
        self.visited: set[tuple[int, int]] = set()
        self.ignored: list[str] = []

    def files(self, root: Path) -> list[Path]:
        found = list(self._walk(root))
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())

    def _walk(self, folder: Path) -> Iterator[Path]:
        try:
            info = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        if (info.st_dev, info.st_ino) in self.visited:
            # A link back to a folder already walked (e.g. `loop -> ..`): following it would never end.
            log.warning("not following %s: it leads back to a folder already scanned", shown(folder))
            return
        self.visited.add((info.st_dev, info.st_ino))
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if not valid_name(entry.name):
                log.warning("skipping %s: its name is not valid UTF-8; rename it to use it", shown(entry.path))
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False  # e.g. a link to itself: reading it later says why it cannot be used
            if is_dir:
                yield from self._walk(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                yield path
            else:
                self.ignored.append(str(path))


def image_files(root: Path) -> list[Path]:
    """All image files under `root`, nested folders included, hidden ones and bad names skipped, sorted."""
    return _Walk().files(root)


def check_image_dir(image_dir: Path) -> None:
    """Raise UsageError unless `image_dir` is an existing folder (checked before any work)."""
    if not image_dir.exists():
        raise UsageError(f"--image_dir {image_dir} does not exist; expected a folder with one sub-folder per class")
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
        walk = _Walk()
        examples: list[Example] = []
        labels: list[str] = []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if not entry.is_dir():
                walk.ignored.append(entry.path)
                continue
            if not valid_name(entry.name):
                log.warning("skipping class folder %s: its name is not valid UTF-8; rename it to use it",
                            shown(entry.path))
                continue
            problem = label_problem(entry.name)
            if problem:
                log.warning("skipping class folder %r: %s, and the labels file holds one label per line; "
                            "rename it to use it", entry.name, problem)
                continue
            class_dir = Path(entry.path)
            walk.visited = set()  # each class is walked on its own, as if it were the only one
            files = walk.files(class_dir)
            if not files:
                log.warning("class folder %s has no images (%s); skipping it", class_dir,
                            ", ".join(sorted(IMAGE_EXTENSIONS)))
                continue
            labels.append(entry.name)
            for path in files:
                split = split_of(path.relative_to(image_dir).as_posix(),
                                 validation_percentage=self.validation_percentage,
                                 testing_percentage=self.testing_percentage)
                examples.append(Example(path=path, labels=(entry.name,), split=split))
        _warn_case_collisions(labels)
        if len(labels) < 2:
            found = f"{len(labels)} class folder with images" if labels else "no class folders with images"
            raise RetrainError(f"found {found} in --image_dir {image_dir}; need at least 2 sub-folders, one per "
                               f"class, each holding images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        if walk.ignored:
            log.info("ignored %d non-image file(s) under %s, e.g. %s", len(walk.ignored), image_dir,
                     shown(walk.ignored[0]))
        expected = {name for name, percent in (("validation", self.validation_percentage),
                                               ("testing", self.testing_percentage)) if percent > 0}
        return build(examples, source=f"--image_dir {image_dir}", multi_label=self.multi_label,
                     expected_splits=expected)


def _warn_case_collisions(labels: list[str]) -> None:
    """Folders that differ only by case stay separate classes; say so, since that surprises people."""
    seen: dict[str, str] = {}
    for label in labels:
        other = seen.setdefault(label.casefold(), label)
        if other != label:
            log.warning("class folders %r and %r differ only by letter case; they are trained as two classes",
                        other, label)
