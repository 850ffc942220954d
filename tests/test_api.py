"""The Python API (retrain.api) and the quickstart example: the same run, checks and files as the command line."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain import api
from retrain.cli import label_image_command, retrain_command
from retrain.config import RetrainConfig
from retrain.labels.split import split_of
from tests.conftest import FIXTURES, FLOWERS, flags, invoke, make_colour_tree, require, run_script, save_tiny_module

ROOT = Path(__file__).resolve().parents[1]


def test_retrain_returns_labels_head_accuracy_per_split_and_files(colour_tree: Path, tiny_module: Path,
                                                                  outputs) -> None:
    result = api.retrain(colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=200,
                         learning_rate=0.1, log_level=None, **outputs)
    assert result.labels == ["blue", "green", "red"]
    assert result.head.weights.shape == (8, 3) and result.head.biases.shape == (3,)
    assert set(result.accuracy) == {"training", "validation", "testing"}
    train = result.splits["training"]
    expected = float(np.mean(result.head.probabilities(train.vectors).argmax(1) == train.targets.ids))
    assert result.accuracy["training"] == pytest.approx(expected) and expected >= 0.9
    assert list(result.written) == [outputs["output_graph"], outputs["output_labels"],
                                    outputs["output_labels"].parent / "report.json"]
    assert all(path.exists() for path in result.written)


def test_print_results_false_prints_nothing_on_stdout(colour_tree: Path, tiny_module: Path, outputs,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """retrain() printed the command's results on stdout, whatever `log_level` said: a script whose own stdout is
    data (JSON, CSV) got the per-class table in it (probe AAA). `print_results=False` prints none of it; another
    thread's prints meanwhile still go there."""
    import threading

    api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, **outputs)
    printed = capsys.readouterr()
    assert "Final test accuracy" in printed.out and f"Wrote {outputs['output_graph']}" in printed.out
    # By default the classic lines go to stderr, as the command's (probe ZZO: a quieter default passed the tests).
    assert "Step 0: Train accuracy = " in printed.err and "Step 19: Validation accuracy = " in printed.err

    class Loud(logging.Handler):  # runs in the calling thread, as the run's own prints do: muted with them
        def emit(self, record: logging.LogRecord) -> None:
            if "computed" in record.getMessage():
                print("from the caller's thread")
                other = threading.Thread(target=print, args=("from another thread",))
                other.start()
                other.join()

    handler = Loud()
    logging.getLogger("retrain").addHandler(handler)
    try:
        result = api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, log_level="INFO",
                             print_results=False, **outputs)
    finally:
        logging.getLogger("retrain").removeHandler(handler)
    assert capsys.readouterr().out == "from another thread\n" and result.accuracy["testing"] >= 0


def test_a_call_leaves_the_callers_logging_and_environment_as_they_were(colour_tree: Path, tiny_module: Path,
                                                                         outputs) -> None:
    """Probe PPP: after retrain(), the root logger held a handler TensorFlow's checkpoint code added (the caller's
    own basicConfig then did nothing), the 'tensorflow' and 'absl' loggers were at ERROR and CRITICAL, and
    TF_CPP_MIN_LOG_LEVEL=3 was in the environment of the caller's later subprocesses. In a fresh process: pytest
    gives the root logger handlers of its own."""
    code = ("import logging, os, sys; from retrain import api; os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None); "
            "before = lambda: (logging.getLogger().handlers[:], logging.getLogger('tensorflow').level, "
            "logging.getLogger('absl').level, os.environ.get('TF_CPP_MIN_LOG_LEVEL')); first = before(); "
            f"api.retrain({str(colour_tree)!r}, tfhub_module={str(tiny_module)!r}, how_many_training_steps=5, "
            f"print_results=False, log_level='ERROR', **{ {k: str(v) for k, v in outputs.items()}!r}); "
            "assert before() == first, (before(), first); "
            f"api.classify({str(colour_tree / 'red' / 'red_000.jpg')!r}, graph={str(outputs['output_graph'])!r}); "
            "assert before() == first, (before(), first); print('kept')")
    assert run_script("-c", code).stdout == "kept\n"


def test_classify_gives_what_label_image_json_prints(colour_tree: Path, tiny_module: Path, outputs) -> None:
    api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=50, log_level=None, **outputs)
    photos = sorted(colour_tree.rglob("*_001.jpg"))
    records = api.classify(photos, graph=outputs["output_graph"], labels=outputs["output_labels"], top_k=2)
    printed = json.loads(invoke(label_image_command, ["--graph", str(outputs["output_graph"]), "--labels",
                                                      str(outputs["output_labels"]), "--top_k", "2", "--json",
                                                      *map(str, photos)]).stdout)
    assert records == printed and len(records) == 3 and len(records[0]["predictions"]) == 2


@pytest.mark.parametrize("flags_, message", [
    ({"learning_rate": float("nan")}, "--learning_rate must be a finite number, got nan"),
    ({"how_many_training_steps": 0}, "--how_many_training_steps must be positive, got 0"),
    ({"train_batch_size": -1}, "--train_batch_size -1 (which the classic script took, without saying so, for "
                               "every training image at each step) is not taken here"),  # as the README says
    ({"tflite_quantization": "int4", "output_tflite": "/tmp/m.tflite"}, "--tflite_quantization int4: expected"),
    ({"fine_tune_steps": 200}, "--fine_tune_steps 200 has no effect without --fine_tune"),  # given at its default
])
def test_bad_values_raise_the_command_lines_message_before_any_work(colour_tree: Path, outputs, flags_,
                                                                    message: str) -> None:
    with pytest.raises(api.UsageError) as error:
        api.retrain(colour_tree, log_level=None, **{**outputs, **flags_})
    cli_flags = {k: v for k, v in flags_.items()}
    printed = invoke(retrain_command, flags(image_dir=colour_tree, **outputs, **cli_flags), expect=2).stderr
    assert message in str(error.value) and f"retrain: error: {error.value}" in printed
    assert not outputs["bottleneck_dir"].exists()


@pytest.mark.parametrize("flags_, message", [
    ({"how_many_training_step": 100}, "retrain() has no flag 'how_many_training_step'; did you mean "
                                      "'how_many_training_steps'?"),
    ({"how_many_training_steps": "100"}, "--how_many_training_steps must be a whole number, got '100'"),
    ({"learning_rate": "0.1"}, "--learning_rate must be a number, got '0.1'"),
    ({"flip_left_right": "yes"}, "--flip_left_right must be True or False, got 'yes'"),
    ({"image_size": 224.5}, "--image_size must be a whole number, got 224.5"),
    ({"output_graph": 5}, "--output_graph must be a path, got 5"),
    # bool is an int subclass in Python: True for a count or a rate is a slip, not 1
    ({"how_many_training_steps": True}, "--how_many_training_steps must be a whole number, got True"),
    ({"learning_rate": True}, "--learning_rate must be a number, got True"),
])
def test_wrong_names_and_types_from_python_are_one_line_before_any_work(colour_tree: Path, outputs, flags_,
                                                                         message: str) -> None:
    with pytest.raises(api.UsageError) as error:
        api.retrain(colour_tree, log_level=None, **{**outputs, **flags_})
    assert str(error.value) == message
    assert not outputs["bottleneck_dir"].exists()


def test_numpy_numbers_and_lists_are_fine_from_python(colour_tree: Path, outputs) -> None:
    config = RetrainConfig(colour_tree, how_many_training_steps=np.int64(5), learning_rate=np.float32(0.5),
                           tflite_quantization=["float32", "int8"], output_tflite="m.tflite", **outputs)
    assert (config.how_many_training_steps, config.tflite_quantization) == (5, ("float32", "int8"))


def test_other_kinds_of_numbers_become_plain_python_numbers_before_any_work(colour_tree: Path, outputs) -> None:
    """A Fraction passed the type check, then failed deep in the run (a TypeError from a format string, a
    ValueError from TensorFlow) or at its very end (report.json cannot hold it), taking the exports back."""
    from fractions import Fraction

    config = RetrainConfig(colour_tree, learning_rate=Fraction(1, 100), random_crop=Fraction(10),
                           testing_percentage=Fraction(15), how_many_training_steps=np.uint16(5), **outputs)
    assert [type(value) for value in (config.learning_rate, config.random_crop, config.testing_percentage,
                                      config.how_many_training_steps)] == [float, float, float, int]
    assert (config.learning_rate, config.random_crop, config.how_many_training_steps) == (0.01, 10.0, 5)
    with pytest.raises(api.UsageError, match=r"^--learning_rate must be a finite number, got 1000"):
        RetrainConfig(colour_tree, learning_rate=10**400)
    from decimal import Decimal

    assert RetrainConfig(colour_tree, learning_rate=Decimal("0.01"), **outputs).learning_rate == 0.01


def test_relative_paths_in_a_deleted_current_folder_are_one_line_before_any_work(colour_tree: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """A shell left in a folder that was then deleted: every relative write failed after the whole run, naming no
    path (the API raised a bare FileNotFoundError)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(api.UsageError, match=r"^--output_graph g\.pb is relative, but the current folder no longer "
                                             r"exists"):
        api.retrain(colour_tree, log_level=None, output_graph="g.pb")


def test_absolute_paths_in_a_deleted_current_folder_make_a_whole_run(colour_tree: Path, tmp_path: Path, outputs,
                                                                     tiny_module: Path, monkeypatch) -> None:
    """With every path absolute the folder does not matter: the run trained, then report.json asked for the
    current folder (to record it) and the exports were taken back."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, log_level=None, **outputs)
    report = json.loads(outputs["output_labels"].with_name("report.json").read_text())
    assert report["run"]["folder"] is None and outputs["output_graph"].is_file()


def test_relative_paths_are_the_ones_of_the_folder_the_call_was_made_in(colour_tree: Path, tiny_module: Path,
                                                                        tmp_path: Path, monkeypatch) -> None:
    """A notebook's `%cd` while a run goes on in another thread used to move its writes: the checks looked at
    ./g.pb in one folder, the run wrote ./g.pb in the other, over the user's file there."""
    import retrain.pipeline

    start, elsewhere = tmp_path / "run", tmp_path / "notebook"
    start.mkdir()
    elsewhere.mkdir()
    (elsewhere / "g.pb").write_text("the user's own file")
    monkeypatch.chdir(start)
    vectors = retrain.pipeline.file_vectors

    def and_change_folder(*args, **kwargs):  # the other thread's %cd, once the vectors are computed
        result = vectors(*args, **kwargs)
        os.chdir(elsewhere)
        return result

    monkeypatch.setattr(retrain.pipeline, "file_vectors", and_change_folder)
    result = api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, log_level=None,
                         output_graph="g.pb", output_labels="labels.txt", summaries_dir="logs",
                         bottleneck_dir="cache", checkpoint_path="ck/ck", intermediate_output_graphs_dir="inter")
    assert (elsewhere / "g.pb").read_text() == "the user's own file" and sorted(elsewhere.iterdir()) == \
        [elsewhere / "g.pb"]
    assert list(result.written) == [start / "g.pb", start / "labels.txt", start / "report.json"]
    assert (start / "labels.txt").read_text() == "blue\ngreen\nred\n"


def test_calls_from_two_threads_run_one_after_the_other(colour_tree: Path, tiny_module: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    """Two calls at once in one process shared the record of what each run judged and wrote (retrain.outputs):
    the second cleared the first's, so a photo put at the first's --output_tflite meanwhile was overwritten, and
    the first's exports were recorded in the second's set. A second call now waits for the first to end."""
    import threading

    import retrain.pipeline

    events: list[str] = []
    run = retrain.pipeline.run

    def recorded(config, **kwargs):
        events.append(f"start {config.output_graph.parent.name}")
        try:
            return run(config, **kwargs)
        finally:
            events.append(f"end {config.output_graph.parent.name}")

    monkeypatch.setattr(retrain.pipeline, "run", recorded)
    results: dict[str, object] = {}

    def call(name: str) -> None:
        out = tmp_path / name
        out.mkdir()
        results[name] = api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=100,
                                    log_level=None, output_graph=out / "g.pb", output_labels=out / "labels.txt",
                                    summaries_dir=out / "logs", bottleneck_dir=tmp_path / "cache",
                                    checkpoint_path=out / "ck", intermediate_output_graphs_dir=out / "inter")

    threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(results) == ["a", "b"]
    assert [event.split()[0] for event in events] == ["start", "end", "start", "end"], events
    assert events[0].split()[1] == events[1].split()[1] and events[2].split()[1] == events[3].split()[1]


def test_a_call_from_inside_a_running_call_is_refused_not_left_waiting(colour_tree: Path, tiny_module: Path,
                                                                       outputs, tmp_path: Path) -> None:
    """A caller's logging handler that starts another run when it sees a line ran in the running call's thread,
    where waiting for the lock could only wait for ever (it hung, silently)."""
    seen: list[str] = []

    class StartAnother(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Step 10:") and not seen:
                try:
                    api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, log_level=None,
                                output_graph=tmp_path / "other.pb", output_labels=tmp_path / "other.txt")
                except api.UsageError as error:
                    seen.append(str(error))

    logger = logging.getLogger("retrain")
    handler = StartAnother()
    logger.addHandler(handler)
    try:
        result = api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=20, log_level="INFO",
                             **outputs)
    finally:
        logger.removeHandler(handler)
    assert seen == ["retrain() was called while this thread's retrain() call runs (from a logging handler or a "
                    "callback?); call it once that one has returned"]
    assert result.labels == ["blue", "green", "red"] and not (tmp_path / "other.pb").exists()


def test_classify_names_a_wrong_flag_and_type(tmp_path: Path) -> None:
    with pytest.raises(api.UsageError, match=r"^classify\(\) has no flag 'topk'; did you mean 'top_k'\?$"):
        api.classify([tmp_path / "a.jpg"], topk=3)
    with pytest.raises(api.UsageError, match=r"^--top_k must be a whole number, got '3'$"):
        api.classify([tmp_path / "a.jpg"], top_k="3")


LEVELS_MESSAGE = "log_level must be one of DEBUG, INFO, WARN, WARNING, ERROR, FATAL (any case), or None to leave " \
                 "logging as it is"


@pytest.mark.parametrize("function, arguments, message", [
    ("retrain", {"image_dir": None}, "--image_dir must be a path, got None"),
    ("retrain", {"image_dir": 5}, "--image_dir must be a path, got 5"),
    ("retrain", {"image_dir": b"/tmp/x"}, "--image_dir must be a path, got b'/tmp/x'"),
    ("retrain", {"log_level": "nonsense"}, f"{LEVELS_MESSAGE}, got 'nonsense'"),
    ("retrain", {"log_level": logging.INFO}, f"{LEVELS_MESSAGE}, got 20"),
    ("retrain", {"tfhub_module": ["a", None]}, "--tfhub_module must be a string or a path, or a list of them, got ['a', None]"),
    ("retrain", {"tflite_quantization": ["float32", 8], "output_tflite": "m.tflite"},
     "--tflite_quantization must be a list of strings, got ['float32', 8]"),
    # the keyword's name: the flag is --image (probe ZZJ: '--images', which is neither)
    ("classify", {"images": None}, "images must be a path or a list of paths, got None"),
    ("classify", {"images": b"a.jpg"}, "images must be a path or a list of paths, got b'a.jpg'"),
    ("classify", {"images": ["a.jpg", 5]}, "images must be a list of paths, got ['a.jpg', 5]"),
    ("classify", {"images": [None]}, "images must be a list of paths, got [None]"),
    ("classify", {"graph": None}, "--graph must be a path, got None"),
    ("classify", {"labels": 5}, "--labels must be a path, got 5"),
    # A NUL byte cuts the name where the file system reads it: `o/x\0y` as a checkpoint wrote `o/.x.index`.
    ("retrain", {"checkpoint_path": "o/x\0y"}, "--checkpoint_path 'o/x\\x00y' holds a NUL byte, which no file name can"),
    ("retrain", {"output_graph": Path("o/g\0.pb")}, "--output_graph 'o/g\\x00.pb' holds a NUL byte, which no file name can"),
    ("retrain", {"image_dir": "da\0ta"}, "--image_dir 'da\\x00ta' holds a NUL byte, which no file name can"),
    ("classify", {"images": ["a\0.jpg"]}, "--image 'a\\x00.jpg' holds a NUL byte, which no file name can"),
    ("retrain", {"tfhub_module": "m\0"}, "--tfhub_module 'm\\x00' holds a NUL byte, which no file name or handle can"),
    ("retrain", {"print_results": "no"}, "print_results must be True or False, not 'no'"),
])
def test_arguments_of_the_wrong_type_are_one_line_before_any_work(colour_tree: Path, outputs, function: str,
                                                                  arguments: dict, message: str) -> None:
    with pytest.raises(api.UsageError) as error:
        if function == "retrain":
            api.retrain(**{"image_dir": colour_tree, "log_level": None, **outputs, **arguments})
        else:
            api.classify(**{"images": [colour_tree / "red" / "red_000.jpg"], **arguments})
    assert str(error.value) == message
    assert not outputs["bottleneck_dir"].exists()


def test_classify_given_the_commands_image_flag_names_its_keyword(tmp_path: Path) -> None:
    """Probe ZZK: `classify(image=...)`, the command's flag, was Python's TypeError about a missing argument."""
    with pytest.raises(api.UsageError, match=r"^classify\(\) has no flag 'image'; did you mean 'images'\?$"):
        api.classify(image=tmp_path / "a.jpg")
    with pytest.raises(api.UsageError, match=r"^images must be a path or a list of paths, got None$"):
        api.classify()
    with pytest.raises(api.UsageError, match=r"^--image_dir must be a path, got None$"):  # probe ZZM: a TypeError
        api.retrain(log_level=None)


def test_the_error_paths_do_not_import_tensorflow() -> None:
    code = ("import sys\nfrom retrain import api\n"
            "for call in (lambda: api.retrain(None), lambda: api.retrain('.', log_level='x'),\n"
            "             lambda: api.classify('/no/photo.jpg', graph='/no/graph.pb'), lambda: api.classify(None)):\n"
            "    try:\n        call()\n    except api.UsageError:\n        pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    run_script("-c", code, timeout=120)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory, tiny_module: Path) -> tuple[Path, dict[str, Path]]:
    """A colour tree and the graph and labels of a short retrain on it, for the tests that only classify."""
    root = tmp_path_factory.mktemp("colour_model")
    tree = make_colour_tree(root / "photos", per_class=6)
    out = {"output_graph": root / "graph.pb", "output_labels": root / "labels.txt", "summaries_dir": root / "logs",
           "bottleneck_dir": root / "bottlenecks", "checkpoint_path": root / "checkpoint" / "ckpt",
           "intermediate_output_graphs_dir": root / "intermediate"}
    api.retrain(tree, tfhub_module=str(tiny_module), how_many_training_steps=20, log_level=None, **out)
    return tree, {"graph": out["output_graph"], "labels": out["output_labels"]}


def test_classify_takes_one_path_as_a_list_of_one(colour_model) -> None:
    tree, model = colour_model
    photo = tree / "red" / "red_001.jpg"
    expected = api.classify([photo], **model)
    assert len(expected) == 1 and expected[0]["image"] == str(photo)
    assert api.classify(str(photo), **model) == expected and api.classify(photo, **model) == expected
    folder = api.classify(str(tree / "red"), **model)
    assert [record["image"] for record in folder] == [str(p) for p in sorted((tree / "red").iterdir())]


def test_classify_takes_paths_from_the_home_folder(colour_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~/m/g.pb` was 'not found' (probe TT), though retrain() and both commands take it."""
    tree, model = colour_model
    monkeypatch.setenv("HOME", str(tree.parent))
    home = {key: "~/" + os.path.relpath(value, tree.parent) for key, value in model.items()}
    photo = "~/" + os.path.relpath(tree / "red" / "red_001.jpg", tree.parent)
    assert [r["predictions"] for r in api.classify(photo, **home)] == \
        [r["predictions"] for r in api.classify(tree / "red" / "red_001.jpg", **model)]


@pytest.mark.parametrize("missing", ["graph", "labels", "image", "images in the folder"])
def test_a_missing_file_for_classify_is_a_usage_error_with_the_command_lines_message(colour_model, tmp_path: Path,
                                                                                    missing: str) -> None:
    tree, model = colour_model
    files = {"graph": model["graph"], "labels": model["labels"], "image": tree / "red" / "red_001.jpg"}
    if missing == "images in the folder":
        files["image"] = tmp_path / "no_images"
        files["image"].mkdir()
    else:
        files[missing] = tmp_path / f"no_{missing}"
    with pytest.raises(api.UsageError) as error:
        api.classify(files["image"], graph=files["graph"], labels=files["labels"])
    printed = invoke(label_image_command, ["--graph", str(files["graph"]), "--labels", str(files["labels"]),
                                           "--image", str(files["image"])], expect=2).stderr
    assert printed == f"label-image: error: {error.value}\n"


@pytest.mark.parametrize("flag", ["image_dir", "output_graph", "output_labels", "summaries_dir", "bottleneck_dir",
                                  "intermediate_output_graphs_dir", "checkpoint_path", "saved_model_dir",
                                  "output_tflite", "output_tfjs", "labels_csv"])
def test_an_empty_path_is_judged_as_the_command_line_judges_it(colour_tree: Path, outputs, flag: str) -> None:
    """'' is an error for a path the run needs and "not set" for an optional one (how_many_training_steps=0
    then stops both before any work); never the current folder."""
    values = {"image_dir": colour_tree, **outputs, flag: "", "how_many_training_steps": 0}
    with pytest.raises(api.UsageError) as error:
        api.retrain(**values, log_level=None)
    printed = invoke(retrain_command, flags(**values), expect=2).stderr
    assert printed == f"retrain: error: {error.value}\n"
    assert not outputs["bottleneck_dir"].exists()


@pytest.mark.parametrize("modules", [list, tuple])
def test_a_list_of_modules_is_the_repeated_flag(colour_tree: Path, tiny_module: Path, outputs, modules) -> None:
    with pytest.raises(api.UsageError) as error:
        api.retrain(colour_tree, tfhub_module=modules([str(tiny_module), str(tiny_module)]), log_level=None,
                    **outputs)
    printed = invoke(retrain_command, flags(image_dir=colour_tree, **outputs) +
                     ["--tfhub_module", str(tiny_module), "--tfhub_module", str(tiny_module)], expect=2).stderr
    assert printed == f"retrain: error: {error.value}\n" and "names a module twice" in printed


def test_a_list_of_modules_trains_on_their_vectors_side_by_side(colour_tree: Path, tiny_module: Path, outputs,
                                                                 tmp_path: Path) -> None:
    other = save_tiny_module(tmp_path / "tiny4", feature_dim=4)
    result = api.retrain(colour_tree, tfhub_module=[tiny_module, str(other)], how_many_training_steps=10,
                         log_level=None, **outputs)
    assert result.head.weights.shape == (8 + 4, 3)


def _one_class_tree(root: Path) -> Path:
    """A tree that fails before any work after one warning: a class folder with no images, and one class."""
    tree = make_colour_tree(root, per_class=2, classes={"red": (220, 40, 40)})
    (tree / "empty").mkdir()
    return tree


WARNING = "/empty has no images"  # the line the scan logs for the empty class folder


def test_each_calls_log_level_applies_to_that_call_only(tmp_path: Path, outputs, capsys) -> None:
    tree = _one_class_tree(tmp_path / "photos")
    logger = logging.getLogger("retrain")
    before = logger.handlers[:], logger.level, logger.propagate
    shown, after = [], []
    for level in ("ERROR", "INFO", "ERROR", "warn"):
        with pytest.raises(api.RetrainError, match="need at least 2"):
            api.retrain(tree, log_level=level, **outputs)
        shown.append(WARNING in capsys.readouterr().err)
        after.append((logger.handlers[:], logger.level, logger.propagate))
    assert shown == [False, True, False, True]
    assert after == [before] * 4  # the logger as the caller left it
    for level, shows in (("error", False), ("Warn", True), ("ERROR", False)):  # the command's flag: the same
        with pytest.raises(api.RetrainError, match="need at least 2"):
            api.retrain(tree, logging_verbosity=level, **outputs)
        assert (WARNING in capsys.readouterr().err) == shows
    with pytest.raises(api.UsageError, match="^logging_verbosity must be one of DEBUG, INFO"):
        api.retrain(tree, logging_verbosity="verbose", **outputs)


class _Collect(logging.Handler):
    """A caller's own handler: keeps the messages it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_callers_own_handler_gets_the_lines_at_the_calls_level_and_stays(tmp_path: Path, outputs, capsys) -> None:
    tree = _one_class_tree(tmp_path / "photos")
    logger = logging.getLogger("retrain")
    theirs = _Collect()
    logger.addHandler(theirs)
    logger.setLevel(logging.ERROR)
    before = logger.handlers[:], logger.level, logger.propagate
    for level, expected in ((None, False), ("WARN", True)):
        theirs.messages.clear()
        with pytest.raises(api.RetrainError, match="need at least 2"):
            api.retrain(tree, log_level=level, **outputs)
        assert any(WARNING in message for message in theirs.messages) == expected
        assert WARNING not in capsys.readouterr().err  # their handler, not a second one of ours
        assert (logger.handlers, logger.level, logger.propagate) == before


@pytest.mark.integration  # a fresh process, a real module and 75 photos: CI runs it with the integration tests
def test_the_quickstart_example_runs_the_whole_job(tmp_path: Path) -> None:
    """`python examples/quickstart.py`: here on 15 fixture photos per class, the module by its short name
    resolved offline through a pre-filled TFHUB_CACHE_DIR, as a user's machine resolves it online. The photos lie
    in a sub-folder of each class (the example named the sub-folder as the photo's class)."""
    photos = tmp_path / "flower_photos"
    for class_dir in sorted(p for p in require(FLOWERS).iterdir() if p.is_dir()):
        (photos / class_dir.name / "2019").mkdir(parents=True)
        for photo in sorted(class_dir.iterdir())[:15]:
            shutil.copyfile(photo, photos / class_dir.name / "2019" / photo.name)
    hub_cache = tmp_path / "hub_cache"
    shutil.copytree(require(FIXTURES / "tfhub_cache"), hub_cache)
    result = run_script(str(ROOT / "examples" / "quickstart.py"), "--image_dir", str(photos), "--output_dir",
                        str(tmp_path / "out"), "--steps", "300", env={"TFHUB_CACHE_DIR": str(hub_cache)},
                        timeout=600)
    assert "Accuracy per split: training" in result.stdout
    shown = re.search(r"/flower_photos/(([^/]+)/2019/[^/]+) \(a held-out photo of ([^)]+)\):", result.stdout)
    assert shown and shown[2] == shown[3] and "Next: label-image" in result.stdout, result.stdout
    assert split_of(shown[1], validation_percentage=10, testing_percentage=10) == "testing"  # held out indeed
    assert (tmp_path / "out" / "graph.pb").exists() and (tmp_path / "out" / "saved_model" / "saved_model.pb").exists()


def test_the_quickstart_example_says_in_one_line_when_it_cannot_fetch_the_photos(tmp_path: Path) -> None:
    result = run_script(str(ROOT / "examples" / "quickstart.py"), "--image_dir", str(tmp_path / "flower_photos"),
                        "--output_dir", str(tmp_path / "out"), check=1, timeout=120)
    assert result.stderr.strip().startswith("Downloading ")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("quickstart: error: cannot fetch the flower photos") and "--image_dir" in last
    assert not (tmp_path / "flower_photos").exists()


@pytest.mark.parametrize("level, shown", [("INFO", True), ("WARN", False), ("ERROR", False)])
def test_progress_is_shown_with_the_info_lines_and_quietened_with_them(level: str, shown: bool) -> None:
    import io

    from retrain.logs import setup_logging
    from retrain.progress import Progress

    setup_logging(level)  # what --logging_verbosity does (the autouse fixture restores the logger)
    stream = io.StringIO()
    progress = Progress(3, "Bottlenecks", stream=stream, interval=0.0)
    progress.update(2)
    progress.close()
    assert ("Bottlenecks: 2/3 images in" in stream.getvalue()) is shown
    assert ("2/3 images (67%)" in stream.getvalue()) is shown
    empty = io.StringIO()  # no work at all says nothing (`Loading validation images: 0/0` with no validation split)
    Progress(0, "Loading validation images", stream=empty, interval=0.0).close()
    assert empty.getvalue() == ""


def test_progress_measures_its_pace_after_the_first_update_and_can_wait_before_showing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch also pays for start-up (TensorFlow tracing): the first line said `16:12 left` for work that
    took 1:21 (probe Z). The first line has no estimate; later ones measure from the first update. Checking
    photos against the cache shows lines only when it takes a while (a million files took 45 s in silence)."""
    import io

    from retrain import progress as shown
    from retrain.logs import setup_logging

    setup_logging("INFO")
    clock = [100.0]
    monkeypatch.setattr(shown.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = shown.Progress(1000, "Bottlenecks", stream=stream, interval=10.0)
    clock[0] = 160.0  # a slow first batch
    bar.update(10)
    clock[0] = 170.0
    bar.update(100)  # 100 images in the 10 s since: 890 left take 89 s
    assert stream.getvalue().splitlines() == ["Bottlenecks: 10/1000 images (1%)",
                                              "Bottlenecks: 110/1000 images (11%), 10.0 images/s, 1:29 left"]
    for seconds, quick in ((4.0, True), (30.0, False)):
        stream = io.StringIO()
        clock[0] = 200.0
        checked = shown.Progress(50, "Checking photos", unit="files", stream=stream, interval=10.0, delay=5.0)
        for _ in range(50):
            clock[0] += seconds / 50
            checked.update()
        checked.close()
        assert (stream.getvalue() == "") is quick, stream.getvalue()
    assert stream.getvalue().splitlines()[-1] == "Checking photos: 50/50 files in 0:30 (1.7 files/s)"


def test_a_home_folder_path_with_dot_dot_is_where_the_shell_would_put_it(colour_tree: Path, tiny_module: Path,
                                                                         outputs, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """bottleneck_dir='~/other/../bn' from Python made a folder named `~` in the current folder (probe S): a
    path's `..` was worked out before its `~` was the home folder."""
    home = tmp_path / "home"
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    home.mkdir()
    (home / "other").symlink_to(tmp_path / "elsewhere" / "deep")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    api.retrain(colour_tree, tfhub_module=tiny_module, how_many_training_steps=5, log_level=None,
                **{**outputs, "bottleneck_dir": "~/other/../bn"})
    assert (tmp_path / "elsewhere" / "bn").is_dir() and not (tmp_path / "~").exists()
