"""What a finished run shows: the per-class table on stdout, report.json, and TensorBoard pictures.

After the final test figures the pipeline calls `print_table` (precision,
recall, F1, support, most confused with; for a multi-label model, per label with
its threshold); with the exports `report_run`, which writes `report.json` beside the labels
file (format in `retrain.insight.report`); and once every output is written `draw_pictures`,
which adds to the run's TensorBoard folder the test confusion matrix, the per-class
precision-recall curves, a grid of misclassified test images, the run's flags as
hyperparameters with its final figures, and the test bottlenecks in the Embedding Projector.
A picture that cannot be made is reported in a warning; it never fails a trained run, and an
interrupt while they are drawn keeps every output (they are not part of the exports' set).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.filekinds import file_sha256, read_report
from retrain.insight import report as reports
from retrain.names import FINAL_TENSOR_NAME, report_path, valid_name
from retrain.objectives import KEEP_SCORES, is_multi_label
from retrain.outputs import written_sha256

log = logging.getLogger(__name__)


def _graph_digests(config: Any, written: Sequence[Path], intermediate_graphs: Sequence[Path]) -> dict[str, str]:
    """SHA-256 -> --final_tensor_name of the frozen graphs written with an output node not named `final_result`:
    a rerun without that flag replaces a graph of exactly those bytes (`filekinds.reported_final_names`), and no
    other graph whose output has that name (a user's own, where a copy of this run's folder lies). The earlier
    report's entries are kept (its run's intermediate graphs, say, stay where this run wrote none), the last
    `_MOST_DIGESTS`: the model's own graph comes last, so it is never the one dropped (it was, after a run that
    stored 1,000 intermediate graphs: probe OO)."""
    run = (read_report(report_path(config.output_labels)) or {}).get("run")
    kept = run.get("graph_sha256") if isinstance(run, dict) else None  # a report edited by hand holds anything
    digests = {digest: name for digest, name in kept.items() if isinstance(digest, str) and isinstance(name, str)} \
        if isinstance(kept, dict) else {}
    if config.final_tensor_name != FINAL_TENSOR_NAME:  # (intermediate graphs' digests are written either way)
        for path in list(intermediate_graphs) + [path for path in written if path == config.output_graph]:
            if digest := written_sha256(path):
                digests.pop(digest, None)  # now the newest
                digests[digest] = config.final_tensor_name
    return dict(list(digests.items())[-_MOST_DIGESTS:])


_MOST_DIGESTS = 1000


def _current_folder() -> str | None:
    """The current folder, or None if it was deleted while the run went on, or its name is not UTF-8, which the
    report cannot hold (its paths are all absolute then: relative ones are refused up front)."""
    try:
        here = os.getcwd()
    except FileNotFoundError:
        return None
    return here if valid_name(here) else None


def _flags(config: Any) -> dict[str, Any]:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def print_table(test: Any, labels: Sequence[str]) -> None:
    """The test split's per-class (or per-label) figures, on stdout."""
    if test.details is not None:
        print(_label_table(test.details, labels), flush=True)
    elif test.count:
        print(reports.format_table(reports.class_report(labels=labels, truth=test.truth, predicted=test.predictions)),
              flush=True)


def say_untested(labels: Sequence[str], testing: Any, *, multi_label: bool) -> None:
    """A warning after the table naming the labels no test image has (`testing`: the test split's targets), as
    the table shows them (probe ZZQ: 100 % said of two classes, one never tested, far below the split's warning;
    probe ZZS: not those a --test_batch_size sample missed)."""
    absent = testing.absent() if len(testing) else []
    if absent:
        shown = reports.table_names(labels, width=None)
        verb = "is" if len(absent) == 1 else "are"
        kind = f"labels {verb} on no test image" if multi_label else \
            f"classes {'has' if len(absent) == 1 else 'have'} no test image"
        log.warning("%d of the %d %s (%s%s), so the test figures cannot tell how the model does on them; add images "
                    "of them for a fair test", len(absent), len(labels), kind,
                    ", ".join(repr(shown[labels[j]]) for j in absent[:3]), ", ..." if len(absent) > 3 else "")


def report_run(*, config: Any, labels: Sequence[str], test: Any, split: Any,
               evaluations: Mapping[str, Any], written: Sequence[Path], intermediate_graphs: Sequence[Path],
               module: str, objective: str) -> Path:
    """Write report.json; returns its path."""
    beside = functools.partial(_as_listed, labels=config.output_labels)
    kept = _kept_files(config, labels, written)
    extra = {"module": module, "flags": _flags(config), "files": [beside(p) for p in [*written, *kept]],
             # the model files' bytes as written ('' for folders, which hold their labels): label-image tells a
             # graph put back over them since (probe VV), and a copy of one moved away, by them
             "files_sha256": [written_sha256(p) for p in written] + list(kept.values()),
             "kept_files": [beside(p) for p in kept],  # of `files`: an earlier run's, of these labels (probe JJJ)
             "intermediate_graphs": [beside(p) for p in intermediate_graphs],  # not the model's files: kept apart
             # what this run wrote there: label-image tells a graph another run wrote since by its bytes
             "intermediate_sha256": [written_sha256(p) for p in intermediate_graphs],
             "graph_sha256": _graph_digests(config, written, intermediate_graphs),
             "folder": _current_folder(),  # what relative paths in flags and files are relative to
             # each split's size (a --test_batch_size sample may count fewer or repeated images)
             "images": {**{name: evaluation.count for name, evaluation in evaluations.items()},
                        "testing": len(split.targets)},
             "figures": {name: evaluation.metrics for name, evaluation in evaluations.items()}}
    path = report_path(config.output_labels)
    if test.details is not None:  # multi-label: figures per label at its threshold
        figures = test.details.to_dict(labels)
        data = {"format": reports.FORMAT, "version": reports.VERSION, "objective": objective, "labels": list(labels),
                "overall": {k: v for k, v in figures.items() if k != "labels"}, "classes": figures["labels"],
                "run": extra}
    elif test.count:
        class_report = reports.class_report(labels=labels, truth=test.truth, predicted=test.predictions)
        data = {**reports.report_dict(class_report, extra=extra), "objective": objective}
    else:  # no test images: the same keys as with them (a multi-label report has no matrix), nothing in them
        matrix = {} if is_multi_label(objective) else {"confusion_matrix": None}
        data = {"format": reports.FORMAT, "version": reports.VERSION, "objective": objective, "labels": list(labels),
                "overall": None, "classes": {}, **matrix, "run": extra}
    reports.write_report_json(path, data)
    return path


def _kept_files(config: Any, labels: Sequence[str], written: Sequence[Path]) -> dict[Path, str]:
    """The files (and their SHA-256) that the report this run replaces lists, of the same labels, that this run
    does not write and that are still as that run left them: they stay beside this run's files, a model of these
    labels, so this run's report lists them too. (Probe JJJ: a rerun without --output_tflite wrote a report that
    forgot the earlier TFLite model, and a later rerun with new classes then left it beside other labels.)"""
    report = report_path(config.output_labels)
    data = read_report(report)
    if data is None or data.get("labels") != list(labels):
        return {}
    run = data.get("run")
    kept: dict[Path, str] = {}
    try:
        for name, digest in zip(run["files"], run["files_sha256"]):
            listed = reports.files_now(report, {**run, "files": [name]})
            if not listed or not isinstance(digest, str) or not digest or not listed[0].is_file():
                continue  # (a folder holds its own labels)
            if not reports.among(listed[0], written) and file_sha256(listed[0]) == digest:
                kept[listed[0]] = digest
    except (KeyError, TypeError, ValueError, OSError):  # a report edited by hand
        return {}
    return kept


def _as_listed(path: Path, *, labels: Path) -> str:
    """`path` as report.json lists it: a file in the labels file's folder is spelt from that folder as
    --output_labels spells it (`$PWD/out/g.pb` with `out/labels.txt` from a folder reached through a link is
    `out/g.pb`: the run's folder is recorded without links), so it is found beside the labels wherever that
    folder goes, whatever a link leads to later (`report.files_now`)."""
    try:
        if os.path.samefile(path.parent, labels.parent):
            return str(labels.parent / path.name)
    except OSError:
        pass
    return str(path)


def draw_pictures(*, config: Any, run_folder: Path, labels: Sequence[str], test: Any, split: Any) -> None:
    """Add the test split's pictures and the run's hparams to its TensorBoard folder. Called once every output
    is written: a picture that fails costs a warning (an interrupt keeps the outputs)."""
    try:
        _pictures(run_folder, config=config, labels=labels, test=test, split=split)
    except RetrainError as error:
        log.warning("TensorBoard pictures of the test split: %s", error)
    except Exception as error:  # noqa: BLE001 - a picture never fails a trained run (a damaged font, say)
        log.warning("TensorBoard pictures of the test split could not be made: %s: %s", type(error).__name__, error)


def _label_table(details: Any, labels: Sequence[str]) -> str:
    """Per label: threshold, precision, recall, F1, support (a multi-label model's table)."""
    shown = reports.table_names(labels)
    width = max(12, *(reports.cells(name) for name in shown.values()))

    def percent(value: float) -> str:
        return f"{100 * value:.1f}%" if np.isfinite(value) else "-"

    lines = [f"{'label':<{width}}  {'threshold':>9}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}"]
    for j, label in enumerate(labels):
        lines.append(f"{reports.pad(shown[label], width)}  {details.thresholds[j]:9.3f}  "
                     f"{percent(details.precision[j]):>9}  {percent(details.recall[j]):>7}  "
                     f"{percent(details.f1[j]):>7}  {int(details.support[j]):7d}")
    lines.append(f"{'micro':<{width}}  {'':9}  {percent(details.micro_precision):>9}  "
                 f"{percent(details.micro_recall):>7}  {percent(details.micro_f1):>7}  {details.rows:7d} images")
    return "\n".join(lines) + "\n"


def _pictures(run_folder: Path, *, config: Any, labels: Sequence[str], test: Any, split: Any) -> None:
    from retrain.insight import tensorboard

    figures = {f"test/{key}": value for key, value in test.metrics.items()}
    tensorboard.write_hparams(run_folder, hparams=_flags(config), metrics=figures)
    if not test.count:
        return
    rows = test.indices
    paths = [split.paths[i] for i in rows]
    vectors = split.vectors[rows]
    if test.truth is None:  # multi-label: the projector shows each image's label set
        truth_sets = split.targets.take(rows)
        names = [" | ".join(labels[j] for j in truth_sets.labels_of(i)) or "(none)" for i in range(len(rows))]
        tensorboard.write_projector(run_folder, vectors=vectors, labels=names, paths=paths)
        return
    if len(labels) <= tensorboard.MATRIX_PICTURE_CLASSES:
        matrix = reports.confusion_matrix(truth=test.truth, predicted=test.predictions, class_count=len(labels))
        tensorboard.write_confusion_matrix(run_folder, split="test", labels=labels, matrix=matrix,
                                           step=config.how_many_training_steps)
    else:
        log.info("no confusion matrix pictures: they are drawn for up to %d classes, and this run has %d (report.json "
                 "holds the test split's matrix)", tensorboard.MATRIX_PICTURE_CLASSES, len(labels))
    if test.probabilities is None:  # the pictures that need every score
        log.info("no PR curves or misclassified grid: the test split's %d images x %d classes are too many scores to "
                 "keep (up to %d)", test.count, len(labels), KEEP_SCORES)
    else:
        tensorboard.write_pr_curves(run_folder, split="test", labels=labels, truth=test.truth,
                                    probabilities=test.probabilities, step=config.how_many_training_steps)
        wrong = np.flatnonzero(test.predictions != test.truth)
        shown = reports.table_names(labels, width=None)  # `#N` after labels that print alike
        items = [(paths[i], shown[labels[test.truth[i]]], shown[labels[test.predictions[i]]],
                  float(test.probabilities[i, test.predictions[i]])) for i in wrong]
        tensorboard.write_misclassified(run_folder, items=items, step=config.how_many_training_steps)
    tensorboard.write_projector(run_folder, vectors=vectors, labels=[labels[t] for t in test.truth], paths=paths,
                                predicted=[labels[p] for p in test.predictions])
