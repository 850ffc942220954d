"""Writing outputs safely and taking writes back: temporary files, atomic writes, folders swapped in whole, and
a run's exports written as one set (`export_set`) that is taken back if it fails, by the next run if the
process was killed (`take_back_killed`)."""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import glob
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from retrain import __version__, journal
from retrain.errors import STOP_SIGNALS, RetrainError, UsageError
from retrain.journal import HOST as _HOST
from retrain.names import OWNER_MARKER
from retrain.outputs.checks import (DIGESTS, check_replaceable_contents, identity_of, listing_of, sha256_of,
                                    check_still_outside, judge_again, record_written)
from retrain.outputs.declared import Output, real
from retrain.outputs.holding import held_elsewhere

log = logging.getLogger(__name__)


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
        DIGESTS[real(path)] = hashlib.sha256(data).hexdigest()


def written_sha256(path: Path) -> str:
    """The SHA-256 of what this run wrote at `path` with atomic_write_bytes(digest=True), or ''."""
    return DIGESTS.get(real(path), "")


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
    identity = identity_of(path)
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
            check_replaceable_contents(entry.path, flag=entry.folder)
        except UsageError:
            return False
        return (entry.path / OWNER_MARKER).is_file()
    return True


def replace_folder(directory: Path, write: Callable[[Path], Any], *, flag: str) -> None:
    """Build the folder beside `directory`, mark it as ours, then swap it in; the old one goes only after.

    If the swap fails, the old folder is put back. A link to a folder is written through: the folder it leads
    to is the one replaced. Just before the swap the old folder is judged again (`check_replaceable_contents`):
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
        files = sorted(listing_of(tmp))
        (tmp / OWNER_MARKER).write_text(json.dumps({"written_by": "retrain", "version": __version__, "flag": flag,
                                                    "files": files,
                                                    "sha256": {name: sha256_of(tmp / name) for name in files}},
                                                   indent=1) + "\n")
        check_still_outside(directory, flag=flag)
        moved = directory.exists()
        if moved:
            try:
                check_replaceable_contents(directory, flag=flag)
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
