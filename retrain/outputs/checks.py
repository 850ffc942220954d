"""The checks before any work that a run's outputs can be written: not over its input files, into writable
folders, and replacing only what retrain wrote there (`check_replaceable_files`, `check_replaceable_folder`,
the markers in the folders it wrote); and, as the run writes, the checks again (`judge_again`,
`check_still_outside`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import mmap
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain import filekinds, mounts
from retrain.errors import RetrainError, UsageError
from retrain.names import NODE_NAME, OWNER_MARKER
from retrain.outputs.declared import (INPUTS, TREES, Output, a_folder_in_the_way, entry_of, in_a_view, is_inside,
                                      device_inode, Region, region_of, real)


def check_outside_exports(outputs: Sequence[Output]) -> None:
    """Refuse an output inside a folder retrain wrote whole for a model (a SavedModel, a TF.js model: its
    marker says so) that this run does not replace: a checkpoint at `sm/variables/variables` replaced the
    SavedModel's weights, exit 0, as its index looks like the new layer's checkpoint (probe OO), and any other
    file written there makes the folder hold what its marker does not list, so its own run's rerun is refused.
    A SavedModel's folder without the marker (a copy `cp -r sm/* served/1/` leaves it out) is one all the same
    (probe SS: the checkpoint replaced such a copy's weights). The folders above the output as spelt count too:
    `served/1/variables` a link to the weights elsewhere (probe UU)."""
    for output in sorted(outputs, key=lambda o: bool(o.role)):  # named by a flag first
        path = real(output.path)
        spelt = Path(os.path.abspath(os.path.expanduser(output.path)))  # through a link to its variables: probe UU
        inside = ([path, spelt] if output.kind in ("entries", "tree") else []) + [*path.parents, *spelt.parents]
        for folder in dict.fromkeys(inside):
            marker = _read_marker(folder)
            if marker.get("written_by") == "retrain":
                model = {"--saved_model_dir": "a SavedModel", "--output_tfjs": "a TF.js model"}.get(
                    _written_for(marker), "a model")
                raise UsageError(f"{output.named()} lies inside {folder}, a folder retrain wrote whole for {model} "
                                 f"(its {OWNER_MARKER} says so; delete that file if the folder no longer holds that "
                                 f"model): its files are that model's, so choose a {output.flag} outside it")
            if (folder / "saved_model.pb").is_file():
                raise UsageError(f"{output.named()} lies inside {folder}, a SavedModel's folder (it holds "
                                 f"saved_model.pb): its files are that model's, so choose a {output.flag} outside it")


def check_input_files(outputs: Sequence[Output], files: Iterable[Path], *, flag: str, covered: Path | None,
                      walked: Iterable[Path] = ()) -> None:
    """Refuse an output that would overwrite one of many input files (the photos a run reads), or write into a
    folder the walk of `covered` entered through a link (`walked`: every folder it entered, the files' own and
    those with no image yet).

    Files inside `covered` (a tree already checked as an input, if any) are skipped cheaply; the others
    (reached through links, or named by a CSV anywhere on disk) are checked against the outputs that lie in or
    above their folder. Links are resolved and outputs sorted out once per folder, so millions of files cost
    seconds at most.
    """
    regions = [(output, region_of(output)) for output in outputs]
    root = str(real(covered)) + os.sep if covered is not None else None
    folders: dict[str, str] = {}
    linked: dict[Path, None] = {}  # folders outside `covered` that walking it reads, through links in it
    for folder in walked:
        if root is not None and not (str(real(folder)) + os.sep).startswith(root):
            linked.update(dict.fromkeys(_linked_folders(covered, folder, root)))
    near: dict[str, list] = {}  # per resolved folder, the regions that may cover a file in it (most: none)
    for path in files:
        parent = folders.get(str(path.parent))
        if parent is None:
            parent = folders.setdefault(str(path.parent), str(real(path.parent)) + os.sep)
        if root is not None and parent.startswith(root):
            continue
        if parent not in near:  # a region covers a file here only if it is this folder's file, it or above it
            near[parent] = [(output, region) for output, region in regions
                            if parent.startswith(_folder_text(region.path))
                            or _folder_text(region.path.parent) == parent]
        resolved = Path(parent + path.name)
        for output, region in near[parent]:
            if region.covers(resolved):
                raise UsageError(f"{output.named()} would overwrite {path}, an image that {flag} "
                                 f"names; choose a {output.flag} elsewhere")
    for folder in linked:  # a file written there would be read as a photo of that class by the next run
        for output, region in regions:
            if region.overlaps(Region(folder, "tree")):
                raise UsageError(f"{output.named()} would write into {folder}, which {flag} reads through a link or "
                                 f"a mount in it; choose a {output.flag} outside it")


def _folder_text(folder: Path) -> str:
    """A folder's path with one separator after it, as check_input_files compares them ('/' stays '/')."""
    return str(folder).rstrip(os.sep) + os.sep


def _linked_folders(tree: Path, folder: Path, root: str) -> Iterable[Path]:
    """The folders from `tree` down to `folder` (inside it as walked) that resolve outside the tree (`root`)."""
    try:
        parts = folder.relative_to(tree).parts
    except ValueError:
        return
    for depth in range(1, len(parts) + 1):
        resolved = real(tree.joinpath(*parts[:depth]))
        if not (str(resolved) + os.sep).startswith(root):
            yield resolved


# --------------------------------------------------------------------------- writability


def check_writable_file(path: Path, *, flag: str) -> None:
    """Fail before any work if `path` cannot be written (missing or read-only folder, a folder in the way)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; expected a file path")
    if not path.parent.is_dir():
        _check_not_a_broken_link(path.parent, flag=flag, shown=path)
        missing = "is a file, not a folder;" if path.parent.exists() else "does not exist; create it or"
        raise UsageError(f"{flag} {path}: folder {path.parent} {missing} choose another {flag}")
    _check_writable_dir(path.parent, flag=flag, shown=path)


def check_writable_dir(path: Path, *, flag: str) -> None:
    """Check that files can be written into `path`, or that it can be created (by what first writes into it).

    Nothing is created here: a run refused later (say, once its module has
    loaded) leaves no empty folder behind.
    """
    existing = _existing_folder(path, flag=flag)
    if not existing.is_dir():
        shown = path if existing == path else f"{path} (its parent {existing})"
        raise UsageError(f"{flag} {shown} is {_not_a_folder(existing)}; expected a folder")
    _check_writable_dir(existing, flag=flag, shown=path)


def _not_a_folder(path: Path) -> str:
    """What stands where a folder was expected: a file, or a device or pipe (`--bottleneck_dir /dev/null`)."""
    return "a file" if path.is_file() else "a device or a pipe"


def _check_not_a_broken_link(path: Path, *, flag: str, shown: Path | None = None) -> None:
    """A folder output's path may be a link to a folder, written through; a link to nothing is said up front."""
    if path.is_symlink() and not path.exists():
        where = f"{flag} {path}" if shown in (None, path) else f"{flag} {shown}: {path}"
        raise UsageError(f"{where} is a broken link (to {os.readlink(path)}); create its target or "
                         f"choose another {flag}")


def _existing_folder(path: Path, *, flag: str, shown: Path | None = None) -> Path:
    """The deepest of `path` and its parents that exists, where the folders the run creates will go; a link to
    nothing on the way is said up front (the folders could not be created under it)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        _check_not_a_broken_link(existing, flag=flag, shown=shown or path)
        existing = existing.parent
    return existing


def check_replaceable_folder(path: Path, *, flag: str) -> None:
    """A folder output may replace nothing, an empty folder, or exactly what retrain wrote there before."""
    _check_not_a_broken_link(path, flag=flag)
    if path.exists():
        check_replaceable_contents(path, flag=flag)
    _check_writable_dir(_existing_folder(path.parent, flag=flag, shown=path), flag=flag, shown=path)


def check_replaceable_contents(path: Path, *, flag: str) -> None:
    """An existing folder output is a folder retrain may swap out whole: empty, or exactly what it wrote there."""
    if not path.is_dir():
        raise UsageError(f"{flag} {path} is {_not_a_folder(path)}; expected a folder")
    mount_point = mounts.is_mount_point(os.path.realpath(path))  # (a bind mount too: probe III)
    if is_inside(real(Path.cwd()), real(path)) or mount_point:
        where = "a mount point" if mount_point else "the current folder or holds it"
        raise UsageError(f"{flag} {path} is {where}; retrain replaces that folder whole, so give a new "
                         f"sub-folder, such as {path / 'model'}")
    marker = _read_marker(path)
    foreign, changed = _foreign_entries(path, marker)
    if foreign or changed:
        what = (f"files retrain did not write there (e.g. {foreign[0]})" if foreign
                else f"files changed since retrain wrote them (e.g. {changed[0]})")
        raise UsageError(f"{flag} {path} exists and holds {what}; choose an empty or new folder")
    other = _written_for(marker)
    if other not in ("", flag):
        raise UsageError(f"{flag} {path} holds what retrain wrote for {other}, another kind of model; "
                         f"choose another folder for {flag}")


# What file managers leave in any folder they show (Finder, Explorer): not the user's work. (So is Finder's
# `._NAME` beside a file NAME on a non-Mac disk: `_clutter`.)
_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _read_marker(folder: Path) -> dict[str, Any]:
    """The marker retrain leaves in a folder it wrote, parsed ({} when there is none or it is not an object)."""
    try:
        if not (folder / OWNER_MARKER).is_file():  # a pipe there is never waited on
            return {}
        marker = json.loads((folder / OWNER_MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return marker if isinstance(marker, dict) else {}


def written_for(path: Path) -> str | None:
    """The flag a folder retrain wrote was written for (`--saved_model_dir`, `--output_tfjs`), from its marker."""
    flag = _read_marker(path).get("flag") if path.is_dir() else None
    return flag if isinstance(flag, str) else None


def _foreign_entries(folder: Path, marker: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Entries of `folder` its marker does not list (all when there is none), and listed files since changed.

    Markers written before retrain recorded hashes list names only; their files count as unchanged.
    """
    present = sorted(listing_of(folder))
    if not present:
        return [], []
    try:
        listed = set(marker["files"]) if marker.get("written_by") == "retrain" else set()
        hashes = (marker.get("sha256") or {}) if listed else {}
    except (TypeError, KeyError):
        listed, hashes = set(), {}
    foreign = [name for name in present if name not in listed and name != OWNER_MARKER and not _clutter(name, listed)]
    changed = [name for name in present if name in hashes and sha256_of(folder / name) != hashes[name]]
    return foreign, changed


def _clutter(name: str, listed: set[str]) -> bool:
    """What a file manager left: its index files, or the `._NAME` companion of a file NAME retrain wrote."""
    path = Path(name)
    if path.name in _CLUTTER:
        return True
    return path.name.startswith("._") and (path.parent / path.name[2:]).as_posix() in listed


def _written_for(marker: dict[str, Any]) -> str:
    """The flag whose output a folder's marker says retrain wrote there ('' if unknown). Markers from before the
    flag was recorded tell by the files: a SavedModel has saved_model.pb, a TF.js model model.json."""
    try:
        files = set(marker["files"])
    except (TypeError, KeyError):
        return ""
    if isinstance(marker.get("flag"), str):
        return marker["flag"]
    return "--saved_model_dir" if "saved_model.pb" in files else "--output_tfjs" if "model.json" in files else ""


def sha256_of(path: Path) -> str:
    """The file's SHA-256 ('' for a link or anything else that is not a regular file)."""
    if path.is_symlink() or not path.is_file():
        return ""
    return filekinds.file_sha256(path)


def listing_of(folder: Path) -> list[str]:
    """Every file, link and empty folder under `folder`, as relative POSIX paths."""
    names = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath).relative_to(folder)
        names += [(base / name).as_posix() for name in filenames]
        names += [(base / name).as_posix() for name in dirnames
                  if os.path.islink(os.path.join(dirpath, name)) or not os.listdir(os.path.join(dirpath, name))]
    return names


# --------------------------------------------------------------------------- what an existing file is


# What retrain writes in a file output (Output.content): how messages call it, and how to recognise one
# (from its bytes: filekinds).
CONTENTS: dict[str, tuple[str, Callable[[Any, "Output"], bool]]] = {
    "graph": ("a frozen graph retrain wrote",
              lambda data, output: filekinds.is_retrain_graph(data, output.detail, output.path,
                                                                output.report)),
    "tflite": ("a TFLite model retrain wrote", lambda data, _: filekinds.is_retrain_tflite(data)),
    "labels": ("a labels file retrain can tell it wrote",
               lambda data, output: filekinds.is_labels(data, output.path) or _replaced_with_its_graph(data, output)),
    "thresholds": ("a thresholds file", lambda data, _: filekinds.is_numbers(data)),
    "report": ("a retrain report", lambda data, _: filekinds.is_report(data)),
    "checkpoint": ("a checkpoint of the new layer", lambda data, _: filekinds.is_checkpoint_index(data)),
}


def _replaced_with_its_graph(data: Any, output: Output) -> bool:
    """A labels file the classic retrain.py wrote (`filekinds.classic_pair`) beside the graph this run replaces
    with it (`output.graph`, --output_graph): the two go together."""
    graph = filekinds.classic_pair(output.path, data, output.detail)
    return graph is not None and output.graph is not None and real(graph) == real(output.graph)  # (however spelt)


def check_replaceable_files(outputs: Sequence[Output], *,
                            unchanged: Mapping[Path, Sequence[bytes]] | None = None) -> None:
    """Refuse, before any work, a file output that would replace something retrain does not write there.

    An existing folder in the way is refused too (for the files no flag names, such as report.json), and
    so is anything that is not a regular file (a device such as /dev/null, a pipe): a write renames a new
    file over the path. An empty file may be replaced, and so may a file that already holds what the run
    writes there (`unchanged`: path -> the contents that count as such); a file of another kind (a photo at
    --output_graph, notes at --output_tflite, a report.json retrain did not write) is not. For an "entries"
    output, every existing entry is checked (intermediate graphs; a checkpoint's files, by its index).
    What it records for atomic_write is this run's: an earlier run's in the same process is forgotten.
    """
    _JUDGED.clear()
    _ENTRIES.clear()
    DIGESTS.clear()
    for output in outputs:
        if output.kind == "file":
            _judge(output, output.path, same=(unchanged or {}).get(output.path, ()))
        elif output.kind == "entries" and output.content:
            _ENTRIES.setdefault(real(output.path), []).append(output)  # entries that appear later are judged too
            if output.path.is_dir():
                pattern = re.compile(output.pattern)
                for entry in sorted(output.path.iterdir()):
                    if pattern.fullmatch(entry.name) and output.writes_entry(entry.name):
                        _judge(output, entry)


def _judge(output: Output, path: Path, *, same: Sequence[bytes] = ()) -> None:
    """Check the file at `path`, and record what it was, for atomic_write to notice a change (`_JUDGED`)."""
    identity = identity_of(path)
    _check_replaceable(output, path, same=same)
    _JUDGED[real(path)] = (output, identity)


# The file outputs judged by check_replaceable_files (real path -> the output, and what lstat said of the file
# then, None if there was none). A run takes minutes: atomic_write judges a file again if it appeared or changed
# meanwhile, and records each file it writes, so its own later writes are not taken for someone else's.
_JUDGED: dict[Path, tuple[Output, tuple[int, ...] | None]] = {}
# The "entries" outputs judged (real folder -> outputs): an entry no one had made when the run was checked, such
# as intermediate_40.pb or the checkpoint's index, is judged as it is written, as a file that was not there.
_ENTRIES: dict[Path, list[Output]] = {}
# The SHA-256 of each file written with atomic_write_bytes(digest=True), by real path (written_sha256).
DIGESTS: dict[Path, str] = {}  # this run's (check_replaceable_files forgets an earlier run's in the process)


def identity_of(path: Path) -> tuple[int, ...] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def judge_again(path: Path, *, same: Sequence[bytes] = ()) -> None:
    """Refuse to replace a judged file output that someone changed, or put there, while the run went on (unless
    it now holds retrain's kind of file, or exactly what is about to be written: `same`)."""
    judged = _JUDGED.get(real(path))
    if judged is None:
        entries = [o for o in _ENTRIES.get(real(path.parent), ()) if re.fullmatch(o.pattern, path.name)]
        judged = (entries[0], None) if entries else None
    if judged is None or identity_of(path) == judged[1]:
        return
    try:
        _check_replaceable(judged[0], path, same=same)
    except UsageError as error:
        raise RetrainError(f"{error} (it appeared or changed while the run went on, written by another program or "
                           "another run, so retrain did not replace it)") from None


def check_still_outside(path: Path, *, flag: str) -> None:
    """RetrainError when the output at `path` now lies inside a tree the run reads (probe GGG: the output folder
    replaced by a link into the image tree after the run's checks put the model's files among the photos)."""
    if not INPUTS:
        return
    mounts.reset()  # (a bind mount made over the output folder during the run: probe OOO)
    region = Region(path, "file")
    region.path = entry_of(path)  # (a write replaces a link, not the file it leads to: as check_clashes judged)
    moved = None  # the tree itself moved (`mv photos out`, `mount --move`) to a folder on the output's way (QQQ)
    folder = os.path.realpath(path.parent)
    while moved is None:
        with contextlib.suppress(OSError):
            moved = TREES.get(device_inode(folder))
        if os.path.dirname(folder) == folder:
            break
        folder = os.path.dirname(folder)
    for item in INPUTS:
        if item is moved or region_of(item).overlaps(region) or in_a_view(path, item.path):
            raise RetrainError(f"{flag} {path} now lies inside {item.flag} {item.path}, which the run reads (a "
                               "folder on its way was moved, replaced by a link or mounted over while the run went "
                               "on); nothing was written there")


def record_written(path: Path) -> None:
    """Record what the file a run has just written at an output path is, so its own later writes pass."""
    judged = _JUDGED.get(real(path))
    if judged is not None:
        _JUDGED[real(path)] = (judged[0], identity_of(path))


def _check_replaceable(output: Output, path: Path, *, same: Sequence[bytes] = ()) -> None:
    shown = (dataclasses.replace(output, path=path, given=None).named() if output.kind == "file" or output.given
             else f"{path} (in {output.flag} {output.path})")  # an entry: intermediate_40.pb, say
    if not path.exists():
        return
    if path.is_dir():
        raise a_folder_in_the_way(shown, output.flag)
    if not path.is_file():
        raise UsageError(f"{shown} is not a regular file (a device or a pipe); retrain writes a new file "
                         f"there, so choose a file path for {output.flag}")
    # A file mounted there (probe III: bound over a file, the rename failed after training).
    if mounts.is_mount_point(os.path.join(os.path.realpath(path.parent), path.name)):
        raise UsageError(f"{shown} is a mount point (a file mounted there); retrain writes a new file and renames it "
                         f"there, which a mount point refuses, so choose another path for {output.flag}")
    if not output.content or path.stat().st_size == 0:
        return
    what, recognise = CONTENTS[output.content]
    checked = path
    if output.content == "checkpoint" and not path.name.endswith(".index"):  # a data file: judged by its index
        checked = path.with_name(path.name.split(".data-")[0] + ".index")
        if not checked.is_file():
            raise UsageError(f"{shown} exists beside no checkpoint index, so retrain did not write it; move the "
                             f"file or choose another {output.flag}")
    with open(checked, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if filekinds.is_one_of(data, same) or recognise(data, dataclasses.replace(output, path=checked)):
            return
        looks = filekinds.looks_like(data)
        scores = filekinds.score_nodes(data) if output.content == "graph" else []
    judged = f"it is {looks}" if checked == path else f"its index {checked.name} is {looks}"
    hint = _labels_hint(output, path) if looks == "a text file" else ""  # a photo is no one's labels
    if len(scores) == 1 and NODE_NAME.fullmatch(scores[0]):  # perhaps retrain's, with a --final_tensor_name
        what = "a frozen graph retrain can tell it wrote"
        judged = (f"its output node is {scores[0]!r}, and no retrain report beside it or beside this run's "
                  "labels records its bytes")
        hint = f" (if retrain wrote it with --final_tensor_name {scores[0]}, give that flag again)"
    raise UsageError(f"{shown} exists and is not {what} ({judged}); retrain replaces only such a file "
                     f"there: move the file or choose another {output.flag}{hint}")


def _labels_hint(output: Output, path: Path) -> str:
    """For a labels file, what would vouch for it: the retrain report beside it, when it lists its labels. Its
    report gone (deleted, or the file copied without it: probe TT), or one listing other labels (another
    model's, two models sharing a folder): retrain may well have written the file, so say what is missing."""
    if output.content != "labels":
        return ""
    graph = filekinds.classic_pair(path, filekinds.head(path, 1 << 20), output.detail)
    if graph is not None:  # (probe DDD: it was called a file retrain cannot tell it wrote, and no more)
        return (f" (it is the classic retrain.py's labels file of {graph} beside it, which this run does not "
                f"replace: give --output_graph {graph} too to replace both, or move both away)")
    report = filekinds.labels_report(path)  # the one is_labels judged by
    if filekinds.read_report(report) is None:
        return (f" (no {report.name} beside it says which labels retrain wrote there; if it is an earlier model's "
                "labels file, delete it or move it with that model's files)")
    return (f" (the {report} beside it lists other labels, so it cannot vouch for this file: if retrain wrote it "
            "for another model in that folder, give each model its own folder)")


def _check_writable_dir(directory: Path, *, flag: str, shown: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {shown}: cannot write in {directory} ({error.strerror}); "
                         f"choose another {flag}") from None
