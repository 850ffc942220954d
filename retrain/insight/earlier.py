"""The checks of a run against the earlier models beside its outputs, before any work.

Each model retrain wrote has its report.json beside its labels file, listing its
files (`retrain.insight.report`). A run that would replace part of such a model
and leave the rest (a graph whose labels then name its classes wrongly), replace
the classic retrain.py's graph without its labels, or write a report over
another model's, is refused or warned about here, from those reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from retrain.errors import UsageError
from retrain.filekinds import CLASSIC_PAIRS, classic_pair, head, is_labels, is_one_of, is_tflite, read_report
from retrain.insight import report as reports
from retrain.names import SAVED_MODEL_LABELS, report_path, thresholds_path
from retrain.objectives import is_multi_label
from retrain.outputs import real, written_for

log = logging.getLogger(__name__)


def warn_if_another_models_report(output_labels: Path) -> None:
    """A warning when report.json beside the labels is the report of a model with another labels file: one
    report per folder, so this run replaces it (it is retrain's own file, checked as such before)."""
    path = report_path(output_labels)
    try:
        earlier = read_report(path)["run"]["flags"]["output_labels"]
    except (KeyError, TypeError):
        return
    if Path(earlier).name != output_labels.name:  # it lies beside its labels: one of another name is another's
        log.warning("%s holds the report of the model whose labels are %s; this run replaces it, so label-image "
                    "will need --labels for that model's files, and later runs will not see them as its (give each "
                    "model its own folder to keep both reports)", path, earlier)


def check_earlier_models(folders: Sequence[Path], labels: Sequence[str], *, outputs: Sequence[Path],
                         rewritten: Callable[[Path], bool], thresholds: bool = False) -> None:
    """Refuse, before any work, to replace part of an earlier model's files and leave the rest beside them, when
    that model's labels differ from this run's: its labels given as this run's with its graph left in place
    (model A's labels for model B), its graph replaced with its labels left, or a rerun with new classes that
    drops --output_tflite. Each left a model whose scores other labels then named wrongly (label-image exits 0).
    The earlier models are those whose report.json sits in one of `folders` (where this run writes) or above
    one (`reports_at`: a model's graph in a sub-folder of its labels' folder); what each wrote is read from its
    report (`run.files`). `outputs`: the paths this run writes, for the hint about links. The same labels again
    are fine, but for an earlier multi-label model's TFLite files left when this run writes new `thresholds`
    beside its labels: a TFLite model reads its thresholds there (its other exports hold their own)."""
    for report in dict.fromkeys(report for folder in folders for report in reports.reports_at(folder)):
        try:
            data = read_report(report)
            earlier = data["labels"]
            same = list(earlier) == list(labels)
            if same and not (thresholds and is_multi_label(data.get("objective"))):
                continue
            files = reports.files_now(report, data["run"])
            graphs = reports.files_now(report, data["run"], key="intermediate_graphs")
            # A thresholds file means nothing beside a softmax model.
            thresholds_file = thresholds_path(reports.labels_file_now(report, data["run"]))
        except (ValueError, KeyError, TypeError):  # not a report of ours, or one edited by hand
            continue
        if same:
            left = [file for file in files if os.path.lexists(file) and not rewritten(file)
                    and is_tflite(head(file, 8))]  # whatever its name ends with (`model.lite`)
            if left and rewritten(thresholds_file):
                raise UsageError(f"this run writes new thresholds to {thresholds_file} but leaves the TFLite model "
                                 f"{_listed(left)} of the earlier model that {report} describes: a TFLite model "
                                 "reads its thresholds from that file, so it would name labels by this run's. Write "
                                 "--output_tflite there again in this run, move it, or choose other paths")
            continue
        present = [file for file in files if os.path.lexists(file) and file != thresholds_file]
        replaced = {file: rewritten(file) for file in present}
        touched = [file for file, yes in replaced.items() if yes]
        # Not at risk when left: a TF.js or SavedModel folder that holds its own labels (replaced, it is part of
        # that model lost while the rest stays, its report then listing another model's folder as its own).
        left = [file for file, yes in replaced.items() if not yes and not _holds_its_labels(file)]
        if touched and left:
            why = ("that model would lose it, and its report would list another model's as its own"
                   if all(map(_holds_its_labels, touched)) else
                   "with other labels they would not match, and that model would name its classes wrongly")
            raise UsageError(f"this run replaces {_listed(touched)} of the earlier model that {report} describes "
                             f"({len(earlier)} labels) but leaves its {_listed(left)}: {why}. Write those outputs "
                             f"again in this run, move them away with a copy of that model's labels file and "
                             f"{report.name} (label-image finds their labels there), or choose other paths"
                             f"{_links_hint(outputs, left)}")
        graphs_over = [graph for graph in graphs if os.path.lexists(graph) and rewritten(graph)]
        if graphs_over and not touched:  # that model stays, with its report listing these (probe SS)
            then = ("ask for --labels for them" if isinstance(data["run"].get("intermediate_sha256"), list) else
                    "name them by that model's labels, with a warning only (its report does not record their "
                    "bytes: an earlier version wrote it)")  # probe UU
            log.warning("this run writes over %s, intermediate graphs of the earlier model that %s describes (%d "
                        "labels): label-image will then %s (give each run its own --intermediate_output_graphs_dir "
                        "to keep both)", _listed(graphs_over), report, len(earlier), then)
        graphs_left = [graph for graph in graphs if os.path.lexists(graph) and not rewritten(graph)]
        if touched and graphs_left:  # snapshots, in a folder runs share by default: said, not refused
            log.warning("this run replaces %s of the earlier model that %s describes (%d labels) and leaves that "
                        "run's intermediate graphs %s: with their labels replaced, label-image asks which are "
                        "theirs; to keep them usable, move them with a copy of that model's labels file and %s",
                        _listed(touched), report, len(earlier), _listed(graphs_left), report.name)


def check_classic_labels_left(graph: Path, final: str, *, same: Sequence[bytes],
                              rewritten: Callable[[Path], bool]) -> None:
    """Refuse, before any work, to replace the classic retrain.py's graph and leave its labels file beside it
    (`filekinds.classic_pair`: no report says whose they are), unless they hold this run's labels (`same`: the
    contents that count as such). Probe CCC: `--output_labels /tmp/new_labels.txt` left the classic
    /tmp/output_labels.txt beside a graph of other classes, and label-image named a sunflower 'birds', exit 0."""
    partner = next((graph.with_name(name) for name, pair in CLASSIC_PAIRS.items() if pair == graph.name), None)
    if partner is None or rewritten(partner) or not rewritten(graph) or not partner.is_file():
        return
    data = head(partner, 1 << 20)
    found = classic_pair(partner, data, final, reports=False)  # (a report there may be stale or another's: EEE)
    if found is None or real(found) != real(graph) or is_one_of(data, same) or is_labels(data, partner):
        return  # (the labels a report there lists: check_earlier_models judges those by that report)
    raise UsageError(f"this run replaces {graph}, the classic retrain.py's graph whose labels are {partner} beside "
                     "it (no report.json there says otherwise), but writes its own labels elsewhere and leaves "
                     f"those: they would name this run's classes wrongly. Give --output_labels {partner} to write "
                     "them too, move both files away, or choose another --output_graph")


def _links_hint(outputs: Sequence[Path], left: Sequence[Path]) -> str:
    """Where an output is a link to a file left: a write replaces the link, not the file it points to."""
    links = [(path, file) for path in outputs for file in left if os.path.islink(path) and real(path) == real(file)]
    return "".join(f" ({path} is a link to {file}; a run replaces such a link with a new file, not the file it "
                   "points to: give that file's own path to write it)" for path, file in links[:1])


def _holds_its_labels(path: Path) -> bool:
    """A folder retrain wrote that is a whole model without the labels file beside it: TF.js (its labels.txt), or
    a SavedModel holding its labels (SAVED_MODEL_LABELS; those earlier versions wrote do not)."""
    flag = written_for(path)
    return flag == "--output_tfjs" or flag == "--saved_model_dir" and (path / SAVED_MODEL_LABELS).is_file()


def _listed(paths: Sequence[Path]) -> str:
    return ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
