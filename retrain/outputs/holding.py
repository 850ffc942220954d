"""Holding a run's outputs against other runs on this machine, from its checks to its end (`hold_outputs`):
a lock file per output in a private folder under /tmp."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not held against each other
    fcntl = None

from retrain.errors import UsageError
from retrain.outputs.declared import INPUTS, TREES, Output, entry_of, is_inside, region_kind, Region, region_of

log = logging.getLogger(__name__)

LOCK_ROOT = "/tmp"  # where runs on this machine find each other's locks (hold_outputs), whatever TMPDIR says


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
        key = str(region_of(output).path) + (f"\0{output.pattern}" if output.kind == "entries" else "")
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
    regions = [(output, region_of(output)) for output in outputs]
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
                kinds = {region_kind(region), region_kind(theirs)}
                if kinds == {"entries", "file"} or (shared and not output.exclusive):  # an intermediate graph
                    continue  # there is not saved (held_elsewhere); runs share a cache and a TensorBoard folder
                if region.overlaps(theirs):
                    release_outputs()
                    around = is_inside(theirs.path, region.path) and (
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
    lock = _lock_file(_HELD[0][1].parent, str(entry_of(path)))
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
            region = region_of(output)
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
    INPUTS.clear()
    TREES.clear()
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


def _held_region(fd: int) -> tuple[str, Region, bool] | None:
    """How a lock file's output is named, what it covers, and whether runs share it, from its second line
    (`_hold`); None if it does not say (written by an earlier version, or not yet)."""
    try:
        held = json.loads(os.pread(fd, 1 << 16, 0).split(b"\n")[1].decode("utf-8", "surrogateescape"))
        region = Region(Path(held["path"]), held["kind"], held["pattern"])
        region.path = Path(held["path"])  # as it was held: a file output's link is not followed (`region_of`)
        return str(held["named"]), region, held.get("shared") is True
    except (OSError, ValueError, IndexError, KeyError, TypeError, re.error):
        return None
