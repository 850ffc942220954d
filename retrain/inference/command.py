"""`label-image`: classify image files with a model that retrain exported, and print the top labels.

Images are prepared exactly as retrain prepared them for training
(`retrain.images`: Pillow decode, antialiased bilinear resize) and
run through the model (`retrain.inference.readers`) in batches; its scores are
named by the labels retrain wrote with it (`retrain.inference.labels`). An
image that cannot be decoded is reported and skipped; the command then ends
with a non-zero status. Scores that are not finite numbers are refused: a broken
model never prints as a confident one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from retrain.config import TOP_K, LabelImageConfig, RetrainConfig
from retrain.errors import RetrainError, UsageError
from retrain.filekinds import head, is_graph_def, is_saved_model_file
from retrain.images import ImageError, load_image
from retrain.inference.labels import (label_count, labels_for, read_labels, run_final_tensor_name, thresholds_of,
                                      warn_if_another_models_labels, warn_if_written_half)
from retrain.inference.readers import Model, load_model, not_a_model
from retrain.insight.report import table_names
from retrain.labels.folder import image_files, label_image_extensions
from retrain.logs import Skips
from retrain.names import EXPORT_INPUT_MEAN, EXPORT_INPUT_STD, shown, spelt_otherwise
from retrain.pool import thread_pool, windowed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: class probabilities, or the reason it could not be classified."""

    path: Path
    scores: np.ndarray | None
    error: str = ""


# --------------------------------------------------------------------------- checks without TensorFlow


def check(config: LabelImageConfig) -> LabelImageConfig:
    """Reject missing files before TensorFlow is imported (flag values were checked by the config); returns the
    config with its labels file found (`labels_for`) when --labels was not given."""
    if not config.images:
        raise UsageError("no --image given; pass an image file or a folder of images")
    if not config.graph.exists():
        raise UsageError(f"--graph {config.graph} not found{spelt_otherwise(config.graph)}; pass the model retrain "
                         "wrote (--output_graph, --saved_model_dir) or run retrain first")
    inside = config.graph / "saved_model.pb"
    if config.graph.is_dir() and not inside.is_file() and _is_tfjs_model(config.graph / "model.json"):
        raise UsageError(f"--graph {config.graph} is a TF.js model's folder (for web pages and Node); label-image "
                         "reads the frozen graph (--output_graph), the SavedModel folder (--saved_model_dir) or the "
                         ".tflite file retrain wrote")
    if config.graph.is_dir() and not inside.is_file():
        raise UsageError(f"--graph {config.graph} is a folder but not a SavedModel (no saved_model.pb in it); pass "
                         "the model retrain wrote: the --output_graph file, the --saved_model_dir folder or a .tflite")
    if config.graph.is_dir() and not is_saved_model_file(inside) and _is_frozen_graph(inside):
        raise UsageError(f"--graph {config.graph} is a folder whose saved_model.pb is a frozen graph (retrain's "
                         f"--output_graph named so), not a SavedModel; pass the file: --graph {inside}")
    if _is_tfjs_model(config.graph):  # said before the labels, which would be looked for in vain
        raise UsageError(f"--graph {config.graph} is a TF.js model (for web pages and Node); label-image reads the "
                         "frozen graph (--output_graph), the SavedModel folder (--saved_model_dir) or the .tflite "
                         "file retrain wrote")
    data = _bytes(config.graph) if config.graph.is_file() else None
    if data is not None and (problem := not_a_model(config.graph, data)) is not None:
        raise RetrainError(problem)  # said before its labels are looked for (exit 1, as when it is loaded)
    given = config.labels is not None
    if not given:
        config = dataclasses.replace(config, labels=labels_for(config.graph))
        if not os.path.lexists(config.labels):
            raise UsageError(f"no labels found for --graph {config.graph}: no retrain report beside or above it names "
                             f"its labels file, and the default --labels {config.labels} does not exist; pass --labels "
                             "(the labels file retrain wrote with this model)")
    if not config.labels.exists():
        raise UsageError(f"--labels {config.labels} not found; pass the labels file retrain wrote (--output_labels)"
                         if given else f"the labels file {config.labels} of --graph {config.graph} is a link to "
                         "nothing; pass --labels")
    if not given and config.labels == RetrainConfig.output_labels:  # what a report says of the classic default
        warn_if_another_models_labels(config.graph, config.labels, read_labels(config.labels), given=False)
    for path in config.images:
        if not path.exists():
            raise UsageError(f"--image {path} not found{spelt_otherwise(path)}; pass an existing image file or folder")
    return config


def _is_tfjs_model(path: Path) -> bool:
    """A TF.js model's model.json: its `format` (which retrain and the converter write first) or topology."""
    return re.search(rb'"format"\s*:\s*"(graph|layers)-model"|"modelTopology"\s*:', head(path, 65536)) is not None


def _is_frozen_graph(path: Path) -> bool:
    return (data := _bytes(path)) is not None and is_graph_def(data)


def _bytes(path: Path) -> bytes | None:
    """The file's bytes; None for one that cannot be read (loading it says why)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """The image files named by `--image`: files as given, folders walked (sorted, recursive, hidden skipped)."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = image_files(path)
        if not found:
            kinds = ", ".join(sorted(label_image_extensions()))
            raise UsageError(f"--image {path} is a folder with no images ({kinds})")
        files += found
    return files


# --------------------------------------------------------------------------- classifying


@dataclass(frozen=True)
class Preprocessing:
    """How decoded images become model input: classic semantics, (pixel_0_255 - mean) / std."""

    height: int
    width: int
    mean: float
    std: float

    def __call__(self, path: Path) -> np.ndarray:
        pixels = load_image(path, height=self.height, width=self.width)  # [0, 1], exactly as in training
        if (self.mean, self.std) == (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD):
            return pixels  # what our exports take; skipping the no-op keeps results bit-identical to training
        # In float64: a mean or std a float32 cannot hold (1e39) may still give pixels it can (the config checks).
        return ((pixels.astype(np.float64) * 255.0 - self.mean) / self.std).astype(np.float32)


def preprocessing_for(model: Model, config: LabelImageConfig) -> Preprocessing:
    """Size from the flags or the model (they must agree when both exist); mean and std likewise."""
    sizes = {}
    for flag, given, own in (("--input_height", config.input_height, model.height),
                             ("--input_width", config.input_width, model.width)):
        if given is not None and own is not None and given != own:
            raise RetrainError(f"{flag} {given} does not match the model ({model.description}); "
                               f"omit {flag} (the size is read from the model)")
        sizes[flag] = given or own
        if not sizes[flag]:
            raise RetrainError(f"the model does not fix its input size ({model.description}); "
                               "pass --input_height and --input_width")
    mean = EXPORT_INPUT_MEAN if config.input_mean is None else config.input_mean
    std = EXPORT_INPUT_STD if config.input_std is None else config.input_std
    if model.retrain_export and (mean, std) != (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD):
        log.warning("--input_mean %g --input_std %g: models that retrain exported expect %g and %g "
                    "(RGB in [0, 1]); results will be wrong unless the flags are omitted",
                    mean, std, EXPORT_INPUT_MEAN, EXPORT_INPUT_STD)
    return Preprocessing(height=sizes["--input_height"], width=sizes["--input_width"], mean=mean, std=std)


def classify(model: Model, paths: Sequence[Path], *, prepare: Callable[[Path], np.ndarray],
             batch_size: int) -> Iterator[ImageResult]:
    """Yield each image's probabilities in input order; images are decoded by a thread pool while the model runs."""
    batch_size = min(batch_size, model.max_batch or batch_size)

    def load(path: Path) -> tuple[Path, np.ndarray | None, str]:
        try:
            return path, prepare(path), ""
        except ImageError as error:
            return path, None, str(error)

    pending: list[tuple[Path, np.ndarray | None, str]] = []

    def flush() -> Iterator[ImageResult]:
        good = [(p, x) for p, x, _ in pending if x is not None]
        scores = _rows(model.predict(np.stack([x for _, x in good])), len(good)) if good else iter([])
        for path, image, reason in pending:
            yield ImageResult(path, next(scores) if image is not None else None, reason)
        pending.clear()

    with thread_pool() as pool:
        for loaded in windowed(paths, lambda path: pool.submit(load, path), 2 * batch_size):
            pending.append(loaded)
            if len(pending) == batch_size:
                yield from flush()
        if pending:
            yield from flush()


def _rows(output: Any, count: int) -> Iterator[np.ndarray]:
    """The model's scores for `count` images, one row each, whatever the output's rank (classic graphs may give
    [N, 1, 1, C]); a model that gives another number of rows is one line (probe ZZN: a reshape traceback)."""
    output = np.asarray(output)
    if not output.ndim or output.shape[0] != count:
        raise RetrainError(f"the model gave scores of shape {list(output.shape)} for {count} image(s), not one row "
                           "per image (its module mixes the images of a batch?); pass a model retrain exported")
    return iter(output.reshape(count, -1))


def top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; ties keep class order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


def _write_text(out: TextIO, record: dict[str, Any], *, header: bool, thresholded: bool,
                names: dict[str, str]) -> None:
    if header:  # one line whatever the name holds: a line break or other unprintable character is escaped
        image = record["image"]
        text = shown(image)  # bytes that are not UTF-8 as \x escapes
        out.write(f"==> {text if text.isprintable() else repr(text)} <==\n")
    for prediction in record["predictions"]:
        if thresholded and prediction["label"] not in record["labels"]:
            continue
        # str(np.float32) is what the classic label_image.py printed, e.g. "daisy 0.9273"
        out.write(f"{names[prediction['label']]} {str(np.float32(prediction['score']))}\n")
    if thresholded and not record["labels"]:
        out.write("(no label at or above its threshold)\n")
    if header:
        out.write("\n")
    out.flush()


def records(config: LabelImageConfig, paths: Sequence[Path] | None = None, *,
            shown: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Classify every image: one record per image, in order, `{"image", "predictions"}` (best first,
    --top_k of them) or `{"image", "error"}` for an image that could not be decoded.
    `predictions` holds every label, unless --top_k is given, for --json and for a multi-label
    model (else the classic 5); for a multi-label model `labels` names those at or above their
    thresholds, best first.

    `paths` are the image files when the caller has collected them from config.images already; `shown`, if
    given, gets each label as the text output shows it (`insight.report.table_names`), from the labels read once.
    """
    config = check(config)
    warn_if_written_half(config.graph, config.labels)
    paths = collect_images(config.images) if paths is None else paths
    labels = read_labels(config.labels)
    if shown is not None:
        shown.update(table_names(labels, width=None))
    model = load_model(config.graph, input_layer=config.input_layer, output_layer=config.output_layer,
                       final_name=run_final_tensor_name(config.graph) if config.output_layer else None)
    log.info("%s %s: %s", model.kind, config.graph, model.description)
    if model.class_count is not None and model.class_count != len(labels):
        raise RetrainError(f"the labels file {config.labels} has {label_count(len(labels))} but --graph {config.graph} "
                           f"gives {model.class_count} scores per image; pass the labels file written with this model")
    warn_if_another_models_labels(config.graph, config.labels, labels)
    prepare = preprocessing_for(model, config)
    thresholds = thresholds_of(model, config.labels, len(labels), graph=config.graph, names=labels)
    count = config.top_k or (len(labels) if model.multi_label or config.json else TOP_K)
    for result in classify(model, paths, prepare=prepare, batch_size=config.batch_size):
        if result.scores is None:
            yield {"image": str(result.path), "error": result.error}
            continue
        if result.scores.shape[-1] != len(labels):
            raise RetrainError(f"the labels file {config.labels} has {label_count(len(labels))} but --graph "
                               f"{config.graph} gives {result.scores.shape[-1]} scores; pass the labels file written "
                               "with this model")
        if not np.isfinite(result.scores).all():
            raise RetrainError(f"--graph {config.graph} gave scores that are not finite numbers (NaN or infinity) "
                               f"for {result.path}: the model is broken; retrain it")
        record: dict[str, Any] = {"image": str(result.path), "predictions": [
            {"label": label, "score": score} for label, score in top_k(result.scores, labels, count)]}
        if thresholds is not None:
            record["labels"] = [labels[i] for i in np.argsort(-result.scores, kind="stable")
                                if result.scores[i] >= thresholds[i]]
        yield record


def run(config: LabelImageConfig, *, out: TextIO | None = None) -> int:
    """Classify every image and print the results; returns how many images were classified.

    Raises RetrainError at the end if some images could not be decoded (they
    are reported on stderr as they come and skipped).
    """
    out = out or sys.stdout
    config = check(config)
    paths = collect_images(config.images)
    several = len(paths) > 1
    printed = 0
    failed: list[dict[str, Any]] = []
    skips = Skips(log, "--image ", more="" if config.json else "--json lists each")
    names: dict[str, str] = {}  # each label as printed: `#N` after those that look alike (probe ZZE: `rosés` twice)
    for record in records(config, paths, shown=names):
        if config.json:  # the array json.dump(indent=2) wrote, a record at a time: thousands of labels an image
            # kept every record until the end (1,000 images of 10,000 labels: 3 GB, and nothing printed for minutes)
            item = json.dumps(record, indent=2).replace("\n", "\n  ")
            out.write(f"{',' if printed else '['}\n  {item}")
            out.flush()
        printed += 1
        if "error" in record:
            failed.append(record)
            if several:
                skips.add(record["image"], record["error"])
        elif not config.json:
            _write_text(out, record, header=several, thresholded="labels" in record and config.top_k is None,
                        names=names)
    if config.json:
        out.write("\n]\n" if printed else "[]\n")
        out.flush()
    skips.close()
    if failed and not several:
        raise RetrainError(f"cannot classify --image {failed[0]['image']}: {failed[0]['error']}")
    if failed:
        raise RetrainError(f"{len(failed)} of {printed} images could not be decoded and were skipped (the warnings "
                           "above give the reasons)")
    return printed
