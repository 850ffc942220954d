"""Every setting of `retrain` and `label-image`: each default defined once, each flag value checked here.

The CLI reads its defaults from these dataclasses and the Python API builds
them from keyword arguments; both get the same checks, which run when a config
is made (`__post_init__`), so a bad value never reaches the work. Checks that
need the file system (paths, the image tree) live in `retrain.outputs` and the
label sources; they too run before any work. Importing this module must stay
cheap (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import numbers
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain.catalog import DEFAULT_MODULE, hub_cache_dir
from retrain.errors import RetrainError, UsageError
from retrain.logs import LEVELS
from retrain.names import (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD, FINAL_TENSOR_NAME, NODE_NAME, RESERVED_NODE_NAMES,
                           RESERVED_NODE_SCOPE, in_locale, shown, valid_name)

__all__ = ["RetrainConfig", "LabelImageConfig", "RetrainError", "UsageError", "EXPORT_INPUT_MEAN",
           "EXPORT_INPUT_STD", "DEFAULT_MODULE", "LOGGING_LEVELS", "DISTORTION_MODES", "TFLITE_QUANTIZATIONS",
           "WORKERS"]

LOGGING_LEVELS = tuple(LEVELS)  # the names --logging_verbosity takes
DISTORTION_MODES = ("cached", "on_the_fly")
BOTTLENECK_DTYPES = ("float32", "float16")
# TFLite variants: float32 as trained; float16 weights; dynamic-range (int8 weights, float
# activations); full int8 (int8 weights, activations, input and output).
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# Threads that read, decode and resize images beside the module: the module is the
# bottleneck, and more threads than this only compete with it for the cores.
WORKERS = min(4, os.cpu_count() or 2)

# Upper bounds that keep a typo from eating all memory before the first step; each is far
# above any useful value (the classic defaults are 4,000 steps and batches of 100).
MAX_STEPS = 1_000_000_000
MAX_TRAIN_BATCH = 65_536
MAX_EVAL_BATCH = 1_000_000  # evaluation runs in chunks, so only the sampled indices are held
MAX_IMAGE_BATCH = 1_024  # images per module call: [N, H, W, 3] float32 must fit in memory
# Images per fine-tuning step: the backward pass keeps every activation (about 0.1 GB an image for
# MobileNet V2 1.0, measured: 2.9 GB peak at 16 images, 7.6 GB at 64).
MAX_FINE_TUNE_BATCH = 128
MAX_VARIANTS = 1_000
MAX_IMAGE_SIZE = 4_096
MAX_SEED = 2**31 - 1
RAY_ADDRESS = re.compile(r"local|auto|(ray://)?([\w.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without importing numpy here
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # s3://, gs://, hdfs://..., as typed
_URL_IN_A_PATH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")  # the same in a Path (the API's), which keeps one slash


@dataclass(frozen=True)
class RetrainConfig:
    """The classic retrain.py flags (same names, meanings and defaults) plus ours."""

    image_dir: Path
    output_graph: Path = Path("/tmp/output_graph.pb")
    output_labels: Path = Path("/tmp/output_labels.txt")
    summaries_dir: Path = Path("/tmp/retrain_logs")
    bottleneck_dir: Path = Path("/tmp/bottleneck")
    intermediate_output_graphs_dir: Path = Path("/tmp/intermediate_graph/")
    intermediate_store_frequency: int = 0
    final_tensor_name: str = FINAL_TENSOR_NAME
    how_many_training_steps: int = 4000
    learning_rate: float = 0.01
    testing_percentage: float = 10
    validation_percentage: float = 10
    eval_step_interval: int = 10
    train_batch_size: int = 100
    validation_batch_size: int = 100
    test_batch_size: int = -1
    print_misclassified_test_images: bool = False
    flip_left_right: bool = False
    random_crop: float = 0
    random_scale: float = 0
    random_brightness: float = 0
    saved_model_dir: Path | None = None
    tfhub_module: str = DEFAULT_MODULE
    logging_verbosity: str = "INFO"
    checkpoint_path: Path = Path("/tmp/_retrain_checkpoint")
    # Beyond the classic script.
    seed: int = 0
    image_size: int | None = None
    bottleneck_batch_size: int = 32
    # The run's bottleneck vectors are held in memory up to this many gigabytes (float32); a larger
    # run trains and evaluates reading them from the cache's shard files as it goes.
    bottleneck_memory_gb: float = 4.0
    bottleneck_dtype: str = "float32"  # "float16" halves the cache on disk and in memory
    # Bottleneck extraction on a Ray cluster (pip install 'retrain[ray]'): "local" (a throw-away cluster on
    # this machine), "auto" (the cluster this machine belongs to), "ray://HOST:PORT" or "HOST:PORT".
    ray_address: str | None = None
    # Distortions: "cached" precomputes `distorted_variants` distorted copies of each
    # training image and trains on their cached vectors (minutes); "on_the_fly"
    # distorts every sample of every step as the classic script did (hours).
    # 5 variants keep a cold-cache distorted run near 2x a plain one (10 measured 3.4x on
    # flower_photos with MobileNet V2 0.35); later runs with the same settings reuse them.
    distortion_mode: str = "cached"
    distorted_variants: int = 5
    # Fine-tuning the module's own weights after the new layer is trained. CPU-sized
    # defaults: each step runs the module forwards and backwards on every image
    # (MobileNet V2 0.35: about 1 s per step of 16 on 2 cores). With batch norm kept
    # in inference mode, 1e-3 (momentum 0.9) wrecked MobileNet V2 within 20 steps; 1e-4 is safe.
    fine_tune: bool = False
    fine_tune_steps: int = 200
    fine_tune_batch_size: int = 16
    fine_tune_learning_rate: float = 0.0001
    # TFLite export: PATH gets the first quantization, PATH's siblings `<stem>_<q>.tflite` the others.
    output_tflite: Path | None = None
    tflite_quantization: tuple[str, ...] = ("float32",)
    # int8 calibration: a seeded sample of training images. 300 rather than 100 kept the int8 model's top
    # label on 46-49 of 49 flower test photos instead of 44-46 (MobileNet V2 0.35 and 1.0, two seeds each).
    tflite_representative_images: int = 300
    output_tfjs: Path | None = None  # a TF.js graph model (model.json, weight shards, labels.txt) in this folder
    # Labels from a CSV (`path,labels[,split]`) instead of the folder names; several labels per image
    # (or --multi_label) train one sigmoid per label.
    labels_csv: Path | None = None
    label_delimiter: str = " "
    multi_label: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        for name in _FILE_FIELDS:
            _check_names_a_file(name, getattr(self, name))
        for name in _PATH_FIELDS:
            path = _path(name, getattr(self, name), optional=name in _UNSET_WHEN_EMPTY)
            room = {"room": _WRITE_ROOM if name in _WRITTEN_BESIDE else 0, "deeper": name in _WRITTEN}
            object.__setattr__(self, name, _utf8(name, _through_links(_utf8(name, path, **room)), **room))
        if not valid_name(tempfile.gettempdir()):  # where TensorFlow writes the code it generates for training
            raise UsageError(f"the temporary folder {shown(tempfile.gettempdir())} (TMPDIR) is not valid UTF-8, and "
                             "TensorFlow takes only UTF-8 paths; set TMPDIR to another folder")
        for member in self.modules:  # as the run loads them (a `link/..` worked out)
            _utf8("tfhub_module", member)
            handle = not Path(member).expanduser().exists()  # a web handle or a catalog name: a copy in the cache
            cache = hub_cache_dir() if handle else ""
            if not valid_name(cache):
                raise UsageError(f"TFHUB_CACHE_DIR {shown(cache)} is not valid UTF-8, and TensorFlow takes only "
                                 f"UTF-8 paths; set it to another folder for --tfhub_module {member}")
        _check_current_folder(self)
        quantization = self.tflite_quantization
        object.__setattr__(self, "tflite_quantization",
                           tuple(quantization.split(",") if isinstance(quantization, str) else quantization))
        _check_retrain(self)

    def replace(self, **changes: object) -> "RetrainConfig":
        return dataclasses.replace(self, **changes)

    def anchored(self) -> "RetrainConfig":
        """The same run with each relative path made absolute against the current folder now (and a leading `~`
        the home folder), so a caller that changes folder while the run goes on (a notebook's `%cd` in another
        thread) moves neither what it reads nor where it writes."""
        paths = {name: getattr(self, name) for name in _PATH_FIELDS}
        return self.replace(**{name: Path(os.path.abspath(os.path.expanduser(path))) for name, path in paths.items()
                               if path is not None and not path.is_absolute()})

    @property
    def may_be_multi_label(self) -> bool:
        """Whether the labels' source may make the run multi-label (known once it is read): a CSV may, a folder
        tree only with --multi_label. A new label source says here whether it may."""
        return self.labels_csv is not None or self.multi_label

    @property
    def modules(self) -> tuple[str, ...]:
        """The --tfhub_module members, in order: one, or several comma-separated."""
        return module_list(self.tfhub_module)

    @property
    def distortions(self) -> Any:
        """The four classic distortion flags, as a retrain.distortions.Distortions."""
        from retrain.distortions import Distortions  # it brings numpy, which --help does without

        return Distortions(flip_left_right=self.flip_left_right, random_crop=self.random_crop,
                           random_scale=self.random_scale, random_brightness=self.random_brightness)


def module_list(value: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); an existing path whose name holds a comma stays whole, wherever it stands.

    The repeated flag and the API's list arrive joined by commas, so the split
    takes, at each place, the longest run of parts that names an existing path
    ('x,y' in 'x,y,b' when the folder x,y exists), else one part.
    """
    parts = value.split(",")
    members, start = [], 0
    while start < len(parts):
        runs = ((end, _handle(",".join(parts[start:end]))) for end in range(len(parts), start + 1, -1))
        end, member = next(((end, member) for end, member in runs if Path(member).expanduser().exists()),
                           (start + 1, None))
        members.append(_handle(parts[start]) if member is None else member)
        start = end
    return tuple(members)


def _handle(text: str) -> str:
    """One member of --tfhub_module as the run uses it: a web handle with its scheme and host in lower case and no
    trailing slash (TensorFlow Hub's cache folder is named after the handle's text, so '.../feature_vector/5/'
    missed the copy that '.../feature_vector/5' filled, and TensorFlow knows no 'HTTPS' file system); a file URL's
    local path ('file:///m/x' and 'file:/m/x' -> '/m/x': TensorFlow Hub loads such a URL from the folder, so the
    module flag takes it as the folder); a path with `link/..` worked out as the system does (TensorFlow cleans it
    as text, and loaded another folder); anything else as it is. A file URL naming another host
    ('file://server/m/x') is refused: the folder would be looked for here."""
    handle = text.strip()
    scheme, colon, rest = handle.partition(":")
    if colon and scheme.lower() in ("http", "https") and rest.startswith("//") and rest.strip("/"):
        host, slash, tail = rest[2:].partition("/")
        return f"{scheme.lower()}://{host.lower()}{slash}{tail}".rstrip("/")
    if handle.lower().startswith("file:"):
        from urllib.parse import unquote

        host, path = "", handle[5:]  # no query or fragment: TensorFlow takes `m#1` and `m?v=2` as names
        if path.startswith("//"):
            host, slash, rest = path[2:].partition("/")
            path = slash + rest
        if host.lower() not in ("", "localhost"):
            raise UsageError(f"--tfhub_module {handle} names a folder on the host {host!r}; give the folder's "
                             f"path on this machine (file:///... or the path itself)")
        handle = unquote(path, errors="surrogateescape") or handle  # %FF: a byte, refused as not UTF-8
    return str(_through_links(Path(handle))) if ".." in Path(handle).parts else handle


@dataclass(frozen=True)
class LabelImageConfig:
    """The classic label_image.py flags; None means "read it from the model".

    Mean and std keep the classic meaning, (pixel_0_255 - mean) / std; retrain's
    exports take RGB in [0, 1], i.e. EXPORT_INPUT_MEAN and EXPORT_INPUT_STD.
    """

    graph: Path = RetrainConfig.output_graph
    labels: Path | None = None  # None: the labels retrain wrote for --graph (label-image's labels_for)
    images: tuple[Path, ...] = ()
    input_height: int | None = None
    input_width: int | None = None
    input_mean: float | None = None
    input_std: float | None = None
    input_layer: str | None = None
    output_layer: str | None = None
    top_k: int | None = None  # None: 5 labels, or for a multi-label model those at or above their thresholds
    json: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check_types(self)
        object.__setattr__(self, "graph", _utf8("graph", _through_links(_utf8("graph", _path("graph", self.graph)))))
        object.__setattr__(self, "labels", _fits("labels", _path("labels", self.labels)))  # read by Python: any
        object.__setattr__(self, "images", tuple(_fits("image", _path("image", p)) for p in self.images))  # bytes
        _check_label_image(self)


# --------------------------------------------------------------------------- checks

# The path flags of a run (tfhub_module may be a handle, so it is not one).
_PATH_FIELDS = ("image_dir", "output_graph", "output_labels", "summaries_dir", "bottleneck_dir",
                "intermediate_output_graphs_dir", "checkpoint_path", "saved_model_dir", "output_tflite", "labels_csv",
                "output_tfjs")
# Path flags that name a file (a checkpoint's prefix too), with a name to suggest: a trailing slash, `.` or `..`
# would make Path() name the folder itself, or the file beside it (`ck/` became the checkpoint `ck.index`).
_FILE_FIELDS = {**{name: getattr(RetrainConfig, name).name for name in ("output_graph", "output_labels",
                                                                       "checkpoint_path")},
                "output_tflite": "model.tflite"}
# Path flags whose empty value means "not set", as the classic `--saved_model_dir ''` did.
_UNSET_WHEN_EMPTY = frozenset({"saved_model_dir", "output_tflite", "output_tfjs", "labels_csv"})


# What each annotation accepts from the Python API (the CLI's click types always fit), and how to say it.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((numbers.Integral,), "a whole number"),
    "float": ((numbers.Real, decimal.Decimal), "a number"),
    "bool": ((bool,), "True or False"),
    "str": ((str,), "a string"),
    "Path": ((str, os.PathLike), "a path"),
    "tuple[str, ...]": ((tuple, list, str), "a list of strings"),
    "tuple[Path, ...]": ((tuple, list), "a list of paths"),
}
_NUMBERS = {"int": int, "float": float}
# What each member of a list accepts (a str for tuple[str, ...] is one comma-separated value).
_ITEM_TYPES: dict[str, tuple[type, ...]] = {"tuple[str, ...]": (str,), "tuple[Path, ...]": (str, os.PathLike)}


def _check_types(config: object) -> None:
    """A value of the wrong type (the Python API takes what it is given) is one line naming the flag, like a
    bad value, rather than a TypeError from deep inside the checks or the run."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        annotation = str(field.type)
        if value is None and annotation.endswith(" | None"):
            continue
        kind = annotation.removesuffix(" | None")
        kinds, wanted = _TYPES[kind]
        items = _ITEM_TYPES.get(kind)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds) or \
                (items and not all(isinstance(item, items) for item in value)):
            named = "images" if field.name == "images" else f"--{field.name}"  # the API's keyword: flag --image
            raise UsageError(f"{named} must be {wanted}, got {value!r}")
        if kind in _NUMBERS:  # a Fraction, a NumPy scalar: the plain Python number
            try:
                object.__setattr__(config, field.name, _NUMBERS[kind](value))
            except (OverflowError, ValueError):  # float(10**400), int(inf)
                raise UsageError(f"--{field.name} must be a finite number, got {value!r}") from None


def _check_current_folder(config: "RetrainConfig") -> None:
    """Relative paths need a current folder: one deleted while the shell stayed in it fails every write after the
    whole run, with no path named."""
    relative = next((name for name in _PATH_FIELDS if getattr(config, name) is not None
                     and not getattr(config, name).is_absolute()), None)
    if relative is None:
        return
    try:
        here = os.getcwd()
    except FileNotFoundError:
        raise UsageError(f"--{relative} {getattr(config, relative)} is relative, but the current folder no longer "
                         "exists (deleted while the shell was in it); cd to a folder that exists, or give absolute "
                         "paths") from None
    if not valid_name(here):
        raise UsageError(f"--{relative} {getattr(config, relative)} is relative, and the current folder {shown(here)} "
                         "is not valid UTF-8 (TensorFlow takes only UTF-8 paths); cd to another folder, or give "
                         "absolute paths")


def _utf8(flag: str, value: Any, *, room: int = 0, deeper: bool = False) -> Any:
    """`value` as it is, unless it is a path whose bytes are not UTF-8 (Python keeps them as surrogates): refused,
    as TensorFlow cannot take such a path and the report cannot hold it (a traceback after the whole run); or
    one with a name longer than file systems allow (said as `File name too long (<the whole value>)`), its own
    name `room` bytes shorter still (an output written by way of a longer temporary name: probe SS), and with
    `deeper` (a path retrain writes) its whole path room for the paths it writes in or beside it (probe UU)."""
    if not isinstance(value, (str, Path)):
        return value
    text = str(value)
    if not valid_name(text):
        raise UsageError(f"--{flag} {shown(value)} is not valid UTF-8{in_locale(text)}, and TensorFlow takes only "
                         "UTF-8 paths; rename it, or choose another path")
    return _fits(flag, value, room=room, deeper=deeper)


def _fits(flag: str, value: Any, *, room: int = 0, deeper: bool = False) -> Any:
    """`value` as it is, unless it is a path too long for file systems (see `_utf8`)."""
    if not isinstance(value, (str, Path)):
        return value
    text = str(value)
    size, longest = len(os.fsencode(text)), max(len(os.fsencode(part)) for part in text.split("/"))
    own = len(os.fsencode(Path(text).name))
    if room and own <= _NAME_MAX < own + room:
        raise UsageError(f"--{flag}'s name is too long ({own} bytes): retrain writes it by way of a temporary "
                         f"name up to {room} bytes longer, and file systems take names of up to {_NAME_MAX} bytes; "
                         f"choose a name of up to {_NAME_MAX - room}: {text[:60]}...")
    if longest > _NAME_MAX or size > _PATH_MAX:
        raise UsageError(f"--{flag} is too long for a path ({size} bytes, a name of {longest}; file systems take "
                         f"names of up to {_NAME_MAX} bytes and paths of up to {_PATH_MAX}): {text[:60]}...")
    try:
        whole = len(os.fsencode(os.path.abspath(os.path.expanduser(text)))) if deeper else 0
    except OSError:  # the current folder deleted: said by its own check
        whole = 0
    if whole > _PATH_MAX - _NAME_MAX:
        raise UsageError(f"--{flag} is too long for a path ({whole} bytes from /): retrain writes paths up to "
                         f"{_NAME_MAX} bytes longer in or beside it, and file systems take paths of up to "
                         f"{_PATH_MAX}: {text[:60]}...")
    return value


_NAME_MAX, _PATH_MAX = 255, 4095  # Linux's limits (NAME_MAX, PATH_MAX less the final NUL), as most file systems'
# Outputs written beside their final name first (`outputs.temp_prefix`: `.NAME.retrain-HOST-PID-XXXXXXXX.tmp`, 37
# bytes more with the longest process numbers), a checkpoint's data file (`.data-00000-of-00001`, 20 more) and
# the thresholds file (`_thresholds`, 11 more, beside the labels) that way too.
_WRITTEN_BESIDE = frozenset({"output_graph", "output_labels", "checkpoint_path", "saved_model_dir", "output_tflite",
                             "output_tfjs"})
_WRITE_ROOM = 60
_WRITTEN = frozenset(_PATH_FIELDS) - {"image_dir", "labels_csv"}  # inside, or beside, them retrain writes


def _path(flag: str, value: str | Path | None, *, optional: bool = False) -> Path | None:
    """A path flag's value as a Path (the Python API accepts strings too). An empty value is "not set" for
    `optional` flags and an error for the others: Path('') would quietly mean the current folder. A NUL byte
    (only the API can pass one) is refused: the file system would cut the name there, another file's name."""
    if value is not None and "\0" in str(value):
        raise UsageError(f"--{flag} {str(value)!r} holds a NUL byte, which no file name can")
    if value is None:
        return value
    if value == "":
        if optional:
            return None
        raise UsageError(f"--{flag} is empty; give a path")
    url = _URL.match(value) if isinstance(value, str) else _URL_IN_A_PATH.match(str(value))
    if url:  # else a local folder named `gs:` would quietly hold what the user meant to upload
        shown = value if isinstance(value, str) else re.sub("^([^:]+):/", r"\1://", str(value))
        raise UsageError(f"--{flag} {shown}: URLs and object stores are not supported; give a path on this machine "
                         "(a shared file system mounted here works)")
    return Path(value)


def _check_names_a_file(flag: str, value: str | Path | None) -> None:
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else ""
    if text and (text.endswith(("/", os.sep)) or os.path.basename(text) in (".", "..")):
        raise UsageError(f"--{flag} {text} names a folder; expected a file path, such as "
                         f"{os.path.join(os.path.normpath(text), _FILE_FIELDS[flag])}")


def _through_links(path: Path | None) -> Path | None:
    """`path` with a `..` after a folder worked out as the file system does, through links: TensorFlow and
    tempfile clean paths as text, and `link/../out` (the folder beside the link's target) became `./out`. Only
    when the file system can follow it to the last `..` (a link to nothing, a file or a missing folder before
    one is left for the checks to refuse, as the system would); the rest stays as given."""
    if path is None:
        return path
    expanded = Path(os.path.expanduser(path))  # `~` first, as the Python API's anchored() would later
    parts = expanded.parts
    ups = [i for i, part in enumerate(parts) if part == ".."]
    if not ups or all(part in ("..", expanded.anchor) for part in parts[:ups[-1]]):
        return path  # no `..`, or only leading ones, which no one cleans away
    if not all(os.path.isdir(Path(*parts[:i])) for i in ups if i):  # the system steps back from folders only
        return path
    try:
        return Path(os.path.realpath(Path(*parts[:ups[-1] + 1]), strict=True), *parts[ups[-1] + 1:])
    except (OSError, RuntimeError):  # a loop
        return path


def _finite(flag: str, value: float) -> None:
    if not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")


def _positive(flag: str, value: int, *, limit: int) -> None:
    if value <= 0:
        raise UsageError(f"{flag} must be positive, got {value}")
    if value > limit:
        raise UsageError(f"{flag} {value} is too large (at most {limit:,}); use a smaller value")


def _check_retrain(config: RetrainConfig) -> None:
    """Reject impossible flag values: one line naming the flag, exit status 2."""
    if config.ray_address is not None and not RAY_ADDRESS.fullmatch(config.ray_address):
        raise UsageError(f"--ray_address {config.ray_address!r} is not local, auto, ray://HOST:PORT or HOST:PORT")
    for flag, value in (("--learning_rate", config.learning_rate), ("--testing_percentage", config.testing_percentage),
                        ("--validation_percentage", config.validation_percentage),
                        ("--random_crop", config.random_crop), ("--random_scale", config.random_scale),
                        ("--random_brightness", config.random_brightness),
                        ("--fine_tune_learning_rate", config.fine_tune_learning_rate)):
        _finite(flag, value)
    _positive("--how_many_training_steps", config.how_many_training_steps, limit=MAX_STEPS)
    _positive("--eval_step_interval", config.eval_step_interval, limit=MAX_STEPS)
    if config.train_batch_size == -1:  # the README's promise (probe VV): said, not just "must be positive"
        raise UsageError("--train_batch_size -1 (which the classic script took, without saying so, for every "
                         "training image at each step) is not taken here: give the number of training images")
    _positive("--train_batch_size", config.train_batch_size, limit=MAX_TRAIN_BATCH)
    _positive("--bottleneck_batch_size", config.bottleneck_batch_size, limit=MAX_IMAGE_BATCH)
    _finite("--bottleneck_memory_gb", config.bottleneck_memory_gb)
    if config.bottleneck_memory_gb < 0:
        raise UsageError(f"--bottleneck_memory_gb must be 0 (always read from disk) or positive, "
                         f"got {config.bottleneck_memory_gb:g}")
    if config.bottleneck_dtype not in BOTTLENECK_DTYPES:
        raise UsageError(f"--bottleneck_dtype {config.bottleneck_dtype!r} is not one of {', '.join(BOTTLENECK_DTYPES)}")
    for flag, value in (("--validation_batch_size", config.validation_batch_size),
                        ("--test_batch_size", config.test_batch_size)):
        if value == 0 or value < -1:
            raise UsageError(f"{flag} must be positive, or -1 for the whole set; got {value}")
        if value > MAX_EVAL_BATCH:
            raise UsageError(f"{flag} {value} is too large (at most {MAX_EVAL_BATCH:,}); use -1 for the whole set")
    for flag, value in (("--testing_percentage", config.testing_percentage),
                        ("--validation_percentage", config.validation_percentage)):
        if not 0 <= value < 100:
            raise UsageError(f"{flag} must be at least 0 and below 100, got {value:g}")
    if config.testing_percentage + config.validation_percentage >= 100:
        raise UsageError(f"--testing_percentage {config.testing_percentage:g} + --validation_percentage "
                         f"{config.validation_percentage:g} leave no images for training; keep their sum below 100")
    _rate("--learning_rate", config.learning_rate)
    if config.intermediate_store_frequency < 0:
        raise UsageError(f"--intermediate_store_frequency must be 0 (never) or positive, got "
                         f"{config.intermediate_store_frequency}")
    if config.intermediate_store_frequency > MAX_STEPS:
        raise UsageError(f"--intermediate_store_frequency {config.intermediate_store_frequency} is too large "
                         f"(at most {MAX_STEPS:,})")
    if config.image_size is not None:
        _positive("--image_size", config.image_size, limit=MAX_IMAGE_SIZE)
    if not 0 <= config.seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {config.seed}")
    _check_final_tensor_name(config.final_tensor_name)
    _check_modules(config.tfhub_module)
    if config.logging_verbosity not in LOGGING_LEVELS:
        raise UsageError(f"--logging_verbosity {config.logging_verbosity!r} is not one of {', '.join(LOGGING_LEVELS)}")
    _check_distortions(config)
    _check_tflite(config)
    if not config.label_delimiter or any(c in config.label_delimiter for c in "\r\n\"") or \
            (config.label_delimiter != " " and not config.label_delimiter.strip()):
        raise UsageError(f"--label_delimiter {config.label_delimiter!r} cannot separate labels; use a space "
                         "(the default), ';', '|' or another visible character")
    check_no_effect(config)


FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32 (numpy's finfo tiny): training's numbers


def _rate(flag: str, value: float) -> None:
    if value <= 0:
        raise UsageError(f"{flag} must be positive, got {value}")
    if value < FLOAT32_TINY:  # 1e-320 became 0 (or a denormal) in float32, and trained nothing, exit 0
        raise UsageError(f"{flag} {value!r} is too small for training's float32 numbers (at least {FLOAT32_TINY!r})")


def check_no_effect(config: RetrainConfig, *, given: Collection[str] = ()) -> None:
    """Flags that tune something the run does not do are refused, not ignored (the user expected it done): any
    value but the default, and any value at all of those named in `given` (the flags the user typed, the API's
    keywords)."""
    distorting = config.distortions.active
    needs = [("--distortion_mode", "distortion_mode", "%s", "a distortion flag (--random_crop, --random_scale, "
              "--random_brightness or --flip_left_right)", distorting),
             ("--distorted_variants", "distorted_variants", "%d", "a distortion flag and --distortion_mode cached",
              distorting and config.distortion_mode == "cached"),
             *((f"--{name}", name, "%g", "--fine_tune", config.fine_tune)
               for name in ("fine_tune_steps", "fine_tune_batch_size", "fine_tune_learning_rate")),
             ("--label_delimiter", "label_delimiter", "%r", "--labels_csv (classes come from the folder names)",
              config.labels_csv is not None),
             ("--tflite_quantization", "tflite_quantization", "%s", "--output_tflite PATH",
              config.output_tflite is not None),
             ("--tflite_representative_images", "tflite_representative_images", "%d",
              "int8 in --tflite_quantization" if config.output_tflite or "int8" in config.tflite_quantization else
              "--output_tflite PATH and int8 in --tflite_quantization",
              config.output_tflite is not None and "int8" in config.tflite_quantization)]
    for flag, name, form, needed, active in needs:
        value = getattr(config, name)
        if not active and (value != getattr(RetrainConfig, name) or name in given):
            shown = form % ((",".join(value) or "(empty)") if isinstance(value, tuple) else value)
            them = "them" if " and " in needed else "it"
            raise UsageError(f"{flag} {shown} has no effect without {needed}; add {them} or drop {flag}")


def _check_final_tensor_name(name: str) -> None:
    if not NODE_NAME.fullmatch(name):
        raise UsageError(f"--final_tensor_name {name!r} is not a valid node name; use ASCII letters, digits, "
                         "'_', '.' and '-', starting with a letter or '.'")
    if name in RESERVED_NODE_NAMES or RESERVED_NODE_SCOPE.fullmatch(name):
        raise UsageError(f"--final_tensor_name {name!r} is the name of another node of the exported graph; "
                         f"choose another name (the classic one is {FINAL_TENSOR_NAME})")


def _check_modules(value: str) -> None:
    if "\0" in value:  # only the API can pass one
        raise UsageError(f"--tfhub_module {value!r} holds a NUL byte, which no file name or handle can")
    members = module_list(value)
    if not value.strip() or not all(members):
        raise UsageError(f"--tfhub_module {value!r} names an empty module; expected a module name (see "
                         "--list_modules), a tfhub.dev/Kaggle handle or a local SavedModel folder, "
                         "several separated by commas")
    # A folder named twice, spelt two ways (a trailing slash, a link): its real path tells.
    same = [os.path.realpath(Path(m).expanduser()) if Path(m).expanduser().exists() else m for m in members]
    if len(set(same)) != len(same):
        raise UsageError(f"--tfhub_module {value} names a module twice; give each module once")


def _check_distortions(config: RetrainConfig) -> None:
    for flag, value in (("--random_crop", config.random_crop), ("--random_scale", config.random_scale),
                        ("--random_brightness", config.random_brightness)):  # 100: as bright as 0 to 2 times
        if not 0 <= value <= 100:
            raise UsageError(f"{flag} must be a percentage between 0 and 100, got {value:g}")
    if config.distortion_mode not in DISTORTION_MODES:
        raise UsageError(f"--distortion_mode {config.distortion_mode!r} is not one of {', '.join(DISTORTION_MODES)}")
    _positive("--distorted_variants", config.distorted_variants, limit=MAX_VARIANTS)
    _positive("--fine_tune_steps", config.fine_tune_steps, limit=MAX_STEPS)
    _positive("--fine_tune_batch_size", config.fine_tune_batch_size, limit=MAX_FINE_TUNE_BATCH)
    _rate("--fine_tune_learning_rate", config.fine_tune_learning_rate)
    if config.distortions.active and config.distortion_mode == "on_the_fly":
        _positive("--train_batch_size", config.train_batch_size, limit=MAX_IMAGE_BATCH)  # each through the module


def _check_tflite(config: RetrainConfig) -> None:
    """--tflite_quantization names known variants, once each, and a positive calibration size (without
    --output_tflite, valid values are refused by `check_no_effect`)."""
    quantizations, images = tuple(config.tflite_quantization), config.tflite_representative_images
    spelled = ",".join(quantizations) or "(empty)"
    unknown = [q for q in quantizations if q not in TFLITE_QUANTIZATIONS]
    if unknown or not quantizations or len(set(quantizations)) != len(quantizations):
        raise UsageError(f"--tflite_quantization {spelled}: expected one or more of "
                         f"{', '.join(TFLITE_QUANTIZATIONS)}, each once (comma-separated or repeated)")
    _positive("--tflite_representative_images", images, limit=100_000)


MAX_TOP_K = 100_000
TOP_K = 5  # labels label-image prints per image, best first, when --top_k is not given (single-label models)


def _check_label_image(config: LabelImageConfig) -> None:
    if config.top_k is not None:
        _positive("--top_k", config.top_k, limit=MAX_TOP_K)
    _positive("--batch_size", config.batch_size, limit=MAX_IMAGE_BATCH)
    for flag, value in (("--input_height", config.input_height), ("--input_width", config.input_width)):
        if value is not None:
            _positive(flag, value, limit=MAX_IMAGE_SIZE)
    for flag, value in (("--input_mean", config.input_mean), ("--input_std", config.input_std)):
        if value is not None:
            _finite(flag, value)
    if config.input_std is not None and config.input_std == 0:
        raise UsageError("--input_std must not be 0 (pixels are divided by it)")
    mean = EXPORT_INPUT_MEAN if config.input_mean is None else config.input_mean
    std = EXPORT_INPUT_STD if config.input_std is None else config.input_std
    largest = max(abs(0 - mean), abs(255 - mean)) / abs(std)
    if largest > FLOAT32_MAX:  # the model would be fed infinities
        raise UsageError(f"--input_mean {mean:g} --input_std {std:g} make pixel values up to {largest:.3g}, beyond "
                         "what a float32 input holds; retrain's models take --input_mean 0 --input_std 255")
