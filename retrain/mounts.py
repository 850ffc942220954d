"""One spelling for a place that bind mounts show at several paths (Linux's /proc/self/mountinfo).

`retrain`'s checks compare paths with links resolved (`outputs.real`); a bind
mount shows one folder at a second path that no link resolves. A container
started with `-v ~/photos:/data -v ~/photos/models:/models` (probe GGG: `mount
--bind`) made `/models/graph.pb` an output inside the image tree that the next
run trains on, two outputs one file, and two runs' locks two locks. `canonical`
maps a path on a bind mount to the same place under a mount of the same
filesystem that shows more of it (the one whose root lies highest), when that
is the same folder (checked by device and inode); other paths are unchanged.
"""

from __future__ import annotations

import functools
import os
import re

_MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040, a backslash as \134


@functools.lru_cache(maxsize=1)
def _mounts() -> tuple[tuple[str, str, str], ...]:
    """(mount point, device, root within the device) of each mount, in the order mounted (a later one at the
    same point hides the earlier); empty where there is no mountinfo to read."""
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return ()
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) >= 5:
            root, point = (_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field) for field in fields[3:5])
            found.append((point, fields[2], root))
    return tuple(found)


def reset() -> None:
    """Read the mount table again at the next use (a run's checks start here; mounts may change between runs)."""
    _mounts.cache_clear()


def _within(path: str, folder: str) -> str | None:
    """`path` below `folder` ('' for the folder itself), or None."""
    if path == folder:
        return ""
    base = folder.rstrip("/") + "/"
    return path[len(base) - 1:] if path.startswith(base) else None


def canonical(path: str) -> str:
    """The absolute, link-free `path` as seen through the mount of its filesystem whose root lies highest."""
    mounts = _mounts()
    for _ in range(8):  # a bind of a bind mount
        own = None  # the mount the path lies on: the deepest point, the later of two at one point (it is on top)
        for mount in mounts:
            if _within(path, mount[0]) is not None and (own is None or len(mount[0]) >= len(own[0])):
                own = mount
        if own is None or own[2] == "/":
            return path
        inner = own[2].rstrip("/") + _within(path, own[0])  # the path within the device
        wider = [(root, point) for point, device, root in mounts
                 if device == own[1] and len(root) < len(own[2]) and _within(inner, root) is not None]
        if not wider:
            return path
        root, point = min(wider, key=lambda mount: len(mount[0]))
        seen = os.path.normpath(point.rstrip("/") + _within(inner, root))
        if not _same_place(path, seen):  # hidden by a mount over it: keep the path as given
            return path
        path = seen
    return path


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
