"""label-image on real exports: same answers as the trained model, every model kind, classic flags, clean errors.

The session-wide retrain run of the real flower photos (conftest.flowers_export)
is shared by every test here; the foreign-graph and TFLite files are made from
it or built by hand, so nothing but that run costs real time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrain.cli import label_image_command
from retrain.errors import RetrainError
from retrain.names import thresholds_path
from tests.conftest import (COLOURS, PHOTOS, colour_photo, flags, invoke, make_colour_tree, require, retrain_cli,
                            run_script)

HELD_OUT = 10  # test-split photos compared with the in-process prediction


@dataclass(frozen=True)
class Trained:
    graph: Path
    saved_model: Path
    labels: Path
    labels_list: list[str]
    photos: list[Path]  # held-out (test split) photos
    expected: np.ndarray  # the trained head's probabilities on their cached bottlenecks
    out: Path
    result: Any  # the RetrainResult
    tflite: Path  # the float32 TFLite model retrain wrote (full int8: test_exports.py, with the integration tests)


@pytest.fixture(scope="module")
def trained(flowers_export, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The shared retraining of the fixture flowers (every export), read by label-image here."""
    config, result, _stdout, _seconds = flowers_export
    out = tmp_path_factory.mktemp("label_image")  # files this module makes go here, never beside the shared export
    testing = result.splits["testing"]
    pick = np.linspace(0, len(testing) - 1, HELD_OUT).astype(int)  # spread over the classes (paths are sorted)
    return Trained(graph=config.output_graph, saved_model=config.saved_model_dir, labels=config.output_labels,
                   labels_list=result.labels, photos=[testing.paths[i] for i in pick],
                   expected=result.head.probabilities(testing.vectors[pick]), out=out, result=result,
                   tflite=config.output_tflite)


def label_json(*args: str, expect: int = 0) -> list[dict]:
    result = invoke(label_image_command, [*args, "--json"], expect=expect)
    return json.loads(result.stdout)


def scores_of(records: list[dict], labels: list[str]) -> np.ndarray:
    """JSON records -> [images, classes] probabilities in label order."""
    table = np.full((len(records), len(labels)), np.nan)
    for row, record in enumerate(records):
        for prediction in record["predictions"]:
            table[row, labels.index(prediction["label"])] = prediction["score"]
    return table


def images_args(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--image", str(path))]


@pytest.mark.parametrize("kind", ["frozen graph", "SavedModel"])
def test_held_out_photos_match_the_trained_model(trained: Trained, kind: str) -> None:
    model = trained.graph if kind == "frozen graph" else trained.saved_model
    records = label_json("--graph", str(model), "--labels", str(trained.labels), *images_args(trained.photos))
    assert [r["image"] for r in records] == [str(p) for p in trained.photos]
    scores = scores_of(records, trained.labels_list)  # top_k 5 = every class
    np.testing.assert_allclose(scores, trained.expected, atol=1e-4)
    assert (scores.argmax(1) == trained.expected.argmax(1)).all()
    for record in records:  # best first
        ranked = [p["score"] for p in record["predictions"]]
        assert ranked == sorted(ranked, reverse=True)


def test_text_output_is_the_classic_label_score_lines(trained: Trained) -> None:
    photo, expected = trained.photos[0], trained.expected[0]
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--image", str(photo), "--top_k", "3"])
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    best = np.argsort(-expected)[:3]
    for line, index in zip(lines, best):
        label, score = line.rsplit(" ", 1)
        assert label == trained.labels_list[index]
        assert abs(float(score) - expected[index]) < 1e-4
    assert result.stderr == ""



def test_a_file_whose_name_is_not_utf8_is_classified_in_a_folder_as_when_named(trained: Trained,
                                                                               tmp_path: Path) -> None:
    """In a folder such a file was skipped with a warning, its record missing from --json, exit 0; named on its
    own it was classified. Classified both ways now (retrain itself still skips it: its labels need UTF-8)."""
    folder = tmp_path / "weird"
    folder.mkdir()
    odd = Path(os.fsdecode(bytes(folder) + b"/bad\xffname.jpg"))
    shutil.copy(trained.photos[0], odd)
    shutil.copy(trained.photos[1], folder / "good.jpg")
    base = ["--graph", str(trained.graph), "--labels", str(trained.labels)]
    records = label_json(*base, "--image", str(folder))
    assert [record["image"] for record in records] == [str(odd), str(folder / "good.jpg")]
    assert records[0]["predictions"] == label_json(*base, "--image", str(odd))[0]["predictions"]

def test_several_images_and_folders_get_a_header_each(trained: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index, photo in enumerate(trained.photos[:3]):
        shutil.copy(photo, folder / ("nested" if index == 2 else "") / photo.name)
    (folder / "notes.txt").write_text("not an image")
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--image", str(trained.photos[3]), "--image", str(folder), "--top_k", "1",
                                          "--batch_size", "2"])
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    expected = [trained.photos[3], *sorted([folder / p.name for p in trained.photos[:2]]),
                folder / "nested" / trained.photos[2].name]
    assert headers == [f"==> {p} <==" for p in expected]
    blocks = result.stdout.strip().split("\n\n")
    assert all(len(block.splitlines()) == 2 for block in blocks)
    # a name with a line break still gets a one-line header, escaped
    odd = tmp_path / "new\nline.jpg"
    shutil.copy(trained.photos[0], odd)
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--top_k", "1", str(odd), str(trained.photos[1])])
    assert result.stdout.splitlines()[0] == f"==> {str(odd)!r} <==" and "\\n" in result.stdout.splitlines()[0]
    assert all(len(block.splitlines()) == 2 for block in result.stdout.strip().split("\n\n"))
    # a name whose bytes are not UTF-8: \x escapes, as the logs show it (it was '...\udce9...', probe KK)
    latin = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg")
    shutil.copy(trained.photos[0], latin)
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--top_k", "1", latin, str(trained.photos[1])])
    assert result.stdout.splitlines()[0] == f"==> {tmp_path}/caf\\xe9.jpg <=="
    # and a warning about such a name is one line too, with no raw escape code for the terminal to obey
    for name in ("bro\nken.jpg", "esc\x1b[2Jape.jpg"):
        (tmp_path / name).write_text("not an image")
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          str(tmp_path / "bro\nken.jpg"), str(tmp_path / "esc\x1b[2Jape.jpg"),
                                          str(trained.photos[1])], expect=1)
    warnings = [line for line in result.stderr.splitlines() if "skipping --image" in line]
    assert len(warnings) == 2 and "bro\\nken.jpg: not a recognised image format" in warnings[0], result.stderr
    assert "esc\\x1b[2Jape.jpg" in warnings[1] and "\x1b" not in result.stderr


def test_many_unreadable_images_are_named_up_to_ten_then_counted_by_reason(trained: Trained, tmp_path: Path,
                                                                          outputs, tiny_module: Path) -> None:
    """Probe NNN: 150 online-only placeholders (empty files) and 30 web pages saved as .jpg gave 180 warning lines
    in label-image and in retrain; the warnings that matter scrolled away. Ten are named, the rest counted."""
    for i in range(9):
        (tmp_path / f"empty_{i}.jpg").write_bytes(b"")
    for i in range(6):
        (tmp_path / f"page_{i}.jpg").write_text("<html></html>")
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--top_k", "1", str(tmp_path), str(trained.photos[0])], expect=1)
    warnings = [line for line in result.stderr.splitlines() if "skipping " in line]
    assert len(warnings) == 11 and all("skipping --image " in line for line in warnings[:10]), result.stderr
    assert warnings[10].endswith("skipping 5 more (--json lists each): not a recognised image format (5)"), warnings
    assert result.stderr.strip().splitlines()[-1] == ("label-image: error: 15 of 16 images could not be decoded and "
                                                      "were skipped (the warnings above give the reasons)")
    tree = make_colour_tree(tmp_path / "tree", per_class=8)
    for i in range(12):
        (tree / "red" / f"placeholder_{i}.jpg").write_bytes(b"")
    # Probe RRR: the one file of another reason, past the ten, must be named still (an iPhone photo: convert it).
    (tree / "red" / "zz_iphone.jpg").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(300))
    done = retrain_cli(tree, tiny_module, outputs)
    warnings = [line for line in done.stderr.splitlines() if "skipping " in line]
    assert len(warnings) == 11 and sum("it holds a HEIC/HEIF photo" in line for line in warnings) == 1, done.stderr
    assert warnings[-1].endswith("skipping 3 more (--logging_verbosity DEBUG names each): empty file (3)")
    # The first file of each other reason is named past the ten; a reason's details and numbers make no other.
    from retrain.logs import Skips

    logger = logging.getLogger("retrain.test_skips")
    with caplog_records(logger) as records:
        skips = Skips(logger)
        for i in range(12):
            skips.add(f"p{i}.jpg", "empty file (0 bytes)")
        skips.add("iphone.jpg", "not a recognised image format: it holds a HEIC/HEIF photo")
        for i, cut in enumerate((54, 77, 12)):
            skips.add(f"t{i}.jpg", f"corrupt or truncated image data (image file is truncated ({cut} bytes not "
                                   "processed))")
        skips.close()
    assert [r.getMessage().split(":")[0] for r in records if r.levelno == logging.WARNING] == [
        *(f"skipping p{i}.jpg" for i in range(10)), "skipping iphone.jpg", "skipping t0.jpg", "skipping 4 more "
        "(--logging_verbosity DEBUG names each)"]
    assert records[-1].getMessage().endswith("): empty file (2); corrupt or truncated image data (2)")


@contextlib.contextmanager
def caplog_records(logger: logging.Logger):
    """The records `logger` emits in the block, from INFO up."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_bmp_and_other_photos_classify_without_error(trained: Trained) -> None:
    require(PHOTOS)
    records = label_json("--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(PHOTOS))
    names = sorted(p.name for p in PHOTOS.iterdir() if p.suffix in (".bmp", ".jpg"))
    assert sorted(Path(r["image"]).name for r in records) == names
    assert {"bird.bmp", "cat.bmp", "sunflower.bmp"} <= set(names)
    for record in records:
        scores = [p["score"] for p in record["predictions"]]
        assert len(scores) == 5 and abs(sum(scores) - 1) < 1e-3
    sunflower = next(r for r in records if r["image"].endswith("sunflower.bmp"))
    assert sunflower["predictions"][0]["label"] == "sunflowers"


@pytest.mark.integration  # 12 s: nine models loaded, four of them SavedModels; kept out of the 3-minute suite
def test_classic_explicit_flags_give_the_same_output(trained: Trained) -> None:
    base = ["--graph", str(trained.graph), "--labels", str(trained.labels), *images_args(trained.photos[:2])]
    plain = invoke(label_image_command, base)
    classic = invoke(label_image_command, base + flags(input_layer="Placeholder", output_layer="final_result",
                                                       input_height=224, input_width=224, input_mean=0,
                                                       input_std=255))
    assert classic.stdout == plain.stdout
    # `import/` prefixes and `:0` suffixes (as seen in TensorBoard or old scripts) mean the same node.
    spelled = invoke(label_image_command, base + flags(input_layer="import/Placeholder:0", output_layer="final_result:0"))
    assert spelled.stdout == plain.stdout
    # A script's classic flags, its --graph switched to the SavedModel or the TFLite export: the same model, whose
    # input and output are `image` and `prediction` there (they used to be refused as not in the model).
    for export in (trained.saved_model, trained.tflite):
        exported = ["--graph", str(export), "--labels", str(trained.labels), *images_args(trained.photos[:2])]
        named = invoke(label_image_command, exported + flags(input_layer="Placeholder", output_layer="final_result"))
        assert named.stdout == invoke(label_image_command, exported).stdout
        assert named.stdout.split()[:3] == plain.stdout.split()[:3]  # the header and the top label
    # Only the spellings that name the frozen graph's node itself (`Placeholder:1` is no tensor there).
    refused = invoke(label_image_command, ["--graph", str(trained.saved_model), "--labels", str(trained.labels),
                                           "--image", str(trained.photos[0]), "--input_layer", "Placeholder:1"],
                     expect=1)
    assert "--input_layer Placeholder:1 is not in the serving_default signature" in refused.stderr


def test_an_input_given_as_the_output_is_said_to_be_the_input(trained: Trained) -> None:
    """`--output_layer image` names the model's input: said so, not that the model lacks it."""
    for export, where in ((trained.saved_model, "the serving_default signature of --graph"), (trained.tflite, "--graph")):
        base = ["--graph", str(export), "--labels", str(trained.labels), "--image", str(trained.photos[0])]
        swapped = invoke(label_image_command, base + ["--output_layer", "image"], expect=1)
        assert f"--output_layer image is an input of {where} {export}, not an output; " in swapped.stderr
        swapped = invoke(label_image_command, base + ["--input_layer", "prediction"], expect=1)
        assert f"--input_layer prediction is an output of {where} {export}, not an input; " in swapped.stderr


def test_explicit_mean_and_std_are_applied_with_a_warning(trained: Trained) -> None:
    """Also when the layer flags name the export's own input and output, as the classic label_image.py command
    does (`--input_layer=Placeholder --output_layer=final_result`: no warning, probe CCC)."""
    base = ["--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(trained.photos[0])]
    plain = scores_of(label_json(*base), trained.labels_list)
    result = invoke(label_image_command, base + flags(input_mean=127.5, input_std=127.5, json=True))
    shifted = scores_of(json.loads(result.stdout), trained.labels_list)
    assert np.abs(shifted - plain).max() > 1e-3  # pixels in [-1, 1] instead of [0, 1]: another answer
    assert "--input_mean 127.5 --input_std 127.5" in result.stderr and "expect 0 and 255" in result.stderr
    for model, layers in ((trained.graph, {"input_layer": "Placeholder", "output_layer": "final_result"}),
                          (trained.graph, {"input_layer": "Placeholder:0"}),
                          (trained.graph, {"output_layer": "final_result"}),
                          (trained.saved_model, {"input_layer": "image", "output_layer": "prediction"}),
                          (trained.tflite, {"input_layer": "image", "output_layer": "prediction"})):
        named = ["--graph", str(model), *base[2:]]
        result = invoke(label_image_command, named + flags(input_mean=128, input_std=128, **layers))
        assert "--input_mean 128 --input_std 128" in result.stderr and "expect 0 and 255" in result.stderr, (model,
                                                                                                          layers)


def _write_foreign_graph(path: Path) -> None:
    """A classic-style graph from elsewhere: `input` [1, ?, ?, 3] (0..255) -> Sub -> `Mul` -> softmax over channels."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="input")
        scaled = tf.multiply(tf.subtract(images, 128.0, name="Sub"), 1 / 128, name="Mul")
        logits = tf.reduce_mean(scaled, axis=[1, 2]) * 10.0
        tf.nn.softmax(logits, name="Predictions/Softmax")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def test_a_foreign_graph_with_classic_flags(tmp_path: Path) -> None:
    graph, labels = tmp_path / "foreign.pb", tmp_path / "labels.txt"
    _write_foreign_graph(graph)
    labels.write_text("red\ngreen\nblue\n")
    photos = [colour_photo(tmp_path / f"{name}.png", rgb, seed=i, fmt="PNG")
              for i, (name, rgb) in enumerate({"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}.items())]
    base = ["--graph", str(graph), "--labels", str(labels), *images_args(photos), "--top_k", "1", "--json"]
    missing = invoke(label_image_command, base, expect=1)
    assert "does not fix its input size" in missing.stderr and "--input_height" in missing.stderr
    # Fed at `Mul` like the classic Inception graph: (pixel - 128) / 128, batch of one at a time.
    result = invoke(label_image_command, base + flags(input_layer="Mul", input_height=40, input_width=40,
                                                      input_mean=128, input_std=128))
    records = json.loads(result.stdout)
    # ...and the output was found without --output_layer: the graph's single Softmax sink.
    assert [r["predictions"][0]["label"] for r in records] == ["red", "green", "blue"]


def test_a_runs_own_final_tensor_name_names_the_output_of_each_of_its_exports(colour_tree: Path, tiny_module: Path,
                                                                              outputs, tmp_path: Path) -> None:
    """Probe HHH: a script passing the classic flags with the run's --final_tensor_name worked on the frozen graph
    and was refused by the SavedModel and the TFLite model of the same run; `final_result` already worked there.
    The name the run's report (beside or above the model) records counts as it does; another is still refused."""
    saved, tflite = outputs["output_graph"].with_name("saved"), outputs["output_graph"].with_name("model.tflite")
    retrain_cli(colour_tree, tiny_module, outputs, final_tensor_name="my_out", saved_model_dir=saved,
                output_tflite=tflite)
    photo = str(colour_tree / "blue" / "blue_002.jpg")
    layers = flags(input_layer="Placeholder", output_layer="my_out", input_height=32, input_width=32)
    for model in (outputs["output_graph"], saved, tflite):
        named = invoke(label_image_command, ["--graph", str(model), "--image", photo, *layers])
        assert named.stdout == invoke(label_image_command, ["--graph", str(model), "--image", photo]).stdout, model
    refused = invoke(label_image_command, ["--graph", str(saved), "--image", photo, "--output_layer", "other"],
                     expect=1)
    assert "--output_layer other is not in the serving_default signature" in refused.stderr


def test_a_graph_with_another_final_tensor_name_is_found_by_its_softmax(trained: Trained, tmp_path: Path) -> None:
    """As if retrain ran with --final_tensor_name scores: no `final_result`, the softmax feeds an Identity sink."""
    from retrain.tfenv import import_tensorflow

    graph_def = import_tensorflow().compat.v1.GraphDef()
    graph_def.ParseFromString(trained.graph.read_bytes())
    for node in graph_def.node:
        node.name = "scores" if node.name == "final_result" else node.name
        node.input[:] = ["scores" if name == "final_result" else name for name in node.input]
    renamed = tmp_path / "renamed.pb"
    renamed.write_bytes(graph_def.SerializeToString())
    common = ["--labels", str(trained.labels), "--image", str(trained.photos[0])]
    original = invoke(label_image_command, ["--graph", str(trained.graph), *common])
    assert invoke(label_image_command, ["--graph", str(renamed), *common]).stdout == original.stdout


def test_tflite(trained: Trained) -> None:
    result = invoke(label_image_command, ["--graph", str(trained.tflite), "--labels", str(trained.labels), "--json",
                                          *images_args(trained.photos)])
    assert result.stderr == ""  # TFLite's own INFO lines are kept off stderr
    np.testing.assert_allclose(scores_of(json.loads(result.stdout), trained.labels_list), trained.expected, atol=1e-4)
    with_flags = invoke(label_image_command, ["--graph", str(trained.tflite), "--labels", str(trained.labels),
                                              "--image", str(trained.photos[0]), "--input_layer", "image",
                                              "--output_layer", "prediction"])
    plain = invoke(label_image_command, ["--graph", str(trained.tflite), "--labels", str(trained.labels),
                                         "--image", str(trained.photos[0])])
    assert with_flags.stdout == plain.stdout


@pytest.mark.integration  # three fresh processes
def test_the_console_script_keeps_stdout_for_results(trained: Trained) -> None:
    result = run_script("-c", "from retrain.cli import label_image_command; label_image_command(prog_name='label-image')",
                        "--graph", str(trained.graph), "--labels", str(trained.labels), str(trained.photos[0]))
    assert [line.split()[0] for line in result.stdout.splitlines()] == \
        [trained.labels_list[i] for i in np.argsort(-trained.expected[0])]
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr
    # `label-image ... >&-`: an AttributeError traceback (probe Y); then said only after the model had loaded
    tensorflow_loaded = ("import atexit, sys; "
                         "atexit.register(lambda: print('tensorflow' in sys.modules, file=sys.stderr))")
    for json_flag in ([], ["--json"]):
        closed = subprocess.run(["bash", "-c", 'exec "$0" "$@" >&-', sys.executable, "-c",
                                 f"{tensorflow_loaded}; from retrain.cli import label_image_command; "
                                 "label_image_command(prog_name='label-image')", "--graph", str(trained.graph),
                                 "--labels", str(trained.labels), *json_flag, str(trained.photos[0])],
                                stderr=subprocess.PIPE, text=True, timeout=120)
        assert (closed.returncode, closed.stderr) == (1, "label-image: error: stdout is closed\nFalse\n"), closed.stderr


def test_json_records_are_printed_as_each_image_is_classified(trained: Trained,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """--json kept every record (every label of every image) and printed the array at the end: 1,000 images of a
    10,000-class model took 3 GB and printed nothing for minutes (probe Z). Each record is printed as it comes,
    and the whole is the array json.dump(indent=2) printed."""
    import io

    from retrain.config import LabelImageConfig
    from retrain.inference import command

    classified, seen = [], []
    records = command.records

    def counted(*args: Any, **kwargs: Any):
        for record in records(*args, **kwargs):
            classified.append(record)
            yield record

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            seen.append(len(classified))
            return super().write(text)

    monkeypatch.setattr(command, "records", counted)
    out = Out()
    command.run(LabelImageConfig(graph=trained.graph, labels=trained.labels, images=tuple(trained.photos[:3]),
                                 json=True), out=out)
    assert seen[0] == 1, seen  # the first record is out before the second image is classified
    assert out.getvalue() == json.dumps(classified, indent=2) + "\n" and len(classified) == 3


def test_defaults_follow_a_default_retrain_run(tmp_path: Path) -> None:
    """The two commands as users call them: label-image's --graph and --labels default to what retrain writes
    (the labels, for a model with no retrain report beside it)."""
    from retrain.cli import retrain_command
    from retrain.inference.labels import labels_for

    def default(command, name: str):
        return next(param.default for param in command.params if param.name == name)

    assert Path(default(label_image_command, "graph")) == default(retrain_command, "output_graph")
    assert default(label_image_command, "labels") is None
    assert labels_for(tmp_path / "graph.pb") == default(retrain_command, "output_labels")


def _renamed_copy(trained: Trained, folder: Path) -> list[str]:
    """The export's graph, SavedModel, labels and report copied into `folder`, its labels renamed (upper case) in
    both the labels file and the report: what label-image prints then shows which labels file it read."""
    shutil.copytree(trained.graph.parent, folder, ignore=shutil.ignore_patterns("logs", "checkpoint", "web", "*.tflite"))
    renamed = [label.upper() for label in trained.labels_list]
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in renamed))
    (folder / "saved_model" / "assets.extra" / "labels.txt").write_text("".join(f"{label}\n" for label in renamed))
    report = json.loads((folder / "report.json").read_text())
    report["labels"] = renamed
    (folder / "report.json").write_text(json.dumps(report))
    return renamed


@pytest.mark.parametrize("kind", ["frozen graph", "SavedModel"])
def test_without_labels_the_labels_file_the_report_beside_the_model_names_is_read(
        trained: Trained, tmp_path: Path, kind: str) -> None:
    """label-image --graph out/graph.pb without --labels used /tmp/output_labels.txt, whatever model wrote it: another
    model's labels named the scores, exit 0 (or "not found" when there was none). The report beside the model says
    which labels file its run wrote; a copy of the whole folder is found the same way."""
    renamed = _renamed_copy(trained, tmp_path / "copy")
    model = tmp_path / "copy" / ("graph.pb" if kind == "frozen graph" else "saved_model")
    result = invoke(label_image_command, ["--graph", str(model), *images_args(trained.photos[:3]), "--json"])
    np.testing.assert_allclose(scores_of(json.loads(result.stdout), renamed), trained.expected[:3], atol=1e-4)
    assert "WARNING" not in result.stderr


def test_labels_whose_report_names_another_model_get_a_warning(trained: Trained, tmp_path: Path) -> None:
    """Labels given (or found) for a model their report does not list, and of which none of its files is a copy,
    are used with a warning: they may be another model's. A byte copy of the model, or the model itself, is fine."""
    renamed = _renamed_copy(trained, tmp_path / "copy")
    labels = tmp_path / "copy" / "labels.txt"
    copied = tmp_path / "elsewhere" / "flowers.pb"
    copied.parent.mkdir()
    shutil.copyfile(trained.graph, copied)
    for graph in (tmp_path / "copy" / "graph.pb", copied):
        result = invoke(label_image_command, ["--graph", str(graph), "--labels", str(labels),
                                              "--image", str(trained.photos[0])])
        assert result.stdout.split()[0] in renamed and "WARNING" not in result.stderr, result.stderr
    other = _write_colour_graph(tmp_path / "elsewhere" / "other.pb", classes=len(renamed))
    result = invoke(label_image_command, ["--graph", str(other), "--labels", str(labels),
                                          "--image", str(trained.photos[0])])
    assert result.stdout.split()[0] in renamed  # still classified: a model moved since is told by nothing else
    assert result.stderr.count("WARNING") == 1, result.stderr
    assert f"the report.json beside them says they are the labels of {tmp_path / 'copy' / 'graph.pb'} and 1 more " \
           f"file, not of --graph {other}; if that is another model, pass its own labels file" in result.stderr
    # The same lines in another file beside that report (a backup; an earlier run's labels, whose report a later
    # run of the same classes replaced): said as what they are (probe CCC: the report was said to name that file;
    # probe DDD: with no word at all, a backup given to another model went unnoticed).
    earlier = shutil.copyfile(labels, tmp_path / "copy" / "labels_backup.txt")
    result = invoke(label_image_command, ["--graph", str(other), "--labels", str(earlier),
                                          "--image", str(trained.photos[0])])
    assert result.stdout.split()[0] in renamed and result.stderr.count("WARNING") == 1, result.stderr
    assert f"labels {earlier} hold the labels that the report.json beside them names for " \
           f"{tmp_path / 'copy' / 'graph.pb'} and 1 more file (in labels.txt), not for --graph {other}" in result.stderr
    # That run's model files moved away, its labels file left: nothing to say they are another model's (probe EEE:
    # the labels file was named as the model).
    shutil.move(tmp_path / "copy" / "graph.pb", tmp_path / "moved.pb")
    shutil.move(tmp_path / "copy" / "saved_model", tmp_path / "moved_saved_model")
    result = invoke(label_image_command, ["--graph", str(other), "--labels", str(earlier),
                                          "--image", str(trained.photos[0])])
    assert "WARNING" not in result.stderr, result.stderr


def test_an_intermediate_graph_of_the_run_gets_no_warning_one_of_another_run_does(
        colour_tree: Path, tiny_module: Path, outputs: dict[str, Path]) -> None:
    """The report lists a run's final files only: its intermediate graphs, where it wrote them, are its own (no
    warning about another model's labels); one left there by an earlier run, when this run wrote none, is not."""
    outputs = {**outputs, "intermediate_output_graphs_dir": outputs["output_labels"].parent / "ig"}
    retrain_cli(colour_tree, tiny_module, outputs, intermediate_store_frequency=10)
    intermediate = outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb"
    photo = next(path for path in sorted(colour_tree.rglob("*")) if path.is_file())
    # Without --labels, found through the report beside its folder, which lists it.
    assert "WARNING" not in invoke(label_image_command, ["--graph", str(intermediate), "--image", str(photo)]).stderr
    args = ["--graph", str(intermediate), "--labels", str(outputs["output_labels"]), "--image", str(photo)]
    assert "WARNING" not in invoke(label_image_command, args).stderr
    other = {**outputs, "output_graph": outputs["output_graph"].with_name("b.pb"),
             "output_labels": outputs["output_labels"].parent / "b" / "labels.txt"}
    other["output_labels"].parent.mkdir()
    copied = intermediate.with_name("copy_10.pb")  # a byte copy, newer than the report: its run's all the same
    shutil.copyfile(intermediate, copied)
    os.utime(copied, (time.time() + 60, time.time() + 60))
    assert "WARNING" not in invoke(label_image_command, ["--graph", str(copied), "--labels",
                                                         str(outputs["output_labels"]), "--image", str(photo)]).stderr
    retrain_cli(colour_tree, tiny_module, other, intermediate_store_frequency=10, learning_rate=0.5)
    # Another run wrote the same intermediate_10.pb since (the default folder is shared by every run): its bytes
    # are not those the report records (without --labels it printed the first run's labels, exit 0: probe SS).
    report = outputs["output_labels"].parent / "report.json"
    assert (f"labels {outputs['output_labels']} are not those of --graph {intermediate}: {report} lists it among "
            "the files its run wrote, but that run wrote other bytes there"
            ) in invoke(label_image_command, args).stderr
    refused = invoke(label_image_command, ["--graph", str(intermediate), "--image", str(photo)], expect=2)
    assert refused.stdout == "", refused.stdout
    assert (f"no labels found for --graph {intermediate}: {report} lists it among the files its run wrote, but it "
            "holds other bytes than that run wrote there (another run, or a copy, has replaced it since)"
            ) in refused.stderr
    data = json.loads(report.read_text())  # a report written before it recorded the bytes: told by the times
    del data["run"]["intermediate_sha256"]
    report.write_text(json.dumps(data))
    os.utime(report, (time.time() - 60, time.time() - 60))
    assert f"--graph {intermediate} is one of the intermediate graphs {report} lists, but was written after it" \
        in invoke(label_image_command, args).stderr
    retrain_cli(colour_tree, tiny_module, outputs)  # no intermediate graphs this time
    assert f"not of --graph {intermediate}; if that is another model" in invoke(label_image_command, args).stderr


def test_an_intermediate_graph_in_the_labels_folder_finds_its_labels(colour_tree: Path, tiny_module: Path,
                                                                      outputs: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--intermediate_output_graphs_dir the labels' own folder: the report beside the graph lists it among the
    run's intermediate graphs, not its files."""
    from retrain.config import RetrainConfig

    monkeypatch.setattr(RetrainConfig, "output_labels", outputs["output_labels"].parent / "none.txt")  # not /tmp's
    outputs = {**outputs, "intermediate_output_graphs_dir": outputs["output_labels"].parent}
    retrain_cli(colour_tree, tiny_module, outputs, intermediate_store_frequency=10)
    photo = next(path for path in sorted(colour_tree.rglob("*")) if path.is_file())
    result = invoke(label_image_command, ["--graph", str(outputs["output_labels"].parent / "intermediate_10.pb"),
                                          "--image", str(photo), "--top_k", "1"])
    assert result.stdout.split()[0] in COLOURS and "WARNING" not in result.stderr


def test_errors_about_labels_found_without_the_flag_do_not_name_the_flag(trained: Trained, tmp_path: Path) -> None:
    """A SavedModel's own labels file empty, or a link to nothing: the errors said '--labels ... is empty' and
    '--labels ... not found', though no --labels was given (probe P)."""
    shutil.copytree(trained.saved_model, tmp_path / "sm")
    own = tmp_path / "sm" / "assets.extra" / "labels.txt"
    own.write_text("")
    photo = ["--image", str(trained.photos[0])]
    assert _error(["--graph", str(tmp_path / "sm"), *photo], expect=1) == (
        f"label-image: error: the labels file {own} is empty; expected one label per line")
    own.unlink()
    own.symlink_to(tmp_path / "nowhere.txt")
    assert _error(["--graph", str(tmp_path / "sm"), *photo], expect=2) == (
        f"label-image: error: the labels file {own} of --graph {tmp_path / 'sm'} is a link to nothing; pass --labels")


def test_a_frozen_graph_named_saved_model_pb_is_read_as_one(colour_tree: Path, tiny_module: Path,
                                                              outputs: dict[str, Path]) -> None:
    """`--output_graph out/saved_model.pb` is a frozen graph: label-image loaded it as a SavedModel's folder (a
    tags= error) and looked for its labels in the folder (probe R). A SavedModel is told by its first field."""
    outputs = {**outputs, "output_graph": outputs["output_graph"].with_name("saved_model.pb")}
    retrain_cli(colour_tree, tiny_module, outputs)
    photo = next(path for path in sorted(colour_tree.rglob("*")) if path.is_file())
    result = invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--image", str(photo),
                                          "--top_k", "1"])
    assert result.stdout.split()[0] in COLOURS and "WARNING" not in result.stderr
    folder = outputs["output_graph"].parent  # given as its folder: TensorFlow's tags= error, or no labels found
    for labels in ([], ["--labels", str(outputs["output_labels"])]):
        error = invoke(label_image_command, ["--graph", str(folder), "--image", str(photo), *labels], expect=2)
        assert error.stderr == (f"label-image: error: --graph {folder} is a folder whose saved_model.pb is a frozen "
                                "graph (retrain's --output_graph named so), not a SavedModel; pass the file: --graph "
                                f"{outputs['output_graph']}\n"), error.stderr


def test_a_graph_path_whose_dot_dot_follows_a_link_loads_the_model_it_leads_to(trained: Trained,
                                                                               tmp_path: Path) -> None:
    """--graph w/link/../sm, where the SavedModel lies beside the link's target: TensorFlow cleans `link/..` away
    as text, so --graph is worked out by the file system first (probe S; nothing tested it, probe V)."""
    (tmp_path / "real" / "deep").mkdir(parents=True)
    shutil.copytree(trained.saved_model, tmp_path / "real" / "sm")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "link").symlink_to(tmp_path / "real" / "deep")
    given = tmp_path / "w" / "link" / ".." / "sm"
    (record,) = label_json("--graph", str(given), "--image", str(trained.photos[0]))
    assert record["predictions"][0]["label"] in trained.labels_list


def test_an_image_is_named_as_given(trained: Trained, tmp_path: Path) -> None:
    """--image x/../a.jpg came back as its absolute path (probe S): scripts match results to what they passed."""
    (tmp_path / "x").mkdir()
    shutil.copyfile(trained.photos[0], tmp_path / "a.jpg")
    given = str(tmp_path / "x" / ".." / "a.jpg")
    (record,) = label_json("--graph", str(trained.graph), "--labels", str(trained.labels), "--image", given)
    assert record["image"] == given


def test_labels_no_report_vouches_for_get_no_warning_about_another_model(trained: Trained, tmp_path: Path) -> None:
    """Labels edited beside their unchanged report, given to another model: the report says nothing of them, so
    no warning names a model they would belong to (only the class count is checked)."""
    shutil.copytree(trained.graph.parent, tmp_path / "a", ignore=shutil.ignore_patterns("logs", "checkpoint", "web"))
    (tmp_path / "a" / "labels.txt").write_text("".join(f"{label.upper()}\n" for label in trained.labels_list))
    other = _write_colour_graph(tmp_path / "other.pb", classes=len(trained.labels_list))
    result = invoke(label_image_command, ["--graph", str(other), "--labels", str(tmp_path / "a" / "labels.txt"),
                                          "--image", str(trained.photos[0])])
    assert result.stdout.split()[0].isupper() and "WARNING" not in result.stderr


def test_a_linked_model_finds_its_labels_and_none_found_says_so(trained: Trained, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A link to the model (latest.pb -> runs/X/graph.pb) looked for a report beside the link only, then for
    /tmp/output_labels.txt, and said "--labels /tmp/output_labels.txt not found" though no --labels was given."""
    renamed = _renamed_copy(trained, tmp_path / "copy")
    (tmp_path / "latest.pb").symlink_to(tmp_path / "copy" / "graph.pb")
    result = invoke(label_image_command, ["--graph", str(tmp_path / "latest.pb"), "--image", str(trained.photos[0]),
                                          "--top_k", "1"])
    assert result.stdout.split()[0] in renamed and "WARNING" not in result.stderr
    (tmp_path / "lone").mkdir()
    shutil.copyfile(trained.graph, tmp_path / "lone" / "graph.pb")
    from retrain.config import RetrainConfig

    monkeypatch.setattr(RetrainConfig, "output_labels", tmp_path / "output_labels.txt")  # not the machine's /tmp
    message = _error(["--graph", str(tmp_path / "lone" / "graph.pb"), "--image", str(trained.photos[0])], expect=2)
    assert message == (f"label-image: error: no labels found for --graph {tmp_path / 'lone' / 'graph.pb'}: no "
                       f"retrain report beside or above it names its labels file, and the default --labels "
                       f"{tmp_path / 'output_labels.txt'} does not exist; pass --labels (the labels file retrain "
                       "wrote with this model)")
    # A report beside it that does not list it (a later run's in that folder): said, not "no report" (probe U).
    shutil.copyfile(trained.graph.with_name("report.json"), tmp_path / "lone" / "report.json")
    (tmp_path / "lone" / "graph.pb").rename(tmp_path / "lone" / "older.pb")
    message = _error(["--graph", str(tmp_path / "lone" / "older.pb"), "--image", str(trained.photos[0])], expect=2)
    assert message == (f"label-image: error: --graph {tmp_path / 'lone' / 'older.pb'} is not among the files of the "
                       f"run that {tmp_path / 'lone' / 'report.json'} describes (an earlier run's model, or "
                       "another's), so which labels are its cannot be told; pass --labels (the labels file retrain "
                       "wrote with it)")


def test_a_saved_models_own_labels_given_to_another_model_get_a_warning(trained: Trained, tmp_path: Path) -> None:
    other = _write_colour_graph(tmp_path / "other.pb", classes=len(trained.labels_list))
    own = trained.saved_model / "assets.extra" / "labels.txt"
    result = invoke(label_image_command, ["--graph", str(other), "--labels", str(own), "--image",
                                          str(trained.photos[0])])
    assert f"labels {own}: the report.json beside that SavedModel says they are the labels of " in result.stderr
    assert f"not of --graph {other}; if that is another model, pass its own labels file" in result.stderr
    same_run = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(own), "--image",
                                            str(trained.photos[0])])  # the frozen graph of the SavedModel's run
    assert "WARNING" not in same_run.stderr


@pytest.mark.parametrize("run", [[], None, "x", {"flags": [], "files": {}}])
def test_a_report_whose_run_is_not_an_object_is_ignored(trained: Trained, tmp_path: Path, run: Any) -> None:
    """A hand-edited report.json beside the labels with "run": [] was an AttributeError traceback."""
    renamed = _renamed_copy(trained, tmp_path / "copy")
    report = json.loads((tmp_path / "copy" / "report.json").read_text())
    (tmp_path / "copy" / "report.json").write_text(json.dumps({**report, "run": run}))
    result = invoke(label_image_command, ["--graph", str(tmp_path / "copy" / "graph.pb"), "--labels",
                                          str(tmp_path / "copy" / "labels.txt"), "--image", str(trained.photos[0])])
    assert result.stdout.split()[0] in renamed and "Traceback" not in result.stderr


def test_labels_follow_links_and_what_retrain_wrote_over_the_classic_default(trained: Trained, tmp_path: Path) -> None:
    """A link to model A put in model B's folder took B's labels; labels linked from another model's gave no
    warning; a report naming a labels file since deleted fell back to /tmp/output_labels.txt without a word; a
    SavedModel whose own labels were replaced by another model's gave none either (probe O)."""
    renamed = _renamed_copy(trained, tmp_path / "a")
    shutil.copytree(trained.graph.parent, tmp_path / "b", ignore=shutil.ignore_patterns("logs", "checkpoint", "web"))
    (tmp_path / "b" / "graph.pb").unlink()
    (tmp_path / "b" / "graph.pb").symlink_to(tmp_path / "a" / "graph.pb")
    photo = ["--image", str(trained.photos[0]), "--top_k", "1"]
    linked = invoke(label_image_command, ["--graph", str(tmp_path / "b" / "graph.pb"), *photo])
    assert linked.stdout.split()[0] in renamed and "WARNING" not in linked.stderr
    (tmp_path / "l.txt").symlink_to(tmp_path / "a" / "labels.txt")  # A's labels through a link, for another model
    other = _write_colour_graph(tmp_path / "other.pb", classes=len(renamed))
    warned = invoke(label_image_command, ["--graph", str(other), "--labels", str(tmp_path / "l.txt"), *photo])
    assert f"not of --graph {other}" in warned.stderr
    (tmp_path / "a" / "saved_model" / "assets.extra" / "labels.txt").write_text(
        (tmp_path / "b" / "labels.txt").read_text())  # the SavedModel's own labels replaced by B's
    replaced = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "saved_model"), *photo])
    assert "holds other labels than its run's report.json lists" in replaced.stderr
    (tmp_path / "a" / "labels.txt").unlink()
    assert _error(["--graph", str(tmp_path / "a" / "graph.pb"), *photo], expect=2) == (
        f"label-image: error: --graph {tmp_path / 'a' / 'graph.pb'}: its run's labels file "
        f"{tmp_path / 'a' / 'labels.txt'}, which {tmp_path / 'a' / 'report.json'} names, is missing; pass --labels")


def test_labels_that_the_models_own_report_contradicts_get_a_warning(trained: Trained, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning came only when the report beside the labels vouched for them (probe P): another model's labels
    given to a model whose own report names others (`--labels /tmp/output_labels.txt` after a run with other
    paths), or a labels file replaced in a copied folder, named the scores wrongly without a word. A report beside
    the model that does not list it (another run's, in a shared folder) made label-image take the classic default
    silently. A SavedModel given by its saved_model.pb found no labels."""
    from retrain.config import RetrainConfig

    renamed = _renamed_copy(trained, tmp_path / "a")
    photo = ["--image", str(trained.photos[0]), "--top_k", "1"]
    (tmp_path / "other.txt").write_text("".join(f"{label.lower()}_x\n" for label in renamed))  # no report beside
    given = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "graph.pb"), "--labels",
                                         str(tmp_path / "other.txt"), *photo])
    assert given.stdout.split()[0].endswith("_x")
    assert (f"labels {tmp_path / 'other.txt'} are not those that {tmp_path / 'a' / 'report.json'} names for --graph "
            f"{tmp_path / 'a' / 'graph.pb'}") in given.stderr
    shutil.copyfile(tmp_path / "other.txt", tmp_path / "a" / "labels.txt")  # replaced in the model's folder:
    replaced = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "graph.pb"), *photo], expect=2)
    assert (f"its run's labels file {tmp_path / 'a' / 'labels.txt'}, which {tmp_path / 'a' / 'report.json'} names, "
            "holds other labels than that report lists") in replaced.stderr  # a warning only, exit 0 (probe WW)
    replaced = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "graph.pb"), "--labels",
                                            str(tmp_path / "a" / "labels.txt"), *photo])  # chosen: a warning
    assert f"labels {tmp_path / 'a' / 'labels.txt'} are not those that" in replaced.stderr
    right = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "saved_model" / "saved_model.pb"), *photo])
    assert right.stdout.split()[0] in renamed and "WARNING" not in right.stderr  # its own labels, as for the folder
    (tmp_path / "a" / "graph.pb").rename(tmp_path / "a" / "renamed.pb")  # its bytes: the run's graph all the same
    monkeypatch.setattr(RetrainConfig, "output_labels", tmp_path / "other.txt")  # the classic default, elsewhere
    moved = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "renamed.pb"), *photo], expect=2)
    assert "holds other labels than that report lists" in moved.stderr  # (replaced above)
    (tmp_path / "a" / "labels.txt").write_text("".join(f"{label}\n" for label in renamed))  # its own again:
    moved = invoke(label_image_command, ["--graph", str(tmp_path / "a" / "renamed.pb"), *photo])  # found by its
    assert moved.stdout.split()[0] in renamed and "WARNING" not in moved.stderr, moved.stderr  # bytes, no warning
    _write_colour_graph(tmp_path / "a" / "earlier.pb", classes=len(renamed))  # the report lists another graph
    unlisted = _error(["--graph", str(tmp_path / "a" / "earlier.pb"), *photo], expect=2)  # no guess: refused
    assert f"is not among the files of the run that {tmp_path / 'a' / 'report.json'} describes" in unlisted


def test_a_model_its_report_does_not_list_gets_no_labels_by_guess(colour_tree: Path, tiny_module: Path, outputs,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Model A with --output_tflite, then a run of the same classes without it (allowed): the report beside no
    longer listed m.tflite, and label-image named its scores with the classic default /tmp/output_labels.txt,
    another model's labels, exit 0 (probe EE). That rerun's report now lists it (`run.kept_files`, probe JJJ):
    its labels are those. Taking the labels of the report beside it when none lists it is wrong: a run of other
    classes with a labels file of another name in that folder is allowed, and its labels named A's scores (probe
    GG). That cannot be told from the files: label-image asks for --labels."""
    from retrain.config import RetrainConfig

    model = outputs["output_graph"].with_name("m.tflite")
    retrain_cli(colour_tree, tiny_module, outputs, output_tflite=model)
    retrain_cli(colour_tree, tiny_module, outputs, learning_rate=0.02)
    default = tmp_path / "output_labels.txt"
    default.write_text("cat\ndog\nbird\n")
    monkeypatch.setattr(RetrainConfig, "output_labels", default)
    photo = ["--image", str(colour_tree / "red" / "red_000.jpg"), "--top_k", "1"]
    kept = invoke(label_image_command, ["--graph", str(model), *photo])
    assert kept.stdout.split()[0] == "red" and "WARNING" not in kept.stderr, kept.stderr
    other_tree = tmp_path / "other"
    shutil.copytree(colour_tree, other_tree)
    shutil.rmtree(other_tree / "blue")
    retrain_cli(other_tree, tiny_module, {**outputs, "output_graph": tmp_path / "other.pb",
                                          "output_labels": outputs["output_labels"].with_name("other.txt")})
    message = _error(["--graph", str(model), *photo], expect=2)
    assert message == (f"label-image: error: --graph {model} is not among the files of the run that "
                       f"{outputs['output_labels'].parent / 'report.json'} describes (an earlier run's model, or "
                       "another's), so which labels are its cannot be told; pass --labels (the labels file retrain "
                       "wrote with it)")
    given = invoke(label_image_command, ["--graph", str(model), "--labels", str(outputs["output_labels"]), *photo])
    assert given.stdout.split()[0] == "red"


def test_the_classic_default_labels_of_another_model_are_refused_and_a_copy_gets_its_runs_labels(
        colour_tree: Path, tiny_module: Path, outputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model with no report listing it (kept in a sub-folder, an earlier run's intermediate graph) took the
    classic default /tmp/output_labels.txt although the report beside those labels said they were another
    model's: its scores named wrongly, exit 0, one warning (probe II). Now refused, unless --labels is given. A
    byte copy beside the report that lists the original (`cp graph.pb graph_backup.pb`) was refused (probe II):
    it gets that run's labels."""
    from retrain.config import RetrainConfig

    classic = tmp_path / "classic"
    classic.mkdir()
    default = classic / "output_labels.txt"
    retrain_cli(colour_tree, tiny_module, {**outputs, "output_graph": classic / "output_graph.pb",
                                           "output_labels": default, "intermediate_output_graphs_dir": classic / "ig"},
                learning_rate=0.02, intermediate_store_frequency=10)
    monkeypatch.setattr(RetrainConfig, "output_labels", default)
    retrain_cli(colour_tree, tiny_module, outputs)
    (tmp_path / "kept").mkdir()
    kept = tmp_path / "kept" / "graph.pb"
    shutil.copyfile(outputs["output_graph"], kept)
    photo = ["--image", str(colour_tree / "red" / "red_000.jpg"), "--top_k", "1"]
    message = _error(["--graph", str(kept), *photo], expect=2)
    assert message.startswith(f"label-image: error: no labels found for --graph {kept}: the default --labels "
                              f"{default} are not surely its, as the {classic / 'report.json'} beside them says "
                              f"they are the labels of {classic}"), message
    assert message.endswith("pass --labels (the labels file retrain wrote with this model)")
    given = invoke(label_image_command, ["--graph", str(kept), "--labels", str(default), *photo])
    assert given.stdout.split()[0] == "red" and f"not of --graph {kept}" in given.stderr  # chosen: a warning
    shutil.copyfile(classic / "output_graph.pb", tmp_path / "kept" / "classic_copy.pb")  # the default's own model
    copied = invoke(label_image_command, ["--graph", str(tmp_path / "kept" / "classic_copy.pb"), *photo])
    assert copied.stdout.split()[0] == "red" and "WARNING" not in copied.stderr
    # A copy of one of that run's intermediate graphs, elsewhere or beside its report (refused, probe KK).
    for copy in (tmp_path / "kept" / "step_10.pb", classic / "step_10.pb"):
        shutil.copyfile(classic / "ig" / "intermediate_10.pb", copy)
        copied = invoke(label_image_command, ["--graph", str(copy), *photo])
        assert len(copied.stdout.split()) == 2 and "WARNING" not in copied.stderr, copied.stderr
    backup = outputs["output_graph"].with_name("graph_backup.pb")
    shutil.copyfile(outputs["output_graph"], backup)
    beside = invoke(label_image_command, ["--graph", str(backup), *photo])
    assert beside.stdout.split()[0] == "red" and "WARNING" not in beside.stderr
    with backup.open("ab") as changed:  # no longer the same bytes: which labels are its cannot be told
        changed.write(b"\x22\0")  # (an empty version record: a graph still, of other bytes)
    assert "is not among the files of the run" in _error(["--graph", str(backup), *photo], expect=2)
    # Model B written beside the default with labels of its own (the report there now describes it), then
    # copied away: the copy took the default labels, model A's, exit 0 (probe OO). It gets B's labels; with
    # those gone, it is refused, and the default given as --labels gets a warning.
    other = make_colour_tree(tmp_path / "other", per_class=8,
                             classes={"cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0)})
    retrain_cli(other, tiny_module, {**outputs, "output_graph": classic / "b.pb",
                                     "output_labels": classic / "b_labels.txt"}, learning_rate=0.02)
    shutil.copyfile(classic / "b.pb", tmp_path / "kept" / "b.pb")
    cyan = ["--image", str(other / "cyan" / "cyan_000.jpg"), "--top_k", "1"]
    copied = invoke(label_image_command, ["--graph", str(tmp_path / "kept" / "b.pb"), *cyan])
    assert copied.stdout.split()[0] in ("cyan", "magenta", "yellow") and "WARNING" not in copied.stderr, copied.stderr
    (classic / "b_labels.txt").unlink()
    message = _error(["--graph", str(tmp_path / "kept" / "b.pb"), *cyan], expect=2)
    assert message == (f"label-image: error: no labels found for --graph {tmp_path / 'kept' / 'b.pb'}: the default "
                       f"--labels {default} are not its, as the {classic / 'report.json'} beside them lists "
                       f"{classic / 'b.pb'}, which --graph is a copy of, among the files of a run with other labels; "
                       "pass --labels (the labels file retrain wrote with this model)")
    given = invoke(label_image_command, ["--graph", str(tmp_path / "kept" / "b.pb"), "--labels", str(default), *cyan])
    assert f"labels {default} are not those of --graph" in given.stderr


def test_the_same_run_writes_the_same_bytes_so_a_backup_of_its_model_keeps_its_labels(colour_tree: Path,
                                                                                      tiny_module: Path,
                                                                                      outputs) -> None:
    # Freezing named each weight's constant by a counter of the process and wrote the graph's maps in any order:
    # each run of one command wrote other bytes, and a backup of the model taken before the rerun was refused
    # as another run's (probe NNN); TF.js model.json too (probe RRR). In two processes: a counter and a map's
    # order are a process's own.
    graph, web = outputs["output_graph"], outputs["output_graph"].parent / "web"
    intermediate, backup = outputs["intermediate_output_graphs_dir"] / "intermediate_10.pb", graph.with_name("b.pb")
    written = []
    for _ in range(2):
        run_script("-m", "retrain", *flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=20,
                                           intermediate_store_frequency=10, output_tfjs=web, **outputs))
        written.append((graph.read_bytes(), intermediate.read_bytes(), (web / "model.json").read_bytes()))
        if not backup.exists():
            shutil.copyfile(graph, backup)
    assert written[0] == written[1]
    result = invoke(label_image_command, ["--graph", str(backup), "--image", str(colour_tree / "red" / "red_000.jpg"),
                                          "--top_k", "1"])
    assert result.stdout.split()[0] == "red" and "WARNING" not in result.stderr


def _error(args: list[str], *, expect: int) -> str:
    result = invoke(label_image_command, args, expect=expect)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("label-image: error: "), result.stderr
    return lines[0]


def test_a_path_not_found_that_exists_in_another_unicode_form_or_case_is_said(trained: Trained,
                                                                              tmp_path: Path) -> None:
    """Probe NNN: `été.jpg` typed on a keyboard (NFC) for a file copied from a Mac (NFD) was only 'not found'."""
    import unicodedata

    from retrain.cli import retrain_command

    mac = tmp_path / unicodedata.normalize("NFD", "été.jpg")
    shutil.copyfile(trained.photos[0], mac)
    (tmp_path / "Roses").mkdir()
    typed = tmp_path / unicodedata.normalize("NFC", "été.jpg")
    assert not typed.exists()
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(typed)], expect=2)
    assert message == (f"label-image: error: --image {typed} not found ({mac} exists: the same name in another "
                       "Unicode form); pass an existing image file or folder")
    error = invoke(retrain_command, ["--image_dir", str(tmp_path / "roses")], expect=2).stderr
    assert f"--image_dir {tmp_path / 'roses'} does not exist ({tmp_path / 'Roses'} exists: the same name in other " \
           "letter case)" in error
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # (probe SSS: 'exists in another Unicode form')
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image",
                      str(tmp_path / "gone.jpg")], expect=2)
    assert f"not found ({tmp_path / 'gone.jpg'} is a link to nothing)" in message
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")  # (probe TTT: called a link to nothing)
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image",
                      str(tmp_path / "loop.jpg")], expect=2)
    assert f"not found ({tmp_path / 'loop.jpg'} is a loop of links)" in message
    (tmp_path / "Broken.jpg").symlink_to(tmp_path / "nowhere.jpg")  # (probe UUU: said to exist in other case)
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image",
                      str(tmp_path / "broken.jpg")], expect=2)
    assert message.startswith(f"label-image: error: --image {tmp_path / 'broken.jpg'} not found; "), message


def test_errors_are_one_clear_line(trained: Trained, tmp_path: Path) -> None:
    graph, labels, photo = str(trained.graph), str(trained.labels), str(trained.photos[0])
    assert "--graph" in _error(["--graph", str(tmp_path / "nope.pb"), "--labels", labels, "--image", photo], expect=2)
    assert "--labels" in _error(["--graph", graph, "--labels", str(tmp_path / "nope.txt"), "--image", photo], expect=2)
    assert "not found" in _error(["--graph", graph, "--labels", labels, "--image", str(tmp_path / "no.jpg")], expect=2)
    assert "--top_k" in _error(["--graph", graph, "--labels", labels, "--image", photo, "--top_k", "0"], expect=2)
    assert "no --image" in _error(["--graph", graph, "--labels", labels], expect=2)
    # Pixels a float32 cannot hold were fed to the model as infinities, with numpy's overflow warning, exit 0.
    for mean, std, largest in (("0", "1e-40", "2.55e+42"), ("1e308", "1e-308", "inf")):
        message = _error(["--graph", graph, "--labels", labels, "--image", photo, "--input_mean", mean,
                          "--input_std", std], expect=2)
        assert message == (f"label-image: error: --input_mean {float(mean):g} --input_std {float(std):g} make pixel "
                           f"values up to {largest}, beyond what a float32 input holds; retrain's models take "
                           "--input_mean 0 --input_std 255")

    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n")
    message = _error(["--graph", graph, "--labels", str(four), "--image", photo], expect=1)
    assert "has 4 labels but --graph" in message and "gives 5 scores per image" in message
    four.write_text("a\n")
    message = _error(["--graph", graph, "--labels", str(four), "--image", photo], expect=1)
    assert "has 1 label but --graph" in message  # not "1 labels"

    message = _error(["--graph", graph, "--labels", labels, "--image", photo, "--input_layer", "Mul"], expect=1)
    assert "--input_layer Mul is not in" in message and "Placeholder" in message and "final_result" in message
    message = _error(["--graph", str(trained.saved_model), "--labels", labels, "--image", photo,
                      "--output_layer", "logits"], expect=1)
    assert "--output_layer logits" in message and "prediction" in message and "image" in message
    message = _error(["--graph", graph, "--labels", labels, "--image", photo, "--input_height", "299"], expect=1)
    assert "--input_height 299 does not match the model (input Placeholder [?, 224, 224, 3] -> output" in message

    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xfe definitely not a protobuf" * 10)
    message = _error(["--graph", str(garbage), "--labels", labels, "--image", photo], expect=1)
    assert "is not a frozen GraphDef" in message
    fake_tflite = tmp_path / "model.tflite"
    fake_tflite.write_bytes(b"not a flatbuffer")
    assert "not a TFLite model" in _error(["--graph", str(fake_tflite), "--labels", labels, "--image", photo], expect=1)
    assert "not a SavedModel" in _error(["--graph", str(tmp_path), "--labels", labels, "--image", photo], expect=2)
    renamed = tmp_path / "model.pb"  # a SavedModel's saved_model.pb copied under another name (probe III)
    shutil.copyfile(trained.saved_model / "saved_model.pb", renamed)
    assert "looks like a SavedModel's saved_model.pb under another name; pass the folder" in _error(
        ["--graph", str(renamed), "--labels", labels, "--image", photo], expect=1)
    # Without --labels too (probe HHH: the labels file, listed in the report beside it, was said to hold other
    # bytes than its run wrote), said before any labels are looked for.
    for not_a_model in (labels, photo):
        assert _error(["--graph", not_a_model, "--image", photo], expect=1) == (
            f"label-image: error: --graph {not_a_model} is not a frozen GraphDef, a SavedModel folder or a TFLite "
            "file; pass the --output_graph, --saved_model_dir or .tflite file retrain wrote")

    empty, text = tmp_path / "empty.jpg", tmp_path / "text.jpg"
    empty.write_bytes(b"")
    text.write_text("hello")
    message = _error(["--graph", graph, "--labels", labels, "--image", str(empty)], expect=1)
    assert "cannot classify --image" in message and "empty" in message
    assert "not a recognised image" in _error(["--graph", graph, "--labels", labels, "--image", str(text)], expect=1)


def test_an_undecodable_image_among_several_is_skipped_then_fails(trained: Trained, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(trained.photos[0].read_bytes()[:200])
    result = invoke(label_image_command, ["--graph", str(trained.graph), "--labels", str(trained.labels),
                                          "--image", str(trained.photos[1]), "--image", str(broken), "--json"],
                    expect=1)
    records = json.loads(result.stdout)
    assert records[0]["image"] == str(trained.photos[1]) and len(records[0]["predictions"]) == 5
    assert records[1]["image"] == str(broken) and "corrupt or truncated" in records[1]["error"]
    assert f"skipping --image {broken}" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("label-image: error: 1 of 2 images")


@pytest.mark.parametrize("dtype, scale, zero_point", [(np.uint8, 1 / 255, 0), (np.int8, 1 / 255, -128),
                                                      (np.int8, 0.01, 3)])
def test_quantized_input_and_output_use_their_parameters(dtype: type, scale: float, zero_point: int) -> None:
    from retrain.inference.readers import _dequantize, _quantize

    detail = {"dtype": dtype, "quantization": (scale, zero_point)}
    pixels = np.linspace(0, 1, 256, dtype=np.float32).reshape(1, 16, 16, 1)
    quantized = _quantize(pixels, detail)
    assert quantized.dtype == dtype
    info = np.iinfo(dtype)
    expected = np.clip(np.round(pixels / scale) + zero_point, info.min, info.max)
    np.testing.assert_array_equal(quantized, expected)
    inside = (expected > info.min) & (expected < info.max)
    np.testing.assert_allclose(_dequantize(quantized, detail)[inside], pixels[inside], atol=scale / 2 + 1e-6)
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(_quantize(pixels, floats), pixels)
    np.testing.assert_array_equal(_dequantize(pixels, floats), pixels)


# --------------------------------------------------------------------------- graphs built by hand, for the edges

PRIMARIES = {"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}


def _write_graph(path: Path, build: Callable[[Any], None]) -> Path:
    """A frozen GraphDef of whatever `build()` adds to a fresh tf.compat.v1 graph (no variables: nothing to freeze)."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        build(tf)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def _write_colour_graph(path: Path, *, classes: int = 3, op: str = "Softmax") -> Path:
    """A retrain-style graph: `Placeholder` [?, 32, 32, 3] -> mean colour -> `final_result` over `classes` outputs,
    a Softmax or (as a multi-label export) a Sigmoid per label. Outputs 0-2 are red, green and blue; any further
    ones score lower and lower whatever the image."""
    weights = np.zeros((3, classes), np.float32)
    weights[:, :3] = 10 * np.eye(3)
    bias = np.float32([-5.0] * 3 + [-6.0 - k for k in range(classes - 3)])

    def build(tf: Any) -> None:
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="Placeholder")
        logits = tf.matmul(tf.reduce_mean(images, [1, 2]), tf.constant(weights)) + tf.constant(bias)
        (tf.nn.softmax if op == "Softmax" else tf.sigmoid)(logits, name="final_result")

    return _write_graph(path, build)


def _colour_photos(folder: Path) -> dict[str, Path]:
    return {name: colour_photo(folder / f"{name}.png", rgb, seed=i, fmt="PNG")
            for i, (name, rgb) in enumerate(PRIMARIES.items())}


def test_the_input_found_is_one_the_output_is_computed_from(tmp_path: Path) -> None:
    """Probe ZZP: a graph holding two models (a classic one fed at `Mul` from a JPEG string, and another with its
    own float Placeholder): label-image paired the other's Placeholder with --output_layer final_result, then
    failed running the graph. The inputs looked for are those the output is computed from."""
    def two(tf: Any) -> None:
        jpeg = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        image = tf.expand_dims(tf.cast(tf.image.decode_jpeg(jpeg, channels=3), tf.float32), 0)
        mul = tf.multiply(tf.image.resize(image, [32, 32]) - 128.0, 1 / 128.0, name="Mul")
        weights = tf.constant(10 * np.eye(3, dtype=np.float32))
        tf.nn.softmax(tf.matmul(tf.reduce_mean(mul, [1, 2]), weights), name="final_result")
        other = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="Placeholder")
        tf.nn.softmax(tf.matmul(tf.reduce_mean(other, [1, 2]), weights), name="other_result")

    graph, labels = _write_graph(tmp_path / "two.pb", two), tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    photo = _colour_photos(tmp_path)["red"]
    common = ["--graph", str(graph), "--labels", str(labels), "--image", str(photo)]
    message = _error([*common, "--output_layer", "final_result"], expect=1)
    assert message.startswith(f"label-image: error: --graph {graph} has 0 float [N, H, W, 3] Placeholders that "
                              "--output_layer final_result is computed from, expected one; pass --input_layer"), message
    assert invoke(label_image_command, [*common, "--output_layer", "other_result"]).stdout.startswith("red ")



def test_inputs_with_defaults_outputs_of_constants_and_names_that_start_with_import(tmp_path: Path) -> None:
    """Probe ZZT: an output computed from a PlaceholderWithDefault, or from constants only, was paired with another
    part's Placeholder and gave 1/3 for every image, exit 0; a graph imported once and frozen again (its nodes
    `import/...`) could not be read, not even with the names its own error listed; 100,000 candidates made an error
    line of 3.7 MB."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    weights = 10 * np.eye(3, dtype=np.float32)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    photo = str(_colour_photos(tmp_path)["red"])

    def with_default(tf: Any) -> None:
        source = tf.compat.v1.placeholder_with_default(tf.zeros([1, 32, 32, 3]), [None, 32, 32, 3], name="pwd")
        tf.nn.softmax(tf.matmul(tf.reduce_mean(source, [1, 2]), weights), name="final_result")
        tf.identity(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="other") * 2, name="other_out")

    graph = _write_graph(tmp_path / "pwd.pb", with_default)
    label, score = invoke(label_image_command, ["--graph", str(graph), "--labels", str(labels), photo]).stdout \
        .splitlines()[0].split()
    assert label == "red" and float(score) > 0.9  # the photo's own scores, not 1/3 each

    def constants(tf: Any) -> None:
        tf.nn.softmax(tf.matmul(tf.reduce_mean(tf.zeros([1, 32, 32, 3]), [1, 2]), weights), name="final_result")
        for n in range(30):
            tf.identity(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name=f"other{n}"), name=f"out{n}")

    graph = _write_graph(tmp_path / "constants.pb", constants)
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", photo], expect=1)
    assert message.startswith(f"label-image: error: --graph {graph} has 0 float [N, H, W, 3] Placeholders that "
                              "--output_layer final_result is computed from"), message
    assert message.count("(Placeholder [?, 32, 32, 3])") == 10 and ", ...;" in message, message

    # An input named that the output is not computed from (probe ZZU: every image scored alike, exit 0); a
    # Placeholder feeding the output through an override with a default (probe ZZU: refused as two inputs).
    message = _error(["--graph", str(graph), "--labels", str(labels), "--input_layer", "other0", "--image", photo],
                     expect=1)
    assert message.startswith("label-image: error: --output_layer final_result is not computed from --input_layer "
                              "other0, so every image would get the same scores; pass the input"), message

    def override(tf: Any) -> None:
        given = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="Placeholder")
        source = tf.compat.v1.placeholder_with_default(given * 1.0, [None, 32, 32, 3], name="input_override")
        tf.nn.softmax(tf.matmul(tf.reduce_mean(source, [1, 2]), weights), name="final_result")

    graph = _write_graph(tmp_path / "override.pb", override)
    label, score = invoke(label_image_command, ["--graph", str(graph), "--labels", str(labels), photo]).stdout \
        .splitlines()[0].split()
    assert label == "red" and float(score) > 0.9

    def side_input(tf: Any) -> None:  # (probe ZZV: the side input was fed as the image)
        image = tf.compat.v1.placeholder_with_default(tf.zeros([2, 32, 32, 3]), [None, 32, 32, 3], name="image")
        background = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="background")
        tf.nn.softmax(tf.matmul(tf.reduce_mean(image - 0.5 * background, [1, 2]), weights), name="final_result")

    graph = _write_graph(tmp_path / "side.pb", side_input)
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", photo], expect=1)
    assert message.startswith(f"label-image: error: --graph {graph} has 2 float [N, H, W, 3] Placeholders that "
                              "--output_layer final_result is computed from, expected one"), message

    original = _write_colour_graph(tmp_path / "graph.pb")
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(original.read_bytes())
    with tf.Graph().as_default() as imported:
        tf.compat.v1.import_graph_def(graph_def)  # its nodes named import/...
    again = tmp_path / "again.pb"
    again.write_bytes(imported.as_graph_def().SerializeToString())
    for named in ([], ["--input_layer", "import/Placeholder", "--output_layer", "import/final_result:0"]):
        scores = invoke(label_image_command, ["--graph", str(again), "--labels", str(labels), *named, photo]).stdout
        assert scores == invoke(label_image_command, ["--graph", str(original), "--labels", str(labels),
                                                      photo]).stdout


def test_an_input_layer_that_cannot_take_rgb_batches_is_one_error_line(trained: Trained, tmp_path: Path) -> None:
    """An input layer of another shape than [N, H, W, 3]: one line naming its shape, before any image is read."""

    def grey(tf: Any) -> None:  # an MNIST-style graph: one channel
        digits = tf.compat.v1.placeholder(tf.float32, [None, 28, 28, 1], name="input")
        flat = tf.reshape(digits, [-1, 28 * 28])
        tf.nn.softmax(tf.matmul(flat, tf.constant(np.zeros((28 * 28, 3), np.float32))), name="final_result")

    graph, labels = _write_graph(tmp_path / "grey.pb", grey), tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    photo = _colour_photos(tmp_path)["red"]
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", str(photo), "--input_layer", "input"],
                     expect=1)
    assert message.startswith("label-image: error: --input_layer input is Placeholder [?, 28, 28, 1], not an image "
                              "input [N, H, W, 3] (its input candidates: input (Placeholder [?, 28, 28, 1]); ")

    # retrain's own graph fed at an inner tensor [?, classes] (the logits under final_result)
    from retrain.tfenv import import_tensorflow

    graph_def = import_tensorflow().compat.v1.GraphDef()
    graph_def.ParseFromString(trained.graph.read_bytes())
    logits = next(node.input[0] for node in graph_def.node if node.name == "final_result")
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(trained.photos[0]),
                      "--input_layer", logits, "--input_height", "224", "--input_width", "224"], expect=1)
    assert message.startswith(f"label-image: error: --input_layer {logits} is ")
    assert "[?, 5], not an image input [N, H, W, 3]" in message
    # the classic layer flags swapped: said so, with the real input and output named
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(trained.photos[0]),
                      "--input_layer", "final_result", "--output_layer", "Placeholder"], expect=1)
    assert message.startswith("label-image: error: --input_layer final_result is Softmax [?, 5], not an image input "
                              "[N, H, W, 3] (its input candidates: Placeholder (Placeholder [?, 224, 224, 3]); its "
                              "output candidates: final_result (Softmax [?, 5])")
    # an output that is an image, not scores per image (it was called a graph of 3 classes)
    message = _error(["--graph", str(trained.graph), "--labels", str(trained.labels), "--image", str(trained.photos[0]),
                      "--output_layer", "Placeholder"], expect=1)
    assert message.startswith("label-image: error: --output_layer Placeholder is Placeholder [?, 224, 224, 3], not "
                              "scores per image [N, classes]")


@pytest.mark.parametrize("dtype", ["int32", "bool", "string"])
def test_an_input_layer_that_is_not_float_is_refused_not_fed_zeros(tmp_path: Path, dtype: str) -> None:
    """[0, 1] pixels cast to integers are zeros: the model would answer for a black image, exit 0."""

    def typed(tf: Any) -> None:
        pixels = tf.compat.v1.placeholder(getattr(tf, dtype), [None, 32, 32, 3] if dtype != "string" else [],
                                          name="typed")
        as_float = tf.cast(pixels, tf.float32) if dtype != "string" else tf.zeros([1, 32, 32, 3])
        tf.nn.softmax(tf.matmul(tf.reduce_mean(as_float, [1, 2]), tf.constant(np.eye(3, dtype=np.float32))),
                      name="final_result")

    graph, labels = _write_graph(tmp_path / f"{dtype}.pb", typed), tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", str(_colour_photos(tmp_path)["red"]),
                      "--input_layer", "typed", "--input_height", "32", "--input_width", "32"], expect=1)
    assert f"--input_layer typed takes {dtype}; label-image feeds float RGB [N, H, W, 3]" in message, message


def test_a_graph_that_needs_another_feed_names_the_placeholder(tmp_path: Path) -> None:
    """A second placeholder (a classic `keep_prob`): the line says which one, not just 'Graph execution error:'."""

    def dropout_style(tf: Any) -> None:
        images = tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3], name="Placeholder")
        keep_prob = tf.compat.v1.placeholder(tf.float32, [], name="keep_prob")
        tf.nn.softmax(tf.reduce_mean(images, [1, 2]) * 10.0 * keep_prob, name="final_result")

    graph, labels = _write_graph(tmp_path / "dropout.pb", dropout_style), tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", str(_colour_photos(tmp_path)["red"])],
                     expect=1)
    assert message.startswith("label-image: error: running the graph failed: You must feed a value for placeholder "
                              "tensor 'import/keep_prob'"), message


def test_a_labels_file_with_a_bom_and_crlf_gives_clean_labels(tmp_path: Path) -> None:
    """As Notepad saves it: UTF-8 with a byte-order mark, CRLF line ends."""
    graph, labels = _write_colour_graph(tmp_path / "graph.pb"), tmp_path / "labels.txt"
    labels.write_bytes("\ufeffred\r\ngreen\r\nblue\r\n".encode("utf-8"))
    photos = _colour_photos(tmp_path)
    common = ["--graph", str(graph), "--labels", str(labels)]
    text = invoke(label_image_command, [*common, "--image", str(photos["red"]), "--top_k", "1"]).stdout
    assert text.split(" ")[0] == "red", repr(text)
    records = label_json(*common, *images_args(list(photos.values())))
    assert [r["predictions"][0]["label"] for r in records] == ["red", "green", "blue"]
    assert all(sorted(p["label"] for p in r["predictions"]) == ["blue", "green", "red"] for r in records)


def test_a_blank_line_inside_the_labels_file_is_an_error_naming_it(tmp_path: Path) -> None:
    graph, labels = _write_colour_graph(tmp_path / "graph.pb"), tmp_path / "labels.txt"
    photo = str(_colour_photos(tmp_path)["red"])
    labels.write_text("red\n\ngreen\n")  # three lines for three classes: read as is, blue would be called green
    message = _error(["--graph", str(graph), "--labels", str(labels), "--image", photo], expect=1)
    assert f"the labels file {labels} line 2 is blank" in message
    labels.write_text("red\ngreen\nblue\n\n\n")  # blank lines at the end are fine
    records = label_json("--graph", str(graph), "--labels", str(labels), "--image", photo)
    assert records[0]["predictions"][0]["label"] == "red"


def test_json_gives_every_label_unless_top_k_says_otherwise(tmp_path: Path) -> None:
    """SPEC: --json predictions are every label and its score, best first; the text lines keep the classic 5."""
    from retrain.api import classify

    names = ["red", "green", "blue", "cyan", "magenta", "yellow", "black"]
    graph, labels = _write_colour_graph(tmp_path / "graph.pb", classes=7), tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in names))
    photo = _colour_photos(tmp_path)["green"]
    common = ["--graph", str(graph), "--labels", str(labels), "--image", str(photo)]
    (record,) = label_json(*common)
    assert sorted(p["label"] for p in record["predictions"]) == sorted(names)
    scores = [p["score"] for p in record["predictions"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    assert record["predictions"][0]["label"] == "green"
    assert len(label_json(*common, "--top_k", "2")[0]["predictions"]) == 2
    assert len(invoke(label_image_command, common).stdout.splitlines()) == 5
    (from_api,) = classify([photo], graph=graph, labels=labels)
    assert from_api["predictions"] == record["predictions"]
    assert len(classify([photo], graph=graph, labels=labels, top_k=3)[0]["predictions"]) == 3


def _multi_label_model(folder: Path, thresholds: str | None) -> list[str]:
    """A hand-built multi-label graph (a Sigmoid per label, no thresholds inside) with its labels file and, unless
    None, the thresholds file beside it: the common label-image arguments."""
    graph, labels = _write_colour_graph(folder / "graph.pb", op="Sigmoid"), folder / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    if thresholds is not None:
        thresholds_path(labels).write_text(thresholds)
    return ["--graph", str(graph), "--labels", str(labels)]


@pytest.mark.parametrize("thresholds, line", [("0.5\nnan\n0.5\n", 2), ("0.5\n0.5\ninf\n", 3), ("-inf\n0.5\n0.5\n", 1),
                                              ("0.5\n\n0.5\nnan\n", 4)])
def test_thresholds_that_are_not_finite_numbers_are_named_by_line(tmp_path: Path, thresholds: str, line: int) -> None:
    common = _multi_label_model(tmp_path, thresholds)
    message = _error([*common, "--image", str(_colour_photos(tmp_path)["red"])], expect=1)
    assert f"{thresholds_path(tmp_path / 'labels.txt')} line {line} is not a finite number" in message


@pytest.mark.parametrize("thresholds", ["0.5\n0.5\n", "0.5\n0.5\n0.5\n0.5\n"])
def test_a_thresholds_file_of_another_label_count_is_refused(tmp_path: Path, thresholds: str) -> None:
    """Probe ZZI: one line too many went unnoticed by the tests (only too few was tried)."""
    common = _multi_label_model(tmp_path, thresholds)
    message = _error([*common, "--image", str(_colour_photos(tmp_path)["red"])], expect=1)
    count = thresholds.count("\n")
    assert f"{thresholds_path(tmp_path / 'labels.txt')} holds {count} thresholds for 3 labels" in message


def test_a_model_that_gives_another_number_of_score_rows_is_one_line() -> None:
    """Probe ZZN: a model whose module pools over the batch gave 3 rows for 32 images: a reshape traceback."""
    from retrain.inference.command import _rows

    assert [row.tolist() for row in _rows(np.float64([[[[0.2, 0.8]]], [[[0.6, 0.4]]]]), 2)] == [[0.2, 0.8],
                                                                                               [0.6, 0.4]]
    with pytest.raises(RetrainError, match=r"^the model gave scores of shape \[3, 1\] for 32 image\(s\), not one row "
                                           r"per image \(its module mixes the images of a batch\?\); pass a model"):
        _rows(np.zeros((3, 1), np.float32), 32)


def test_top_k_keeps_class_order_among_equal_scores() -> None:
    """Ties (a quantized TFLite model's scores often tie) keep the labels file's order (probe ZZI: reversed
    order among ties went unnoticed)."""
    from retrain.inference.command import top_k

    assert top_k(np.float32([0.2, 0.4, 0.4, 0.0, 0.4]), list("abcde"), 4) == [("b", np.float32(0.4)),
                                                                             ("c", np.float32(0.4)),
                                                                             ("e", np.float32(0.4)),
                                                                             ("a", np.float32(0.2))]


def test_an_image_with_no_label_at_its_threshold_says_so(tmp_path: Path) -> None:
    photos = _colour_photos(tmp_path)
    common = _multi_label_model(tmp_path, "0.5\n0.5\n0.5\n")
    result = invoke(label_image_command, [*common, "--image", str(photos["red"])])
    assert [line.split(" ")[0] for line in result.stdout.splitlines()] == ["red"]  # red scores ~0.97, the others ~0.02
    thresholds_path(tmp_path / "labels.txt").write_text("0.999\n0.999\n0.999\n")
    result = invoke(label_image_command, [*common, "--image", str(photos["red"])])
    assert result.stdout == "(no label at or above its threshold)\n"
    several = invoke(label_image_command, [*common, *images_args([photos["red"], photos["blue"]])]).stdout
    assert several == "".join(f"==> {photos[name]} <==\n(no label at or above its threshold)\n\n"
                              for name in ("red", "blue"))
    assert [r["labels"] for r in label_json(*common, "--image", str(photos["red"]))] == [[]]


def test_labels_that_differ_only_in_unicode_form_are_printed_with_their_line(tmp_path: Path) -> None:
    """Class folders `rosés` in its two Unicode forms (a copy from macOS beside one typed here) are two labels, as
    retrain's table shows (`rosés #2`); label-image printed `rosés` twice with nothing to tell them apart (probe
    ZZE). --json keeps the labels as they are."""
    graph, labels = _write_colour_graph(tmp_path / "graph.pb"), tmp_path / "labels.txt"
    labels.write_bytes("ros\u00e9s\nrose\u0301s\nblue\n".encode())
    common = ["--graph", str(graph), "--labels", str(labels), "--image", str(_colour_photos(tmp_path)["red"])]
    printed = [line.rsplit(" ", 1)[0] for line in invoke(label_image_command, common).stdout.splitlines()]
    assert set(printed) == {"blue", "ros\u00e9s #1", "rose\u0301s #2"}, printed
    assert {p["label"] for p in label_json(*common)[0]["predictions"]} == {"ros\u00e9s", "rose\u0301s", "blue"}


def test_a_labels_file_replaced_while_label_image_runs_does_not_change_its_output(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """The labels are read once: a rerun of retrain replacing them while label-image went through a folder ended it
    with a KeyError traceback, the printed names read a second time (probe ZZG)."""
    import io

    from retrain.config import LabelImageConfig
    from retrain.inference import command

    graph, labels = _write_colour_graph(tmp_path / "graph.pb"), tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    photos = _colour_photos(tmp_path)
    read = command.records

    def replaced_after_the_first(*args, **kwargs):
        for index, record in enumerate(read(*args, **kwargs)):
            if index == 0:
                labels.write_text("rouge\nvert\nbleu\n")
            yield record

    monkeypatch.setattr(command, "records", replaced_after_the_first)
    out = io.StringIO()
    command.run(LabelImageConfig(graph=graph, labels=labels, images=tuple(photos.values())), out=out)
    assert [line.split()[0] for line in out.getvalue().splitlines() if line and not line.startswith("==>")] \
        and "rouge" not in out.getvalue() and "red" in out.getvalue()


def test_labels_are_read_exactly_as_retrain_wrote_them(tmp_path: Path) -> None:
    """Folders "cat", " cat", "cat " and "Cat" are four classes: their labels keep their spaces when read back."""
    from retrain.inference.labels import read_labels

    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffcat\n cat\ncat \nCat\ncaf\u00e9\ncafe\u0301\n\n".encode())
    assert read_labels(labels) == ["cat", " cat", "cat ", "Cat", "caf\u00e9", "cafe\u0301"]


def test_saved_models_in_folders_named_like_patterns_load(colour_tree: Path, tiny_module: Path, tmp_path: Path,
                                                          outputs, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow finds a SavedModel's variables by matching their names, so one in `sm[1]` (or a module in
    `mods [v1]/`) could not be loaded: "Failed to find any matching files for sm[1]/variables/variables"
    (probe ZZ). Each is loaded through a link to it."""
    module = tmp_path / "mods [v1]" / "tiny*?"
    shutil.copytree(tiny_module, module)
    saved = tmp_path / "out" / "sm[1]"
    retrain_cli(colour_tree, module, {**outputs, "saved_model_dir": saved})
    result = invoke(label_image_command, flags(graph=saved, image=colour_tree / "red" / "red_000.jpg"))
    assert result.output.splitlines()[0].split()[0] == "red", result.output + result.stderr
    patterned = tmp_path / "tmp[1]"  # a temporary folder whose own name is a pattern: not where the link goes
    patterned.mkdir()
    monkeypatch.setenv("TMPDIR", str(patterned))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads $TMPDIR again
    result = invoke(label_image_command, flags(graph=saved, image=colour_tree / "red" / "red_000.jpg"))
    assert result.output.splitlines()[0].split()[0] == "red", result.output + result.stderr
    # The TFLite converter saves a SavedModel among the temporary files and loads it back (probe DDD: every
    # --output_tflite failed there, and the run's files were taken back).
    retrain_cli(colour_tree, module, {**outputs, "output_tflite": tmp_path / "out" / "m.tflite"})
    assert (tmp_path / "out" / "m.tflite").stat().st_size > 0


@pytest.mark.integration  # label-image in a fresh process (4 s), where TensorFlow's own loggers print
def test_a_saved_model_with_a_damaged_fingerprint_is_read_without_tensorflows_traceback(
        colour_tree: Path, tiny_module: Path, outputs) -> None:
    """TensorFlow loads such a SavedModel but logs its fingerprint error with a full traceback (absl's logger)."""
    saved = outputs["output_graph"].with_name("saved")
    retrain_cli(colour_tree, tiny_module, {**outputs, "saved_model_dir": saved})
    with open(saved / "fingerprint.pb", "ab") as handle:
        handle.write(b"\n")
    photo = colour_tree / "red" / "red_000.jpg"
    result = run_script("-c", "from retrain.cli import label_image_command; label_image_command(prog_name='label-image')",
                        "--graph", str(saved), "--labels", str(outputs["output_labels"]), "--image", str(photo))
    assert "Traceback" not in result.stderr and "Fingerprint" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[0].split()[0] == "red"


def test_custom_mean_and_std_are_applied_as_pixel_minus_mean_over_std(tmp_path: Path) -> None:
    """The classic semantics: --input_mean 10 --input_std 100 feeds (pixel - 10) / 100, pixels in 0..255."""
    from retrain.images import load_image
    from retrain.inference.command import Preprocessing

    photo = _colour_photos(tmp_path)["green"]
    fed = Preprocessing(height=32, width=32, mean=10.0, std=100.0)(photo)
    pixels = load_image(photo, height=32, width=32).astype(np.float64) * 255.0
    np.testing.assert_allclose(fed, (pixels - 10.0) / 100.0, rtol=1e-6, atol=1e-6)
    assert fed.dtype == np.float32
    # A mean beyond float32 with a std that brings the pixels back in range: computed in float64, not as infinity
    # (it printed numpy's overflow warning and scores of infinite pixels, exit 0).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fed = Preprocessing(height=32, width=32, mean=1e39, std=1e37)(photo)
    np.testing.assert_allclose(fed, (pixels - 1e39) / 1e37, rtol=1e-6)


def test_a_label_scored_exactly_at_its_threshold_is_printed(tmp_path: Path) -> None:
    """SPEC: a multi-label model prints the labels at or above their thresholds; at counts."""
    photo = str(_colour_photos(tmp_path)["red"])
    common = _multi_label_model(tmp_path, "0.5\n0.5\n0.5\n")
    (record,) = label_json(*common, "--image", photo)
    scores = {p["label"]: p["score"] for p in record["predictions"]}
    # each threshold set to its label's own float32 score, written as retrain writes thresholds (9 digits)
    thresholds_path(tmp_path / "labels.txt").write_text("".join(f"{np.float32(scores[label]):.9g}\n"
                                                                for label in ("red", "green", "blue")))
    (record,) = label_json(*common, "--image", photo)
    assert record["labels"] == [p["label"] for p in record["predictions"]] and len(record["labels"]) == 3
    printed = invoke(label_image_command, [*common, "--image", photo]).stdout.splitlines()
    assert [line.split(" ")[0] for line in printed] == record["labels"]


def test_an_input_std_of_zero_is_one_usage_error_line(tmp_path: Path) -> None:
    """Pixels are divided by --input_std: 0 is refused before any work, not a division by zero."""
    common = _multi_label_model(tmp_path, None)
    for value in ("0", "0.0", "-0"):
        message = _error([*common, "--image", str(_colour_photos(tmp_path)["red"]), "--input_std", value], expect=2)
        assert message == "label-image: error: --input_std must not be 0 (pixels are divided by it)"


@pytest.mark.parametrize("flag", ["--labels", "--image"])
def test_a_labels_or_image_name_too_long_for_file_systems_names_the_flag(tmp_path: Path, flag: str) -> None:
    """It said `File name too long (<the whole value>)` (probe SS), as --graph did before it was checked."""
    args = {"--graph": str(tmp_path / "g.pb"), "--labels": str(tmp_path / "l.txt"), "--image": str(tmp_path)}
    result = invoke(label_image_command, [*(item for key, value in {**args, flag: str(tmp_path / ("x" * 300))}.items()
                                           for item in (key, value))], expect=2)
    assert result.stderr.startswith(f"label-image: error: {flag} is too long for a path (") and \
        result.stderr.count("\n") == 1, result.stderr


def test_a_graph_no_report_lists_in_a_runs_intermediate_folder_gets_no_default_labels(
        colour_tree: Path, tiny_module: Path, outputs: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe XXX: an interrupted run's intermediate graph, in the folder where an earlier run's report (above it)
    lists that run's own, was given the classic default /tmp/output_labels.txt, another model's labels, exit 0.
    A report above that lists files in the graph's folder speaks for it, as one beside it does."""
    from retrain.config import RetrainConfig

    default = tmp_path / "default_labels.txt"
    default.write_text("cat\ndog\nbird\n")  # another model's, as the classic default often is
    monkeypatch.setattr(RetrainConfig, "output_labels", default)
    folder = outputs["output_labels"].parent / "ig"
    retrain_cli(colour_tree, tiny_module, {**outputs, "intermediate_output_graphs_dir": folder},
                intermediate_store_frequency=10)
    other = tmp_path / "other"
    other.mkdir()
    retrain_cli(colour_tree, tiny_module, {**outputs, "output_graph": other / "g.pb",
                                           "output_labels": other / "labels.txt",
                                           "intermediate_output_graphs_dir": other / "ig"},
                intermediate_store_frequency=10, learning_rate=0.5)
    (other / "report.json").unlink()  # as an interrupted run writes none
    stray = folder / "intermediate_30.pb"
    shutil.move(other / "ig" / "intermediate_10.pb", stray)
    photo = next(path for path in sorted(colour_tree.rglob("*")) if path.is_file())
    refused = invoke(label_image_command, ["--graph", str(stray), "--image", str(photo)], expect=2)
    assert refused.stdout == ""
    report = outputs["output_labels"].parent / "report.json"
    assert (f"--graph {stray} is not among the files of the run that {report} describes") in refused.stderr
    listed = folder / "intermediate_10.pb"  # the earlier run's own still finds its labels
    assert invoke(label_image_command, ["--graph", str(listed), "--image", str(photo)]).stdout.split()[0] in COLOURS
    # A run with the classic default labels whose graph went into that folder: the default's report vouches for
    # them wherever the graph lies (probe ZZA: refused by the first version of this rule).
    default.unlink()
    retrain_cli(colour_tree, tiny_module, {**outputs, "output_graph": folder / "default_run.pb",
                                           "output_labels": default})
    found = invoke(label_image_command, ["--graph", str(folder / "default_run.pb"), "--image", str(photo)])
    assert found.stdout.split()[0] in COLOURS and "WARNING" not in found.stderr, found.stderr
