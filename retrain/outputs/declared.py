"""The paths a run writes and reads (`Output`, `Input`), what each covers on disk, and the checks of them
against each other and against the inputs before any work (`check_clashes`)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain import mounts
from retrain.errors import UsageError


@dataclass(frozen=True)
class Output:
    """A path a run writes.

    kind: "file" (one file, replaced atomically), "folder" (a folder replaced whole, only
    when it is ours or empty), "tree" (a folder the run adds into and owns, such as a new
    TensorBoard run folder), or "entries" (the entries of folder `path` whose names match
    `pattern`, e.g. the cache's key folders or intermediate_<step>.pb files).
    """

    flag: str
    path: Path
    kind: str = "file"
    pattern: str = ""
    content: str = ""  # a file's kind (a key of CONTENTS): an existing file is replaced only if it holds that
    detail: str = ""  # what recognising that kind needs beyond the bytes: a graph's final node name
    report: Path | None = None  # and the report beside this run's labels, which may list a graph an earlier run wrote
    graph: Path | None = None  # a labels file's: the frozen graph the run writes with it (`detail`: its final node)
    role: str = ""  # what a file no flag names is, e.g. "the report beside --output_labels"
    given: Path | None = None  # the flag's value when `path` is not it (the checkpoint prefix's folder)
    exclusive: bool = True  # held against other runs while the run goes on (hold_outputs); not where runs share
    # Of an "entries" output's names, those this run may write, when not all (the steps of intermediate graphs it
    # stores): only existing entries of those names are judged before any work (check_replaceable_files).
    writes_name: Callable[[str], bool] | None = None

    def writes_entry(self, name: str) -> bool:
        """Whether the run may write the entry `name` of this "entries" output (`writes_name`)."""
        return self.writes_name is None or self.writes_name(name)

    def named(self) -> str:
        """How messages name this output: its flag and the value given, or its path and role."""
        return f"{self.path} ({self.role})" if self.role else f"{self.flag} {self.given or self.path}"


@dataclass(frozen=True)
class Input:
    """A path a run reads: a "tree" (image folder, module folder) or a "file" (labels CSV, a linked photo)."""

    flag: str
    path: Path
    kind: str = "tree"


def real(path: Path) -> Path:
    """The path with links resolved, as far as it exists (what a write would really touch), spelt through one
    chosen mount of its file system (`mounts.canonical`: a bind mount shows a place at a second path: probe GGG).
    For comparing places; a write goes where the user spelt it."""
    return Path(mounts.canonical(os.path.realpath(os.path.expanduser(path))))


def is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class Region:
    """What a path covers on disk, for overlap tests: one file, a whole tree, or matching entries of a folder."""

    def __init__(self, path: Path, kind: str, pattern: str = "") -> None:
        self.path = real(path)
        self.tree = kind in ("folder", "tree")
        self.pattern = re.compile(pattern) if kind == "entries" else None

    def covers(self, path: Path) -> bool:
        """Whether `path` (resolved) lies in this region."""
        if self.pattern is not None:
            if not is_inside(path, self.path) or path == self.path:
                return False
            return bool(self.pattern.fullmatch(path.relative_to(self.path).parts[0]))
        return is_inside(path, self.path) if self.tree else path == self.path

    def overlaps(self, other: "Region") -> bool:
        if self.covers(other.path) or other.covers(self.path):
            return True
        # A tree that contains a whole entries-folder (or another tree) overlaps it.
        return (self.tree and is_inside(other.path, self.path)) or (other.tree and is_inside(self.path, other.path))


def region_kind(region: Region) -> str:
    return "entries" if region.pattern is not None else "tree" if region.tree else "file"


def region_of(item: Output | Input) -> Region:
    region = Region(item.path, item.kind, getattr(item, "pattern", ""))
    if isinstance(item, Output) and item.kind == "file":  # a write replaces a link, not the file it points to
        region.path = entry_of(item.path)
    return region


def check_clashes(outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
    """Refuse, with one line naming both flags, any output that overlaps an input or another output."""
    mounts.reset()  # this run's checks see the mounts as they are now
    INPUTS[:] = [item for item in inputs if item.kind == "tree"]
    TREES.clear()
    for item in INPUTS:
        with contextlib.suppress(OSError):
            TREES[device_inode(os.path.realpath(item.path))] = item
    for output in sorted(outputs, key=lambda o: bool(o.role)):  # named by a flag first
        made_up = _kernels_place(output.path)
        if made_up is not None:
            hint = " (to see it on stdout, write it to a file, then cat that)" if output.kind == "file" and \
                "/fd/" in made_up else ""
            raise UsageError(f"{output.named()} leads to {made_up}, which the kernel makes up (a process's open "
                             f"files, its settings), not a place for files; choose a path on a disk for "
                             f"{output.flag}{hint}")
    for item in [*outputs, *INPUTS]:
        if _in_another_view(item.path):
            named = item.named() if isinstance(item, Output) else f"{item.flag} {item.path}"
            raise UsageError(f"{named} leads into another view of the files than this process's, through a link the "
                             "kernel makes up (/proc/N/root or /proc/N/cwd of a process in another mount namespace, "
                             "such as a container's) or a current folder that a mount now covers, where its place "
                             "cannot be checked against the run's other files; give that place's path as this "
                             "system sees it")
    for output in outputs:  # said as it is, rather than as a clash with the outputs inside that folder
        if output.kind == "file" and not output.role and output.path.is_dir():
            raise a_folder_in_the_way(output.named(), output.flag)
    regions = [(output, region_of(output)) for output in outputs]
    for output, region in regions:
        for item in inputs:
            item_region = region_of(item)
            if not region.overlaps(item_region):
                continue
            if output.kind == "folder" and item_region.path != region.path and is_inside(item_region.path, region.path):
                new = os.path.join(output.path, "model")
                raise UsageError(f"{output.named()} holds {item.flag} {item.path}, which the run reads; retrain "
                                 f"replaces that folder whole, so give a new sub-folder, such as {new}")
            raise UsageError(f"{output.named()} would write into {item.flag} {item.path}, which "
                             f"the run reads; choose a {output.flag} outside it")
    for output in outputs:  # also as every overlay that holds them shows them (`mounts.views`: probe TTT)
        for item in INPUTS:
            if in_a_view(output.path, item.path):
                raise UsageError(f"{output.named()} would write into {item.flag} {item.path}, which the run reads; "
                                 f"choose a {output.flag} outside it")
    regions.sort(key=lambda pair: bool(pair[0].role))  # a clash named by the flags typed first (probe TT)
    for index, (output, region) in enumerate(regions):
        for other, other_region in regions[:index]:
            if region.overlaps(other_region):
                same = real(output.path) == real(other.path) and "entries" not in (output.kind, other.kind)
                first, second = (other, output) if output.role and not other.role else (output, other)
                raise UsageError(f"{first.named()} {'is also' if same else 'overlaps'} {second.named()}; "
                                 "give each output its own path")


# The trees the run reads (its images), as check_clashes was given them, and by their folders' device and inode:
# a write checks it is still outside them.
INPUTS: list[Input] = []
TREES: dict[tuple[int, int], Input] = {}


def in_a_view(path: Path, tree: Path) -> bool:
    """Whether some spelling of `path` lies in some spelling of `tree`, as the overlays that hold them show them
    (`mounts.views`; `real` follows one overlay only)."""
    paths, trees = (mounts.views(os.path.realpath(os.path.expanduser(p))) for p in (path, tree))
    return any(is_inside(Path(one), Path(other)) for one in paths for other in trees)


def _kernels_place(path: Path) -> str | None:
    """The place on a /proc file system that `path` leads to, through its folders' links and its own, or None.
    (Probe GGG: `--output_graph /dev/stdout`, a link to /proc/self/fd/1, which led to the empty file stdout went
    to, was taken for a link to a file and replaced by the graph: /dev/stdout became a regular file, exit 0; and
    `--saved_model_dir /proc/self` failed after training. Probe III: /proc mounted elsewhere too, and a link
    whose `..` follows a link; /proc/self/root/... leads to the disk, and is no such place. /sys refuses new
    files even to root, as any folder that cannot be written.)"""
    place = os.path.abspath(os.path.expanduser(path))
    for _ in range(40):  # (the system's own limit on links followed)
        place = os.path.join(os.path.realpath(os.path.dirname(place)), os.path.basename(place))
        if place == "/proc" or place.startswith("/proc/") or mounts.filesystem_type(place) == "proc":
            return place
        if not os.path.islink(place):
            return None
        # Not normalised: the next round resolves its folder as the kernel does, the links before any `..`.
        place = os.path.join(os.path.dirname(place), os.readlink(place))
    return None


def _in_another_view(path: Path) -> bool:
    """Whether `path`, as spelt, names another place than its real path does. Links the kernel makes up, such as
    /proc/N/root and /proc/N/cwd, read as a path of this process's view of the files and lead into that
    process's own: through /proc/N/root of a container, the checks judged a harmless folder of the host's and
    the model went into the container's view of the photos, exit 0 (probe OOO)."""
    if not os.path.isabs(os.path.expanduser(path)):
        with contextlib.suppress(OSError):  # (a deleted current folder is refused elsewhere)
            if not _same_folder(".", os.getcwd()):
                return True  # the current folder itself is another view's (entered through /proc/N/cwd: QQQ)
    spelt = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(spelt) and os.path.dirname(spelt) != spelt:
        spelt = os.path.dirname(spelt)
    return not _same_folder(spelt, os.path.realpath(spelt))


def _same_folder(one: str, other: str) -> bool:
    """Whether two paths name one file or folder (device and inode); False when either cannot be read."""
    try:
        return device_inode(one) == device_inode(other)
    except OSError:
        return False


def device_inode(path: str) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


def writes(outputs: Sequence[Output], path: Path) -> bool:
    """Whether one of `outputs` writes `path` (the file itself, or the folder or entry holding it). A file
    output that is a link is replaced by the new file (atomic_write) and the file it pointed to is left: it
    writes that link, and `path` if it is the link or a link to the link. Of an "entries" output that names
    the entries it writes (`writes_name`: the intermediate graphs of the steps it stores), those only."""
    target, entry = real(path), entry_of(path)
    return any(((region := region_of(output)).covers(target) or output.kind == "file" and region.covers(entry))
               and (output.kind != "entries" or output.writes_entry(target.relative_to(region.path).parts[0]))
               for output in outputs)


def entry_of(path: Path) -> Path:
    """The folder entry a rename onto `path` replaces: the links to its folder resolved, not a link it is."""
    path = Path(os.path.expanduser(path))
    return real(path.parent) / path.name


def a_folder_in_the_way(shown: str, flag: str) -> UsageError:
    return UsageError(f"{shown} is a folder; expected a file path (move the folder or choose another {flag})")
