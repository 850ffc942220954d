"""Shared test fixtures: tiny home-made images and module, the real fixtures, a CLI runner.

No test touches the network. Tiny fixtures (Pillow-drawn colour photos and a
home-made SavedModel feature-vector module) keep most tests fast; the real
modules and photos in ../shared/fixtures prove accuracy and compatibility.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from retrain.logs import logger_restored

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("RETRAIN_FIXTURES", ROOT.parent / "shared" / "fixtures"))
MODULES = FIXTURES / "modules"
FLOWERS = FIXTURES / "flower_photos"
PHOTOS = FIXTURES / "images"

COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
TINY_SIZE = 32


def graph_node(name: bytes, op: bytes, *inputs: bytes) -> bytes:
    """A GraphDef's node field, serialized by hand (name, op, inputs: each short)."""
    body = b"\n" + bytes([len(name)]) + name + b"\x12" + bytes([len(op)]) + op
    body += b"".join(b"\x1a" + bytes([len(each)]) + each for each in inputs)
    return b"\n" + bytes([len(body)]) + body


# A valid (tiny) serialized GraphDef, `Placeholder` -> Softmax `final_result`: an earlier model retrain wrote at
# --output_graph, which it may replace (it refuses to replace another model's graph, or a file that is not one).
EARLIER_GRAPH = graph_node(b"Placeholder", b"Placeholder") + graph_node(b"final_result", b"Softmax", b"Placeholder")
# Another model's frozen graph (an Inception V3 for production: input `input`), which retrain does not replace.
FOREIGN_GRAPH = graph_node(b"input", b"Placeholder") + graph_node(b"InceptionV3/Predictions/Softmax", b"Softmax",
                                                                        b"input")


def colour_photo(path: Path, rgb: tuple[int, int, int], *, seed: int, size: tuple[int, int] = (48, 40),
                 fmt: str | None = None) -> Path:
    """A noisy photo dominated by one colour (and a random darker blob), saved with Pillow."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[y:y + size[1] // 3, x:x + size[0] // 3] *= 0.6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt)
    return path


def make_colour_tree(root: Path, *, per_class: int = 12, classes: dict[str, tuple[int, int, int]] = COLOURS) -> Path:
    """A folder-per-class tree of small colour photos: an easy, fast classification task."""
    for index, (label, rgb) in enumerate(sorted(classes.items())):
        for i in range(per_class):
            colour_photo(root / label / f"{label}_{i:03d}.jpg", rgb, seed=1000 * index + i)
    return root


def unreadable(path: Path, content: bytes = b"x") -> Path:
    """A file at `path` this process cannot read (EACCES), made honestly even when the tests run as root."""
    if os.geteuid() != 0:
        path.write_bytes(content)
        path.chmod(0)
        return path
    # Root ignores permission bits. /proc/sys's write-only files refuse reads even to root
    # (the kernel checks the owner bits), so a link to one gives a real EACCES.
    target = Path("/proc/sys/vm/compact_memory")
    try:
        target.open("rb").close()
    except PermissionError:
        path.symlink_to(target)
        return path
    except OSError:
        pass
    pytest.fail("running as root and no write-only /proc/sys file to stand in for an unreadable file")


# Tests never touch the network, not even DNS: downloads go to a closed local port (the environment is
# inherited by the processes tests start), and in this process any look-up of a non-local host name fails.
for _name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    os.environ[_name] = "http://127.0.0.1:9"
# Servers the tests start themselves (TensorBoard, the web page, a Ray cluster) stay reachable.
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", None}
_getaddrinfo = socket.getaddrinfo


def _local_only_getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL_HOSTS and host != socket.gethostname():
        raise socket.gaierror(socket.EAI_NONAME, f"tests do not look up {host!r}: no network in tests")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _local_only_getaddrinfo


# Session fixtures that cost tens of seconds. Under `pytest -n 2 --dist loadgroup` (the README's command) the tests
# that use one run in one worker, so each is built once, as in a serial session; every other test runs in the worker
# that runs the rest of its file, so a module's fixtures are built once too.
_COSTLY_FIXTURES = {"flowers_export": "flowers", "flowers_run": "flowers", "trained": "flowers",
                    "flowers_bottlenecks": "flowers", "mixed_sizes": "mixed_sizes"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        groups = sorted({_COSTLY_FIXTURES[name] for name in getattr(item, "fixturenames", ())
                         if name in _COSTLY_FIXTURES})
        item.add_marker(pytest.mark.xdist_group(groups[0] if groups else item.nodeid.split("::")[0]))


@pytest.fixture(autouse=True)
def _restore_retrain_logger() -> Iterator[None]:
    """The CLI points the 'retrain' logger at stderr with propagate off; undo that so later caplog tests see logs."""
    with logger_restored():
        yield


@pytest.fixture
def colour_tree(tmp_path: Path) -> Path:
    return make_colour_tree(tmp_path / "photos")


def save_tiny_module(path: Path, *, size: int | None = TINY_SIZE, feature_dim: int = 8,
                     spatial: bool = False, seed: int = 7) -> Path:
    """A home-made TF2 image feature-vector SavedModel: colour statistics through a small dense layer.

    spatial: also the differences between the top and bottom halves and the left and right halves, so the
    vector tells an image from its mirror or its transpose. seed: draws the dense layer's weights.
    """
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()

    class TinyFeatures(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            inputs = 12 if spatial else 6
            self.kernel = tf.Variable(rng.normal(0, 1, (inputs, feature_dim)).astype(np.float32), name="kernel")
            self.bias = tf.Variable(np.zeros(feature_dim, np.float32), name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, images):
            stats = [tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])]
            if spatial:
                top, bottom = tf.split(images, 2, axis=1)
                left, right = tf.split(images, 2, axis=2)
                stats += [8.0 * (tf.reduce_mean(top, [1, 2]) - tf.reduce_mean(bottom, [1, 2])),
                          8.0 * (tf.reduce_mean(left, [1, 2]) - tf.reduce_mean(right, [1, 2]))]
            return tf.nn.relu(tf.matmul(tf.concat(stats, axis=1) * 4.0 - 1.0, self.kernel) + self.bias)

    module = TinyFeatures()
    tf.saved_model.save(module, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_module(tmp_path_factory.mktemp("modules") / "tiny")


@pytest.fixture(scope="session")
def mixed_sizes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two home-made modules of different input sizes (32, and 20 with `spatial`) retrained as one classifier,
    with the frozen graph, TFLite and TF.js: each export resizes its 32-pixel input for the 20-pixel member.

    `images`: random images and ramps, on which the model's scores change when an image is transposed or
    mirrored (checked), so an export that resized along the wrong axis would not agree.
    """
    from retrain.cli import retrain_command

    root = tmp_path_factory.mktemp("mixed_sizes")
    large, small = save_tiny_module(root / "m32"), save_tiny_module(root / "m20", size=20, spatial=True)
    out = root / "out"
    out.mkdir()
    with logger_restored():  # a session fixture runs outside the autouse fixture above
        invoke(retrain_command, flags(
            image_dir=make_colour_tree(root / "photos"), tfhub_module=f"{large},{small}",
            output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
            bottleneck_dir=root / "cache", checkpoint_path=out / "ckpt" / "c", how_many_training_steps=200,
            output_tflite=out / "model.tflite", output_tfjs=out / "web"))
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, TINY_SIZE, dtype=np.float32)
    ramps = np.stack([np.broadcast_to(ramp[:, None, None] * colour, (TINY_SIZE, TINY_SIZE, 3))
                      for colour in rng.uniform(0.2, 1, (3, 3)).astype(np.float32)])
    images = np.concatenate([rng.uniform(0, 1, (3, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32), ramps,
                             ramps[:, ::-1], ramps.transpose(0, 2, 1, 3)])
    return {"graph": out / "graph.pb", "tflite": out / "model.tflite", "web": out / "web", "images": images}


@pytest.fixture
def outputs(tmp_path: Path) -> dict[str, Path]:
    """Every output flag pointed into tmp_path, so no test writes to /tmp defaults."""
    out = tmp_path / "out"
    out.mkdir()
    return {
        "output_graph": out / "graph.pb",
        "output_labels": out / "labels.txt",
        "summaries_dir": out / "logs",
        "bottleneck_dir": out / "bottlenecks",
        "intermediate_output_graphs_dir": out / "intermediate",
        "checkpoint_path": out / "checkpoint" / "ckpt",
    }


def flags(**values: object) -> list[str]:
    """{'image_dir': p, 'flip_left_right': True} -> ['--image_dir', 'p', '--flip_left_right']."""
    args: list[str] = []
    for name, value in values.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False and value is not None:
            args += [f"--{name}", str(value)]
    return args


def invoke(command, args: list[str], *, expect: int = 0) -> Result:
    """Run a click command in-process; on an unexpected exit status, show everything it printed."""
    result = CliRunner().invoke(command, args, catch_exceptions=True)
    if result.exit_code != expect:
        detail = "".join(__import__("traceback").format_exception(*result.exc_info)) if result.exc_info else ""
        pytest.fail(f"exit {result.exit_code} (expected {expect}) for {args}\n--- stdout\n{result.stdout}\n"
                    f"--- stderr\n{result.stderr}\n{detail}")
    return result


def run_script(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
               check: int | None = 0) -> subprocess.CompletedProcess:
    """Run `python -m retrain.<...>` or an installed console script in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=full_env)
    if check is not None and result.returncode != check:
        pytest.fail(f"exit {result.returncode} (expected {check}) for {args}\n--- stdout\n{result.stdout}\n"
                    f"--- stderr\n{result.stderr}")
    return result


def retrain_cli(tree: Path, module: Path, outputs: dict[str, Path], *, expect: int = 0, **extra: object):
    """`retrain` on a tree, 20 steps: the result, or for an expected failure its one `retrain: error:` line."""
    from retrain.cli import retrain_command

    args = flags(**{"image_dir": tree, "tfhub_module": module, "how_many_training_steps": 20, **outputs, **extra})
    result = invoke(retrain_command, args, expect=expect)
    assert "Traceback" not in result.output + result.stderr
    if expect:
        errors = [line for line in result.stderr.splitlines() if line.startswith("retrain: error: ")]
        assert len(errors) == 1, result.stderr
        return errors[0]
    return result


def frozen_graph_scores(graph: Path, images: np.ndarray) -> np.ndarray:
    """The classic way: import the GraphDef, feed import/Placeholder:0, fetch import/final_result:0."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(graph).read_bytes())
    with tf.Graph().as_default() as imported:
        tf.compat.v1.import_graph_def(graph_def, name="import")
        with tf.compat.v1.Session(graph=imported) as session:
            return session.run("import/final_result:0", {"import/Placeholder:0": images})


def copy_tree(source: Path, destination: Path) -> Path:
    """Fixtures are read-only: copy before anything writes or renames."""
    shutil.copytree(source, destination)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


def require(path: Path) -> Path:
    """A real fixture; its absence is a failure, never a silent skip."""
    if not path.exists():
        pytest.fail(f"fixture {path} is missing: put ../shared beside the clone or set RETRAIN_FIXTURES")
    return path


@pytest.fixture(scope="session")
def flowers_bottlenecks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bottleneck cache for every full retrain on the fixture flowers: vectors are content-keyed, so sharing
    is safe, and the 500 photos go through each module once, not once per test module. It sits beside pytest's
    numbered session folders, so the integration run (.ci/run's second session) reuses what the first computed;
    the cache's own checks (keys, CRCs, damaged shards set aside) guard it as they guard a user's."""
    base = tmp_path_factory.getbasetemp()  # pytest-of-USER/pytest-N, or .../pytest-N/popen-gwK under pytest -n
    path = (base.parent.parent if os.environ.get("PYTEST_XDIST_WORKER") else base.parent) / "retrain-flowers-bottlenecks"
    path.mkdir(exist_ok=True)
    return path


FLOWERS_MODULE = "mobilenet_v2_100_224"  # the real module whose int8 TFLite keeps its answers (0.35 width does not)
# int8 calibrates on 300 images (20 s): its agreement test runs with the integration tests, on a run of its own
# (test_exports.py); the CLI test of the flag writes an int8 model of a tiny module in the default suite.
QUANTIZATIONS = ("float32", "float16", "dynamic")


def flowers_config(out: Path, bottleneck_dir: Path, **extra: object):
    """A retrain of the fixture flowers with FLOWERS_MODULE, its outputs in `out`, with 25 % test images (N=120)
    instead of the default 10 % (N=49): one photo then moves accuracy by 0.8 points rather than 2, so accuracy bars
    and export agreements measure the model, not the luck of the split."""
    from retrain.config import RetrainConfig

    return RetrainConfig(
        image_dir=require(FLOWERS), tfhub_module=str(require(MODULES / FLOWERS_MODULE)),
        output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
        bottleneck_dir=bottleneck_dir, checkpoint_path=out / "checkpoint" / "ckpt", testing_percentage=25, **extra)


@pytest.fixture(scope="session")
def flowers_export(tmp_path_factory: pytest.TempPathFactory, flowers_bottlenecks: Path):
    """The one retrain of the fixture flowers that writes every export (graph, labels, SavedModel, three TFLite
    variants, TF.js); the end-to-end, exports, label-image and report tests share it. Returns (config, result, stdout,
    seconds)."""
    import contextlib
    import io
    import time

    from retrain.pipeline import run

    out = tmp_path_factory.mktemp("flowers_export")
    config = flowers_config(out, flowers_bottlenecks, saved_model_dir=out / "saved_model",
                            output_tflite=out / "model.tflite", tflite_quantization=QUANTIZATIONS,
                            output_tfjs=out / "web")
    stdout = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(stdout):
        result = run(config)
    return config, result, stdout.getvalue(), time.monotonic() - started
