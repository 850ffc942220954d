"""TensorBoard pictures for a run: confusion matrices, PR curves, misclassified images, hparams, the projector.

Every function takes the run's folder (`<summaries_dir>/<run>`, e.g.
`/tmp/retrain_logs/20261125-101652`) and writes beside the training scalars:

| what | where | TensorBoard tab |
|---|---|---|
| confusion matrix (image `confusion_matrix`, counts as text `confusion_matrix/counts`) | `<run>/<split>` | Images, Text |
| one precision-recall curve per class (`<label>/pr_curves`) | `<run>/<split>` | PR Curves |
| misclassified images, most confident mistakes first (image `misclassified`) | `<run>/test` | Images |
| the run's flags and final metrics (scalars) | `<run>` itself | HParams, Scalars |
| bottlenecks with labels and thumbnails | `<run>/test/projector_config.pbtxt`, `<run>/test/projector/` | Projector |

TensorFlow and TensorBoard are imported inside the functions, so importing this
module costs nothing. Each function opens a summary writer for its folder and
closes it again (a new small events file each call), unless `writer` passes an
open one for that same folder (the training loop's, say) to reuse. Unreadable
images become placeholder tiles; an unwritable folder raises RetrainError.

Costs on 2 shared CPU cores (load ~5; `python benchmarks/tensorboard_screenshot.py
--measure`), drawing and writing: a confusion matrix 0.03 s at 5 classes, 0.12 s
at 50; PR curves about 1 ms per class; the misclassified grid 0.06-0.25 s (up
to 48 photos); hparams 5 ms; the projector about 2 s per 1,000 rows of 2,048-d
vectors with their thumbnails. A validation matrix at every evaluation (400 in a
default run) would cost 12-50 s, more than the training itself, so
`picture_steps` picks at most 10 evaluation steps, evenly spaced, the last included.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError, reason
from retrain.insight import pictures
from retrain.outputs import atomic_write_bytes

log = logging.getLogger(__name__)

PROJECTOR_LIMIT = 2000  # rows shown in the projector; a larger test split is sampled (seeded)
PROJECTOR_THUMBNAIL = 64  # sprite cell size in pixels
_SPRITE_MAX_SIDE = 8192  # the projector refuses larger sprite images
PR_THRESHOLDS = 101  # thresholds 0.00, 0.01, ..., 1.00
VALIDATION_PICTURES = 10  # evaluation steps that get a validation confusion matrix
# Classes up to which a confusion matrix is drawn: its cells are at least 20 px, so k classes make a (20k)^2
# picture (150: 3,000 px, 27 MB; at 2,800 the run passed 16 GB while drawing); report.json holds the matrix.
MATRIX_PICTURE_CLASSES = 150


def picture_steps(*, steps: int, interval: int, limit: int = VALIDATION_PICTURES) -> frozenset[int]:
    """The evaluation steps that get a validation confusion matrix: at most `limit`, evenly spaced, always the last.

    Training evaluates at steps 0, interval, 2 * interval, ... and at steps - 1.
    Rendering a picture at every evaluation (400 in a default run) would cost more
    than the training; a handful shows how the confusions evolve. Computed without
    listing the evaluations, so a billion steps cost nothing here.
    """
    regular = -(-steps // interval)  # evaluations at multiples of the interval
    count = regular + (1 if (steps - 1) % interval else 0)
    if count <= 0 or limit <= 0:
        return frozenset()
    positions = np.unique(np.linspace(0, count - 1, num=min(limit, count)).round().astype(np.int64))
    return frozenset(int(p) * interval if p < regular else steps - 1 for p in positions)


def _tf() -> Any:
    """The tensorflow module, imported quietly on first use."""
    from retrain.tfenv import import_tensorflow

    return import_tensorflow()


@contextlib.contextmanager
def summary_errors(folder: Path) -> Iterator[None]:
    """TensorFlow's file errors while writing summaries into `folder` (a full disk) as one RetrainError."""
    try:
        yield
    except (OSError, _tf().errors.OpError) as error:
        raise RetrainError(f"cannot write TensorBoard summaries into {folder}: {reason(error)}; "
                           "choose a writable --summaries_dir") from None


@contextlib.contextmanager
def _writer_for(folder: Path, writer: Any | None) -> Iterator[Any]:
    """Yield `writer`, or a new summary writer for `folder` closed afterwards; errors become RetrainError."""
    own = writer is None
    try:
        with summary_errors(folder):
            if own:
                folder.mkdir(parents=True, exist_ok=True)
                writer = _tf().summary.create_file_writer(str(folder))
            yield writer
            writer.flush()
    finally:
        if own and writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


def _markdown_cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def counts_markdown(*, labels: Sequence[str], matrix: np.ndarray) -> str:
    """The confusion matrix as a Markdown table (rows true, columns predicted, a total column)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    names = [_markdown_cell(label) for label in labels]
    lines = ["| true \\ predicted | " + " | ".join(names) + " | total |",
             "|---|" + "---:|" * (len(names) + 1)]
    for name, row in zip(names, matrix):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + f" | {int(row.sum())} |")
    return "\n".join(lines)


def write_confusion_matrix(run_dir: Path, *, split: str, labels: Sequence[str], matrix: np.ndarray, step: int,
                           writer: Any | None = None) -> Path | None:
    """Write the confusion matrix of `split` at `step` as an image and as a Markdown table of counts.

    `matrix` is int [true, predicted] in label order (report.confusion_matrix
    makes one). Tags: `confusion_matrix` (Images tab) and
    `confusion_matrix/counts` (Text tab) in `run_dir/split`, which is returned;
    None, and nothing written, for more than MATRIX_PICTURE_CLASSES classes.
    """
    if len(labels) > MATRIX_PICTURE_CLASSES:
        return None
    tf = _tf()
    folder = Path(run_dir) / split
    matrix = np.asarray(matrix, dtype=np.int64)
    title = f"Confusion matrix: {split}, step {step} (N={int(matrix.sum())})"
    image = pictures.confusion_matrix_image(labels=labels, matrix=matrix, title=title)
    with _writer_for(folder, writer) as w, w.as_default():
        tf.summary.image("confusion_matrix", image[None], step=step, max_outputs=1,
                         description="Rows: true class; columns: predicted class; colour: share of the row; "
                                     "last column: images per true class.")
        tf.summary.text("confusion_matrix/counts", counts_markdown(labels=labels, matrix=matrix), step=step)
    return folder


def write_pr_curves(run_dir: Path, *, split: str, labels: Sequence[str], truth: np.ndarray,
                    probabilities: np.ndarray, step: int, writer: Any | None = None,
                    num_thresholds: int = PR_THRESHOLDS) -> Path:
    """Write one precision-recall curve per class (one class against the rest) into `run_dir/split`.

    `truth` holds class indices [N]; `probabilities` the softmax outputs [N,
    classes]. Tags `<label>/pr_curves`, PR Curves tab. Built with the PR-curve
    plugin's `pb` (it has no TF2 writer) and written with `write_raw_pb`.
    """
    tf = _tf()
    from tensorboard.plugins.pr_curve import summary as pr_summary

    truth = np.asarray(truth).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape != (truth.size, len(labels)):
        raise RetrainError(f"PR curves: probabilities of shape {probabilities.shape} for {truth.size} images "
                           f"and {len(labels)} classes; expected ({truth.size}, {len(labels)})")
    scores = np.clip(np.nan_to_num(probabilities, nan=0.0), 0.0, 1.0)
    folder = Path(run_dir) / split
    with _writer_for(folder, writer) as w, w.as_default():
        for index, label in enumerate(labels):
            summary = pr_summary.pb(str(label), labels=truth == index, predictions=scores[:, index],
                                    num_thresholds=num_thresholds, display_name=str(label),
                                    description=f"Class {label!r} against the rest, {split} split, "
                                                f"{int((truth == index).sum())} of {truth.size} images.")
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
    return folder


def write_misclassified(run_dir: Path, *, items: Sequence[tuple[Path, str, str, float]], step: int,
                        split: str = "test", writer: Any | None = None,
                        limit: int = pictures.MISCLASSIFIED_LIMIT) -> Path:
    """Write a grid of misclassified images (tag `misclassified`, Images tab) into `run_dir/split`.

    `items` are (image path, true label, predicted label, probability of the
    predicted label). The most confident mistakes come first; past `limit` the
    picture says "+N more". Unreadable images get a placeholder tile.
    """
    tf = _tf()
    ordered = sorted(items, key=lambda item: -float(item[3]) if math.isfinite(float(item[3])) else 0.0)
    image = pictures.misclassified_grid(ordered, limit=limit)
    folder = Path(run_dir) / split
    with _writer_for(folder, writer) as w, w.as_default():
        tf.summary.image("misclassified", image[None], step=step, max_outputs=1,
                         description=f"{len(ordered)} misclassified {split} images, most confident first: "
                                     "true label, predicted label and its probability, file name.")
    return folder


def _hparam_value(value: Any) -> bool | int | float | str:
    """A flag value as an HParams value: bool/int/float/str kept, None -> 'none', lists joined, others str()."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None:
        return "none"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


def write_hparams(run_dir: Path, *, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0,
                  writer: Any | None = None) -> Path:
    """Write the run's flags as hyperparameters and its final metrics as scalars into `run_dir` itself.

    The HParams dashboard then lists the run (named after its folder) with its
    flags and, as metric columns, these scalars plus the last `accuracy` and
    `cross_entropy` of `train/` and `validation/`. Values that are not bool,
    int, float or str are converted (None -> "none", paths and lists -> text).
    Suggested metric names: `test/accuracy`, `test/macro_f1`, `test/cross_entropy`.
    """
    tf = _tf()
    from tensorboard.plugins.hparams import api as hp

    run_dir = Path(run_dir)
    values = {str(name): _hparam_value(value) for name, value in hparams.items()}
    with _writer_for(run_dir, writer) as w, w.as_default():
        hp.hparams(values, trial_id=run_dir.name)
        for name, value in metrics.items():
            if math.isfinite(float(value)):  # a figure not defined on the split (NaN) is left out, not plotted
                tf.summary.scalar(str(name), float(value), step=step)
    return run_dir


def _tsv_cell(text: str) -> str:
    """Text safe inside a TSV cell (no tabs or line breaks)."""
    return " ".join(str(text).replace("\t", " ").splitlines()) or " "


def write_projector(run_dir: Path, *, vectors: np.ndarray, labels: Sequence[str], paths: Sequence[Path],
                    predicted: Sequence[str] | None = None, split: str = "test", limit: int = PROJECTOR_LIMIT,
                    thumbnail: int = PROJECTOR_THUMBNAIL, seed: int = 0, writer: Any | None = None) -> Path | None:
    """Put `split`'s bottleneck vectors in the Embedding Projector, with labels and image thumbnails.

    `vectors` [N, D] are the bottlenecks; `labels` the true label of each row,
    `paths` its image, `predicted` (optional) its predicted label. Writes
    `run_dir/split/projector/{tensors.tsv, metadata.tsv, sprite.png}` and then
    `run_dir/split/projector_config.pbtxt` (TensorBoard 2.21 reads only files
    inside the log folder), plus a text summary `projector` saying what is
    shown. More than `limit` rows are sampled (seeded, in their original order)
    and the summary says so. Returns the config file, or None for no rows.
    """
    tf = _tf()
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    vectors = np.asarray(vectors, dtype=np.float32)
    count = len(vectors)
    if vectors.ndim != 2 or len(labels) != count or len(paths) != count or (predicted is not None and len(predicted) != count):
        raise RetrainError(f"projector: vectors of shape {vectors.shape}, {len(labels)} labels and {len(paths)} paths; "
                           "expected [N, D] vectors and one label and path per row")
    if count == 0:
        log.info("projector: no %s images, nothing written", split)
        return None
    rows = np.arange(count)
    if count > limit:
        rows = np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))
        log.info("projector: showing %d of %d %s images (a seeded sample)", limit, count, split)
    side = math.ceil(math.sqrt(len(rows)))
    size = max(8, min(thumbnail, _SPRITE_MAX_SIDE // side))

    folder = Path(run_dir) / split
    assets = folder / "projector"
    try:
        assets.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        np.savetxt(buffer, vectors[rows], fmt="%.5g", delimiter="\t")
        atomic_write_bytes(assets / "tensors.tsv", buffer.getvalue().encode("utf-8"), flag="--summaries_dir")
        columns = ["label", "predicted", "file"] if predicted is not None else ["label", "file"]
        lines = ["\t".join(columns)]
        for r in rows:
            cells = [labels[r]] + ([predicted[r]] if predicted is not None else []) + [Path(paths[r]).name]
            lines.append("\t".join(_tsv_cell(c) for c in cells))
        atomic_write_bytes(assets / "metadata.tsv", ("\n".join(lines) + "\n").encode("utf-8"),
                           flag="--summaries_dir")
        png = io.BytesIO()
        from PIL import Image

        Image.fromarray(pictures.sprite([paths[r] for r in rows], size=size)).save(png, format="PNG")
        atomic_write_bytes(assets / "sprite.png", png.getvalue(), flag="--summaries_dir")

        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name = f"{split} bottlenecks"
        embedding.tensor_path = "projector/tensors.tsv"
        embedding.tensor_shape.extend([len(rows), vectors.shape[1]])
        embedding.metadata_path = "projector/metadata.tsv"
        embedding.sprite.image_path = "projector/sprite.png"
        embedding.sprite.single_image_dim.extend([size, size])
        config_path = folder / "projector_config.pbtxt"
        atomic_write_bytes(config_path, text_format.MessageToString(config).encode("utf-8"), flag="--summaries_dir")
    except OSError as error:
        raise RetrainError(f"cannot write the projector files into {assets}: {error.strerror or error}; "
                           "choose a writable --summaries_dir") from None
    shown = f"{len(rows)} of {count}" if len(rows) < count else f"all {count}"
    note = (f"Embedding Projector: {shown} {split} bottlenecks ({vectors.shape[1]}-d) with their labels and "
            f"thumbnails{' (a seeded sample: the split is larger than ' + str(limit) + ')' if len(rows) < count else ''}. "
            f"Open the Projector tab and pick the run `{Path(run_dir).name}/{split}`; colour by label.")
    with _writer_for(folder, writer) as w, w.as_default():
        tf.summary.text("projector", note, step=0)
    return config_path
