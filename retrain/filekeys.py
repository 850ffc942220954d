"""Content keys of image files, remembered by (size, mtime) so reruns need not re-read every photo.

A cache key is the SHA-1 of a file's bytes. Computing it reads the whole file,
which for 100,000 photos is many gigabytes on every run; this index remembers
each file's key with its size and modification time, and only files whose
size or time changed are read again. The index is one JSON file, written
atomically; losing it (or a concurrent run overwriting it) only costs a re-read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from retrain.images import read_bytes

log = logging.getLogger(__name__)


def content_key(data: bytes, *, variant: str = "") -> bytes:
    """The cache key of an image's bytes (and an optional variant tag, e.g. a distortion)."""
    digest = hashlib.sha1(data)
    if variant:
        digest.update(b"\0" + variant.encode())
    return digest.hexdigest().encode()


class FileKeys:
    """{absolute path: (size, mtime_ns, key)}, loaded from and saved to one JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, list] = {}
        self._changed = False
        if path is not None and path.is_file():
            try:
                self._entries = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                log.warning("ignoring unreadable file index %s (%s)", path, error)

    def key(self, path: Path) -> bytes:
        """The file's content key; reads the file only if it changed since it was last seen.

        Raises retrain.images.ImageError when the file cannot be read.
        """
        name = os.path.abspath(path)
        try:
            stat = os.stat(path)
        except OSError:
            return content_key(read_bytes(path))  # read_bytes reports the problem with a readable reason
        known = self._entries.get(name)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2].encode()
        key = content_key(read_bytes(path))
        self._entries[name] = [stat.st_size, stat.st_mtime_ns, key.decode()]
        self._changed = True
        return key

    def save(self) -> None:
        """Write the index atomically (only if something changed)."""
        if self.path is None or not self._changed:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self._entries, handle, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as error:
            Path(tmp).unlink(missing_ok=True)
            log.warning("could not save the file index %s (%s); the next run re-reads the images", self.path, error)
        self._changed = False
