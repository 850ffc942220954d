"""The on-disk record of an export set's writes, so that a later run can take back those of a killed process.

A process that is killed (SIGKILL, power loss) while it writes its exports cannot take them back itself: an
earlier model's graph stays replaced beside its labels, with its originals kept aside under temporary names.
While an export set is written, its writes are recorded, each before it happens, in a journal file in the
first folder it writes, with a small pointer file of the same name in each other folder it writes into. The
set is kept by deleting the journal; then the pointers go. A run finds the journals of processes that no longer
run in the folders it writes (`killed`) and takes their writes back before its checks.

Records are plain dicts (paths as strings); what they mean, and taking them back, is `outputs`' business.
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
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # no flock (Windows): two runs taking back one killed set cannot meet there anyway
    fcntl = None

HOST = hashlib.sha1(socket.gethostname().encode(errors="replace")).hexdigest()[:6]
STALE_SECONDS = 3600.0  # a temporary file this old, of a process we cannot see, was left by a killed run
_NAME = re.compile(r"\.retrain-exports-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.journal")


def owner_gone(host: str, pid: int, entry: Path) -> bool:
    """Whether the process that named `entry` after itself (its host and process id) no longer runs. Another
    host's entry counts as gone once it is a day old, as no process there can be asked."""
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    if host != HOST:
        return age > 24 * STALE_SECONDS
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
    """One export set's journal: `save` before each write, `keep` once the set stands, `discard` once taken back."""

    def __init__(self) -> None:
        self.name = f".retrain-exports-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.journal"
        self.copies: list[Path] = []  # the journal (first), then a pointer in each other folder written

    def save(self, records: list[dict[str, Any]], folders: Iterable[Path]) -> None:
        """Record the set's writes so far (and the one about to happen) before it happens."""
        for folder in folders:
            if folder / self.name not in self.copies:
                self.copies.append(folder / self.name)
        if not self.copies:
            return
        primary = str(self.copies[0])
        _write(self.copies[0], {"journal": primary, "copies": [str(p) for p in self.copies], "writes": records})
        for pointer in self.copies[1:]:
            if not pointer.exists():
                _write(pointer, {"journal": primary})

    def keep(self) -> None:
        """The set stands: deleting the journal is the moment past which a killed process's writes stay."""
        if self.copies:
            self.copies.pop(0).unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the journal and its pointers (after `keep`, or once the writes are taken back)."""
        for path in self.copies:
            path.unlink(missing_ok=True)
        self.copies.clear()


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
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "surrogateescape"))
        if isinstance(data, dict) and isinstance(data.get("journal"), str):
            return data
    return None


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def killed(folders: Iterable[Path]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The export sets of killed processes with a journal or pointer in `folders`: (process id, its records),
    each yielded while its journal is held against other runs taking it back too, and deleted with its pointers
    once the caller has taken it back (a run killed meanwhile leaves it for the next)."""
    for journal, found, pid in _dead(folders):
        if journal is None:  # a journal the killed process was writing: the file it replaces counts
            _unlink(found)
        else:
            yield from _taken_back(journal, found, pid)


def half_written(folders: Iterable[Path]) -> Iterator[tuple[int, list[str]]]:
    """(process id, the paths its set wrote or was about to write) for each killed process's journal found in
    `folders`, read only: for label-image, which changes nothing, to warn of a model written half."""
    for journal, _found, pid in _dead(folders):
        fd = _open_own(journal) if journal is not None else None
        if fd is None:
            continue
        try:
            data = _read(fd)
        finally:
            os.close(fd)
        writes = data.get("writes") if data else None
        if isinstance(writes, list):
            yield pid, [r["path"] for r in writes if isinstance(r, dict) and isinstance(r.get("path"), str)]


def _dead(folders: Iterable[Path]) -> Iterator[tuple[Path | None, Path, int]]:
    """(journal, the journal or pointer found, process id) for each set of a killed process found in `folders`,
    once each; (None, file, process id) for a journal it was writing (a temporary file)."""
    seen: set[str] = set()
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries if entry.name.startswith(".retrain-exports-")]
        except OSError:
            continue
        for name in sorted(names):
            match = _NAME.fullmatch(name.removesuffix(".tmp"))
            path = Path(folder) / name
            if match is None or not owner_gone(match.group(1), int(match.group(2)), path):
                continue
            fd = _open_own(path)
            if fd is None:
                continue
            try:
                data = None if name.endswith(".tmp") else _read(fd)
            finally:
                os.close(fd)
            if name.endswith(".tmp"):
                yield None, path, int(match.group(2))
                continue
            journal = Path(data["journal"]) if data else path
            if str(journal) not in seen:
                seen.add(str(journal))
                yield journal, path, int(match.group(2))


def _taken_back(journal: Path, found: Path, pid: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Hold `journal` while its set is taken back, then delete it and its pointers; a pointer whose journal is
    gone (the set was kept, or taken back already) is deleted."""
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
        if data is None or not isinstance(data.get("writes"), list):
            return  # not a journal retrain can read: left as it is
        yield pid, [record for record in data["writes"] if isinstance(record, dict)]
        for copy in [*data.get("copies", [])[1:], str(journal)]:  # the journal last: a kill meanwhile repeats this
            _unlink(copy)
        _unlink(found)
    finally:
        os.close(fd)
