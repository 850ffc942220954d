"""The run report: per-class precision, recall, F1 and confusions, as a table and as report.json.

Pure numpy: no TensorFlow, so scripts and tests can use it in milliseconds.

Definitions (class c; rows of the confusion matrix are the true class, columns
the predicted one):

- support: test images whose true class is c (the row sum);
- precision: correct predictions of c / all predictions of c (the column sum);
  undefined, reported as null (JSON) and "-" (table), when c was never predicted;
- recall: correct predictions of c / support; null when the support is 0
  (a class too small to appear in the test split);
- F1: 2·TP / (2·TP + FP + FN), the harmonic mean of the two; 0 when c is in the
  test split but never predicted; null only when c is neither present nor predicted;
- most confused with: the class c's images were most often predicted as
  (ties go to the class first in label order); null when none was mistaken.

The averages ("macro": the plain mean over classes; "weighted": weighted by
support) run over the classes present in the test split (support > 0); there an
undefined precision counts as 0, so a class the model never predicts pulls the
averages down instead of vanishing from them (scikit-learn's zero_division=0).

report.json, written beside the labels file (strict JSON, UTF-8, no NaN)::

    {
      "format": "retrain-report",
      "version": 1,
      "labels": ["daisy", "dandelion", ...],          # class-index order
      "overall": {
        "accuracy": 0.913, "correct": 337, "total": 369,
        "macro": {"precision": 0.91, "recall": 0.90, "f1": 0.90},
        "weighted": {"precision": 0.92, "recall": 0.913, "f1": 0.91}
      },
      "classes": {                                     # keyed by label, in label order
        "daisy": {"index": 0, "precision": 0.95, "recall": 0.90, "f1": 0.92,
                  "support": 63, "predicted": 60, "correct": 57,
                  "most_confused_with": "dandelion", "most_confused_count": 4},
        ...
      },
      "confusion_matrix": [[57, 4, ...], ...],         # [true][predicted] counts, label order; beyond
                                                       # 1,000 classes null, and instead
      "confusion_cells": [[0, 0, 57], [0, 1, 4], ...], # [true, predicted, count] of each cell not 0
      "run": {...}                                     # what the caller adds: model, flags, split sizes, files
    }

Fractions are in [0, 1]; null marks an undefined figure (see above). Readers
should check "format" and "version": a new version means a changed meaning, while
new keys may appear in any version.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.names import REPORT_FORMAT, REPORT_NAME, seeming
from retrain.outputs import atomic_write_bytes

FORMAT = REPORT_FORMAT
VERSION = 1
_TABLE_LABEL_WIDTH = 32


@dataclass(frozen=True)
class ClassStats:
    """Figures of one class; None marks an undefined figure (see the module docstring)."""

    label: str
    index: int
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int
    correct: int
    most_confused_with: str | None
    most_confused_count: int


@dataclass(frozen=True, eq=False)
class ClassReport:
    """Per-class and overall figures of one evaluation, and its confusion matrix's cells that are not zero."""

    labels: tuple[str, ...]
    classes: tuple[ClassStats, ...]
    cells: np.ndarray  # int64 [k, 3]: true, predicted, count of each cell that is not zero, in row order
    accuracy: float | None
    correct: int
    total: int
    macro: Mapping[str, float | None]  # precision, recall, f1
    weighted: Mapping[str, float | None]

    @property
    def matrix(self) -> np.ndarray:
        """The whole confusion matrix, int64 [true, predicted] in label order (class count squared in memory)."""
        matrix = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        matrix[self.cells[:, 0], self.cells[:, 1]] = self.cells[:, 2]
        return matrix


def _class_indices(*, truth: np.ndarray, predicted: np.ndarray, class_count: int) -> tuple[np.ndarray, np.ndarray]:
    """`truth` and `predicted` as flat int64 arrays, checked: one each, every index in [0, class_count).

    Raises RetrainError when the two arrays differ in length or hold an index
    outside [0, class_count).
    """
    truth = np.asarray(truth).reshape(-1)
    predicted = np.asarray(predicted).reshape(-1)
    if truth.shape != predicted.shape:
        raise RetrainError(f"report: {truth.size} true labels but {predicted.size} predictions; expected one each")
    for name, values in (("true", truth), ("predicted", predicted)):
        if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= class_count):
            raise RetrainError(f"report: {name} class indices must be integers in [0, {class_count}); "
                               f"found {values.min()}..{values.max()} ({values.dtype})")
    return truth.astype(np.int64), predicted.astype(np.int64)


def confusion_matrix(*, truth: np.ndarray, predicted: np.ndarray, class_count: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs as an int64 [class_count, class_count] array.

    Raises RetrainError as _class_indices does.
    """
    truth, predicted = _class_indices(truth=truth, predicted=predicted, class_count=class_count)
    return np.bincount(truth * class_count + predicted, minlength=class_count * class_count).reshape(
        class_count, class_count)


def class_report(*, labels: Sequence[str], truth: np.ndarray, predicted: np.ndarray) -> ClassReport:
    """Precision, recall, F1, support and most-confused class per label, plus overall figures.

    `truth` and `predicted` are class indices into `labels` (one per evaluated
    image). An empty evaluation gives a report whose figures are all None. Memory
    grows with the images and the classes, not with the classes squared.
    """
    labels = tuple(str(label) for label in labels)
    if not labels:
        raise RetrainError("report: no labels; expected the class names in class-index order")
    n = len(labels)
    truth, predicted = _class_indices(truth=truth, predicted=predicted, class_count=n)
    codes, counts = np.unique(truth * n + predicted, return_counts=True)  # sorted: row order
    cells = np.stack([codes // n, codes % n, counts], axis=1).astype(np.int64).reshape(-1, 3)
    support = np.bincount(truth, minlength=n)
    predicted_counts = np.bincount(predicted, minlength=n)
    correct = np.bincount(truth[truth == predicted], minlength=n)
    # each row's largest mistake, ties to the class first in label order
    mistakes = cells[cells[:, 0] != cells[:, 1]]
    mistakes = mistakes[np.lexsort((mistakes[:, 1], -mistakes[:, 2], mistakes[:, 0]))]
    rows, first = np.unique(mistakes[:, 0], return_index=True)
    confused = dict(zip(rows.tolist(), mistakes[first, 1:].tolist()))
    classes = []
    for i, label in enumerate(labels):
        tp, support_i, predicted_i = int(correct[i]), int(support[i]), int(predicted_counts[i])
        confused_with, confused_count = confused.get(i, (None, 0))
        denominator = support_i + predicted_i  # = 2·TP + FP + FN
        classes.append(ClassStats(
            label=label,
            index=i,
            precision=tp / predicted_i if predicted_i else None,
            recall=tp / support_i if support_i else None,
            f1=2 * tp / denominator if denominator else None,
            support=support_i,
            predicted=predicted_i,
            correct=tp,
            most_confused_with=labels[confused_with] if confused_with is not None else None,
            most_confused_count=confused_count,
        ))
    total = int(truth.size)
    present = [c for c in classes if c.support > 0]
    weights = np.array([c.support for c in present], dtype=np.float64)

    def averages(weighted: bool) -> dict[str, float | None]:
        if not present:
            return {"precision": None, "recall": None, "f1": None}
        w = weights / weights.sum() if weighted else np.full(len(present), 1 / len(present))
        return {name: float(sum(wi * (getattr(c, name) or 0.0) for wi, c in zip(w, present)))
                for name in ("precision", "recall", "f1")}

    return ClassReport(
        labels=labels,
        classes=tuple(classes),
        cells=cells,
        accuracy=float(correct.sum()) / total if total else None,
        correct=int(correct.sum()),
        total=total,
        macro=averages(False),
        weighted=averages(True),
    )


def _fraction(value: float | None) -> str:
    """A fraction with three decimals, or '-' when undefined."""
    return "-" if value is None else f"{value:.3f}"


def cells(text: str) -> int:
    """How many terminal columns `text` takes: wide (CJK, emoji) characters two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def pad(text: str, width: int, *, right: bool = False) -> str:
    """`text` followed (or, `right`-aligned, preceded) by spaces up to `width` columns, so table columns line up
    whatever its characters."""
    room = " " * max(0, width - cells(text))
    return room + text if right else text + room


def _elide(text: str, width: int) -> str:
    """Text cut to `width` characters in the middle (names that share a long start differ at the end)."""
    return text if len(text) <= width else cut_middle(text, width - 1)


def cut_middle(text: str | Sequence[str], kept: int) -> str:
    """`kept` characters of `text` (or pieces of a list of them), the first half from its start and the rest from
    its end, with '…' between."""
    head = (kept + 1) // 2
    return "".join(text[:head]) + "…" + "".join(text[len(text) - (kept - head):])


def table_names(labels: Sequence[str], *, width: int | None = _TABLE_LABEL_WIDTH) -> dict[str, str]:
    """Each label as the table (or label-image, `width` None: whole) shows it: elided to `width` characters, and
    followed by its line in the labels file (`#N`) when another would show alike (probe NNN: two long names elided
    to one, and `Café` in its two Unicode forms, gave two rows of one name, one of them confused with itself;
    probe ZZQ: `dog` and `dog ` or `dog` with a zero-width space)."""
    def shorten(label: str, suffix: str) -> str:
        return (label if width is None else _elide(label, width - len(suffix))) + suffix

    return dict(zip(labels, marked_alike(labels, shorten)))


def marked_alike(labels: Sequence[str], shorten: Callable[[str, str], str]) -> list[str]:
    """Each label as `shorten(label, "")` shows it, or as `shorten(label, " #N")` (N: its line in the labels file)
    when another would show alike (`names.seeming`); `shorten` cuts a label to leave room for the suffix. The
    table's rule (`table_names`, in characters) and the pictures' (in pixels)."""
    shown = [shorten(label, "") for label in labels]
    alike = Counter(seeming(name) for name in shown)
    return [shorten(label, f" #{line}") if alike[seeming(name)] > 1 else name
            for line, (label, name) in enumerate(zip(labels, shown), 1)]


def format_table(report: ClassReport) -> str:
    """The per-class table printed on stdout after a run (no trailing newline).

    One row per class in label order (precision, recall, F1, support, most
    confused with), then accuracy and the macro and weighted averages; "-" marks
    an undefined figure. Labels longer than 32 characters are elided; labels that would show alike are followed
    by their line in the labels file (`#N`).
    """
    shown = table_names(report.labels)
    width = max([len("weighted avg"), *(cells(name) for name in shown.values())])
    header = f"{'class':<{width}}  {'precision':>9}  {'recall':>6}  {'f1':>5}  {'support':>7}  most confused with"
    lines = [header]
    for c in report.classes:
        confused = (f"{shown[c.most_confused_with]} ({c.most_confused_count})"
                    if c.most_confused_with is not None else "-")
        lines.append(f"{pad(shown[c.label], width)}  {_fraction(c.precision):>9}  {_fraction(c.recall):>6}  "
                     f"{_fraction(c.f1):>5}  {c.support:>7}  {confused}")
    lines.append("")
    lines.append(f"{'accuracy':<{width}}  {'':>9}  {'':>6}  {_fraction(report.accuracy):>5}  {report.total:>7}")
    for name, figures in (("macro avg", report.macro), ("weighted avg", report.weighted)):
        lines.append(f"{name:<{width}}  {_fraction(figures['precision']):>9}  {_fraction(figures['recall']):>6}  "
                     f"{_fraction(figures['f1']):>5}  {report.total:>7}")
    return "\n".join(lines)


def _json_ready(value: Any, *, where: str) -> Any:
    """`value` as plain JSON types: paths and numpy values converted, NaN/inf as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) + 0.0 if math.isfinite(value) else None  # + 0.0: -0.0 (a cross-entropy of 0) is 0.0
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist(), where=where)
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_json_ready(v, where=where) for v in items]
    raise RetrainError(f"report: {where} is a {type(value).__name__}, which report.json cannot hold; "
                       "expected text, numbers, booleans, paths, lists or mappings")


def report_dict(report: ClassReport, *, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The report.json document (format in the module docstring); `extra` goes under "run"."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "labels": list(report.labels),
        "overall": {
            "accuracy": report.accuracy,
            "correct": report.correct,
            "total": report.total,
            "macro": dict(report.macro),
            "weighted": dict(report.weighted),
        },
        "classes": {
            c.label: {
                "index": c.index,
                "precision": c.precision,
                "recall": c.recall,
                "f1": c.f1,
                "support": c.support,
                "predicted": c.predicted,
                "correct": c.correct,
                "most_confused_with": c.most_confused_with,
                "most_confused_count": c.most_confused_count,
            }
            for c in report.classes
        },
        **matrix_entries(report),
        "run": _json_ready(dict(extra), where="run"),
    }


# Up to this many classes report.json holds the whole confusion matrix; beyond, its cells that are not zero. The
# whole matrix grows with the square of the class count (4,600 classes pass filekinds.MAX_REPORT_BYTES).
DENSE_MATRIX_CLASSES = 1000


def matrix_entries(report: ClassReport) -> dict[str, Any]:
    """The report's confusion matrix: whole, or beyond DENSE_MATRIX_CLASSES null with "confusion_cells", the
    [true, predicted, count] of each cell that is not zero, in row order."""
    if len(report.labels) <= DENSE_MATRIX_CLASSES:
        return {"confusion_matrix": report.matrix.tolist()}
    return {"confusion_matrix": None, "confusion_cells": report.cells.tolist()}


def write_report_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a report (report_dict's, or a multi-label one) as strict JSON, atomically (outputs.atomic_write)."""
    text = _json_text(_json_ready(dict(data), where="report")) + "\n"
    atomic_write_bytes(Path(path), text.encode("utf-8"), flag="--output_labels")


def _json_text(value: Any, depth: int = 0) -> str:
    """`value` as JSON indented by two spaces, except that a list of numbers stays on one line: a confusion
    matrix is a row a line (at one number a line, 2,800 classes made 71 MB, over filekinds.MAX_REPORT_BYTES;
    a row a line, 24 MB)."""
    indent = "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = (f"{indent}{json.dumps(key, ensure_ascii=False)}: {_json_text(item, depth + 1)}"
                 for key, item in value.items())
    elif isinstance(value, list) and not all(item is None or isinstance(item, (int, float)) for item in value):
        items = (indent + _json_text(item, depth + 1) for item in value)
    else:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    opening, closing = "{}" if isinstance(value, dict) else "[]"
    return f"{opening}\n" + ",\n".join(items) + f"\n{'  ' * depth}{closing}"


def labels_file_now(report: Path, run: Mapping[str, Any]) -> Path:
    """The labels file a report's run wrote, where it is now: beside the report, which goes beside it.
    KeyError or TypeError when `run` does not name one."""
    return report.parent / Path(str(run["flags"]["output_labels"])).name


def reports_at(folder: Path) -> list[Path]:
    """Where the reports that may list a file in `folder` are: beside it, then in each folder above it, nearest
    first, as spelt and where links lead (a model's files lie in or below its labels' folder). A report above
    counts only if this user wrote it: anyone may write one into a shared folder such as /tmp."""
    above = dict.fromkeys([*Path(os.path.abspath(folder)).parents, *Path(os.path.realpath(folder)).parents])
    return [folder / REPORT_NAME, *(report for parent in above if _own(report := parent / REPORT_NAME))]


def _own(path: Path) -> bool:
    try:
        return not hasattr(os, "getuid") or path.stat().st_uid == os.getuid()
    except OSError:
        return False


def among(path: Path, files: Sequence[Path]) -> bool:
    """Whether `path` is one of `files` (the same file or folder, however spelt)."""
    for file in files:
        try:
            if os.path.samefile(path, file):
                return True
        except (OSError, ValueError):  # (a NUL byte in a path a report edited by hand lists: probe YY)
            continue
    return False


def files_now(report: Path, run: Mapping[str, Any], *, key: str = "files") -> list[Path]:
    """The files a report lists, where they are now: those that were in its labels file's folder are in the
    report's folder (which may have moved or been copied, or be reached from another folder); others are where
    the run put them: absolute, or relative to its current folder (`run.folder`; reports written before it was
    recorded compare paths as spelt, and relative ones outside the labels' folder are skipped). `key` names the
    list: `files`, or `intermediate_graphs`. TypeError when `run` is not an object holding such a list."""
    if not isinstance(run, Mapping) or not isinstance(names := run.get(key, []), list):
        raise TypeError(f"a report's run is an object whose {key} is a list")
    folder = run.get("folder")

    def absolute(name: str) -> str | None:  # as the run meant it, or None when its folder is unknown
        if os.path.isabs(name):
            return os.path.normpath(name)
        return os.path.normpath(os.path.join(folder, name)) if isinstance(folder, str) and folder else None

    labels = str(run["flags"]["output_labels"])
    home = absolute(labels)
    found = []
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        where = absolute(name)
        if home and where:
            inside = os.path.relpath(where, os.path.dirname(home))
        elif os.path.isabs(name) == os.path.isabs(labels):
            inside = os.path.relpath(os.path.normpath(name), os.path.dirname(os.path.normpath(labels)) or os.curdir)
        else:
            inside = os.pardir
        if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
            found.append(report.parent / inside)
        elif where:
            found.append(Path(where))
    return found
