"""The on-disk bottleneck cache: vectors of one module, in atomically written shard files.

Layout: `<bottleneck_dir>/<module key>/shard-*.npz`, each shard holding many
(key, vector) pairs. A key is the SHA-1 of the image file's bytes (plus, for
distorted variants, the distortion settings), so a renamed or moved image
reuses its vector and an edited one is recomputed; the module key covers the
module's content, input size and our preprocessing, so two modules never
share vectors. Shards are written to a temporary file and renamed into place:
a run killed at any moment leaves only complete shards, and the next run
recomputes just what is missing. Each run writes shards of its own, so
several runs can share one folder. A damaged shard is moved aside, once.

A store is read whole into memory (`load()`, the fast path for caches that fit),
or only its keys are (`load(vectors=False)`): vectors are then read from the
shard files when asked for, so a cache larger than memory still trains. With
`dtype="float16"` the vectors are kept at half the size on disk and in memory
(in a folder of their own, `<module key>-float16`, so they never mix with
full-precision ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from retrain import journal
from retrain.errors import RetrainError

log = logging.getLogger(__name__)

KEY_DTYPE = "S40"  # hex SHA-1
COMPACT_ABOVE_SHARDS = 16
SHARD_VECTORS = 65_536  # compaction merges small shards into shards of at most this many vectors
# A kill loses at most this much work: up to FLUSH_EVERY_VECTORS vectors or
# FLUSH_EVERY_SECONDS of computing. The environment variable overrides the count
# (tests use a small one to kill a run between shards).
FLUSH_EVERY_VECTORS = 256
FLUSH_EVERY_SECONDS = 30.0
FLUSH_EVERY_ENV = "RETRAIN_BOTTLENECK_FLUSH_EVERY"
# The cache's folder of one module: its key (features.module's cache key, 24 hex digits), followed by the
# dtype when it is not float32 (`BottleneckStore`): only those, so a folder of the user's there is not the cache's.
FOLDER_PATTERN = r"[0-9a-f]{24}(-float16)?"
PROBE_PREFIX = ".ray-probe-"  # a Ray run's marker in the cache, named after its host and process (features/ray.py)


def _new_file_mode() -> int:
    """What open() gives a new file under this process's umask (mkstemp gives 0o600, which would lock the
    other users of a shared cache out of its shards)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


NEW_FILE_MODE = _new_file_mode()  # read once, at import: os.umask is process-wide


@dataclass(frozen=True)
class _Shard:
    """Where one shard's vectors lie in its file: rows [start, start + count) of the store."""

    path: Path
    start: int
    count: int
    offset: int  # byte offset of the first vector in the file (npz members are stored uncompressed)
    dtype: np.dtype
    # The shard file, kept open from when it was listed: another run's compaction may delete the file
    # meanwhile, and an open file stays readable (closed when the store drops the shard).
    handle: Any = None


class BottleneckStore:
    """Vectors of one module, in atomically written shard files."""

    def __init__(self, root: Path, *, module_key: str, feature_dim: int, dtype: str = "float32") -> None:
        self.dir = root / (module_key if dtype == "float32" else f"{module_key}-{dtype}")
        self.feature_dim = feature_dim
        self.dtype = np.dtype(dtype)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RetrainError(f"cannot create the cache folder {self.dir} in --bottleneck_dir: "
                               f"{error.strerror}") from None
        self._index: dict[bytes, int] = {}
        self._chunks: list[np.ndarray] = []  # every row in memory (vectors=True), or only unflushed ones
        self._rows = 0
        self._in_memory = True
        self._shards: list[_Shard] = []  # vectors=False: where the flushed rows are
        self._memory_start = 0  # vectors=False: the first row held in memory (the unflushed ones)
        self._pending_keys: list[bytes] = []
        self._pending_vectors: list[np.ndarray] = []
        self._last_flush = time.monotonic()
        self.shards_written = 0
        self.flush_every = _flush_every()
        self._loaded: set[Path] = set()  # shard files read (or set aside) by the last load()

    def load(self, *, vectors: bool = True) -> int:
        """Read every complete shard; returns the number of distinct cached vectors.

        With `vectors=False` only the keys are read and each shard's vectors are
        located in its file: memory then grows with the number of keys (about 100
        bytes each), not with the vectors.
        """
        self._remove_stale_temps()
        for _attempt in range(3):
            found = self._read_shards(vectors=vectors)
            if found is not None:
                break
        keys, chunks, shards = found if found is not None else ([], [], [])
        all_keys = np.concatenate(keys) if keys else np.zeros((0,), KEY_DTYPE)
        self._in_memory = vectors
        self._chunks = [np.concatenate(chunks)] if chunks else []
        self.close()
        self._shards = shards
        self._rows = len(all_keys)
        self._memory_start = 0 if vectors else self._rows
        self._index = {key: row for row, key in enumerate(all_keys.tolist())}
        return len(self._index)

    def reload(self) -> int:
        """Write what is pending, then read the cache again in the mode it was opened in (shards others wrote)."""
        self.flush()
        return self.load(vectors=self._in_memory)

    def _read_shards(self, *, vectors: bool) -> tuple[list, list, list[_Shard]] | None:
        """Keys (and vectors, or their places) of every readable shard; None if one vanished meanwhile."""
        keys, chunks, shards, start = [], [], [], 0
        self._loaded = set()
        for path in sorted(self.dir.glob("shard-*.npz")):
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                return None  # another run compacted it away; list again
            except OSError:
                mode = 0  # e.g. a link that leads to itself
            if not stat.S_ISREG(mode):  # opening a pipe would wait for a writer for ever
                self._set_aside(path, "it is not a regular file but a pipe, a device or a folder")
                continue
            try:
                with np.load(path, allow_pickle=False) as shard:
                    shard_keys = shard["keys"]
                    shard_vectors = shard["vectors"] if vectors else None
                    (shape, offset), dtype = _member_header(path, "vectors.npy")
                if not vectors:
                    _check_crc(path, "vectors.npy")  # reading them whole (above) checks it; reading rows would not
            except FileNotFoundError:
                return None  # another run compacted it away; list again
            except PermissionError:  # another user's shard in a shared cache: not damaged, not ours to move
                log.warning("cannot read bottleneck shard %s (permission denied); its vectors will be recomputed "
                            "here (its owner can make it readable with chmod a+r)", path)
                continue
            except Exception:  # noqa: BLE001 - numpy and zipfile raise many kinds for a damaged file
                self._set_aside(path, "it is not a complete .npz file")
                continue
            if shard_keys.dtype.kind != "S" or shard_keys.ndim != 1:
                self._set_aside(path, f"its keys are {shard_keys.dtype} {shard_keys.shape}, expected [N] byte strings")
                continue
            if shape != (len(shard_keys), self.feature_dim) or dtype.kind != "f":
                self._set_aside(path, f"it holds {dtype} {shape} for {len(shard_keys)} keys, expected "
                                      f"[{len(shard_keys)}, {self.feature_dim}] floats")
                continue
            try:
                finite = _all_finite(shard_vectors if vectors else _mapped(path, shape, offset, dtype))
            except FileNotFoundError:
                return None  # another run compacted it away since it was read; list again
            if not finite:
                self._set_aside(path, "it holds vectors that are not finite numbers")
                continue
            self._loaded.add(path)
            keys.append(shard_keys)
            if vectors:
                chunks.append(shard_vectors.astype(self.dtype, copy=False))
            else:
                handle = _open_shard(path)
                if handle is None:
                    return None  # compacted away since it was read; list again
                shards.append(_Shard(path=path, start=start, count=len(shard_keys), offset=offset, dtype=dtype,
                                     handle=handle))
            start += len(shard_keys)
        return keys, chunks, shards

    def close(self) -> None:
        """Close the shard files held open for reading vectors from disk (load(vectors=False))."""
        for shard in self._shards:
            if shard.handle is not None:
                shard.handle.close()
        self._shards = []

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a damaged shard out of the way, once, so every later run does not trip over it."""
        aside = path.with_name(f"damaged-{path.name}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return  # another run moved it first
        except OSError as error:
            log.warning("bottleneck shard %s is damaged (%s) and cannot be moved aside (%s); its vectors will "
                        "be recomputed", path, reason, error.strerror)
            return
        log.warning("bottleneck shard %s is damaged (%s); moved it aside to %s, its vectors will be recomputed",
                    path, reason, aside.name)

    def _remove_stale_temps(self) -> None:
        """Delete half-written shards that killed runs left behind (never a running writer's), and the markers a
        Ray run puts in the cache for its workers (features/ray.py) that a killed run left (probe XXX)."""
        remove_stale_files(self.dir, ".tmp-*.npz")
        for path in self.dir.glob(f"{PROBE_PREFIX}*"):
            _remove_unheld_probe(path)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _memory(self) -> np.ndarray:
        """The rows held in memory, as one array (chunks added this run are merged on first use)."""
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks
                            else np.zeros((0, self.feature_dim), self.dtype)]
        return self._chunks[0]

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """float32 vectors [len(keys), D] for keys that are all present (loaded or added this run)."""
        rows = np.fromiter((self._index[k] for k in keys), np.int64, count=len(keys))
        out = np.empty((len(rows), self.feature_dim), np.float32)
        held = np.flatnonzero(rows >= self._memory_start)
        step = max(1024, (64 << 20) // (4 * max(1, self.feature_dim)))  # copied 64 MB at a time: a run's whole set
        for start in range(0, len(held), step):  # at once made a second copy beside the cache and the result
            part = held[start:start + step]
            out[part] = self._memory()[rows[part] - self._memory_start]
        if len(held) < len(rows):
            on_disk = rows < self._memory_start
            out[on_disk] = self._read_rows(rows[on_disk])
        return out

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of flushed shards, read from their files (sorted, one read per row)."""
        out = np.empty((len(rows), self.feature_dim), np.float32)
        starts = np.fromiter((s.start for s in self._shards), np.int64, count=len(self._shards))
        which = np.searchsorted(starts, rows, side="right") - 1
        for number in np.unique(which):
            shard = self._shards[number]
            picked = np.flatnonzero(which == number)
            size = shard.dtype.itemsize * self.feature_dim
            try:
                fd = shard.handle.fileno()
                for position in picked[np.argsort(rows[picked], kind="stable")]:
                    data = os.pread(fd, size, shard.offset + int(rows[position] - shard.start) * size)
                    out[position] = np.frombuffer(data, shard.dtype)
            except OSError as error:
                raise RetrainError(f"cannot read the bottleneck cache shard {shard.path} ({error.strerror}); was "
                                   "the cache changed during the run? rerun") from None
        return out

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Add vectors; they reach the disk at the next flush (by size or time)."""
        vectors = np.asarray(vectors, np.float32).astype(self.dtype, copy=False)
        for offset, key in enumerate(keys):
            self._index[key] = self._rows + offset
        self._rows += len(keys)
        self._chunks.append(vectors)
        self._pending_keys.extend(keys)
        self._pending_vectors.append(vectors)
        if (len(self._pending_keys) >= self.flush_every
                or time.monotonic() - self._last_flush >= FLUSH_EVERY_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write pending vectors as one new shard, atomically."""
        self._last_flush = time.monotonic()
        if not self._pending_keys:
            return
        keys = np.array(self._pending_keys, dtype=KEY_DTYPE)
        path, handle = self._write_shard(keys, np.concatenate(self._pending_vectors), opened=not self._in_memory)
        self._pending_keys, self._pending_vectors = [], []
        if handle is not None:  # the new rows are on disk now: read them from there, free the memory
            (_, offset), _ = _member_header(handle, "vectors.npy")
            self._shards.append(_Shard(path=path, start=self._memory_start, count=len(keys), offset=offset,
                                       dtype=self.dtype, handle=handle))
            self._memory_start = self._rows
            self._chunks = []

    def compact(self) -> None:
        """Merge many small shards into a few large ones, so loading stays a few large reads.

        Shards of SHARD_VECTORS vectors or more are left as they are and the small
        ones are merged a group at a time, so compaction's memory stays bounded
        whatever the size of the cache.
        """
        self.flush()
        old = sorted(self.dir.glob("shard-*.npz"))
        if len(old) <= COMPACT_ABOVE_SHARDS:
            return
        merged = BottleneckStore(self.dir.parent, module_key=self.dir.name, feature_dim=self.feature_dim)
        merged.dtype = self.dtype
        merged.load(vectors=False)
        small = [s for s in merged._shards if s.count < SHARD_VECTORS]
        groups, group, size = [], [], 0
        for shard in small:
            if group and size + shard.count > SHARD_VECTORS:
                groups.append(group)
                group, size = [], 0
            group.append(shard)
            size += shard.count
        groups.append(group)
        removed = written = 0
        for group in (g for g in groups if len(g) > 1):
            try:
                keys = np.concatenate([np.load(s.path, allow_pickle=False)["keys"] for s in group])
                rows = np.concatenate([np.arange(s.start, s.start + s.count) for s in group])
                vectors = merged._read_rows(rows)
            except (OSError, RetrainError):
                continue  # another run is compacting these shards right now: leave them to it
            merged._write_shard(keys, vectors.astype(self.dtype))
            written += 1
            for shard in group:  # only shards whose vectors made it into the merged one
                shard.path.unlink(missing_ok=True)
                removed += 1
        merged.close()
        if removed:
            log.info("compacted %d bottleneck shards into %d", removed, written)
            self.load(vectors=self._in_memory)

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray, *, opened: bool = False) -> tuple[Path, Any]:
        """Write a new shard file; returns its path, and with `opened` the file opened for reading before it took
        its name (another run's compaction may delete it as soon as it has: the open file stays readable)."""
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        tmp = reader = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
            os.fchmod(fd, NEW_FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=keys, vectors=np.ascontiguousarray(vectors))
                handle.flush()
                os.fsync(handle.fileno())
            reader = open(tmp, "rb", buffering=0) if opened else None  # noqa: SIM115 - held by its _Shard
            os.replace(tmp, self.dir / name)
        except OSError as error:
            if reader is not None:
                reader.close()
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            kept = ("vectors computed so far are kept" if self.shards_written else
                    "no vector of this run could be kept")
            raise RetrainError(f"cannot write to the bottleneck cache {self.dir} (--bottleneck_dir): "
                               f"{error.strerror or error}; {kept}") from None
        except BaseException:
            if reader is not None:
                reader.close()
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise
        self.shards_written += 1
        return self.dir / name, reader


def _remove_unheld_probe(path: Path) -> None:
    """Delete a Ray run's marker (features/ray.py) that no run holds: the run holds an flock on it while it goes
    on, and names it after its host and process, which must be gone too (probe ZZA: a run in another process
    namespace, which cannot see the Ray run's process, removed its marker). An earlier version's marker, named
    otherwise and never held, goes once it is journal.STALE_SECONDS old."""
    owner = re.fullmatch(rf"{re.escape(PROBE_PREFIX)}([0-9a-f]{{6}})-(\d+)-[0-9a-f]{{8}}", path.name)
    try:
        if not (journal.owner_gone(owner[1], int(owner[2]), path) if owner is not None
                else time.time() - path.lstat().st_mtime > journal.STALE_SECONDS):
            return
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a run going on (in another namespace, say)
        path.unlink()
    except (OSError, ImportError):
        pass
    finally:
        os.close(fd)


def remove_stale_files(folder: Path, pattern: str) -> None:
    """Delete the files in `folder` matching `pattern` not touched for journal.STALE_SECONDS: temporary files of
    killed runs (a running writer's are younger)."""
    cutoff = time.time() - journal.STALE_SECONDS
    for path in folder.glob(pattern):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass  # another run removed it first, or it is not ours to remove


def _check_crc(path: Path, member: str) -> None:
    """Read a member of a zip file through, a megabyte at a time: zipfile raises BadZipFile on a wrong CRC-32."""
    with zipfile.ZipFile(path) as archive, archive.open(member) as data:
        while data.read(1 << 20):
            pass


def _mapped(path: Path, shape: tuple[int, ...], offset: int, dtype: np.dtype) -> np.ndarray:
    """A shard's vectors as a read-only memory map (the member is stored uncompressed at `offset`)."""
    if not shape[0]:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _all_finite(vectors: np.ndarray, rows: int = 16_384) -> bool:
    """Whether every number is finite (a damaged or tampered shard can hold NaN), a block of rows at a time."""
    return all(np.isfinite(vectors[start:start + rows]).all() for start in range(0, len(vectors), rows))


def _open_shard(path: Path) -> Any:
    """The shard file opened for reading, or None if it is gone."""
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - held open by its _Shard (see there)
    except FileNotFoundError:
        return None


def _member_header(source: Path | BinaryIO, member: str) -> tuple[tuple[tuple[int, ...], int], np.dtype]:
    """((shape, byte offset of the data in the file), dtype) of an uncompressed .npy member of an .npz file (its
    path, or the file opened for reading, left open)."""
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(source, "rb")) if isinstance(source, Path) else source
        with zipfile.ZipFile(handle) as archive:
            info = archive.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{member} is compressed")
        handle.seek(info.header_offset)
        local = handle.read(30)  # the zip local file header: name and extra-field lengths at bytes 26..30
        name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0)(handle)
        if fortran:
            raise ValueError(f"{member} is in Fortran order")
        return (shape, handle.tell()), dtype


def _flush_every() -> int:
    """FLUSH_EVERY_VECTORS, or a positive count from the environment."""
    value = os.environ.get(FLUSH_EVERY_ENV, "")
    if not value:
        return FLUSH_EVERY_VECTORS
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count <= 0:
        raise RetrainError(f"{FLUSH_EVERY_ENV}={value!r} is not a positive whole number; unset it or fix it")
    return count
