"""Short module names, `retrain --list_modules`, and modules that leave their input size open."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrain import catalog
from retrain.cli import retrain_command
from retrain.config import RetrainConfig
from retrain.errors import RetrainError
from tests.conftest import FIXTURES, MODULES, flags, invoke, make_colour_tree, require, run_script, save_tiny_module


def test_names_map_to_canonical_tf2_feature_vector_handles() -> None:
    expected = {
        "mobilenet_v2_100_224": ("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", 224),
        "inception_v3": ("https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5", 299),
        "nasnet_large": ("https://tfhub.dev/google/imagenet/nasnet_large/feature_vector/5", 331),
        "efficientnet_b0": ("https://tfhub.dev/tensorflow/efficientnet/b0/feature-vector/1", 224),
        "efficientnet_b7": ("https://tfhub.dev/tensorflow/efficientnet/b7/feature-vector/1", 600),
    }
    for name, (handle, size) in expected.items():
        entry = catalog.lookup(name)
        assert entry is not None and (entry.handle, entry.size) == (handle, size), name
    assert catalog.lookup("Inception-V3") == catalog.lookup("inception_v3")  # case and dashes do not matter
    assert catalog.lookup("inception_v9") is None
    assert catalog.lookup(RetrainConfig.tfhub_module) is None  # full handles are not names
    names = [e.name for e in catalog.CATALOG]
    assert len(names) == len(set(names))
    assert all(e.handle.startswith("https://tfhub.dev/") and e.size > 0 for e in catalog.CATALOG)
    assert RetrainConfig.tfhub_module in {e.handle for e in catalog.CATALOG}  # the default is listed


def test_list_modules_prints_the_table_without_image_dir_or_tensorflow() -> None:
    code = ("import sys; sys.argv = ['retrain', '--list-modules']\n"
            "from retrain.cli import retrain_command\n"
            "try:\n    retrain_command()\n"
            "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n")
    result = run_script("-c", code)
    assert result.stdout == catalog.format_table()
    assert "tensorflow imported: False" in result.stderr
    for entry in catalog.CATALOG:
        line = next(line for line in result.stdout.splitlines() if line.startswith(entry.name + " "))
        assert f" {entry.size} " in line and entry.handle in line


def console_script(name: str) -> str:
    """The console script pip installed for this interpreter (beside it: a pyenv shim first on PATH is no
    Python script)."""
    script = Path(sys.executable).with_name(name)
    assert script.is_file(), f"the {name} console script is installed beside {sys.executable} (pip install -e .)"
    return str(script)


def test_list_modules_via_console_script_exits_zero() -> None:
    retrain = console_script("retrain")
    result = run_script(retrain, "--list_modules", "--how_many_training_steps", "-5")  # eager: nothing else checked
    assert "mobilenet_v2_100_224" in result.stdout and "299" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("stdout", ["full", "closed"])
@pytest.mark.parametrize("command", [["retrain", "--list_modules"], ["retrain", "--help"], ["label-image", "--help"]])
def test_a_table_or_help_that_cannot_be_printed_is_one_line_without_a_word_about_kept_files(command: list[str],
                                                                                          stdout: str) -> None:
    """Printing is all these do: on a full device or a closed stdout (`>&-`, which exited 0 having printed
    nothing) they fail (exit 1) and say only why; "finished files are kept", the run's word, would be false here,
    for nothing ran. A full device is said to be stdout's (probe ZZD: "No space left on device" alone read as a
    disk of the user's full)."""
    script = console_script(command[0])
    if stdout == "closed":
        result = subprocess.run(["bash", "-c", 'exec "$0" "$@" >&-', sys.executable, script, *command[1:]],
                                stderr=subprocess.PIPE, text=True, timeout=60)
    else:
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, script, *command[1:]], stdout=full, stderr=subprocess.PIPE,
                                    text=True, timeout=60)
    assert result.returncode == 1
    why = "cannot print to stdout: No space left on device" if stdout == "full" else "stdout is closed"
    assert result.stderr == f"{command[0]}: error: {why}\n"


@pytest.mark.parametrize("command", [["retrain", "--image_dir", "/no/such/folder"], ["retrain", "--bogus"],
                                     ["label-image", "--graph", "/no/such.pb", "--image", "x.jpg"]])
def test_a_usage_error_exits_2_when_stderr_cannot_take_its_line(command: list[str]) -> None:
    """Probe PPP: with stderr on a full device, a usage error exited 1 (the line's failed write), not 2."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, console_script(command[0]), *command[1:]], stderr=full,
                                stdout=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture TFHUB_CACHE_DIR, so handles resolve offline."""
    cache = tmp_path / "tfhub_cache"
    shutil.copytree(require(FIXTURES / "tfhub_cache"), cache)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    return cache


def test_a_name_resolves_and_loads_through_tensorflow_hub(hub_cache: Path) -> None:
    from retrain.features.module import load_feature_extractor, resolve_module_path

    handle = catalog.lookup("mobilenet_v2_100_224").handle
    # The name and the full handle are one folder (so they share bottleneck vectors, keyed by content).
    assert resolve_module_path("mobilenet_v2_100_224") == hub_cache / hashlib.sha1(handle.encode()).hexdigest()
    assert resolve_module_path(handle) == resolve_module_path("mobilenet_v2_100_224")
    extractor = load_feature_extractor("mobilenet_v2_100_224")
    assert (extractor.height, extractor.width, extractor.feature_dim) == (224, 224, 1280)


def test_a_local_folder_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_module: Path) -> None:
    from retrain.features.module import resolve_module_path

    shutil.copytree(tiny_module, tmp_path / "inception_v3")
    monkeypatch.chdir(tmp_path)
    assert resolve_module_path("inception_v3") == Path("inception_v3")


def test_an_unknown_name_points_to_list_modules() -> None:
    from retrain.features.module import resolve_module_path

    with pytest.raises(RetrainError, match=r"inception_v9 is neither an existing folder nor a handle, nor a module "
                                           r"name \(did you mean inception_v3\? see retrain --list_modules\); "
                                           r"expected a local SavedModel folder"):
        resolve_module_path("inception_v9")
    with pytest.raises(RetrainError, match=r"did you mean mobilenet_v2_100_224\?"):
        resolve_module_path("MobileNet-V2-100-22")
    with pytest.raises(RetrainError) as error:
        resolve_module_path("my_photos_model")
    assert "did you mean" not in str(error.value) and "(see retrain --list_modules); expected" in str(error.value)
    # A family's name alone: no suggestion (probe PP); its members now, up to six.
    for partial in ("mobilenet_v2", "MobileNetV2"):
        with pytest.raises(RetrainError, match=r"\(did you mean one of mobilenet_v2_035_224, mobilenet_v2_050_224, "
                                               r"mobilenet_v2_075_224, mobilenet_v2_100_224, mobilenet_v2_130_224, "
                                               r"mobilenet_v2_140_224\? see retrain --list_modules\)"):
            resolve_module_path(partial)
    with pytest.raises(RetrainError, match=r"did you mean efficientnet_v2_s\? "):  # one: as it is
        resolve_module_path("efficientnetv2_s")
    with pytest.raises(RetrainError, match=r"did you mean one of efficientnet_b0, efficientnet_b1, .*"
                                           r"efficientnet_b5, and 9 more\? see retrain --list_modules"):  # not b7 alone
        resolve_module_path("efficientnet")
    for handle in ("tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5",  # no scheme: no hint
                   "www.kaggle.com/models/google/mobilenet-v2/tensorFlow2/100-224-feature-vector"):  # (probe SS)
        with pytest.raises(RetrainError, match=rf"\(did you mean https://{re.escape(handle)}\? see retrain"):
            resolve_module_path(handle)
    # Widths as Keras and papers write them: the same width, never a near miss (1.0 was taken for 1.4, probe QQ).
    assert [catalog.closest(name) for name in ("mobilenet_v2_1.0_224", "mobilenet_v2_0.35_224",
                                               "mobilenet_v2_1.0_192", "mobilenet_v3_1.0_224")] == [
        "mobilenet_v2_100_224", "mobilenet_v2_035_224", None, None]  # V3 is small or large: not a near miss
    # TensorFlow for Poets' names are MobileNet V1s: the one the catalog has, never one it does not (128 pixels).
    assert (catalog.closest("mobilenet_0.50_224"), catalog.closest("mobilenet_0.50_128")) == ("mobilenet_v1_050_224",
                                                                                              None)


def test_a_mistyped_name_is_a_usage_error_before_the_photos_are_read(tmp_path: Path) -> None:
    tree = make_colour_tree(tmp_path / "photos", per_class=3)
    result = invoke(retrain_command, flags(image_dir=tree, tfhub_module="mobilenet_v2_35_224",
                                           output_graph=tmp_path / "graph.pb", output_labels=tmp_path / "labels.txt"),
                    expect=2)
    assert "did you mean mobilenet_v2_035_224?" in result.stderr
    assert "found" not in result.stderr and "Traceback" not in result.stderr  # refused before the scan


def test_a_name_that_cannot_be_fetched_names_the_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrain.features.module import resolve_module_path

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    with pytest.raises(RetrainError) as error:
        resolve_module_path("nasnet_large")
    message = str(error.value)
    assert catalog.lookup("nasnet_large").handle in message and "TFHUB_CACHE_DIR" in message
    assert "local SavedModel folder" in message


@pytest.fixture(scope="module")
def open_size_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home-made module whose signature is [None, None, None, 3]."""
    return save_tiny_module(tmp_path_factory.mktemp("modules") / "open_size", size=None)


def _outputs(root: Path) -> dict[str, Path]:
    return {"output_graph": root / "graph.pb", "output_labels": root / "labels.txt", "summaries_dir": root / "logs",
            "bottleneck_dir": root / "bottlenecks", "checkpoint_path": root / "ckpt" / "ckpt"}


def test_variable_size_module_without_image_size_fails_clearly(tmp_path: Path, open_size_module: Path) -> None:
    photos = make_colour_tree(tmp_path / "photos", per_class=4)
    result = invoke(retrain_command, flags(image_dir=photos, tfhub_module=open_size_module, **_outputs(tmp_path)),
                    expect=2)
    assert (f"error: --tfhub_module {open_size_module} does not fix its input size (its signature leaves "
            "height and width open); pass --image_size, e.g. --image_size 224") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "graph.pb").exists()


def test_variable_size_module_with_image_size_trains_and_exports(tmp_path: Path, open_size_module: Path) -> None:
    from retrain.pipeline import run
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    photos = make_colour_tree(tmp_path / "photos")
    config = RetrainConfig(image_dir=photos, tfhub_module=str(open_size_module), image_size=40,
                           how_many_training_steps=200, output_tflite=tmp_path / "model.tflite",
                           **_outputs(tmp_path))
    result = run(config)
    assert (result.source.height, result.source.width) == (40, 40)
    assert result.test_accuracy == 1.0  # the colours are easy; the module really sees 40x40 images
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(config.output_graph.read_bytes())
    placeholder = next(n for n in graph_def.node if n.name == "Placeholder")
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [-1, 40, 40, 3]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(config.output_tflite))
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 40, 40, 3]


def test_catalog_size_is_the_fallback_for_an_open_size_module(hub_cache: Path, open_size_module: Path) -> None:
    """A catalog name whose module leaves the size open runs at the size from the table, unless --image_size says."""
    from retrain.features.module import load_feature_extractor

    entry = catalog.lookup("bit_s_r50x1")
    shutil.copytree(open_size_module, hub_cache / hashlib.sha1(entry.handle.encode()).hexdigest())
    extractor = load_feature_extractor("bit_s_r50x1")
    assert (extractor.height, extractor.width) == (entry.size, entry.size)
    assert load_feature_extractor("bit_s_r50x1", image_size=64).height == 64


def test_fixed_size_module_rejects_a_different_image_size(tmp_path: Path) -> None:
    photos = make_colour_tree(tmp_path / "photos", per_class=4)
    module = require(MODULES / "mobilenet_v2_035_224")
    result = invoke(retrain_command, flags(image_dir=photos, tfhub_module=module, image_size=160, **_outputs(tmp_path)),
                    expect=2)
    assert f"--image_size 160 does not match the input size 224x224 fixed by --tfhub_module {module}" in result.stderr
