"""Label sources: what yields (file, labels, split) for a run.

A source (the folder tree in `folder`, a CSV in `csv`) turns the user's input
into `Example`s; `build` turns examples into a `LabelSet`: the label names and,
per split, the files with their targets. Targets are what the training loop
samples and the objective's loss reads: `ClassIds` (one class per image, for
the softmax objective) or `MultiLabels` (a set of labels per image, sparse,
for the sigmoid objective). The split is always the classic hash unless a
source says otherwise (a CSV's `split` column).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrain.errors import RetrainError
from retrain.labels.split import SPLITS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One labelled image: its file, its label names (one, or any number for multi-label), its split.

    `split_given`: the user chose the split (a CSV's split column), so it is never moved.
    """

    path: Path
    labels: tuple[str, ...]
    split: str
    split_given: bool = False


class Targets(Protocol):
    """The labels of a split's rows, as the training loop and the objective use them."""

    DRAW: str  # what one draw of `sample` picks, as messages say it

    def __len__(self) -> int: ...

    def take(self, indices: np.ndarray) -> "Targets": ...

    def repeat(self, count: int) -> "Targets": ...

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray: ...

    def batch(self, indices: np.ndarray) -> np.ndarray: ...

    def untaught(self) -> list[int]:
        """The labels these rows, as a training split, could not teach the model."""

    def absent(self) -> list[int]:
        """The labels no row has (a class with no image, a label no image carries)."""


class ClassIds:
    """One class index per row (single-label). Sampling is the classic class-uniform draw."""

    DRAW = "a class (every class alike), then one of its images, as the classic retrain.py did"

    def __init__(self, ids: np.ndarray, *, class_count: int) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.class_count = class_count
        self._tables: tuple[np.ndarray, ...] | None = None  # the sampler's tables, built on first use

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: np.ndarray) -> "ClassIds":
        return ClassIds(self.ids[indices], class_count=self.class_count)

    def repeat(self, count: int) -> "ClassIds":
        return ClassIds(np.repeat(self.ids, count), class_count=self.class_count)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` row indices: a random class first (among those present), then a random row of it."""
        if self._tables is None:
            counts = np.bincount(self.ids, minlength=self.class_count)
            self._tables = (np.argsort(self.ids, kind="stable"), counts,
                            np.concatenate([[0], np.cumsum(counts)[:-1]]), np.flatnonzero(counts))
        order, counts, offsets, present = self._tables
        classes = present[rng.integers(0, len(present), size=count)]
        return order[offsets[classes] + rng.integers(0, counts[classes])]

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """What the softmax loss takes: int32 class indices."""
        return self.ids[indices].astype(np.int32)

    def untaught(self) -> list[int]:
        """Classes with no row: a softmax never learns to predict them."""
        return self.absent()

    def absent(self) -> list[int]:
        return np.flatnonzero(np.bincount(self.ids, minlength=self.class_count) == 0).tolist()


@dataclass(frozen=True)
class LabelSet:
    """The labelled images of a run: label names, and per split the files with their targets."""

    names: tuple[str, ...]
    files: Mapping[str, tuple[Path, ...]]
    targets: Mapping[str, Any]  # split -> Targets, aligned with files[split]
    examples: tuple[Example, ...]
    source: str  # e.g. "--image_dir photos", for messages
    multi_label: bool = False
    # The folders a walk of the tree entered, with or without images: where a file written now is read next run.
    walked: tuple[Path, ...] = ()

    def all_files(self) -> list[Path]:
        """Every file once, training first, in a stable order."""
        return list(dict.fromkeys(p for name in SPLITS for p in self.files[name]))

    def count(self, split: str) -> int:
        return len(self.files[split])

    def keep(self, usable: Container[Path]) -> "LabelSet":
        """The same set without the files that could not be used (labels left with none are dropped)."""
        examples = [e for e in self.examples if e.path in usable]
        left = {label for e in examples for label in e.labels}
        for label in self.names:
            if label not in left:
                log.warning("%s %r has no usable images left; leaving it out",
                            "label" if self.multi_label else "class", label)
        kept = replace(build(examples, source=self.source, multi_label=self.multi_label, first=False),
                       walked=self.walked)
        before, after = _evaluated(self.examples), _evaluated(kept.examples)
        trained = {label for e in examples if e.split == "training" for label in e.labels}  # (else said above)
        lost = {label: [n for n in ("validation", "testing") if (label, n) in before and (label, n) not in after]
                for label in kept.names if label in trained}
        kind = "label" if self.multi_label else "class"
        said = [(label, f"{kind} {label!r} has no usable image left in the {' or '.join(splits)} split (those "
                        "there could not be used); add images for a fair evaluation")
                for label, splits in lost.items() if splits]
        _warn_grouped({"no_eval_left": said}, source=self.source)
        return kept


def _evaluated(examples: Sequence[Example]) -> set[tuple[str, str]]:
    """(label, split) for each label with an image in the validation or testing split (probe NNN: a class whose
    images there all proved unreadable was not said to have none, as the walk's count had some)."""
    return {(label, e.split) for e in examples if e.split in ("validation", "testing") for label in e.labels}


def build(examples: Sequence[Example], *, source: str, multi_label: bool, first: bool = True,
          expected_splits: Container[str] = (), scant: str = "") -> LabelSet:
    """Examples -> LabelSet. Single-label sets keep the classic small-class rule.

    A class with no training image is trained on all its images whose split the
    hash chose, with a warning; one whose images all have a split the user gave is
    left out, with a warning. `expected_splits` names the splits the user asked
    images for (warned about when a class gets none); `scant` says that the
    percentages leave little for training (`split.scant_training`), the cause to
    name then. Fewer than two usable labels is an error.
    """
    if multi_label:
        from retrain.labels.multilabel import multi_label_set

        return multi_label_set(examples, source=source, first=first)
    by_label: dict[str, dict[str, list[Example]]] = {}
    for example in examples:
        (label,) = example.labels
        by_label.setdefault(label, {name: [] for name in SPLITS})[example.split].append(example)
    names: list[str] = []
    rows: dict[str, list[tuple[Example, int]]] = {name: [] for name in SPLITS}
    said: dict[str, list[tuple[str, str]]] = {}  # a kind of warning -> (class, its one-class message)
    for label in sorted(by_label):
        splits = by_label[label]
        total = sum(map(len, splits.values()))
        if not splits["training"]:
            movable = [e for name in SPLITS for e in splits[name] if not e.split_given]
            if not movable:
                said.setdefault("left_out", []).append((label, (
                    f"class {label!r} has no training image: {source} puts its {total} image(s) in the validation "
                    "or testing split; leaving the class out")))
                continue
            if len(movable) < total:
                said.setdefault("hash_only", []).append((label, (
                    f"class {label!r} has no training image; training on the {len(movable)} of its {total} image(s) "
                    f"whose split {source} leaves to the hash")))
            elif first:
                count = (f"{total} image(s), none in the training split ({scant})" if scant else
                         f"only {total} image(s), none in the training split")
                said.setdefault("small", []).append((label, (
                    f"class {label!r} has {count}; training on all of them (it gets no validation or test images)")))
            else:
                said.setdefault("unusable", []).append((label, (
                    f"class {label!r} has no usable training images; training on all {total} of its usable images")))
            splits = {name: [e for e in splits[name] if e.split_given] for name in SPLITS}
            splits["training"] = [replace(e, split="training") for e in movable]
        elif first:
            empty = [name for name in ("validation", "testing") if not splits[name] and name in expected_splits]
            if empty:
                said.setdefault("no_eval", []).append((label, (
                    f"class {label!r} has {total} image(s) and none in the {' or '.join(empty)} split; add images "
                    "for a fair evaluation")))
        for name in SPLITS:
            rows[name] += [(e, len(names)) for e in splits[name]]
        names.append(label)
    _warn_grouped(said, source=source)
    untrained = len(said.get("left_out", ()))
    if len(names) < 2:
        reason = f" ({untrained} more have images only in the validation and testing splits)" if untrained else ""
        raise RetrainError(f"only {len(names)} class(es) in {source} have usable images{reason}; need at least 2")
    return LabelSet(names=tuple(names), files={n: tuple(e.path for e, _ in rows[n]) for n in SPLITS},
                    targets={n: ClassIds(np.array([i for _, i in rows[n]], np.int64), class_count=len(names))
                             for n in SPLITS},
                    examples=tuple(e for name in SPLITS for e, _ in rows[name]), source=source, multi_label=False)


def warn_identical_files(labels: LabelSet, paths: Sequence[Path], keys: np.ndarray) -> None:
    """Warn about files with identical content (equal `keys`, aligned with `paths`) that the run uses under
    other labels, or in training and in validation or testing: the layer learns both labels of one photo,
    or is scored on photos it trained on. Copies are found by content, wherever they lie. Only the rows
    whose key repeats are looked at one by one, so millions of distinct photos cost one sort."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    repeats = np.zeros(len(keys), bool)
    repeats[1:] = ordered[1:] == ordered[:-1]
    repeats[:-1] |= repeats[1:].copy()
    key_of = {paths[i]: bytes(keys[i]) for i in order[repeats]}
    by_key: dict[bytes, list[Example]] = {}
    for example in labels.examples:
        if example.path in key_of:
            by_key.setdefault(key_of[example.path], []).append(example)
    copies = [group for group in by_key.values() if len(group) > 1]
    relabelled = [g for g in copies if len({e.labels for e in g}) > 1]
    leaked = [g for g in copies if {e.split for e in g} & {"validation", "testing"} and
              any(e.split == "training" for e in g)]
    if relabelled:
        first, other = relabelled[0][0], next(e for e in relabelled[0] if e.labels != relabelled[0][0].labels)
        log.warning("%d photo(s) appear under two labels with identical content (e.g. %s as %s and %s as %s); "
                    "training sees both labels for one photo: keep each photo once", len(relabelled), first.path,
                    " | ".join(first.labels), other.path, " | ".join(other.labels))
    if leaked:
        trained = next(e for e in leaked[0] if e.split == "training")
        held = next(e for e in leaked[0] if e.split != "training")
        splits = sorted({e.split for group in leaked for e in group if e.split != "training"})
        log.warning("%d photo(s) in the %s split are identical to training photos (e.g. %s and %s); their "
                    "figures count photos the layer trained on: remove the copies", len(leaked),
                    " and ".join(splits), held.path, trained.path)


# What one warning says for many classes of a kind (the one-class messages say it per class).
_GROUPED = {
    "left_out": "have no training image: {source} puts all their images in the validation or testing split; "
                "leaving them out",
    "hash_only": "have no training image; training on their images whose split {source} leaves to the hash",
    "small": "have too few images to fill every split and none in training; training on all their images "
             "(they get no validation or test images)",
    "unusable": "have no usable training images; training on all their usable images",
    "no_eval": "have no image in the validation split, the testing split or both; add images for a fair "
               "evaluation",
    "no_eval_left": "have no usable image left in the validation split, the testing split or both (those there "
                    "could not be used); add images for a fair evaluation",
}
NAMED_CLASSES = 3  # more classes of one kind than this get one warning, naming this many


def _warn_grouped(said: dict[str, list[tuple[str, str]]], *, source: str) -> None:
    """A warning per class for a few classes of a kind; one for the whole kind when there are more."""
    for kind, items in said.items():
        if len(items) <= NAMED_CLASSES:
            for _label, message in items:
                log.warning("%s", message)
        else:
            named = ", ".join(repr(label) for label, _ in items[:NAMED_CLASSES])
            log.warning("%d classes %s: %s and %d more", len(items), _GROUPED[kind].format(source=source), named,
                        len(items) - NAMED_CLASSES)


def label_source(config: Any, *, given: Collection[str] = ()) -> Any:
    """The label source a run's flags name: a labels CSV (--labels_csv), else the folder tree (--image_dir).
    `given`: the flags the user typed (the API's keywords), whose split percentages a CSV that names every row's
    split refuses even at their default value."""
    if config.labels_csv is not None:
        from retrain.labels.csv import CsvSource

        tuned = tuple((f"--{name}", getattr(config, name)) for name in ("validation_percentage", "testing_percentage")
                      if getattr(config, name) != getattr(type(config), name) or name in given)
        return CsvSource(config.labels_csv, image_dir=config.image_dir, delimiter=config.label_delimiter,
                         validation_percentage=config.validation_percentage,
                         testing_percentage=config.testing_percentage, multi_label=config.multi_label,
                         tuned_split=tuned)
    from retrain.labels.folder import FolderSource

    return FolderSource(config.image_dir, validation_percentage=config.validation_percentage,
                        testing_percentage=config.testing_percentage, multi_label=config.multi_label)
