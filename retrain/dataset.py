"""Image tree -> sorted classes and files -> deterministic train/validation/test split.

Pure Python, no TensorFlow. The split follows the classic retrain.py: a SHA-1 of
the file's name with anything after `_nohash_` removed, mapped to a percentage.
Unlike the classic script we hash the path relative to `image_dir` (POSIX
separators, Unicode NFC), so the split never depends on where the tree lives,
how `--image_dir` was spelled, or the operating system.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from retrain.config import RetrainError, UsageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
# The classic constant: the hash is reduced modulo this before becoming a percentage.
MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1
SPLITS = ("training", "validation", "testing")
_NOHASH = re.compile(r"_nohash_.*$")


@dataclass(frozen=True)
class ImageClass:
    """One class: its label and its image paths per split (sorted)."""

    label: str
    training: tuple[Path, ...]
    validation: tuple[Path, ...]
    testing: tuple[Path, ...]

    def split(self, name: str) -> tuple[Path, ...]:
        return getattr(self, name)

    @property
    def all_files(self) -> tuple[Path, ...]:
        return self.training + self.validation + self.testing


@dataclass(frozen=True)
class ImageTree:
    """The classes found under `root`, in label order, plus what was ignored."""

    root: Path
    classes: tuple[ImageClass, ...]
    ignored: tuple[str, ...] = field(default=())

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]


def split_of(relative_path: str, *, validation_percentage: float, testing_percentage: float) -> str:
    """Return 'training', 'validation' or 'testing' for a path relative to image_dir.

    Deterministic and stable: adding files never moves an existing one, and
    files that differ only after `_nohash_` in their name land together.
    """
    key = unicodedata.normalize("NFC", relative_path.replace(os.sep, "/"))
    key = _NOHASH.sub("", key)
    digest = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16)
    percentage = (digest % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in {"Thumbs.db", "desktop.ini", "__MACOSX"}


def image_files(root: Path, ignored: list[str] | None = None) -> list[Path]:
    """All image files under `root`, nested folders included, hidden ones skipped, sorted.

    Files without an image extension are appended to `ignored` when given.
    """
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            folder = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (folder.st_dev, folder.st_ino) in visited:
            # A link back to a folder already walked (e.g. `loop -> ..`): following it would never end.
            log.warning("not following %s: it leads back to a folder already scanned", dirpath)
            dirnames[:] = []
            continue
        visited.add((folder.st_dev, folder.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            path = Path(dirpath) / name
            if _is_hidden(name):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(path)
            elif ignored is not None:
                ignored.append(str(path))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def check_image_dir(image_dir: Path) -> None:
    """Raise UsageError unless `image_dir` is an existing folder (checked before any work)."""
    if not image_dir.exists():
        raise UsageError(f"--image_dir {image_dir} does not exist; expected a folder with one sub-folder per class")
    if not image_dir.is_dir():
        raise UsageError(f"--image_dir {image_dir} is a file; expected a folder with one sub-folder per class")


def scan_image_tree(
    image_dir: Path, *, validation_percentage: float, testing_percentage: float
) -> ImageTree:
    """Walk a folder-per-class tree and split every class deterministically.

    Each direct sub-folder of `image_dir` is a class named after the folder;
    images in nested folders belong to the class they sit in. Hidden files and
    files without an image extension are ignored (and listed in `ignored`).
    A class whose training split would be empty is trained on all its images,
    with a warning, so small classes never stop a run.
    """
    check_image_dir(image_dir)
    try:
        entries = sorted(os.scandir(image_dir), key=lambda e: e.name)
    except OSError as error:
        raise RetrainError(f"cannot read --image_dir {image_dir}: {error.strerror}") from None
    ignored: list[str] = []
    classes: list[ImageClass] = []
    for entry in entries:
        if _is_hidden(entry.name):
            continue
        if not entry.is_dir():
            ignored.append(entry.path)
            continue
        class_dir = Path(entry.path)
        files = image_files(class_dir, ignored)
        if not files:
            log.warning("class folder %s has no images (%s); skipping it", class_dir, ", ".join(sorted(IMAGE_EXTENSIONS)))
            continue
        by_split: dict[str, list[Path]] = {name: [] for name in SPLITS}
        for path in files:
            relative = path.relative_to(image_dir).as_posix()
            by_split[split_of(relative, validation_percentage=validation_percentage,
                              testing_percentage=testing_percentage)].append(path)
        if not by_split["training"]:
            log.warning("class %r has only %d image(s), none in the training split; training on all of them "
                        "(it gets no validation or test images)", entry.name, len(files))
            by_split = {"training": files, "validation": [], "testing": []}
        else:
            empty = [name for name in ("validation", "testing") if not by_split[name]
                     and (validation_percentage if name == "validation" else testing_percentage) > 0]
            if empty:
                log.warning("class %r has %d image(s) and none in the %s split; add images for a fair evaluation",
                            entry.name, len(files), " or ".join(empty))
        classes.append(ImageClass(label=entry.name, **{k: tuple(v) for k, v in by_split.items()}))
    _warn_case_collisions([c.label for c in classes])
    if len(classes) < 2:
        found = f"{len(classes)} class folder with images" if classes else "no class folders with images"
        raise RetrainError(f"found {found} in --image_dir {image_dir}; need at least 2 sub-folders, one per class, "
                           f"each holding images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if ignored:
        log.info("ignored %d non-image file(s) under %s, e.g. %s", len(ignored), image_dir, ignored[0])
    return ImageTree(root=image_dir, classes=tuple(classes), ignored=tuple(ignored))


def _warn_case_collisions(labels: list[str]) -> None:
    """Folders that differ only by case stay separate classes; say so, since that surprises people."""
    seen: dict[str, str] = {}
    for label in labels:
        other = seen.setdefault(label.casefold(), label)
        if other != label:
            log.warning("class folders %r and %r differ only by letter case; they are trained as two classes", other, label)
