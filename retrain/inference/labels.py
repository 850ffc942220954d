"""Which labels name a model's scores, for `label-image`: the labels file (and a multi-label model's thresholds)
that retrain wrote with the model at --graph, found and checked by what retrain's reports record.

A report (`retrain.insight.report`) lists the files its run wrote, with the SHA-256 of each as written, and
the labels it wrote them with. A model is that run's when it is one of those files, or holds bytes that run
wrote (a copy, beside that report or below it); its labels file is that run's while it holds
the labels the report lists. Nothing else is guessed: without --labels, a UsageError says what is missing;
--labels that a report says are another model's get a warning (an error for a SavedModel, which holds its own).
"""

from __future__ import annotations

import filecmp
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.config import RetrainConfig
from retrain.errors import RetrainError, UsageError
from retrain.filekinds import classic_pair, file_sha256, head, is_saved_model_file, labels_of_text, read_report
from retrain.images import ImageError, read_bytes
from retrain.inference.readers import Model
from retrain.labels.multilabel import DEFAULT_THRESHOLD
from retrain.insight.report import among, files_now, labels_file_now, reports_at
from retrain.names import FINAL_TENSOR_NAME, SAVED_MODEL_LABELS, report_path, thresholds_path
from retrain.outputs import half_written

log = logging.getLogger(__name__)


def label_count(count: int) -> str:
    return f"{count} label" if count == 1 else f"{count} labels"


def warn_if_written_half(graph: Path, labels: Path) -> None:
    """A retrain run killed while it wrote its exports leaves the model half replaced until the next run writing
    there takes its writes back: say so, as the graph and labels may then belong to two models."""
    model = {os.path.abspath(graph), os.path.abspath(labels)}
    for pid, paths in half_written(dict.fromkeys([graph.parent, labels.parent])):
        if model & set(paths):
            log.warning("a retrain run (process %d) was killed while it replaced --graph %s or its labels %s: they "
                        "may belong to two models; the next retrain run writing there puts the earlier files back",
                        pid, graph, labels)


def _report_over(graph: Path) -> Path | None:
    """A retrain report that speaks for the model's folder, whether or not it lists the model: the one beside it
    (where a link to it leads first), else one above it whose run wrote files into that folder (its intermediate
    graphs' folder: probe XXX, an interrupted run's intermediate graph there, which no report lists, was given the
    classic default's labels, another model's, exit 0)."""
    beside = next((report for place in _places(graph) if read_report(report := report_path(place)) is not None), None)
    if beside is not None:
        return beside
    for place in _places(graph):
        for report in reports_at(place.parent)[1:]:
            data = read_report(report)
            try:
                listed = [*files_now(report, data["run"]), *files_now(report, data["run"], key="intermediate_graphs")]
            except (KeyError, TypeError, ValueError, RetrainError):
                continue
            if among(place.parent, [file.parent for file in listed]):
                return report
    return None


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
        # The report beside the classic default may describe the run that wrote this model, or a file it is a copy
        # of, with labels of its own elsewhere (`--output_labels /tmp/b_labels.txt`: probe OO); it vouches for
        # them wherever the model lies (probe ZZA: a default run's graph put in another run's folder).
        data = read_report(default := report_path(RetrainConfig.output_labels))
        copied = _copy_listed(graph, default, data)
        if copied is not None:
            return _its_own(graph, copied, default, data)
        beside = _report_over(graph)
        if beside is not None:  # neither its labels nor the classic default are surely this model's
            raise UsageError(f"--graph {graph} is not among the files of the run that {beside} describes (an "
                             "earlier run's model, or another's), so which labels are its cannot be told; pass "
                             "--labels (the labels file retrain wrote with it)")
        return RetrainConfig.output_labels
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
                    if among(graph, files_now(report, data["run"], key=key)):
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


def warn_if_another_models_labels(graph: Path, labels: Path, names: Sequence[str], *, given: bool = True) -> None:
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
    if own.is_file() and not among(labels, [own]):
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
    found = None if among(labels, [own]) else _run_report(graph)
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
                 if os.path.lexists(file) and not among(labels, [file])]
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
    if held and among(holder, files) and not vouched:
        warn("labels %s: the SavedModel %s holds other labels than its run's %s lists; if they were "
             "edited or replaced, its scores are named wrongly", labels, holder, report.name)
        return
    if not held and not vouched:  # no report vouches for these labels: only the class count can be checked,
        listed = _listed_as(graph, report, data)  # unless it says whose model this is
        if listed is not None:
            listed_text = "it" if among(graph, [listed]) else f"{listed}, which --graph is a copy of,"
            if not given:
                raise UsageError(f"no labels found for --graph {graph}: the default --labels {labels} are not its, "
                                 f"as the {report} beside them lists {listed_text} among the files of a run with "
                                 "other labels; pass --labels (the labels file retrain wrote with this model)")
            log.warning("labels %s are not those of --graph %s: the %s beside them lists %s among the files of a "
                        "run with other labels; pass its own labels file", labels, graph, report, listed_text)
        return
    if held and not among(holder, files):  # the SavedModel vouches for itself only
        files, intermediate, rewritten = [holder], False, None
        mine = [holder] if _is_or_copies(graph, holder) else []
    if rewritten == _OTHER_BYTES:  # the default folder of intermediate graphs is shared by every run
        first = (own or mine)[0]
        warn("labels %s are not those of --graph %s: %s lists %s among the files its run wrote, but that run "
             "wrote other bytes there (another run, or a copy, has replaced it since); pass the labels file of "
             "the run that wrote it", labels, graph, report,
             "it" if among(graph, [first]) else f"{first}, which --graph is a copy of,")
    elif rewritten:
        warn("labels %s: --graph %s is one of the intermediate graphs %s lists, but was written after it: "
             "if another run has written it since, these are not its labels", labels, graph, report)
    if rewritten:
        return
    if not files or intermediate or mine:
        return
    try:
        its = labels_file_now(report, data["run"])
    except (KeyError, TypeError, ValueError, RetrainError):
        its = None
    if given and not held and its is not None and os.path.lexists(its) and not among(labels, [its]):
        # Another file with the same lines as the report's labels file: said as such (probe CCC: the report was
        # said to name these; probe DDD: a backup copy given to another model needs the word all the same)
        files = [file for file in files if not among(file, [its])]  # (the model files it is the labels of)
        classic = classic_pair(labels, head(labels, 1 << 20), FINAL_TENSOR_NAME, reports=False)
        if files and not (classic is not None and among(graph, [classic])):  # (the classic script's pair: EEE)
            log.warning("labels %s hold the labels that the %s beside them names for %s%s (in %s), not for --graph "
                        "%s; if that is another model, pass its own labels file", labels, report.name, files[0],
                        _more(files), its.name, graph)
        return
    if not given:
        raise UsageError(f"no labels found for --graph {graph}: the default --labels {labels} are not surely its, "
                         f"as the {report} beside them says they are the labels of {files[0]}{_more(files)}; pass "
                         "--labels (the labels file retrain wrote with this model)")
    log.warning("labels %s: %s they are the labels of %s%s, not of --graph %s; if that is another model, pass "
                "its own labels file", labels, f"{SAVED_MODEL_LABELS} says" if held and files == [holder]
                else f"the {report.name} beside {'that SavedModel' if held else 'them'} says", files[0],
                _more(files), graph)


def _more(files: Sequence[Path]) -> str:
    """' and N more file(s)' after the first of `files` is named."""
    return f" and {len(files) - 1} more file{'s' if len(files) > 2 else ''}" if len(files) > 1 else ""


_SAVED_MODEL_FILES = ("saved_model.pb", "variables/variables.index")  # a copy holds both (the index: its weights')


def _vouching_report(labels: Path, names: Sequence[str], model: Path) -> Path | None:
    """The retrain report beside a labels file (where a link to it leads) that names exactly these labels and
    does not list `model`: the file is another run's labels file, not a copy renamed or translated by hand, nor
    the labels of the run that wrote `model` (whose own were edited since: probe WW)."""
    report = report_path(Path(os.path.realpath(labels)))
    data = read_report(report)
    try:
        ours = any(among(model, [file]) or all(_same_bytes(model / name, file / name) for name in _SAVED_MODEL_FILES)
                   for file in files_now(report, data["run"]))  # type: ignore[index]  # (a copy of it: probe XX)
    except (KeyError, TypeError, ValueError, RetrainError):
        ours = False
    return report if data is not None and data.get("labels") == list(names) and not ours else None


def _is_or_copies(graph: Path, file: Path) -> bool:
    """Whether the model at `graph` is `file` (however spelt) or a byte copy of it."""
    return among(graph, [file]) or _same_bytes(graph, file)


def _same_bytes(path: Path, other: Path) -> bool:
    """Whether two regular files hold the same bytes (a model copied elsewhere with cp)."""
    try:
        if not (path.is_file() and other.is_file()) or path.stat().st_size != other.stat().st_size:
            return False
        return filecmp.cmp(path, other, shallow=False)
    except (OSError, ValueError):
        return False


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


def thresholds_of(model: Model, labels_path: Path, count: int, *, graph: Path | None = None,
                  names: Sequence[str] = ()) -> np.ndarray | None:
    """A multi-label model's per-label thresholds: the model's own, else the file beside the labels (with a
    warning when the report that lists the model at `graph` records others for these `names`), else those that
    report records (a TFLite model moved with copies of its labels and report: probe ZZD), else 0.5."""
    if not model.multi_label:
        return None
    if model.thresholds is not None and len(model.thresholds) == count:
        return model.thresholds
    path = thresholds_path(labels_path)
    found = _run_report(_model(graph)) if graph is not None else None  # (read once for every question below)
    recorded = _recorded_thresholds(found, names)
    if not path.exists():
        if recorded and not _an_intermediate_graph(graph, found):
            # (probe ZZF: with one label's missing, every label was judged at 0.5, unsaid)
            unrecorded = [name for name, value in zip(names, recorded) if value is None]
            those = f"; it records none for {', '.join(map(repr, unrecorded))}: {DEFAULT_THRESHOLD:g} for those"
            (log.warning if unrecorded else log.info)(
                "thresholds from %s, the report of the run that wrote --graph %s (no %s beside the labels file)%s",
                found[0], graph, path, those if unrecorded else "")
            return np.array([DEFAULT_THRESHOLD if value is None else value for value in recorded], np.float32)
        log.warning("multi-label model without thresholds (no %s beside the labels file): using %g for every "
                    "label", path, DEFAULT_THRESHOLD)
        return np.full(count, DEFAULT_THRESHOLD, np.float32)
    try:
        lines = [(number, line) for number, line in enumerate(read_bytes(path).decode("ascii").splitlines(), 1)
                 if line.strip()]
        values = np.array([float(line) for _, line in lines], np.float32)
    except (ImageError, UnicodeDecodeError, ValueError) as error:
        raise RetrainError(f"cannot read the thresholds {path} beside the labels file ({error}); expected one "
                           "number per line, as retrain writes") from None
    if len(values) != count:
        raise RetrainError(f"{path} holds {len(values)} thresholds for {label_count(count)}; pass the labels file "
                           "written with this model (its thresholds file sits beside it)")
    if not np.isfinite(values).all():
        raise RetrainError(f"{path} line {lines[int(np.argmin(np.isfinite(values)))][0]} is not a finite number; "
                           "retrain writes one finite number per line")
    known = [(value, mine) for value, mine in zip(values, recorded or []) if mine is not None]  # (each label's:
    if graph is not None and (_an_intermediate_graph(graph, found) or _its_intermediate_graph(graph, path)):
        log.warning("the thresholds in %s were chosen on validation for the final model of the run that wrote "
                    "--graph %s, one of its intermediate graphs, which has none of its own: its labels are chosen by "
                    "another model's thresholds", path, graph)
    elif known and not np.allclose(*np.array(known, np.float64).T, rtol=0, atol=1e-6):  # probes XX, YY)
        log.warning("the thresholds in %s are not those that the report listing --graph %s records for its labels "
                    "(%s): if they are another run's, its labels are chosen by them wrongly; pass the labels file "
                    "written with this model (its thresholds file sits beside it)", path, graph,
                    ", ".join("none" if value is None else f"{value:.4g}" for value in recorded or []))
    return values


def run_final_tensor_name(graph: Path) -> str | None:
    """The --final_tensor_name of the run whose report lists the model at `graph` (its bytes that run's)."""
    found = _run_report(_model(graph))
    try:
        name = found[1]["run"]["flags"]["final_tensor_name"] if found is not None and found[2] is None else None
    except (KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _an_intermediate_graph(graph: Path, found: tuple[Path, dict[str, Any], str | None] | None) -> bool:
    """Whether the report that lists the model at `graph` (`found`: `_run_report`) lists it among its run's
    intermediate graphs."""
    try:
        return found is not None and among(graph, files_now(found[0], found[1]["run"], key="intermediate_graphs"))
    except (KeyError, TypeError):
        return False


def _its_intermediate_graph(graph: Path, thresholds: Path) -> bool:
    """Whether the model at `graph` holds the bytes of one of the intermediate graphs of the run whose report
    sits beside `thresholds` (where a link to them leads), and of none of its other files: a copy of one, or
    one in a folder of its own, given these thresholds' labels (probe OOO: no warning)."""
    data = read_report(report_path(Path(os.path.realpath(thresholds))))
    run = data.get("run") if isinstance(data, dict) else None
    files, intermediate = (run.get(_DIGESTS_OF[key]) if isinstance(run, dict) else None
                           for key in ("files", "intermediate_graphs"))
    if not isinstance(intermediate, list) or not graph.is_file():
        return False
    digest = _sha256(graph)
    return bool(digest) and digest in intermediate and not (isinstance(files, list) and digest in files)


def _recorded_thresholds(found: tuple[Path, dict[str, Any], str | None] | None,
                         names: Sequence[str]) -> list[float | None] | None:
    """The per-label thresholds the report listing the model (`found`: `_run_report`; its bytes that run's)
    records, for these labels (None for a label it records none for); None when no such report lists the model."""
    if found is None or found[2] is not None or found[1].get("labels") != list(names):
        return None
    classes = found[1].get("classes")
    return [_threshold(classes, name) for name in names]


def _threshold(classes: Any, name: str) -> float | None:
    """The threshold a report records for label `name`; None for none, or for one that is not a finite number (probe
    ZZH: a NaN there, taken as it was, dropped its label)."""
    try:
        value = float(classes[name]["threshold"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) else None
