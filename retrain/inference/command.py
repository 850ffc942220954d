"""`label-image`: classify image files with a model that retrain exported, and print the top labels.

Images are prepared exactly as retrain prepared them for training
(`retrain.images`: Pillow decode, TensorFlow antialiased bilinear resize) and
run through the model (`retrain.inference.readers`) in batches. An image that
cannot be decoded is reported and skipped; the command then ends with a
non-zero status. Scores that are not finite numbers are refused: a broken
model never prints as a confident one.
"""

from __future__ import annotations

import dataclasses
import filecmp
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
from retrain.filekinds import file_sha256, head, is_graph_def, is_saved_model_file, labels_of_text, read_report
from retrain.images import ImageError, load_image, read_bytes
from retrain.inference.readers import Model, load_model
from retrain.insight.report import files_now, labels_file_now, reports_at
from retrain.labels.folder import image_files, label_image_extensions
from retrain.names import (EXPORT_INPUT_MEAN, EXPORT_INPUT_STD, SAVED_MODEL_LABELS, report_path, shown,
                           thresholds_path)
from retrain.outputs import half_written
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
        raise UsageError(f"--graph {config.graph} not found; pass the model retrain wrote "
                         "(--output_graph, --saved_model_dir) or run retrain first")
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
        _warn_if_another_models_labels(config.graph, config.labels, read_labels(config.labels), given=False)
    for path in config.images:
        if not path.exists():
            raise UsageError(f"--image {path} not found; pass an existing image file or folder")
    return config


def _is_tfjs_model(path: Path) -> bool:
    """A TF.js model's model.json: its `format` (which retrain and the converter write first) or topology."""
    return re.search(rb'"format"\s*:\s*"(graph|layers)-model"|"modelTopology"\s*:', head(path, 65536)) is not None


def _warn_if_written_half(graph: Path, labels: Path) -> None:
    """A retrain run killed while it wrote its exports leaves the model half replaced until the next run writing
    there takes its writes back: say so, as the graph and labels may then belong to two models."""
    model = {os.path.abspath(graph), os.path.abspath(labels)}
    for pid, paths in half_written(dict.fromkeys([graph.parent, labels.parent])):
        if model & set(paths):
            log.warning("a retrain run (process %d) was killed while it replaced --graph %s or its labels %s: they "
                        "may belong to two models; the next retrain run writing there puts the earlier files back",
                        pid, graph, labels)


def _report_beside(graph: Path) -> Path | None:
    """A retrain report beside the model (where a link to it leads first), whether or not it lists it."""
    return next((report for place in _places(graph) if read_report(report := report_path(place)) is not None), None)


def _is_frozen_graph(path: Path) -> bool:
    try:
        return is_graph_def(path.read_bytes())
    except OSError:
        return False


def labels_for(graph: Path) -> Path:
    """The labels file of the model at `graph` when --labels is not given: the one a SavedModel holds, else the
    one named by the retrain report that lists the model among the files its run wrote (`_run_report`), else the
    classic default (with a warning when a report beside the model lists other files).
    UsageError when that report's labels file is gone: the classic default would be another model's."""
    graph = _model(graph)
    if os.path.lexists(graph / SAVED_MODEL_LABELS):  # read as labels whatever it is: a pipe or folder is an error
        return graph / SAVED_MODEL_LABELS
    found = _run_report(graph)
    if found is None:
        for report in dict.fromkeys(r for place in _places(graph) for r in reports_at(place.parent)):
            data = read_report(report)  # once a report: each is read by the checks below it
            if data is not None and (copied := _copy_listed(graph, report, data)) is not None:
                return _its_own(graph, copied, report, data)  # a copy beside its run's report or below it (WW)
        beside = _report_beside(graph)
        if beside is not None:  # neither its labels nor the classic default are surely this model's
            raise UsageError(f"--graph {graph} is not among the files of the run that {beside} describes (an "
                             "earlier run's model, or another's), so which labels are its cannot be told; pass "
                             "--labels (the labels file retrain wrote with it)")
        # The report beside the classic default may describe the run that wrote a file this model is a copy of,
        # with labels of its own elsewhere (`--output_labels /tmp/b_labels.txt`): the default is not its (probe OO).
        data = read_report(default := report_path(RetrainConfig.output_labels))
        copied = _copy_listed(graph, default, data)
        return RetrainConfig.output_labels if copied is None else _its_own(graph, copied, default, data)
    report, data, over = found
    if over == _OTHER_BYTES:  # its run's labels are not surely its; the classic default, even less
        spellings = {os.path.abspath(graph), os.path.realpath(graph)}  # (a link to it: probe YY)
        killed = next((f"a retrain run (process {pid}) was killed while it replaced it; the next retrain run "
                       "writing there puts the earlier files back" for pid, paths in half_written(
                           dict.fromkeys(Path(path).parent for path in spellings)) if spellings & set(paths)),
                      "another run, or a copy, has replaced it since")
        raise UsageError(f"no labels found for --graph {graph}: {report} lists it among the files its run wrote, "
                         f"but it holds other bytes than that run wrote there ({killed}), so which labels are its "
                         "cannot be told; pass --labels (the labels file of the run that wrote it)")
    labels = labels_file_now(report, data["run"])
    if labels.is_file():
        _its_own(graph, labels, report, data)
        log.info("labels: %s (the %s of --graph's run names them)", labels, report)
        return labels
    raise UsageError(f"--graph {graph}: its run's labels file {labels}, which {report} names, is missing; "
                     "pass --labels")


def _its_own(graph: Path, labels: Path, report: Path, data: Any) -> Path:
    """`labels`, the labels file of the run `report` describes (`data`, what it holds), if it holds the labels
    that report lists (as label-image reads them); else UsageError: replaced since (a run killed as it wrote
    them, another run, an edit), they are not surely the model's (they named its scores, with a warning: WW)."""
    try:
        same = read_labels(labels) == (data or {}).get("labels")
    except RetrainError:
        same = False
    if not same:
        raise UsageError(f"no labels found for --graph {graph}: its run's labels file {labels}, which {report} "
                         "names, holds other labels than that report lists (replaced since, by another run or by "
                         "hand), so which labels are its cannot be told; pass --labels")
    return labels


def _copy_listed(graph: Path, report: Path, data: Any) -> Path | None:
    """The labels file of the run `report` describes (`data`: what it holds, None if it is none) when the model
    at `graph` is a byte copy of a file that run wrote (`cp graph.pb graph_backup.pb` beside it), and that labels
    file is there."""
    listed = _listed_as(graph, report, data, copies_only=True)
    try:
        labels = labels_file_now(report, data["run"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError, RetrainError):
        return None
    if listed is None or not labels.is_file():
        return None
    log.info("labels: %s (--graph %s holds the same bytes as %s, which %s lists)", labels, graph, listed, report)
    return labels


def _listed_as(graph: Path, report: Path, data: Any, *, copies_only: bool = False) -> Path | None:
    """The file the run `report` describes wrote (a model's file or an intermediate graph) that the model at
    `graph` is, or holds the same bytes as (`copies_only`: only that); None if none, or the report is not one.
    A file counts only with the bytes that run wrote there (`_written_over`): a copy of an intermediate graph
    another run had written over since was given the first run's labels, exit 0 (probe UU). A copy of one whose
    bytes the report records is that run's wherever the file it copies has gone (a TFLite model moved away with
    copies of its labels and report, as the refusal to leave it beside other labels suggests: probe VV)."""
    try:
        files = files_now(report, data["run"])
        graphs = files_now(report, data["run"], key="intermediate_graphs")
    except (KeyError, TypeError, ValueError, RetrainError):
        return None
    matches = _same_bytes if copies_only else _is_or_copies
    listed = next((file for file in files + graphs if matches(graph, file)), None)
    if listed is not None:
        key = "files" if listed in files else "intermediate_graphs"
        return listed if _written_over(graph, report, data["run"], [listed], key=key) is None else None
    return _recorded(graph, data["run"])


def _recorded(graph: Path, run: Any) -> Path | None:
    """The file, as the report lists it, whose bytes as its run wrote them (`files_sha256`, `intermediate_sha256`)
    the file at `graph` holds; None if none."""
    digest = _sha256(graph) if graph.is_file() else ""
    for key in _DIGESTS_OF:
        names, digests = run.get(key), run.get(_DIGESTS_OF[key])
        if digest and isinstance(names, list) and isinstance(digests, list) and len(names) == len(digests) \
                and digest in digests and isinstance(name := names[digests.index(digest)], str):
            return Path(name)
    return None


def _places(path: Path) -> dict[Path, None]:
    """Where to look for the report of a file that may be a link: where the link leads first, then beside it."""
    return dict.fromkeys([Path(os.path.realpath(path)), path])


def _labels(count: int) -> str:
    return f"{count} label" if count == 1 else f"{count} labels"


def _model(graph: Path) -> Path:
    """The model that --graph names: a SavedModel's folder when given its saved_model.pb."""
    return graph.parent if is_saved_model_file(graph) else graph


def _run_report(graph: Path) -> tuple[Path, dict[str, Any], str | None] | None:
    """The retrain report that lists the model at `graph` among the files its run wrote, what it holds, and
    None when the model is surely that run's, else why not (`_written_over`: an intermediate graph, in a folder
    every run shares by default, that another run may have written over): the nearest, beside the model or above
    it (where a link leads first, then from the link: a model in a sub-folder of its labels' folder, an
    intermediate graph's folder beside the labels). None if no report does."""
    found = None
    for place in _places(graph):
        for report in reports_at(place.parent):
            data = read_report(report)
            try:
                for key in _DIGESTS_OF:
                    if _among(graph, files_now(report, data["run"], key=key)):
                        over = _written_over(graph, report, data["run"], [graph], key=key)
                        if over is None:
                            return report, data, None
                        found = found or (report, data, over)  # one further up may list its bytes (probe UU)
            except (KeyError, TypeError, ValueError, OSError):
                continue
    return found


_OTHER_BYTES = "other bytes"  # than the run wrote there (by the report's files_sha256 or intermediate_sha256)
_NEWER = "newer"  # than a report without intermediate_sha256 (an earlier version's), or a copy without its times
_DIGESTS_OF = {"files": "files_sha256", "intermediate_graphs": "intermediate_sha256"}  # a report's list: its digests


def _written_over(graph: Path, report: Path, run: Any, own: Sequence[Path], *,
                  key: str = "intermediate_graphs") -> str | None:
    """Why the file at `graph` (one of `own`, that run's files of the report's list `key`, or a byte copy of one)
    may not be what the run `report` describes wrote: `_OTHER_BYTES` when its SHA-256 is not among the report's
    digests of that list (another run wrote an intermediate graph there since: probe SS; a graph put back from a
    backup over a newer model's: probe VV), `_NEWER` when a report without them is older than all of the
    intermediate graphs `own`; None when it is that run's (a folder, a SavedModel, is told by the labels it holds).
    Reports written before the digests were recorded take their model's files as written."""
    digests = run.get(_DIGESTS_OF[key]) if isinstance(run, dict) else None
    if not graph.is_file():
        return None
    if isinstance(digests, list):  # any bytes the run wrote: its intermediate graph copied over its output graph
        wrote = [d for k in _DIGESTS_OF.values() if isinstance(listed := run.get(k), list) for d in listed]  # (WW)
        return None if (digest := _sha256(graph)) and digest in wrote else _OTHER_BYTES
    if key == "files":
        return None
    return _NEWER if all(file.stat().st_mtime > report.stat().st_mtime for file in own) else None


def _sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes ('' for what cannot be read as one)."""
    try:
        return file_sha256(path)
    except OSError:
        return ""


def _warn_if_another_models_labels(graph: Path, labels: Path, names: Sequence[str], *, given: bool = True) -> None:
    """Warn when the labels are, by what retrain wrote, another model's: a SavedModel given other labels than
    those it holds; labels other than those the report listing the model names (`_run_report`); labels whose
    report (beside them or where a link to them leads, or beside the SavedModel holding them) lists other files
    than the model, none of them a byte copy of it nor the model one of that run's intermediate graphs; a
    SavedModel's own labels that differ from its report's. Only a warning for --labels given: a model moved since
    (not a copy) is still told apart by nothing but its class count. The classic default labels file (`given`
    False) whose report says it is another model's is an error: nothing chose it for this model. `names`: the
    labels file's lines, as read (its other warnings come when the model has loaded, with `given` True)."""
    warn = log.warning if given else lambda *_: None
    graph = _model(graph)
    own = graph / SAVED_MODEL_LABELS
    if own.is_file() and not _among(labels, [own]):
        try:
            its_own = read_labels(own)
        except RetrainError:
            return
        if list(names) != its_own and given and (report := _vouching_report(labels, names, graph)) is not None:
            raise UsageError(f"--labels {labels} are another model's: the {report} beside them names them for the "
                             f"files of its run, and --graph {graph} holds labels of its own (its "
                             f"{SAVED_MODEL_LABELS}); leave --labels out")  # not renamed by hand: probe VV
        if list(names) != its_own:
            warn("--labels %s are not the labels --graph %s holds (its %s); if that is another model's "
                 "labels file, leave --labels out", labels, graph, SAVED_MODEL_LABELS)
        return
    found = None if _among(labels, [own]) else _run_report(graph)
    if found is not None and found[2] is None and isinstance(named := found[1].get("labels"), list):
        if named != list(names):
            warn("labels %s are not those that %s names for --graph %s (it lists the model among its run's "
                 "files); if they are another model's, its scores are named wrongly: pass its own labels "
                 "file", labels, found[0], graph)
        return
    for place in _places(labels):
        holder = place.parent.parent  # when the labels are a SavedModel's own, that SavedModel
        held = place.parts[-2:] == Path(SAVED_MODEL_LABELS).parts and (holder / "saved_model.pb").is_file()
        report = report_path(holder if held else place)
        data = read_report(report)
        if data is not None or held:
            break
    try:
        vouched = data["labels"] == list(names)
        files = [file for file in files_now(report, data["run"])
                 if os.path.lexists(file) and not _among(labels, [file])]
        own = [file for file in files_now(report, data["run"], key="intermediate_graphs")
               if _is_or_copies(graph, file)]  # the run's own, or a copy of one
        mine = [file for file in files if _is_or_copies(graph, file)]
        if not mine and not own and (recorded := _recorded(graph, data["run"])) is not None:
            mine = [recorded]  # moved or renamed: told by its bytes (probe WW)
        intermediate = bool(own)
        rewritten = (_written_over(graph, report, data["run"], own) if own else  # since?
                     _written_over(graph, report, data["run"], mine, key="files") if mine else None)
    except (KeyError, TypeError, ValueError, OSError, RetrainError):  # no report, or one edited by hand
        vouched, files, mine, intermediate, rewritten = False, [], [], False, None
    if held and _among(holder, files) and not vouched:
        warn("labels %s: the SavedModel %s holds other labels than its run's %s lists; if they were "
             "edited or replaced, its scores are named wrongly", labels, holder, report.name)
        return
    if not held and not vouched:  # no report vouches for these labels: only the class count can be checked,
        listed = _listed_as(graph, report, data)  # unless it says whose model this is
        if listed is not None:
            listed_text = "it" if _among(graph, [listed]) else f"{listed}, which --graph is a copy of,"
            if not given:
                raise UsageError(f"no labels found for --graph {graph}: the default --labels {labels} are not its, "
                                 f"as the {report} beside them lists {listed_text} among the files of a run with "
                                 "other labels; pass --labels (the labels file retrain wrote with this model)")
            log.warning("labels %s are not those of --graph %s: the %s beside them lists %s among the files of a "
                        "run with other labels; pass its own labels file", labels, graph, report, listed_text)
        return
    if held and not _among(holder, files):  # the SavedModel vouches for itself only
        files, intermediate, rewritten = [holder], False, None
        mine = [holder] if _is_or_copies(graph, holder) else []
    if rewritten == _OTHER_BYTES:  # the default folder of intermediate graphs is shared by every run
        first = (own or mine)[0]
        warn("labels %s are not those of --graph %s: %s lists %s among the files its run wrote, but that run "
             "wrote other bytes there (another run, or a copy, has replaced it since); pass the labels file of "
             "the run that wrote it", labels, graph, report,
             "it" if _among(graph, [first]) else f"{first}, which --graph is a copy of,")
    elif rewritten:
        warn("labels %s: --graph %s is one of the intermediate graphs %s lists, but was written after it: "
             "if another run has written it since, these are not its labels", labels, graph, report)
    if rewritten:
        return
    if not files or intermediate or mine:
        return
    more = f" and {len(files) - 1} more file{'s' if len(files) > 2 else ''}" if len(files) > 1 else ""
    if not given:
        raise UsageError(f"no labels found for --graph {graph}: the default --labels {labels} are not surely its, "
                         f"as the {report} beside them says they are the labels of {files[0]}{more}; pass --labels "
                         "(the labels file retrain wrote with this model)")
    log.warning("labels %s: %s they are the labels of %s%s, not of --graph %s; if that is another model, pass "
                "its own labels file", labels, f"{SAVED_MODEL_LABELS} says" if held and files == [holder]
                else f"the {report.name} beside {'that SavedModel' if held else 'them'} says", files[0], more, graph)


_SAVED_MODEL_FILES = ("saved_model.pb", "variables/variables.index")  # a copy holds both (the index: its weights')


def _vouching_report(labels: Path, names: Sequence[str], model: Path) -> Path | None:
    """The retrain report beside a labels file (where a link to it leads) that names exactly these labels and
    does not list `model`: the file is another run's labels file, not a copy renamed or translated by hand, nor
    the labels of the run that wrote `model` (whose own were edited since: probe WW)."""
    report = report_path(Path(os.path.realpath(labels)))
    data = read_report(report)
    try:
        ours = any(_among(model, [file]) or all(_same_bytes(model / name, file / name) for name in _SAVED_MODEL_FILES)
                   for file in files_now(report, data["run"]))  # type: ignore[index]  # (a copy of it: probe XX)
    except (KeyError, TypeError, ValueError, RetrainError):
        ours = False
    return report if data is not None and data.get("labels") == list(names) and not ours else None


def _among(path: Path, files: Sequence[Path]) -> bool:
    """Whether `path` is one of `files` (the same file or folder, however spelt)."""
    for file in files:
        try:
            if os.path.samefile(path, file):
                return True
        except (OSError, ValueError):  # (a NUL byte in a path a report edited by hand lists: probe YY)
            continue
    return False


def _is_or_copies(graph: Path, file: Path) -> bool:
    """Whether the model at `graph` is `file` (however spelt) or a byte copy of it."""
    return _among(graph, [file]) or _same_bytes(graph, file)


def _same_bytes(path: Path, other: Path) -> bool:
    """Whether two regular files hold the same bytes (a model copied elsewhere with cp)."""
    try:
        if not (path.is_file() and other.is_file()) or path.stat().st_size != other.stat().st_size:
            return False
        return filecmp.cmp(path, other, shallow=False)
    except (OSError, ValueError):
        return False


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


def read_labels(path: Path) -> list[str]:
    """One label per line, in class-index order (a leading BOM and trailing blank lines ignored)."""
    try:
        text = read_bytes(path).decode("utf-8")
    except ImageError as error:
        raise RetrainError(f"cannot read the labels file {path}: {error}") from None
    except UnicodeDecodeError:
        raise RetrainError(f"the labels file {path} is not a UTF-8 text file; pass the one retrain wrote") from None
    labels = labels_of_text(text)
    if not labels:
        raise RetrainError(f"the labels file {path} is empty; expected one label per line")
    if "" in labels:
        raise RetrainError(f"the labels file {path} line {labels.index('') + 1} is blank; every line names one "
                           "label, in the model's order (pass the labels file retrain wrote)")
    return labels


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
        # [N, C] whatever the output's rank (classic graphs may give [N, 1, 1, C])
        scores = iter(np.asarray(model.predict(np.stack([x for _, x in good]))).reshape(len(good), -1) if good else [])
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


def top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k best (label, score) pairs, best first; ties keep class order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(labels[i], float(scores[i])) for i in order]


def thresholds_of(model: Model, labels_path: Path, count: int, *, graph: Path | None = None,
                  names: Sequence[str] = ()) -> np.ndarray | None:
    """A multi-label model's per-label thresholds: the model's own, else the file beside the labels (with a
    warning when the report that lists the model at `graph` records others for these `names`), else 0.5."""
    if not model.multi_label:
        return None
    if model.thresholds is not None and len(model.thresholds) == count:
        return model.thresholds
    path = thresholds_path(labels_path)
    if not path.exists():
        log.warning("multi-label model without thresholds (no %s beside the labels file): using 0.5 for every "
                    "label", path)
        return np.full(count, 0.5, np.float32)
    try:
        lines = [(number, line) for number, line in enumerate(read_bytes(path).decode("ascii").splitlines(), 1)
                 if line.strip()]
        values = np.array([float(line) for _, line in lines], np.float32)
    except (ImageError, UnicodeDecodeError, ValueError) as error:
        raise RetrainError(f"cannot read the thresholds {path} beside the labels file ({error}); expected one "
                           "number per line, as retrain writes") from None
    if len(values) != count:
        raise RetrainError(f"{path} holds {len(values)} thresholds for {_labels(count)}; pass the labels file "
                           "written with this model (its thresholds file sits beside it)")
    if not np.isfinite(values).all():
        raise RetrainError(f"{path} line {lines[int(np.argmin(np.isfinite(values)))][0]} is not a finite number; "
                           "retrain writes one finite number per line")
    recorded = _recorded_thresholds(graph, names) if graph is not None else None
    known = [(value, mine) for value, mine in zip(values, recorded or []) if mine is not None]  # (each label's:
    if known and not np.allclose(*np.array(known, np.float64).T, rtol=0, atol=1e-6):  # probes XX, YY)
        log.warning("the thresholds in %s are not those that the report listing --graph %s records for its labels "
                    "(%s): if they are another run's, its labels are chosen by them wrongly; pass the labels file "
                    "written with this model (its thresholds file sits beside it)", path, graph,
                    ", ".join("none" if value is None else f"{value:.4g}" for value in recorded or []))
    return values


def _recorded_thresholds(graph: Path, names: Sequence[str]) -> list[float | None] | None:
    """The per-label thresholds the report listing the model at `graph` (its bytes that run's) records, for these
    labels (None for a label it records none for); None when no such report lists the model."""
    found = _run_report(_model(graph))
    if found is None or found[2] is not None or found[1].get("labels") != list(names):
        return None
    classes = found[1].get("classes")
    return [_threshold(classes, name) for name in names]


def _threshold(classes: Any, name: str) -> float | None:
    try:
        return float(classes[name]["threshold"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _write_text(out: TextIO, record: dict[str, Any], *, header: bool, thresholded: bool) -> None:
    if header:  # one line whatever the name holds: a line break or other unprintable character is escaped
        image = record["image"]
        text = shown(image)  # bytes that are not UTF-8 as \x escapes
        out.write(f"==> {text if text.isprintable() else repr(text)} <==\n")
    for prediction in record["predictions"]:
        if thresholded and prediction["label"] not in record["labels"]:
            continue
        # str(np.float32) is what the classic label_image.py printed, e.g. "daisy 0.9273"
        out.write(f"{prediction['label']} {str(np.float32(prediction['score']))}\n")
    if thresholded and not record["labels"]:
        out.write("(no label at or above its threshold)\n")
    if header:
        out.write("\n")
    out.flush()


def records(config: LabelImageConfig, paths: Sequence[Path] | None = None) -> Iterator[dict[str, Any]]:
    """Classify every image: one record per image, in order, `{"image", "predictions"}` (best first,
    --top_k of them) or `{"image", "error"}` for an image that could not be decoded.
    `predictions` holds every label, unless --top_k is given, for --json and for a multi-label
    model (else the classic 5); for a multi-label model `labels` names those at or above their
    thresholds, best first.

    `paths` are the image files when the caller has collected them from config.images already.
    """
    config = check(config)
    _warn_if_written_half(config.graph, config.labels)
    paths = collect_images(config.images) if paths is None else paths
    labels = read_labels(config.labels)
    model = load_model(config.graph, input_layer=config.input_layer, output_layer=config.output_layer)
    log.info("%s %s: %s", model.kind, config.graph, model.description)
    if model.class_count is not None and model.class_count != len(labels):
        raise RetrainError(f"the labels file {config.labels} has {_labels(len(labels))} but --graph {config.graph} "
                           f"gives {model.class_count} scores per image; pass the labels file written with this model")
    _warn_if_another_models_labels(config.graph, config.labels, labels)
    prepare = preprocessing_for(model, config)
    thresholds = thresholds_of(model, config.labels, len(labels), graph=config.graph, names=labels)
    count = config.top_k or (len(labels) if model.multi_label or config.json else TOP_K)
    for result in classify(model, paths, prepare=prepare, batch_size=config.batch_size):
        if result.scores is None:
            yield {"image": str(result.path), "error": result.error}
            continue
        if result.scores.shape[-1] != len(labels):
            raise RetrainError(f"the labels file {config.labels} has {_labels(len(labels))} but --graph "
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
    for record in records(config, paths):
        if config.json:  # the array json.dump(indent=2) wrote, a record at a time: thousands of labels an image
            # kept every record until the end (1,000 images of 10,000 labels: 3 GB, and nothing printed for minutes)
            item = json.dumps(record, indent=2).replace("\n", "\n  ")
            out.write(f"{',' if printed else '['}\n  {item}")
            out.flush()
        printed += 1
        if "error" in record:
            failed.append(record)
            if several:
                log.warning("skipping --image %s: %s", record["image"], record["error"])
        elif not config.json:
            _write_text(out, record, header=several, thresholded="labels" in record and config.top_k is None)
    if config.json:
        out.write("\n]\n" if printed else "[]\n")
        out.flush()
    if failed and not several:
        raise RetrainError(f"cannot classify --image {failed[0]['image']}: {failed[0]['error']}")
    if failed:
        raise RetrainError(f"{len(failed)} of {printed} images could not be decoded and were skipped "
                           "(named in the warnings above)")
    return printed
