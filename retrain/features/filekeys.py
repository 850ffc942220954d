"""Content keys of image files, remembered by file identity so reruns need not re-read every photo.

A cache key is the SHA-1 of a file's bytes. Computing it reads the whole file,
which for 100,000 photos is many gigabytes on every run; this index remembers
each file's key with what `stat` says of it, and only files whose stat changed
are read again. The stat record includes the inode change time (ctime), which
no tool can set back: a photo edited in place with its size and modification
time restored (what "preserve date" options do) still gets a new ctime, so its
key is recomputed. An entry is only recorded once the file's ctime is safely
in the past, so an edit in the same clock tick as the hashing cannot hide
either. The index is one JSON file, written atomically; an index of another
version, or with damaged entries, is rebuilt (with a warning for the damage),
and losing it only costs a re-read. A file there that is no retrain index (the
user's) is left as it is: the run then remembers no keys, and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from retrain.features.store import NEW_FILE_MODE
from retrain.images import read_bytes
from retrain.outputs import remove_stale_temps, temp_prefix

log = logging.getLogger(__name__)

INDEX_NAME = "file_keys.json"  # the index's file in --bottleneck_dir

INDEX_VERSION = 2  # 2: entries hold ctime and inode besides size and mtime
# A file whose ctime is this recent may still be changing within the file system's clock
# resolution: its key is computed but not remembered (it is read again next run).
RACY_SECONDS = 2.0


def content_key(data: bytes, *, variant: str = "") -> bytes:
    """The cache key of an image's bytes (and an optional variant tag, e.g. a distortion)."""
    digest = hashlib.sha1(data)
    if variant:
        digest.update(b"\0" + variant.encode())
    return digest.hexdigest().encode()


def _is_an_index(data: object) -> bool:
    """Whether parsed JSON is a file index of this or an earlier version: {"version": N, "files": {...}}, or
    (before versions) {absolute path: [..., key]}."""
    if not isinstance(data, dict):
        return False
    if "version" in data:
        return isinstance(data.get("files"), dict)
    return all(name.startswith("/") and isinstance(entry, list) and entry and isinstance(entry[-1], str)
               and len(entry[-1]) == 40 for name, entry in data.items())


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class FileKeys:
    """{absolute path: [size, mtime_ns, ctime_ns, inode, device, key]}, loaded from and saved to one JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, list] = {}
        self._changed = False
        self._seen: set[str] = set()  # the paths this run asked about
        if path is not None and os.path.lexists(path):
            self._entries, self._changed = self._read(path)  # a damaged index is replaced at the next save

    def _read(self, path: Path) -> tuple[dict[str, list], bool]:
        """The saved entries that are well formed, and whether anything was wrong (said in a warning)."""
        try:
            data = json.loads(path.read_bytes()) if path.is_file() and not path.is_symlink() else None
        except OSError as error:
            log.warning("rebuilding the file index %s: it is unreadable (%s)", path, error.strerror or error)
            return {}, True
        except ValueError:
            data = None
        if not _is_an_index(data):
            log.warning("%s is not a file index retrain wrote; leaving it as it is, so this run remembers no image "
                        "keys (move it away to make later runs skip re-reading unchanged images)", path)
            self.path = None
            return {}, False
        if data.get("version") != INDEX_VERSION or not isinstance(data.get("files"), dict):
            log.info("rebuilding the file index %s (written by an earlier version)", path)
            return {}, True
        entries = {}
        for name, entry in data["files"].items():
            if (isinstance(entry, list) and len(entry) == 6 and all(type(v) is int for v in entry[:5])
                    and isinstance(entry[5], str) and len(entry[5]) == 40):
                entries[name] = entry
        if len(entries) != len(data["files"]):
            log.warning("file index %s: ignoring %d malformed entries", path, len(data["files"]) - len(entries))
            return entries, True
        return entries, False

    def key(self, path: Path) -> bytes:
        """The file's content key; reads the file only if its stat record changed since it was last seen.

        Raises retrain.images.ImageError when the file cannot be read.
        """
        name = os.path.abspath(path)
        self._seen.add(name)
        try:
            stat = os.stat(path)
        except OSError:
            return content_key(read_bytes(path))  # read_bytes reports the problem with a readable reason
        stamp = _stamp(stat)
        known = self._entries.get(name)
        if known and known[:5] == stamp:
            return known[5].encode()
        key = content_key(read_bytes(path))
        if stat.st_ctime_ns / 1e9 < time.time() - RACY_SECONDS:
            self._entries[name] = [*stamp, key.decode()]
            self._changed = True
        elif known:
            del self._entries[name]
            self._changed = True
        return key

    def save(self) -> None:
        """Write the index atomically (only if something changed); remove what killed runs left half-written."""
        if self.path is None:
            return
        remove_stale_temps(self.path)  # named for this index: --bottleneck_dir may hold the user's other files
        if not self._changed:
            return
        # Entries of files gone (a tree moved or deleted) are dropped as the index is rewritten: it grew with every
        # tree a shared cache had seen (a moved tree of 50,000 photos doubled it). Other trees' files stay.
        gone = [name for name in self._entries if name not in self._seen and not os.path.lexists(name)]
        for name in gone:
            del self._entries[name]
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path.name), suffix=".tmp")
            os.fchmod(fd, NEW_FILE_MODE)
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": INDEX_VERSION, "files": self._entries}, handle, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as error:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            log.warning("could not save the file index %s (%s); the next run re-reads the images", self.path,
                        error.strerror or error)
        except BaseException:  # interrupted: no half-written index is left behind
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise
        self._changed = False
