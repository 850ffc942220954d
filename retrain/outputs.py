"""Every path a run writes: checked against each other and against the inputs before any work, then written safely.

Each exporter (and the cache, the summaries, the checkpoint) declares the paths
it will write as `Output`s; `check` compares every output with every other and
with every input (the image tree and the real targets of links inside it, the
module folders, the labels CSV) and refuses a clash with one line naming both
flags. An existing file is replaced only when it holds what retrain writes there
(a frozen graph at --output_graph, a TFLite model at --output_tflite, a retrain
report at report.json...: `check_replaceable_files`), and only by a complete new
file (temporary file, fsync, rename); a folder output (SavedModel, TF.js) is
replaced only when it is empty or holds exactly what retrain wrote there, file
for file and byte for byte, which a marker file inside it records; temporary
files that killed runs left beside an output are removed. A run's exports are
written as one set (`export_set`): if one fails, or the run is interrupted, the
files it had written are taken back and the earlier ones put back (those of a
killed process by the next run writing there, from its journal). From its
checks to its end a run holds its outputs against other runs on this machine
(`hold_outputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import filecmp
import glob
import hashlib
import itertools
import json
import logging
import mmap
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not held against each other
    fcntl = None

from retrain import __version__, filekinds, journal, mounts
from retrain.errors import STOP_SIGNALS, RetrainError, UsageError
from retrain.journal import HOST as _HOST
from retrain.names import NODE_NAME, OWNER_MARKER

log = logging.getLogger(__name__)

LOCK_ROOT = "/tmp"  # where runs on this machine find each other's locks (hold_outputs), whatever TMPDIR says


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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class _Region:
    """What a path covers on disk, for overlap tests: one file, a whole tree, or matching entries of a folder."""

    def __init__(self, path: Path, kind: str, pattern: str = "") -> None:
        self.path = real(path)
        self.tree = kind in ("folder", "tree")
        self.pattern = re.compile(pattern) if kind == "entries" else None

    def _covers(self, path: Path) -> bool:
        """Whether `path` (resolved) lies in this region."""
        if self.pattern is not None:
            if not _inside(path, self.path) or path == self.path:
                return False
            return bool(self.pattern.fullmatch(path.relative_to(self.path).parts[0]))
        return _inside(path, self.path) if self.tree else path == self.path

    def overlaps(self, other: "_Region") -> bool:
        if self._covers(other.path) or other._covers(self.path):
            return True
        # A tree that contains a whole entries-folder (or another tree) overlaps it.
        return (self.tree and _inside(other.path, self.path)) or (other.tree and _inside(self.path, other.path))


def _kind(region: _Region) -> str:
    return "entries" if region.pattern is not None else "tree" if region.tree else "file"


def _region(item: Output | Input) -> _Region:
    region = _Region(item.path, item.kind, getattr(item, "pattern", ""))
    if isinstance(item, Output) and item.kind == "file":  # a write replaces a link, not the file it points to
        region.path = _entry(item.path)
    return region


def check_clashes(outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
    """Refuse, with one line naming both flags, any output that overlaps an input or another output."""
    mounts.reset()  # this run's checks see the mounts as they are now
    _INPUTS[:] = [item for item in inputs if item.kind == "tree"]
    _TREES.clear()
    for item in _INPUTS:
        with contextlib.suppress(OSError):
            _TREES[_key(os.path.realpath(item.path))] = item
    for output in sorted(outputs, key=lambda o: bool(o.role)):  # named by a flag first
        made_up = _kernels_place(output.path)
        if made_up is not None:
            hint = " (to see it on stdout, write it to a file, then cat that)" if output.kind == "file" and \
                "/fd/" in made_up else ""
            raise UsageError(f"{output.named()} leads to {made_up}, which the kernel makes up (a process's open "
                             f"files, its settings), not a place for files; choose a path on a disk for "
                             f"{output.flag}{hint}")
    for item in [*outputs, *_INPUTS]:
        if _in_another_view(item.path):
            named = item.named() if isinstance(item, Output) else f"{item.flag} {item.path}"
            raise UsageError(f"{named} leads into another view of the files than this process's, through a link the "
                             "kernel makes up (/proc/N/root or /proc/N/cwd of a process in another mount namespace, "
                             "such as a container's) or a current folder that a mount now covers, where its place "
                             "cannot be checked against the run's other files; give that place's path as this "
                             "system sees it")
    for output in outputs:  # said as it is, rather than as a clash with the outputs inside that folder
        if output.kind == "file" and not output.role and output.path.is_dir():
            raise _a_folder_in_the_way(output.named(), output.flag)
    regions = [(output, _region(output)) for output in outputs]
    for output, region in regions:
        for item in inputs:
            item_region = _region(item)
            if not region.overlaps(item_region):
                continue
            if output.kind == "folder" and item_region.path != region.path and _inside(item_region.path, region.path):
                new = os.path.join(output.path, "model")
                raise UsageError(f"{output.named()} holds {item.flag} {item.path}, which the run reads; retrain "
                                 f"replaces that folder whole, so give a new sub-folder, such as {new}")
            raise UsageError(f"{output.named()} would write into {item.flag} {item.path}, which "
                             f"the run reads; choose a {output.flag} outside it")
    for output in outputs:  # also as every overlay that holds them shows them (`mounts.views`: probe TTT)
        for item in _INPUTS:
            if _in_a_view(output.path, item.path):
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


def _in_a_view(path: Path, tree: Path) -> bool:
    """Whether some spelling of `path` lies in some spelling of `tree`, as the overlays that hold them show them
    (`mounts.views`; `real` follows one overlay only)."""
    paths, trees = (mounts.views(os.path.realpath(os.path.expanduser(p))) for p in (path, tree))
    return any(_inside(Path(one), Path(other)) for one in paths for other in trees)


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
        return _key(one) == _key(other)
    except OSError:
        return False


def _key(path: str) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


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


def writes(outputs: Sequence[Output], path: Path) -> bool:
    """Whether one of `outputs` writes `path` (the file itself, or the folder or entry holding it). A file
    output that is a link is replaced by the new file (atomic_write) and the file it pointed to is left: it
    writes that link, and `path` if it is the link or a link to the link. Of an "entries" output that names
    the entries it writes (`writes_name`: the intermediate graphs of the steps it stores), those only."""
    target, entry = real(path), _entry(path)
    return any(((region := _region(output))._covers(target) or output.kind == "file" and region._covers(entry))
               and (output.kind != "entries" or output.writes_entry(target.relative_to(region.path).parts[0]))
               for output in outputs)


def _entry(path: Path) -> Path:
    """The folder entry a rename onto `path` replaces: the links to its folder resolved, not a link it is."""
    path = Path(os.path.expanduser(path))
    return real(path.parent) / path.name


def hold_outputs(outputs: Sequence[Output]) -> None:
    """Refuse a run that would write an output that another run on this machine is writing now: two runs with the
    same outputs (the classic /tmp defaults) would each pass the checks and then replace each other's files, one
    model's graph beside the other's labels. Each output is held until release_outputs, by an flock on a file
    named after its real path, in a folder of the user's under /tmp (whatever TMPDIR says: a scheduler's job has
    its own); the system lets go when the process ends, killed too. What runs share (the cache, the TensorBoard
    folder, the checkpoint) gets a lock file named after the process too, only to say where it writes
    (`_check_others`). Where no lock can be taken, a warning says so and the run goes on unheld."""
    _release_locks()
    folder = _lock_folder()
    if folder is None:
        return
    held: set[Path] = set()
    for output in sorted(outputs, key=lambda o: bool(o.role)):  # a clash is named by a flag first
        key = str(_region(output).path) + (f"\0{output.pattern}" if output.kind == "entries" else "")
        if not output.exclusive:  # shared with other runs: a lock file of this run's own, only to say where it writes
            key += f"\0shared\0{os.getpid()}"
        path = _lock_file(folder, key)
        if path not in held:
            held.add(path)
            if not _hold(path, output):
                return
    _check_others(folder, outputs)


def _check_others(folder: Path, outputs: Sequence[Output], *, most: int = 2000) -> None:
    """Look at the other lock files, once this run's own are held. Those no run holds are removed: killed runs'
    (a run removes its own as it lets go; a file is removed while locked, so a run that opened it meanwhile finds
    it gone once it locks it, and opens it again). A run with an output inside one that another run holds, or
    around it, is refused (a --summaries_dir inside a SavedModel folder that run replaces whole at its end; its
    --output_graph inside this run's; a SavedModel folder around another run's TensorBoard run folder or cache):
    each lock file says what it holds (`_hold`). Outputs runs share (the cache, TensorBoard's folder) do not clash
    with each other. Of two runs starting at once, at least one sees the other."""
    own = {path for _, path in _HELD}
    regions = [(output, _region(output)) for output in outputs]
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in itertools.islice(entries, most):
            if Path(entry.path) in own:
                continue
            try:
                fd = os.open(entry.path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a run going on
                held, holder = _held_region(fd), _holder(fd)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            finally:
                os.close(fd)
            if held is None:
                continue
            named, theirs, shared = held
            for output, region in regions:
                kinds = {_kind(region), _kind(theirs)}
                if kinds == {"entries", "file"} or (shared and not output.exclusive):  # an intermediate graph
                    continue  # there is not saved (held_elsewhere); runs share a cache and a TensorBoard folder
                if region.overlaps(theirs):
                    release_outputs()
                    around = _inside(theirs.path, region.path) and (
                        region.path != theirs.path or region.tree and not theirs.tree)  # a folder of their entries
                    where = "around" if around else "inside"
                    raise UsageError(f"another retrain run{holder} is writing {named} now, and this run's "
                                     f"{output.named()} lies {where} it: two runs would replace each other's files; "
                                     f"wait for it to end, or choose another path for {output.flag}")


def _lock_file(folder: Path, key: str) -> Path:
    """The lock file of an output: named after its real path (a file output's: the folder entry a write replaces)."""
    return folder / (hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".lock")


def held_elsewhere(path: Path) -> str | None:
    """' (process N)' (or '') when another run on this machine holds `path` as a file output of its own, else None:
    for a file a run writes among "entries" (an intermediate graph), which no lock of its own covers."""
    if not _HELD:
        return None  # this run is not held: nor can it tell
    lock = _lock_file(_HELD[0][1].parent, str(_entry(path)))
    if any(lock == own for _, own in _HELD):
        return None  # this run's own
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None  # no run holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)


def _hold(path: Path, output: Output) -> bool:
    """Lock one output's file (UsageError when another run holds it); False when locks cannot be had here."""
    for _ in range(5):  # a file another run removed between our open and our lock is opened again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            return _unheld(f"cannot create {path} ({error.strerror})")
        try:
            _lock_soon(fd)
        except OSError as error:
            holder, theirs = _holder(fd), _held_region(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _unheld(f"cannot lock {path} ({error.strerror})")
            release_outputs()
            other = f"another folder for {output.flag}" if output.role else f"another path for {output.flag}"
            named = output.named()
            if theirs is not None and theirs[0] != named:  # the same file, spelt otherwise (a link, a relative path)
                named = f"{theirs[0]}, which is this run's {named},"
            raise UsageError(f"another retrain run{holder} is writing {named} now: two runs would replace "
                             f"each other's files; wait for it to end, or choose {other}")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            _HELD.append((fd, path))
            region = _region(output)
            held = {"named": output.named(), "path": str(region.path), "kind": output.kind, "pattern": output.pattern,
                    "shared": not output.exclusive}
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n{json.dumps(held)}\n".encode("utf-8", "surrogateescape"))
            return True
        os.close(fd)
    return _unheld(f"{path} keeps being replaced")


def _lock_soon(fd: int) -> None:
    """flock(LOCK_EX) without waiting for a run, but past the moment another run's pruning or held_elsewhere
    holds the file to look at it (a few attempts, 50 ms apart)."""
    for attempt in range(3):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or attempt == 2:
                raise
            time.sleep(0.05)


def release_outputs() -> None:
    """Let go of the outputs hold_outputs held, removing their lock files (at the end of a run; a process's next
    run lets go first too), and of the trees the run read (`check_still_outside`)."""
    _INPUTS.clear()
    _TREES.clear()
    _release_locks()


def _release_locks() -> None:
    """A lock file is removed while still locked, so no run can lock it and then lose it."""
    while _HELD:
        fd, path = _HELD.pop()
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _forget_held() -> None:
    """In a process forked while a run goes on (a multiprocessing worker): close its copies of the lock files, so
    that the run's locks end with the run, not with the child."""
    while _HELD:
        with contextlib.suppress(OSError):
            os.close(_HELD.pop()[0])


# The lock files this process's run holds (hold_outputs): one run at a time in a process (the API's lock).
_HELD: list[tuple[int, Path]] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held)


def _lock_folder() -> Path | None:
    """The folder of this user's lock files, made private; None (with a warning) where there is none to be had."""
    if fcntl is None:  # Windows: no flock
        return None
    base = LOCK_ROOT if os.path.isdir(LOCK_ROOT) and os.access(LOCK_ROOT, os.W_OK) else tempfile.gettempdir()
    with contextlib.suppress(OSError):  # tempfile's last resort is the current folder: never the user's folder
        if base != LOCK_ROOT and os.path.samefile(base, os.curdir):
            return _unheld(f"neither {LOCK_ROOT} nor another temporary folder can be written") or None
    folder = Path(base) / f"retrain-locks-{os.getuid()}"
    try:
        with contextlib.suppress(FileExistsError):  # judged below, whatever is there
            folder.mkdir(mode=0o700)
        info = os.lstat(folder)
    except OSError as error:
        return _unheld(f"cannot create {folder} ({error.strerror})") or None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return _unheld(f"{folder} is not a folder of this user's") or None
    return folder


def _unheld(why: str) -> bool:
    log.warning("this run's outputs are not held against other runs on this machine: %s", why)
    return False


def _holder(fd: int) -> str:
    """' (process N)': the run holding a lock file writes its process id on its first line."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).partition(b"\n")[0])
        return f" (process {pid})"
    return ""


def _held_region(fd: int) -> tuple[str, _Region, bool] | None:
    """How a lock file's output is named, what it covers, and whether runs share it, from its second line
    (`_hold`); None if it does not say (written by an earlier version, or not yet)."""
    try:
        held = json.loads(os.pread(fd, 1 << 16, 0).split(b"\n")[1].decode("utf-8", "surrogateescape"))
        region = _Region(Path(held["path"]), held["kind"], held["pattern"])
        region.path = Path(held["path"])  # as it was held: a file output's link is not followed (`_region`)
        return str(held["named"]), region, held.get("shared") is True
    except (OSError, ValueError, IndexError, KeyError, TypeError, re.error):
        return None


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
    regions = [(output, _region(output)) for output in outputs]
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
            if region._covers(resolved):
                raise UsageError(f"{output.named()} would overwrite {path}, an image that {flag} "
                                 f"names; choose a {output.flag} elsewhere")
    for folder in linked:  # a file written there would be read as a photo of that class by the next run
        for output, region in regions:
            if region.overlaps(_Region(folder, "tree")):
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
        _check_replaceable_contents(path, flag=flag)
    _check_writable_dir(_existing_folder(path.parent, flag=flag, shown=path), flag=flag, shown=path)


def _check_replaceable_contents(path: Path, *, flag: str) -> None:
    """An existing folder output is a folder retrain may swap out whole: empty, or exactly what it wrote there."""
    if not path.is_dir():
        raise UsageError(f"{flag} {path} is {_not_a_folder(path)}; expected a folder")
    mount_point = mounts.is_mount_point(os.path.realpath(path))  # (a bind mount too: probe III)
    if _inside(real(Path.cwd()), real(path)) or mount_point:
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
    present = sorted(_listing(folder))
    if not present:
        return [], []
    try:
        listed = set(marker["files"]) if marker.get("written_by") == "retrain" else set()
        hashes = (marker.get("sha256") or {}) if listed else {}
    except (TypeError, KeyError):
        listed, hashes = set(), {}
    foreign = [name for name in present if name not in listed and name != OWNER_MARKER and not _clutter(name, listed)]
    changed = [name for name in present if name in hashes and _sha256(folder / name) != hashes[name]]
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


def _sha256(path: Path) -> str:
    """The file's SHA-256 ('' for a link or anything else that is not a regular file)."""
    if path.is_symlink() or not path.is_file():
        return ""
    return filekinds.file_sha256(path)


def _listing(folder: Path) -> list[str]:
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
    _DIGESTS.clear()
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
    identity = _identity(path)
    _check_replaceable(output, path, same=same)
    _JUDGED[real(path)] = (output, identity)


# The file outputs judged by check_replaceable_files (real path -> the output, and what lstat said of the file
# then, None if there was none). A run takes minutes: atomic_write judges a file again if it appeared or changed
# meanwhile, and records each file it writes, so its own later writes are not taken for someone else's.
_JUDGED: dict[Path, tuple[Output, tuple[int, ...] | None]] = {}
# The "entries" outputs judged (real folder -> outputs): an entry no one had made when the run was checked, such
# as intermediate_40.pb or the checkpoint's index, is judged as it is written, as a file that was not there.
_ENTRIES: dict[Path, list[Output]] = {}


def _identity(path: Path) -> tuple[int, ...] | None:
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
    if judged is None or _identity(path) == judged[1]:
        return
    try:
        _check_replaceable(judged[0], path, same=same)
    except UsageError as error:
        raise RetrainError(f"{error} (it appeared or changed while the run went on, written by another program or "
                           "another run, so retrain did not replace it)") from None


# The trees the run reads (its images), as check_clashes was given them, and by their folders' device and inode:
# a write checks it is still outside them.
_INPUTS: list[Input] = []
_TREES: dict[tuple[int, int], Input] = {}


def check_still_outside(path: Path, *, flag: str) -> None:
    """RetrainError when the output at `path` now lies inside a tree the run reads (probe GGG: the output folder
    replaced by a link into the image tree after the run's checks put the model's files among the photos)."""
    if not _INPUTS:
        return
    mounts.reset()  # (a bind mount made over the output folder during the run: probe OOO)
    region = _Region(path, "file")
    region.path = _entry(path)  # (a write replaces a link, not the file it leads to: as check_clashes judged)
    moved = None  # the tree itself moved (`mv photos out`, `mount --move`) to a folder on the output's way (QQQ)
    folder = os.path.realpath(path.parent)
    while moved is None:
        with contextlib.suppress(OSError):
            moved = _TREES.get(_key(folder))
        if os.path.dirname(folder) == folder:
            break
        folder = os.path.dirname(folder)
    for item in _INPUTS:
        if item is moved or _region(item).overlaps(region) or _in_a_view(path, item.path):
            raise RetrainError(f"{flag} {path} now lies inside {item.flag} {item.path}, which the run reads (a "
                               "folder on its way was moved, replaced by a link or mounted over while the run went "
                               "on); nothing was written there")


def record_written(path: Path) -> None:
    """Record what the file a run has just written at an output path is, so its own later writes pass."""
    judged = _JUDGED.get(real(path))
    if judged is not None:
        _JUDGED[real(path)] = (judged[0], _identity(path))


def _check_replaceable(output: Output, path: Path, *, same: Sequence[bytes] = ()) -> None:
    shown = (dataclasses.replace(output, path=path, given=None).named() if output.kind == "file" or output.given
             else f"{path} (in {output.flag} {output.path})")  # an entry: intermediate_40.pb, say
    if not path.exists():
        return
    if path.is_dir():
        raise _a_folder_in_the_way(shown, output.flag)
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


def _a_folder_in_the_way(shown: str, flag: str) -> UsageError:
    return UsageError(f"{shown} is a folder; expected a file path (move the folder or choose another {flag})")


def _check_writable_dir(directory: Path, *, flag: str, shown: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {shown}: cannot write in {directory} ({error.strerror}); "
                         f"choose another {flag}") from None


# --------------------------------------------------------------------------- writing


def temp_prefix(name: str) -> str:
    """The start of the name of a temporary entry beside output `name`: it records host and process."""
    return f".{name}.retrain-{_HOST}-{os.getpid()}-"


def _temp_owner_gone(name: str, entry: Path) -> bool:
    """Whether a temporary entry beside output `name` was left by a process that no longer runs."""
    match = re.fullmatch(rf"\.{re.escape(name)}\.retrain-([0-9a-f]{{6}})-(\d+)-.*", entry.name)
    if match is None:
        return False  # not a name retrain makes (a user's hidden backup such as .model.pb.old-v1 is left alone)
    return journal.owner_gone(match.group(1), int(match.group(2)), entry)


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files and folders that killed runs left beside `path` (never a live run's)."""
    try:
        entries = list(path.parent.glob(f".{glob.escape(path.name)}.*"))
    except OSError:
        return
    for entry in entries:
        if _temp_owner_gone(path.name, entry):
            try:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            except OSError:
                pass  # another run removed it first, or it is not ours to remove


def _failure(flag: str, path: Path, error: OSError) -> RetrainError:
    return RetrainError(f"cannot write {flag} {path}: {error.strerror or error} (in {path.parent}); "
                        "earlier outputs are kept")


def make_folder(directory: Path, *, flag: str) -> None:
    """Create an output's folder (and its parents) when the run first writes there: check_writable_dir does not.
    While writes are recorded, the folders it creates are removed again, if empty, when they are taken back."""
    missing = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    made = [_Replaced(folder, made=True) for folder in reversed(missing)] if _RECORDING and missing else []
    if made:
        _RECORDING[-1].add(*made)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if made:
            _RECORDING[-1].drop(*made)
        raise _failure(flag, directory, error) from None


def atomic_write(path: Path, write: Callable[[BinaryIO], Any], *, flag: str, same: Sequence[bytes] = ()) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`; just before the rename, a
    file there that changed since the run's checks is judged again (`judge_again`; `same`: what is being written),
    and the path must still lie outside the trees the run reads (`check_still_outside`, also before the temporary
    file is made: probe YYY saw a class folder's time change when the output folder had become a link into it)."""
    check_still_outside(path, flag=flag)
    if _RECORDING:  # its folder, or one written before, moved: said as such, not as "No such file" (probe ZZZ)
        _RECORDING[-1].check_in_place()
    remove_stale_temps(path)
    fd, tmp = -1, ""
    try:
        with _signals_held():  # an interrupt inside mkstemp would leave a file no one names
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    except BaseException as error:  # also the signal held back, raised once the file is named
        if tmp:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _failure(flag, path, error) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        check_still_outside(path, flag=flag)
        judge_again(path, same=same)
        with replacing(path, Path(tmp)):
            os.replace(tmp, path)
        record_written(path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise _failure(flag, path, error) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, flag: str, digest: bool = False) -> None:
    """`atomic_write` of `data`; with `digest`, its SHA-256 is kept for `written_sha256` (of the bytes written,
    not read back: a file put in its place meanwhile is not taken for retrain's)."""
    atomic_write(path, lambda handle: handle.write(data), flag=flag, same=(data,))
    if digest:
        _DIGESTS[real(path)] = hashlib.sha256(data).hexdigest()


def written_sha256(path: Path) -> str:
    """The SHA-256 of what this run wrote at `path` with atomic_write_bytes(digest=True), or ''."""
    return _DIGESTS.get(real(path), "")


_DIGESTS: dict[Path, str] = {}  # this run's (check_replaceable_files forgets an earlier run's in the process)


# --------------------------------------------------------------------------- the export set


@dataclass
class _Replaced:
    """One output path written while writes were recorded: what was there before, kept until they are kept."""

    path: Path
    aside: Path | None = None  # the earlier file (a hard link or copy) or folder, kept beside it; None if new
    link: str | None = None  # the earlier link's target, when the path was a link
    folder: str = ""  # a folder output's flag (replace_folder): taken back only while it is exactly what it wrote
    made: bool = False  # a folder make_folder created for an output: removed again if it is empty
    written: tuple[int, ...] | None = None  # the new file's identity (_written_identity): taken back while unchanged

    def record(self) -> dict[str, Any]:
        """The entry as a journal records it (paths as absolute strings)."""
        return {key: os.path.abspath(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple)
                else value for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_record(cls, record: Any) -> "_Replaced":
        """The entry a journal recorded; ValueError for a record retrain does not write (a damaged journal, or
        one made up to move other files: an earlier file kept aside has retrain's name beside its path)."""
        if not isinstance(record, dict):
            raise ValueError(f"a write recorded as {record!r}")
        path, aside, link, written = (record.get(key) for key in ("path", "aside", "link", "written"))
        folder, made = record.get("folder", ""), record.get("made", False)
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"a path recorded as {path!r}")
        name = re.escape(os.path.basename(path))
        if aside is not None and not (isinstance(aside, str) and os.path.dirname(aside) == os.path.dirname(path)
                                      and re.fullmatch(rf"\.{name}\.retrain-[0-9a-f]{{6}}-\d+-[0-9a-f]{{8}}\.old",
                                                       os.path.basename(aside))):
            raise ValueError(f"{path}'s earlier file recorded as {aside!r}")
        if not (link is None or isinstance(link, str)) or not isinstance(folder, str) or not isinstance(made, bool):
            raise ValueError(f"{path}'s write recorded as {record!r}")
        if written is not None and not (isinstance(written, list) and len(written) in (2, 4)
                                        and all(type(number) is int for number in written)):
            raise ValueError(f"{path}'s identity recorded as {written!r}")
        return cls(Path(path), aside=Path(aside) if aside else None, link=link, folder=folder, made=made,
                   written=tuple(written) if written else None)


def _at_its_path(folder: Path, fd: int) -> bool:
    """Whether the folder open at `fd` is still the one at `folder`; False when nothing is there now (probe ZZB: a
    folder gone was not said)."""
    try:
        return os.path.samestat(os.stat(folder), os.fstat(fd))
    except OSError:
        return False


def _written_identity(path: Path) -> tuple[int, ...] | None:
    """What tells a file written apart from any other: device, inode, size and modification time (not the change
    time, which the rename into place moves); a folder's: device and inode."""
    identity = _identity(path)
    return None if identity is None else identity[:2] if os.path.isdir(path) else identity[:4]


class Writes:
    """Output writes that may yet be taken back, each with what it replaced kept aside (see `recording`).

    journaled: each write is recorded on disk before it happens (`retrain.journal`), so that if this process is
    killed the next run writing there takes the set back (`take_back_killed`)."""

    def __init__(self, entries: Iterable[_Replaced] = (), *, journaled: bool = False) -> None:
        self.entries: list[_Replaced] = list(entries)
        self._journal = journal.Journal() if journaled else None
        self.kept = False  # the writes stand (`keep`)
        self.failed: list[str] = []  # the writes a take-back could not undo, each said in an error line
        self._folders: dict[Path, int] = {}  # each folder written into, as spelt then, and an open descriptor of it

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, *entries: _Replaced) -> None:
        """Record writes that are about to happen (RetrainError, recording nothing, when a folder written into
        before has moved: `check_in_place`)."""
        self.check_in_place()
        for entry in entries:
            folder = Path(os.path.abspath(entry.path.parent))
            if not entry.made and folder not in self._folders:
                with contextlib.suppress(OSError):
                    self._folders[folder] = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self.entries.extend(entries)
        self._save()

    def check_in_place(self) -> None:
        """RetrainError when a folder the set has written into is no longer at its path (moved, renamed or removed
        while the run wrote its outputs): the next write would go to another folder of that name, or a new one,
        and the model would be split between two folders, exit 0 (probe YYY)."""
        for folder, fd in self._folders.items():
            if not _at_its_path(folder, fd):
                now = self._where_now().get(folder)
                raise RetrainError(f"{folder}, where the run was writing its outputs, was moved, renamed or removed "
                                   "meanwhile; nothing more is written" + (
                                       f", and what the run wrote there is taken back in {now}, where it is now"
                                       if now is not None else ""))

    def _where_now(self) -> dict[Path, Path]:
        """The folders written into that have moved, each to where it is now (the kernel follows a folder's
        renames through an open descriptor); a removed one is not among them."""
        moved = {}
        for folder, fd in self._folders.items():
            with contextlib.suppress(OSError):
                now = Path(os.readlink(f"/proc/self/fd/{fd}"))
                if now != folder and now.is_absolute() and os.path.samestat(os.stat(now), os.fstat(fd)):
                    moved[folder] = now
        return moved

    def _follow_moves(self, *, taking_back: bool = True) -> None:
        """Rewrite the entries' paths (and the journal's) into the folders' places now (`_where_now`). When
        `taking_back`, a folder that cannot be followed (removed; moved to another disk, which copies it; mounted
        over) is named in a warning: what the run wrote there, and the earlier files kept aside, went with it."""
        moved = self._where_now()
        for folder, fd in self._folders.items() if taking_back else ():
            written = [entry for entry in self.entries if Path(os.path.abspath(entry.path.parent)) == folder]
            if folder not in moved and not _at_its_path(folder, fd) and written:
                asides = ", ".join(entry.aside.name for entry in written if entry.aside is not None)
                log.warning("cannot follow %s, where the run wrote outputs: it was removed, moved to another disk "
                            "or mounted over, so what the run wrote there (%s) is not taken back%s", folder,
                            ", ".join(entry.path.name for entry in written),
                            f"; in a copy of it, the earlier files are kept as {asides}" if asides else "")
        if not moved:
            return
        for entry in self.entries:
            now = moved.get(Path(os.path.abspath(entry.path.parent)))
            if now is not None:
                entry.path = now / entry.path.name
                entry.aside = None if entry.aside is None else now / entry.aside.name
        if self._journal is not None:
            self._journal.copies = [moved.get(copy.parent, copy.parent) / copy.name for copy in self._journal.copies]

    def _close(self) -> None:
        while self._folders:
            os.close(self._folders.popitem()[1])

    def drop(self, *entries: _Replaced) -> None:
        """Forget writes that did not happen after all."""
        for entry in entries:
            self.entries.remove(entry)
        self._save()

    def _save(self) -> None:
        if self._journal is None or not self.entries:
            return
        made = {entry.path for entry in self.entries if entry.made}
        folders = []
        for entry in self.entries:  # the nearest folder each write goes into that the set did not make
            folder = entry.path.parent
            while folder in made:
                folder = folder.parent
            folders.append(Path(os.path.abspath(folder)))
        self._journal.save([entry.record() for entry in self.entries], folders)

    def keep(self) -> None:
        """The writes stand: what they replaced, kept aside, is deleted. Only marking the journal kept may fail
        (OSError), before anything is deleted; an earlier file that cannot be deleted stays under its temporary
        name, which a later run removes (`remove_stale_temps`). A folder moved after its last write holds the
        whole set: it is kept where it is now."""
        self._follow_moves(taking_back=False)
        if self._journal is not None:
            self._journal.keep()
        self.kept = True
        for entry in self.entries:
            if entry.aside is not None:
                with contextlib.suppress(OSError):
                    _remove(entry.aside)
        self.entries.clear()
        if self._journal is not None:
            self._journal.discard()
        self._close()

    def put_back_earlier(self) -> list[Path]:
        """Take back only the writes that replaced an earlier file (it is put back), and keep the others (new
        files); returns the paths put back."""
        self._follow_moves()
        replaced = [entry for entry in self.entries if entry.aside is not None or entry.link is not None]
        self.entries = [entry for entry in self.entries if all(entry is not other for other in replaced)]
        restored, _ = Writes(replaced).take_back()
        self.keep()
        return restored

    def take_back(self, start: int = 0) -> tuple[list[Path], list[Path]]:
        """Undo the writes from the `start`-th on, last first: each earlier file or folder put back, each new one
        removed, but only while it is what was written there (else an error line names it, and the earlier one
        is kept beside it as `<name>.earlier`, a name no run removes). Returns the paths (restored, removed)."""
        restored, removed, failed = [], [], []
        self._follow_moves()
        for entry in reversed(self.entries[start:]):
            if entry.made:  # a folder make_folder created: removed if nothing else is in it
                with contextlib.suppress(OSError):
                    entry.path.rmdir()
                continue
            try:
                if _not_written(entry):  # killed before that write happened: its earlier file is still there
                    if entry.aside is not None:
                        _remove(entry.aside)
                    continue
                if entry.folder and entry.aside is not None and not os.path.lexists(entry.path):  # killed mid-swap
                    os.replace(entry.aside, entry.path)
                    restored.append(entry.path)
                    continue
                if not _still_written(entry):  # only what this run wrote, unchanged since, is taken away
                    raise OSError("it is no longer what this run wrote there")
                if entry.folder and entry.aside is not None:
                    tag = entry.aside.with_name(f"{entry.aside.name}.undone")
                    os.replace(entry.path, tag)
                    os.replace(entry.aside, entry.path)
                    shutil.rmtree(tag, ignore_errors=True)
                    restored.append(entry.path)
                elif entry.folder:
                    shutil.rmtree(entry.path)
                    removed.append(entry.path)
                elif entry.link is not None:  # made beside it, then renamed over it: never a moment without it
                    link = entry.path.with_name(f"{temp_prefix(entry.path.name)}{uuid.uuid4().hex[:8]}.link")
                    os.symlink(entry.link, link)
                    os.replace(link, entry.path)
                    restored.append(entry.path)
                elif entry.aside is not None:
                    os.replace(entry.aside, entry.path)
                    restored.append(entry.path)
                else:
                    entry.path.unlink()
                    removed.append(entry.path)
            except OSError as error:
                kept = ""
                if entry.aside is not None and entry.aside.exists():  # (not under a name later runs remove: ZZZ)
                    kept = f"; the earlier one is {_kept_visible(entry.aside, entry.path)}"
                failed.append(f"{entry.path} ({error.strerror or error}{kept})")
        del self.entries[start:]
        self.failed += failed
        if failed:
            log.error("could not take back %s: check these files before using them", ", ".join(failed))
        if self._journal is not None:
            self._journal.discard() if not self.entries else self._save()
        if not self.entries:
            self._close()
        return restored, removed


def _not_written(entry: _Replaced) -> bool:
    """Whether a recorded write is not there to take back: it never happened (its process was killed first: the
    earlier file or folder is still at the path, or nothing is where a new one was to go), or a take-back cut
    short has put the earlier one back already."""
    if entry.made or entry.link is not None:
        return entry.link is not None and entry.path.is_symlink()
    if entry.aside is None:
        return not os.path.lexists(entry.path)
    if not os.path.lexists(entry.aside):  # the earlier one is back (a take-back cut short), or was deleted
        return not _still_written(entry)
    if entry.folder:
        return False
    with contextlib.suppress(OSError):
        return os.path.samefile(entry.path, entry.aside) or filecmp.cmp(entry.path, entry.aside, shallow=False)
    return False


def _kept_visible(aside: Path, path: Path) -> Path:
    """Rename an earlier file or folder kept aside to `<name>.earlier` (or `.earlier-2`...) beside `path`."""
    for number in itertools.count(1):
        kept = path.with_name(f"{path.name}.earlier" + (f"-{number}" if number > 1 else ""))
        if not os.path.lexists(kept):
            with contextlib.suppress(OSError):
                os.replace(aside, kept)
                return kept
            return aside
    raise AssertionError  # unreachable: count() never ends


def take_back_killed(outputs: Sequence[Output]) -> None:
    """Take back the export sets that killed processes (SIGKILL, power loss) left half written in the folders
    these outputs are in, as the process would have had it been interrupted: earlier files put back, new ones
    removed, with a warning. A write found changed since is left, and the earlier file kept beside it. A set
    that was kept has the rest of what it replaced deleted. Then the killed process's temporary files go. A set
    whose outputs another run holds is that run's, going on (in another container, say): it is left alone."""
    folders = dict.fromkeys(o.path if o.kind == "entries" else o.path.parent for o in outputs if o.kind != "tree")
    for dead in journal.killed(folders):
        try:
            entries = [_Replaced.from_record(record) for record in dead.records]
            _check_made(entries, dead.folders)
            _check_asides(entries, kept=dead.kept)
        except ValueError as error:
            log.warning("the journal %s of a killed retrain run (process %d) is not one retrain can read (%s): it "
                        "and the files it names are left as they are; delete it once you have checked them",
                        dead.journal, dead.pid, error)
            continue
        holder = next((held for entry in entries if not entry.made and (held := held_elsewhere(entry.path))
                       is not None), None)
        if holder is not None:
            log.info("the export set that %s records is held by a retrain run%s going on: left to it",
                     dead.journal, holder)
            continue
        _remove_temporaries_of([*dead.folders, *(e.path if e.made else e.path.parent for e in entries)],
                               dead.host, dead.pid)  # not what it kept aside: its writes see to those
        writes = Writes(entries)
        if dead.kept:  # the set stood: what it replaced goes, as the process would have deleted it
            writes.keep()
        else:
            said = _taken_back_text(*writes.take_back(), new="its new")
            log.warning("a retrain run (process %d) was killed while writing its outputs; its writes are taken "
                        "back%s", dead.pid, f": {said}" if said else "")
        dead.settled = True


def half_written(folders: Iterable[Path]) -> Iterator[tuple[int, list[str]]]:
    """(process id, the paths its set replaced) for each set a killed process left half written in `folders`,
    read only: for label-image, which changes nothing, to warn of a model written half. A path whose earlier
    file is still there (the process was killed before it replaced it) is not among them."""
    for pid, records in journal.half_written(folders):
        replaced = []
        for record in records:
            with contextlib.suppress(ValueError):
                entry = _Replaced.from_record(record)
                if not entry.made and not _not_written(entry):
                    replaced.append(str(entry.path))
        yield pid, replaced


def _remove_temporaries_of(folders: Iterable[Path], host: str, pid: int) -> None:
    """Delete the temporary files and folders (`temp_prefix`) that a process known to be dead left in `folders`
    (older than this process, if it had this process's number), but what it kept aside (`….old`), which its
    journal's writes put back or delete."""
    pattern = re.compile(rf"\..+\.retrain-{re.escape(host)}-{pid}-.+(?<!\.old)")
    for folder in dict.fromkeys(folders):
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in list(entries):
                with contextlib.suppress(OSError):
                    if pattern.fullmatch(entry.name) and not (pid == os.getpid() and entry.stat(
                            follow_symlinks=False).st_mtime >= _IMPORTED):
                        _remove(Path(entry.path))


_IMPORTED = time.time()  # files older than this are not this process's own, whatever their name says


def _check_asides(entries: Sequence[_Replaced], *, kept: bool) -> None:
    """ValueError unless each earlier file or folder kept aside is of the kind its write replaces: a folder for
    a folder output (with retrain's marker, unless the set was kept: deleting it may have begun), else not a
    folder (a made-up journal could name a folder of files)."""
    for entry in entries:
        if entry.aside is None or not os.path.lexists(entry.aside):
            continue
        is_folder = entry.aside.is_dir() and not entry.aside.is_symlink()
        if is_folder != bool(entry.folder) or is_folder and not kept and not (entry.aside / OWNER_MARKER).is_file():
            raise ValueError(f"{entry.path}'s earlier {'folder' if is_folder else 'file'} {entry.aside} is not "
                             "what retrain keeps aside there")


def _check_made(entries: Sequence[_Replaced], folders: Sequence[Path]) -> None:
    """ValueError unless each folder recorded as made lies in a folder the journal is in (as the folders a set
    makes do: its journal goes into the nearest folder it did not make)."""
    for entry in entries:
        if entry.made and not any(folder in entry.path.parents for folder in folders):
            raise ValueError(f"{entry.path} recorded as a folder the run made, outside the folders it wrote")


_RECORDING: list[Writes] = []  # where output writes are recorded now (innermost last): see `recording`


@contextlib.contextmanager
def recording(writes: Writes) -> Iterator[Writes]:
    """Inside the block, atomic_write, replace_folder and make_folder record each write in `writes`, keeping
    aside what it replaces, so the caller can take the writes back or keep them."""
    _RECORDING.append(writes)
    try:
        yield writes
    finally:
        _RECORDING.remove(writes)


@contextlib.contextmanager
def export_set() -> Iterator[Writes]:
    """The block's output writes form one set: if the block fails or is interrupted, each file or folder written
    is taken back (`Writes.take_back`). So a failed export never leaves a new graph beside another model's
    labels, or new labels beside an earlier SavedModel. If the block ends well, what was kept aside is deleted,
    a stop signal held back meanwhile (it is raised once the set is `kept`). (A killed process cannot take
    anything back itself: its journal lets the next run writing there do it, `take_back_killed`.)"""
    writes = Writes(journaled=True)
    try:
        with recording(writes):
            yield writes
    except BaseException as error:
        _take_back_set(writes, interrupted=not isinstance(error, Exception))
        raise
    with _signals_held():  # an interrupt half way would leave the earlier files aside under temporary names
        try:
            writes.keep()
        except OSError as error:  # its journal could not be marked kept (a full disk): nothing is deleted yet
            _take_back_set(writes, interrupted=False)
            where = f" in {Path(error.filename).parent}" if error.filename else ""
            raise RetrainError(f"cannot finish writing the outputs{where} ({error.strerror or error}); the run's files "
                               "are taken back, the earlier outputs are kept") from None


def _take_back_set(writes: Writes, *, interrupted: bool) -> None:
    with _signals_held():  # a second Ctrl-C, SIGTERM or SIGHUP must not stop the take-back half way
        said = _taken_back_text(*writes.take_back(), new="the new")
    if said:
        why = "the run was interrupted while writing them" if interrupted else "one of them could not be written"
        log.warning("the run's files are taken back, as %s: %s", why, said)


def _taken_back_text(restored: Sequence[Path], removed: Sequence[Path], *, new: str) -> str:
    """`put back the earlier A, B; removed <new> C` (either part alone, or nothing)."""
    said = [f"put back the earlier {', '.join(map(str, restored))}" if restored else "",
            f"removed {new} {', '.join(map(str, removed))}" if removed else ""]
    return "; ".join(part for part in said if part)


@contextlib.contextmanager
def replacing(path: Path, new: Path) -> Iterator[None]:
    """Around the rename of the new file `new` over `path`: while writes are recorded, what is there is kept
    aside, and the write recorded, before the rename (a rename that fails records nothing, keeps nothing)."""
    if not _RECORDING:
        yield
        return
    writes = _RECORDING[-1]
    writes.check_in_place()  # before anything is kept aside
    entry = _Replaced(path, link=os.readlink(path) if path.is_symlink() else None, written=_written_identity(new))
    if entry.link is None:
        entry.aside = _set_aside(path)
    writes.add(entry)
    try:
        yield
    except BaseException:
        writes.drop(entry)
        if entry.aside is not None:
            entry.aside.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold the signals that stop a run (STOP_SIGNALS) back while the block runs: one that arrives meanwhile is
    noted, and raised again for the handler in place before once the block ends. (Blocking them in this thread
    would not do: another thread, TensorFlow's, would take the signal and Python would still run the handler here.)"""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread only, so the block is not interrupted here
        return
    noted: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signum, lambda number, _frame: noted.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        for signum in noted[:1]:
            signal.raise_signal(signum)


def _set_aside(path: Path) -> Path | None:
    """Keep the regular file at `path` beside it under a temporary name (a hard link, else a copy), for a write
    that may be taken back; None if there is none. The caller puts it back (os.replace) or deletes it."""
    if path.is_symlink() or not path.is_file():
        return None
    aside = path.with_name(f"{temp_prefix(path.name)}{uuid.uuid4().hex[:8]}.old")  # as long as atomic_write's
    try:
        os.link(path, aside)
    except OSError:  # a file system without hard links
        shutil.copy2(path, aside)
    return aside


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _still_written(entry: _Replaced) -> bool:
    """Whether the path still holds what the export set wrote there: the same file (lstat), or a folder holding
    exactly what retrain's marker in it lists (a file added or changed inside it is someone's work)."""
    if entry.written is None or _written_identity(entry.path) != entry.written:
        return False
    if entry.folder:
        try:
            _check_replaceable_contents(entry.path, flag=entry.folder)
        except UsageError:
            return False
        return (entry.path / OWNER_MARKER).is_file()
    return True


def replace_folder(directory: Path, write: Callable[[Path], Any], *, flag: str) -> None:
    """Build the folder beside `directory`, mark it as ours, then swap it in; the old one goes only after.

    If the swap fails, the old folder is put back. A link to a folder is written through: the folder it leads
    to is the one replaced. Just before the swap the old folder is judged again (`_check_replaceable_contents`):
    files put into it while the run went on are the user's, and stop the swap.
    """
    if directory.is_symlink():
        directory = Path(os.path.realpath(directory))  # (not `real`: through a bind mount, as spelt: probe III)
    check_still_outside(directory, flag=flag)
    if _RECORDING:
        _RECORDING[-1].check_in_place()
    remove_stale_temps(directory)
    make_folder(directory.parent, flag=flag)
    tag = f"{temp_prefix(directory.name)}{uuid.uuid4().hex[:8]}"
    tmp, old = directory.parent / f"{tag}.new", directory.parent / f"{tag}.old"
    try:
        write(tmp)
        files = sorted(_listing(tmp))
        (tmp / OWNER_MARKER).write_text(json.dumps({"written_by": "retrain", "version": __version__, "flag": flag,
                                                    "files": files,
                                                    "sha256": {name: _sha256(tmp / name) for name in files}},
                                                   indent=1) + "\n")
        check_still_outside(directory, flag=flag)
        moved = directory.exists()
        if moved:
            try:
                _check_replaceable_contents(directory, flag=flag)
            except UsageError as error:
                raise RetrainError(f"{error} (found just before replacing it: it changed while the run went on, so "
                                   "retrain did not replace it)") from None
        entry = _Replaced(directory, aside=old if moved else None, folder=flag, written=_written_identity(tmp))
        writes = _RECORDING[-1] if _RECORDING else None
        if writes is not None:  # recorded before the swap; the old folder is kept until the writes are settled
            writes.add(entry)
        try:
            if moved:
                os.replace(directory, old)
            os.replace(tmp, directory)
        except BaseException:
            if moved and old.exists():
                os.replace(old, directory)
            if writes is not None:
                writes.drop(entry)
            raise
        if writes is not None:
            old = None
    except OSError as error:
        raise _failure(flag, directory, error) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def size_text(path: Path) -> str:
    """A file's size, or a folder's total, as `bytes_text` says it."""
    return bytes_text(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir()
                      else path.stat().st_size)


def bytes_text(total: int) -> str:
    """'2.1 GB', '2.1 MB', '12.3 kB' or '512 bytes'."""
    if total >= 100_000_000:
        return f"{total / 1e9:.1f} GB"
    if total >= 100_000:
        return f"{total / 1e6:.1f} MB"
    return f"{total / 1e3:.1f} kB" if total >= 1000 else f"{total} bytes"
