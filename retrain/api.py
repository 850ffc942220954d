"""The Python API, for notebooks and scripts: the same run and the same checks as the command line.

    from retrain import api

    result = api.retrain("flower_photos", tfhub_module="mobilenet_v2_100_224",
                         output_graph="out/graph.pb", output_labels="out/labels.txt")
    result.labels                 # ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']
    result.head.weights           # the trained layer: [features, classes] (and result.head.biases)
    result.accuracy["testing"]    # per split: 'training', 'validation', 'testing'
    result.written                # the files written, as the command prints them

    api.classify(["photo.jpg"], graph="out/graph.pb", labels="out/labels.txt")
    # [{'image': 'photo.jpg', 'predictions': [{'label': 'roses', 'score': 0.93}, ...]}]

Keyword arguments are the command's flags without the dashes (`how_many_training_steps=500`,
`saved_model_dir=...`; a repeatable flag takes a list, `tfhub_module=[...]`); `classify` takes one path
or a list. A bad value, an unknown keyword, a value of the wrong type or a missing input file raises
`retrain.errors.UsageError` with a one-line message (for values and files, the one the command line
prints), before any work. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retrain.config import LabelImageConfig, RetrainConfig, check_no_effect
from retrain.errors import RetrainError, UsageError
from retrain.logs import LEVELS, caller_settings_kept, commentary, logging_during, warn_if_names_not_utf8

__all__ = ["retrain", "classify", "RetrainError", "UsageError"]


def retrain(image_dir: str | Path | None = None, *, log_level: str | None = "INFO", print_results: bool = True,
            **flags: Any) -> Any:
    """Run a whole retraining, as `retrain --image_dir IMAGE_DIR --FLAG VALUE...` does; returns its result.

    The result (`retrain.pipeline.RetrainResult`) holds `labels`, the trained `head`, `accuracy` per
    split, `evaluations` (the full figures per split), `splits`, `skipped` images and the `written` files.
    `tfhub_module` may be a list (or tuple) of modules, as the repeated flag gives them.
    `log_level` shows the classic log lines on stderr ("INFO"), fewer ("WARN"), or leaves logging as
    the caller configured it (None); it applies to this call only. A caller's own handlers on the
    'retrain' logger are kept and get the lines instead of stderr. `logging_verbosity`, the command's
    flag, is taken as `log_level` when given. `print_results=False` prints nothing on stdout (the command's
    final figures, per-class table, misclassified images and `Wrote` lines: all are in the result). Relative
    paths are taken from the current folder when the call is made. Calls run one at a time: a call made while
    another runs (in another thread) waits for it to end; one made from inside a running call (a logging
    handler) raises UsageError.
    """
    from retrain.pipeline import run

    _check_names("retrain", flags, RetrainConfig)
    if "logging_verbosity" in flags:  # the command's flag: the same setting, in any case, None included
        log_level = flags.pop("logging_verbosity")
        _check_log_level(log_level, name="logging_verbosity")
        if log_level is not None:
            flags["logging_verbosity"] = log_level.upper()
    else:
        _check_log_level(log_level)
    if not isinstance(print_results, bool):
        raise UsageError(f"print_results must be True or False, not {print_results!r}")
    config = RetrainConfig(image_dir=image_dir, **_joined_modules(flags)).anchored()
    check_no_effect(config, given=flags)
    if _RUNNING.thread == threading.get_ident():
        raise UsageError("retrain() was called while this thread's retrain() call runs (from a logging handler or a "
                         "callback?); call it once that one has returned")
    if not _ONE_RUN.acquire(blocking=False):
        logging.getLogger("retrain").info("waiting for the retrain() call running in another thread to end")
        _ONE_RUN.acquire()
    _RUNNING.thread = threading.get_ident()
    try:
        with caller_settings_kept(), commentary(quiet=not print_results), logging_during(log_level):
            return run(config, given=flags)
    finally:
        _RUNNING.thread = None
        _ONE_RUN.release()


# One run at a time in a process: a run records what it judged and wrote per process (retrain.outputs), and
# holds the 'retrain' logger's settings for its length. A call from another thread meanwhile waits its turn; one
# from the running call's own thread (a logging handler of the caller's) is refused, as it could only wait forever.
_ONE_RUN = threading.Lock()
_RUNNING = types.SimpleNamespace(thread=None)  # the thread whose call holds _ONE_RUN


def classify(images: str | Path | Iterable[str | Path] | None = None, *,
             graph: str | Path = RetrainConfig.output_graph,
             labels: str | Path | None = None, top_k: int | None = None,
             **flags: Any) -> list[dict[str, Any]]:
    """Classify image files (or folders of them) with an exported model, as `label-image --json` does.

    `images` is one path (a str or Path: an image file or a folder) or a list of them (required: a default
    only so that `image=`, the command's flag, is a UsageError naming `images`). Returns one dict
    per image, in order: `image` and `predictions` (label and score, best first: every label, or
    `top_k`), plus `labels` (those at or above their thresholds) for a multi-label
    model; or `image` and `error` for an image that could not be decoded. Other keyword arguments are
    label-image's flags (`input_mean=...`, `batch_size=...`). Without `labels`, a SavedModel's own labels are
    read, else the labels file named by the report.json that lists `graph` (beside it or above it; else the
    classic /tmp/output_labels.txt), as label-image does (the README's `--labels` paragraph says when neither is
    surely the model's: then a UsageError). A missing file is a UsageError, as a bad value is.
    """
    from retrain.inference.command import records

    warn_if_names_not_utf8()
    _check_names("classify", flags, LabelImageConfig)
    config = LabelImageConfig(graph=_home(graph), labels=_home(labels),
                              images=[_home(image) for image in _image_list(images)], top_k=top_k,
                              **{**flags, "json": True})
    with caller_settings_kept():
        return list(records(config, _checked_images(config)))


def _check_names(function: str, flags: dict[str, Any], config: type) -> None:
    """An unknown keyword is a UsageError naming it (and the flag it was probably meant to be)."""
    known = [field.name for field in dataclasses.fields(config)]
    for name in flags:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"{function}() has no flag {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def _check_log_level(level: object, *, name: str = "log_level") -> None:
    """log_level is None or a level name, in any case."""
    if level is not None and not (isinstance(level, str) and level.upper() in LEVELS):
        raise UsageError(f"{name} must be one of {', '.join(LEVELS)} (any case), or None to leave logging "
                         f"as it is, got {level!r}")


def _joined_modules(flags: dict[str, Any]) -> dict[str, Any]:
    """tfhub_module=[A, B] (or a tuple) is the repeated flag: one comma-separated value, as the CLI makes it."""
    if "tfhub_module" not in flags:
        return flags
    modules = flags["tfhub_module"]
    if isinstance(modules, (str, os.PathLike)):
        return {**flags, "tfhub_module": os.fspath(modules)}
    if isinstance(modules, (list, tuple)) and all(isinstance(module, (str, os.PathLike)) for module in modules):
        return {**flags, "tfhub_module": ",".join(map(os.fspath, modules))}
    raise UsageError(f"--tfhub_module must be a string or a path, or a list of them, got {modules!r}")


def _home(path: Any) -> Any:
    """A path with a leading `~` as the home folder, as the command line and retrain() take it (probe TT)."""
    if isinstance(path, str):
        return os.path.expanduser(path)
    return Path(os.path.expanduser(path)) if isinstance(path, os.PathLike) else path


def _image_list(images: object) -> list[Any] | tuple[Any, ...]:
    """One path (a str or Path) is one image or folder, like a list of one; any other iterable is a list."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, (list, tuple)):
        return images
    if isinstance(images, Iterable) and not isinstance(images, (bytes, bytearray)):
        return list(images)
    raise UsageError(f"images must be a path or a list of paths, got {images!r}")


def _checked_images(config: LabelImageConfig) -> list[Path]:
    """label-image's checks of the files, before any work (a missing file is a UsageError): the image files."""
    from retrain.inference.command import check, collect_images

    check(config)
    return collect_images(config.images)
