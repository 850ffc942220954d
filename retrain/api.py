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
`saved_model_dir=...`); a bad value, an unknown keyword or a value of the wrong type raises
`retrain.errors.UsageError` with a one-line message (for values, the one the command line prints),
before any work. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain.config import LabelImageConfig, RetrainConfig
from retrain.errors import RetrainError, UsageError
from retrain.logs import setup_logging

__all__ = ["retrain", "classify", "RetrainError", "UsageError"]


def retrain(image_dir: str | Path, *, log_level: str | None = "INFO", **flags: Any) -> Any:
    """Run a whole retraining, as `retrain --image_dir IMAGE_DIR --FLAG VALUE...` does; returns its result.

    The result (`retrain.pipeline.RetrainResult`) holds `labels`, the trained `head`, `accuracy` per
    split, `evaluations` (the full figures per split), `splits`, `skipped` images and the `written` files.
    `log_level` shows the classic log lines on stderr ("INFO"), fewer ("WARN"), or leaves logging as
    the caller configured it (None).
    """
    from retrain.pipeline import run

    _check_names("retrain", flags, RetrainConfig)
    config = RetrainConfig(image_dir=Path(image_dir), **flags)
    _log_to_stderr(log_level)
    return run(config)


def classify(images: Sequence[str | Path], *, graph: str | Path = RetrainConfig.output_graph,
             labels: str | Path = RetrainConfig.output_labels, top_k: int | None = None,
             **flags: Any) -> list[dict[str, Any]]:
    """Classify image files (or folders of them) with an exported model, as `label-image --json` does.

    Returns one dict per image, in order: `image` and `predictions` (label and score, best first: 5,
    or every label of a multi-label model, or `top_k`), plus `labels` (those at or above their
    thresholds) for a multi-label model; or `image` and `error` for an image that could not be
    decoded. Other keyword arguments are label-image's flags (`input_mean=...`, `batch_size=...`).
    """
    from retrain.inference.command import records

    _check_names("classify", flags, LabelImageConfig)
    config = LabelImageConfig(graph=Path(graph), labels=Path(labels), images=tuple(Path(p) for p in images),
                              top_k=top_k, **flags)
    return list(records(config))


def _check_names(function: str, flags: dict[str, Any], config: type) -> None:
    """An unknown keyword is a UsageError naming it (and the flag it was probably meant to be)."""
    known = [field.name for field in dataclasses.fields(config)]
    for name in flags:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"{function}() has no flag {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def _log_to_stderr(level: str | None) -> None:
    """The classic lines on stderr, unless the caller set up logging for the 'retrain' logger already."""
    if level is not None and not logging.getLogger("retrain").handlers:
        setup_logging(level)
