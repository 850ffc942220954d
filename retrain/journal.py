"""The on-disk record of an export set's writes, so that a later run can take back those of a killed process.

A process that is killed (SIGKILL, the OOM killer, power loss) while it writes its exports cannot take them back
itself: an earlier model's graph stays replaced beside its labels, with its originals kept aside under temporary
names. While an export set is written, its writes are recorded, each before it happens, in a journal file in
the first folder it writes, with a small pointer file of the same name in each other folder it writes into. A
set that stands is marked kept in its journal before what it replaced is deleted; then the journal and its
pointers go. A run finds the journals of processes that no longer run in the folders it writes (`killed`) and
takes their writes back, or finishes keeping them, before its checks.

Records are plain dicts; what they mean, and taking them back, is `outputs`' business. Here only their paths
("path", "aside") are stored relative to the journal's folder when they lie under it, so that a folder moved
after the kill is still taken back where it now is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # no flock (Windows): two runs taking back one killed set cannot meet there anyway
    fcntl = None

HOST = hashlib.sha1(socket.gethostname().encode(errors="replace")).hexdigest()[:6]
STALE_SECONDS = 3600.0  # a temporary file this old, of a process we cannot see, was left by a killed run
_NAME = re.compile(r"\.retrain-exports-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.journal")
_PATHS = ("path", "aside")  # the record fields that are paths


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def process_start(pid: int) -> str | None:
    """What tells process `pid` from a later one given the same number (a reused number, or another container's
    first process): this boot's id and the process's start time in clock ticks; None where /proc cannot say."""
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{_BOOT}:{fields[19]}"  # the 22nd field; the name in parentheses may hold spaces
    return None


_BOOT = _boot_id()
STARTED = process_start(os.getpid())


def owner_gone(host: str, pid: int, entry: Path, started: str | None = None) -> bool:
    """Whether the process that named `entry` after itself (its host and process id; `started`, when known:
    `process_start` of it) no longer runs. Another host's entry counts as gone once it is a day old, as no
    process there can be asked."""
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    if host != HOST:
        return age > 24 * STALE_SECONDS
    if started is not None and (now := process_start(pid)) is not None:
        return now != started  # the number is another process's now (this one's, in a new container)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class Journal:
    """One export set's journal: `save` before each write, `keep` once the set stands, `discard` at the end."""

    def __init__(self) -> None:
        self.name = f".retrain-exports-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.journal"
        self.copies: list[Path] = []  # the journal (first), then a pointer in each other folder written
        self._records: list[dict[str, Any]] = []

    def save(self, records: list[dict[str, Any]], folders: Iterable[Path]) -> None:
        """Record the set's writes so far (and the one about to happen) before it happens."""
        for folder in folders:
            if folder / self.name not in self.copies:
                self.copies.append(folder / self.name)
        if not self.copies:
            return
        self._records = records
        self._write_journal(kept=False)
        for pointer in self.copies[1:]:
            if not pointer.exists():
                _write(pointer, {"journal": str(self.copies[0]), "started": STARTED,
                                 "relative": os.path.relpath(self.copies[0], pointer.parent)})

    def _write_journal(self, *, kept: bool) -> None:
        base = self.copies[0].parent
        _write(self.copies[0], {"journal": str(self.copies[0]), "started": STARTED, "kept": kept,
                                "copies": [str(p) for p in self.copies],
                                "writes": [_relative(record, base) for record in self._records]})

    def keep(self) -> None:
        """The set stands: marked so before what it replaced is deleted (a process killed meanwhile leaves the
        rest of the deleting to the next run)."""
        if self.copies:
            self._write_journal(kept=True)

    def discard(self) -> None:
        """Delete the journal and its pointers (the set kept, or taken back), and any of their temporary files
        that a write cut short (an interrupt, a full disk) left."""
        for path in self.copies:
            _unlink(path)
            _unlink(path.with_name(path.name + ".tmp"))
        self.copies.clear()


@dataclass
class KilledSet:
    """The writes of a killed process's export set, as its journal records them; `settled` once the caller has
    taken them back (or finished keeping them), so that the journal is deleted."""

    host: str
    pid: int
    journal: Path
    records: list[Any]
    kept: bool
    folders: list[Path] = field(default_factory=list)  # where the set wrote: the killed process's temporary files
    settled: bool = False


def _relative(record: dict[str, Any], base: Path) -> dict[str, Any]:
    """The record with its paths inside `base` made relative to it."""
    return {key: os.path.relpath(value, base) if key in _PATHS and isinstance(value, str)
            and value.startswith(os.path.join(base, "")) else value for key, value in record.items()}


def _absolute(record: Any, base: Path) -> Any:
    """The record with its relative paths taken from `base`, where the journal is now."""
    if not isinstance(record, dict):
        return record
    return {key: str(base / value) if key in _PATHS and isinstance(value, str) and not os.path.isabs(value)
            else value for key, value in record.items()}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write a journal file whole (a temporary file renamed over it), synced, so it is never read half written."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _open_own(path: Path) -> int | None:
    """`path` opened for reading if it is a regular file of this user's (not a link, a pipe or another user's: in
    a shared folder such as /tmp another user could leave a journal naming this user's files); else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
        return fd
    os.close(fd)
    return None


def _read(fd: int) -> dict[str, Any] | None:
    """A journal or pointer's contents, read from its start; None if it is not one."""
    with contextlib.suppress(OSError, ValueError, RecursionError):  # RecursionError: '[[[...' nested too deep
        data = json.loads(os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "surrogateescape"))
        if isinstance(data, dict) and isinstance(data.get("journal"), str):
            return data
    return None


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _read_own(path: Path) -> dict[str, Any] | None:
    """The journal or pointer at `path` if it is a regular file of this user's (`_open_own`) and one (`_read`)."""
    fd = _open_own(path)
    if fd is None:
        return None
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _unlink_pointer(path: Path) -> None:
    """Delete a pointer of this user's, not a journal (a copy of the folder holds one that names the original)."""
    data = _read_own(path)
    if data is not None and "writes" not in data:
        _unlink(path)


def killed(folders: Iterable[Path]) -> Iterator[KilledSet]:
    """The export sets of killed processes with a journal or pointer in `folders`, each yielded while its
    journal is held against other runs taking it back too, and deleted with its pointers once the caller has
    settled it (a run killed meanwhile leaves it for the next)."""
    for journal, found, (host, pid) in _dead(folders):
        if journal is None:  # a journal the killed process was writing: the file it replaces counts
            _unlink(found)
        else:
            yield from _settled(journal, found, host, pid)


def half_written(folders: Iterable[Path]) -> Iterator[tuple[int, list[Any]]]:
    """(process id, its records) for each killed process's set found in `folders` and not kept, read only: for
    label-image, which changes nothing, to warn of a model written half."""
    for journal, _found, (_host, pid) in _dead(folders):
        data = _read_own(journal) if journal is not None else None
        writes = data.get("writes") if data and not data.get("kept") else None
        if isinstance(writes, list):
            yield pid, [_absolute(record, journal.parent) for record in writes]


def _dead(folders: Iterable[Path]) -> Iterator[tuple[Path | None, Path, tuple[str, int]]]:
    """(journal, the journal or pointer found, (host, process id)) for each set of a killed process found in
    `folders`, once each; (None, file, ...) for a journal it was writing (a temporary file)."""
    seen: set[str] = set()
    for folder in dict.fromkeys(Path(os.path.abspath(folder)) for folder in folders):  # records are absolute
        try:
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries if entry.name.startswith(".retrain-exports-")]
        except OSError:
            continue
        for name in sorted(names):
            match = _NAME.fullmatch(name.removesuffix(".tmp"))
            path = Path(folder) / name
            fd = _open_own(path) if match is not None else None
            if fd is None:
                continue
            try:
                data = None if name.endswith(".tmp") else _read(fd)
            finally:
                os.close(fd)
            started = data.get("started") if data else None
            if not owner_gone(match.group(1), int(match.group(2)), path, started if isinstance(started, str)
                              else None):
                continue
            owner = match.group(1), int(match.group(2))
            if name.endswith(".tmp"):
                yield None, path, owner
                continue
            journal = path if data is None or "writes" in data else _pointed(data, folder)
            if str(journal) not in seen:
                seen.add(str(journal))
                yield journal, path, owner


def _pointed(pointer: dict[str, Any], folder: Path) -> Path:
    """The journal a pointer in `folder` names: where it was, or, if the folders were moved together since, as
    far from the pointer as it was."""
    journal, relative = Path(pointer["journal"]), pointer.get("relative")
    if not os.path.lexists(journal) and isinstance(relative, str):
        moved = Path(os.path.normpath(folder / relative))
        if moved.name == journal.name and os.path.lexists(moved):
            return moved
    return journal


def _settled(journal: Path, found: Path, host: str, pid: int) -> Iterator[KilledSet]:
    """Hold `journal` while its set is settled, then delete it and its pointers; a pointer whose journal is gone
    (the set was kept, or taken back already) is deleted."""
    fd = _open_own(journal)
    if fd is None:
        if not os.path.lexists(journal):
            _unlink(found)
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another run taking it back holds it for milliseconds
        if os.fstat(fd).st_nlink == 0:  # that run is done with it
            _unlink(found)
            return
        data = _read(fd)
        writes = data.get("writes") if data else None
        if not isinstance(writes, list):
            return  # not a journal retrain can read: left as it is
        copies = data.get("copies") if isinstance(data.get("copies"), list) else []
        copies = [Path(c) for c in copies if isinstance(c, str)]
        base = journal.parent
        killed_set = KilledSet(host=host, pid=pid, journal=journal, records=[_absolute(r, base) for r in writes],
                               kept=data.get("kept") is True,
                               folders=list(dict.fromkeys([base, *(c.parent for c in copies)])))
        yield killed_set
        if killed_set.settled:
            for copy in copies:
                _unlink_pointer(copy)
            _unlink(journal)  # the journal last: a run killed before this repeats the settling
            if found != journal:
                _unlink_pointer(found)
    finally:
        os.close(fd)
