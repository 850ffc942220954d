"""One spelling for a place that mounts show at several paths (Linux's /proc/self/mountinfo).

`retrain`'s checks compare paths with links resolved (`outputs.real`); a bind
mount shows one folder at a second path that no link resolves. A container
started with `-v ~/photos:/data -v ~/photos/models:/models` (probe GGG: `mount
--bind`) made `/models/graph.pb` an output inside the image tree that the next
run trains on, two outputs one file, and two runs' locks two locks. `canonical`
maps a path to the same place under one chosen mount of its file system: of the
visible mounts that show it, ordered by how high their root within the file
system lies, then by the length of their mount point, the first through which
it is the same folder (checked by device and inode). `filesystem_type` tells a
path on a /proc file system wherever it is mounted, and `is_mount_point` a bind
mount of a folder of the same file system, which os.path.ismount does not see.
A path in an overlay's upper or lower folder is spelt as the overlay shows it.
Without a mount table (not Linux) paths are left as they are.
"""

from __future__ import annotations

import functools
import os
import re
import select
from typing import Any, NamedTuple

_MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040, a backslash as \134


class _Mount(NamedTuple):
    id: str  # the mount's number, and its parent's: a mount over another at one point has that one as parent
    parent: str
    point: str  # where it is mounted
    device: str  # major:minor of its file system
    root: str  # the folder of that file system it shows
    kind: str  # the file system's type (ext4, tmpfs, proc...)
    options: str = ""  # its super options (an overlay's upper and lower folders)


class _Table(NamedTuple):
    at: dict[str, _Mount]  # by mount point, the visible mounts only (probe KKK: hidden ones counted)
    by_device: dict[str, list[_Mount]]  # the visible mounts of each file system


@functools.lru_cache(maxsize=1)
def _table() -> _Table:
    """The visible mounts; none where there is no mountinfo to read. A mount is visible when it is a top one at
    its point (no other there has it as parent: `mount --move` lists them out of order) and the stack it tops sits
    on the deepest visible mount above its point (else a mount over a folder above hides it)."""
    if not _READ:
        _READ.append(_mountinfo())
    text = _READ[0]  # the text `reset` compares: the table is always made from it (probe ZZA: read twice, a mount
    if text is None:  # made between the reads was kept under the older text, and missed once it came back)
        return _Table({}, {})
    lines = text.split("\n")  # (not splitlines: a mount point may hold \x1c or \u2028)
    mounts = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        root, point = (_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field) for field in fields[3:5])
        dash = fields.index("-", 6)
        kind, _, options = (fields[dash + 1:] + ["", "", ""])[:3]
        mounts.append(_Mount(fields[0], fields[1], point, fields[2], root, kind, options))
    here: dict[str, list[_Mount]] = {}
    for mount in mounts:
        here.setdefault(mount.point, []).append(mount)
    at: dict[str, _Mount] = {}
    for point in sorted(here, key=lambda point: (point.count("/"), point != "/")):
        stacked = here[point]
        above = _deepest(at, os.path.dirname(point)) if point != "/" else None
        under = {mount.parent for mount in stacked}
        # Of two tops at one point (probe LLL: one moved there, the other hidden under a mount above), the one
        # whose stack sits on the visible mount above.
        for mount in reversed([mount for mount in stacked if mount.id not in under] or stacked):
            bottom, ids = mount, {m.id: m for m in stacked}  # down the stack at that point, to what it sits on
            while bottom.parent in ids and ids[bottom.parent] != bottom:
                bottom = ids.pop(bottom.parent)
            if above is None or above.id == bottom.parent:
                at[point] = mount
                break
    by_device: dict[str, list[_Mount]] = {}
    for mount in at.values():
        by_device.setdefault(mount.device, []).append(mount)
    return _Table(at, by_device)


def _deepest(at: dict[str, _Mount], path: str) -> _Mount | None:
    """Of the mounts `at` their points, the one at `path` or its deepest ancestor."""
    place = path
    while True:
        if place in at:
            return at[place]
        parent = os.path.dirname(place)
        if parent == place:
            return None
        place = parent


_READ: list[str | None] = []  # the mount table's text, as `reset` last read it: what `_table` is made of


def _mountinfo() -> str | None:
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError:
        return None


_WATCH: list[Any] = []  # a poll of the mount table's file: the kernel marks it at each mount and unmount


def _may_have_changed() -> bool:
    """False only when the mount table surely has not changed since the last call: /proc/self/mountinfo is
    pollable (proc(5)), a priority event at each change of this namespace's mounts. True the first time (the
    watch starts before the table is read) and wherever it cannot be watched."""
    if _WATCH:
        return bool(_WATCH[0].poll(0))
    try:
        fd = os.open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        watch = select.poll()
        watch.register(fd, select.POLLPRI | select.POLLERR)
    except (OSError, AttributeError):  # (no such file, or no poll: not Linux)
        return True
    _WATCH.append(watch)
    return True


if hasattr(os, "register_at_fork"):  # a forked child's polls would take the parent's events
    os.register_at_fork(after_in_child=_WATCH.clear)


def reset() -> None:
    """Read the mount table again at the next use if it has changed (a run's checks start here, and each write
    checks again: mounts may change while a run goes on). What is made of it costs more the more mounts there
    are, and was made again for each write (probe WWW: 60 ms a write at 1,620 mounts), and even reading its text
    cost 5 ms there (probe ZZC): the kernel says when it changes (`_may_have_changed`)."""
    if _READ and not _may_have_changed():
        return
    text = _mountinfo()
    if _READ == [text]:
        return
    _READ[:] = [text]
    _table.cache_clear()
    _layer_places.cache_clear()


def _within(path: str, folder: str) -> str | None:
    """`path` below `folder` ('' for the folder itself, else starting with '/'), or None."""
    if path == folder:
        return ""
    if folder == "/":
        return path if path.startswith("/") else None
    return path[len(folder):] if path.startswith(folder + "/") else None


def _mount_of(path: str) -> _Mount | None:
    """The mount an absolute, link-free path lies on: its deepest ancestor that is a visible mount point."""
    return _deepest(_table().at, path)


def canonical(path: str) -> str:
    """The absolute, link-free `path` as seen through the chosen mount of its file system (see the module): of
    the mounts that show it, by their roots' height then their points' length, the first through which it is the
    same folder (probe KKK: one hidden under another mount was given up on, not passed over); then as an overlay
    that shows it sees it (`_overlaid`)."""
    return _overlaid(_chosen(path))


def _chosen(path: str) -> str:
    own = _mount_of(path)
    if own is None:
        return path
    inner = own.root.rstrip("/") + _within(path, own.point) or "/"  # the path within the file system
    showing = sorted((mount for mount in _table().by_device.get(own.device, ())
                      if _within(inner, mount.root) is not None),
                     key=lambda mount: (len(mount.root), len(mount.point), mount.point))
    for mount in showing:
        if mount == own:
            return path
        seen = os.path.normpath(mount.point.rstrip("/") + (_within(inner, mount.root) or "") or "/")
        if _same_place(path, seen) and _mount_of(seen) == mount:
            return seen
    return path


def _overlaid(path: str) -> str:
    """`path` as the overlay that shows it sees it, when it lies in an overlay's upper or lower folder (probe OOO:
    an output in the upper folder of the overlay holding the photos lay inside the tree; two runs, one through
    the overlay, one through its upper folder, wrote one folder unlocked), else `path`; again through an overlay
    whose lower folder is that overlay (probe SSS: nested overlays); through the deepest such folder. A lower
    folder's file may be hidden by the upper's: taken as shown all the same (changing either under a mounted
    overlay is undefined in Linux, so no output may go there)."""
    for _ in range(8):  # (overlays stacked deeper than this are not followed)
        shown = _shown_by_overlays(path)
        if not shown:
            return path
        path = shown[0]
    return path


def views(path: str) -> set[str]:
    """Every spelling of the absolute, link-free `path` as the overlays whose folders hold it show it, and again
    as overlays show those, with its own chosen spelling: where one overlay's folder lies inside another's, a
    place is shown by both, and `canonical` can follow one only (probe TTT: an overlay of one class folder, its
    upper folder in the tree overlay's upper folder, hid an output in the tree). For the tree checks."""
    found, frontier = {_chosen(path)}, [_chosen(path)]
    while frontier and len(found) < 4096:  # (probe UUU: 63 overlays sharing one lower folder filled 64)
        for seen in _shown_by_overlays(frontier.pop()):
            if seen not in found:
                found.add(seen)
                frontier.append(seen)
    return found


def _shown_by_overlays(path: str) -> list[str]:
    """Where the overlays whose upper or lower folders hold `path` show it, the deepest folder's first. Only a
    path on the file system of that folder (not on a mount below it, which the overlay does not show)."""
    own, places, shown = _mount_of(path), _layer_places(), []
    folder = path
    while True:
        for holder, mount in places.get(folder, ()):
            inside = _within("/" + _within(path, folder).lstrip("/"), mount.root.rstrip("/") or "/")
            if own == holder and inside is not None:  # (shown through its mount's root: probe UUU, a bind of a
                shown.append(os.path.normpath(mount.point.rstrip("/") + inside or "/"))  # sub-folder alone)
        parent = os.path.dirname(folder)
        if parent == folder:
            return shown
        folder = parent


@functools.lru_cache(maxsize=1)
def _layer_places() -> dict[str, list[tuple[_Mount | None, _Mount]]]:
    """Each visible overlay mount by its upper and lower folders (each spelt through the chosen mount of its file
    system, as paths are: probe SSS, a lower folder that is a bind mount was missed): the mount the folder lies
    on, and the overlay's mount. Read again with the mount table (`reset`)."""
    places: dict[str, list[tuple[_Mount | None, _Mount]]] = {}
    for mount in _table().at.values():
        if mount.kind == "overlay":
            for folder in _layers(mount.options):
                chosen = _chosen(folder)
                places.setdefault(chosen, []).append((_mount_of(chosen), mount))
    return places


_LAYERS: dict[str, tuple[str, ...]] = {}  # an overlay's options -> its folders, links resolved (they do not change)


def _layers(options: str) -> tuple[str, ...]:
    """The upper and lower folders an overlay's super options name, links resolved (those given as absolute
    paths: as the mount was asked for them; a relative one cannot be found again). Kept for the process: a
    Docker host has hundreds of overlays (probe SSS: 3x slower past the 256 a cache held)."""
    if options not in _LAYERS:
        folders: list[str] = []
        for option in options.split(","):  # (a comma in a name is written \054)
            key, _, value = option.partition("=")
            value = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), value)
            if key in ("lowerdir+", "datadir+"):  # one folder each, as given (the new mount API: probe SSS)
                folders.append(value)
            elif key == "upperdir":  # one folder, its '\\' escapes undone (probe UUU), ':' in it no separator (TTT)
                folders.append(re.sub(r"\\(.)", r"\1", value))
            elif key == "lowerdir":
                folders += _lower_folders(value)
        _LAYERS[options] = tuple(os.path.realpath(folder) for folder in folders if folder.startswith("/"))
    return _LAYERS[options]


def _lower_folders(value: str) -> list[str]:
    """A `lowerdir=` value's folders: joined by ':', with '\\' escaping the character after it (a ':', a ',', a
    '\\' in a name: probe TTT, a name ending in '\\' hid the folders after it)."""
    folders, current, escaped = [], "", False
    for char in value:
        if escaped or char not in "\\:":
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        else:
            folders.append(current)
            current = ""
    return [folder for folder in [*folders, current] if folder]


def filesystem_type(path: str) -> str:
    """The type of the file system an absolute, link-free path lies on ('' when unknown)."""
    mount = _mount_of(path)
    return mount.kind if mount is not None else ""


def is_mount_point(path: str) -> bool:
    """Whether an absolute, link-free path is a mount point (a bind mount of the same file system too)."""
    return path in _table().at or os.path.ismount(path)


def _same_place(path: str, other: str) -> bool:
    """Whether the deepest existing folders of the two paths are one folder (device and inode)."""
    def existing(place: str) -> str:
        while not os.path.exists(place) and place != os.path.dirname(place):
            place = os.path.dirname(place)
        return place
    try:
        one, two = os.stat(existing(path)), os.stat(existing(other))
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)
