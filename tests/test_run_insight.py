"""What a real run shows (the shared retrain of the fixture flowers): the stdout table, report.json, and the
TensorBoard pictures, read back with TensorBoard's own readers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest


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
