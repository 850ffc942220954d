"""The on-disk bottleneck cache: vectors of one module, in atomically written shard files.

Layout: `<bottleneck_dir>/<module key>/shard-*.npz`, each shard holding many
(key, vector) pairs. A key is the SHA-1 of the image file's bytes (plus, for
distorted variants, the distortion settings), so a renamed or moved image
reuses its vector and an edited one is recomputed; the module key covers the
module's content, input size and our preprocessing, so two modules never
share vectors. Shards are written to a temporary file and renamed into place:
a run killed at any moment leaves only complete shards, and the next run
recomputes just what is missing. Each run writes shards of its own, so
several runs can share one folder. An unreadable shard is treated as missing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrain.errors import RetrainError

log = logging.getLogger(__name__)

KEY_DTYPE = "S40"  # hex SHA-1
COMPACT_ABOVE_SHARDS = 16
# A kill loses at most this much work: up to FLUSH_EVERY_VECTORS vectors or
# FLUSH_EVERY_SECONDS of computing. The environment variable overrides the count
# (tests use a small one to kill a run between shards).
FLUSH_EVERY_VECTORS = 256
FLUSH_EVERY_SECONDS = 30.0
FLUSH_EVERY_ENV = "RETRAIN_BOTTLENECK_FLUSH_EVERY"
STALE_TEMP_SECONDS = 3600.0  # a temporary shard this old was left by a killed run


class BottleneckStore:
    """Vectors of one module, in atomically written shard files."""

    def __init__(self, root: Path, *, module_key: str, feature_dim: int) -> None:
        self.dir = root / module_key
        self.feature_dim = feature_dim
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RetrainError(f"cannot create the cache folder {self.dir} in --bottleneck_dir: "
                               f"{error.strerror}") from None
        self._index: dict[bytes, int] = {}
        self._chunks: list[np.ndarray] = []
        self._rows = 0
        self._pending_keys: list[bytes] = []
        self._pending_vectors: list[np.ndarray] = []
        self._last_flush = time.monotonic()
        self.shards_written = 0
        self.flush_every = _flush_every()
        self._loaded: set[Path] = set()  # shard files read (or found unreadable) by the last load()

    def load(self) -> int:
        """Read every complete shard; returns the number of distinct cached vectors."""
        self._remove_stale_temps()
        for _attempt in range(3):
            paths = sorted(self.dir.glob("shard-*.npz"))
            keys, vectors, vanished = [], [], False
            self._loaded = set()
            for path in paths:
                try:
                    with np.load(path, allow_pickle=False) as shard:
                        shard_keys, shard_vectors = shard["keys"], shard["vectors"]
                except FileNotFoundError:
                    vanished = True  # another run compacted it away; list again
                    break
                except Exception:  # noqa: BLE001 - numpy and zipfile raise many kinds for a damaged file
                    self._set_aside(path, "it is not a complete .npz file")
                    continue
                if (shard_keys.dtype.kind != "S" or shard_vectors.shape != (len(shard_keys), self.feature_dim)
                        or shard_vectors.dtype.kind != "f"):
                    self._set_aside(path, f"it holds {shard_vectors.dtype} {shard_vectors.shape}, expected "
                                          f"[N, {self.feature_dim}] floats")
                    continue
                self._loaded.add(path)
                keys.append(shard_keys)
                vectors.append(shard_vectors.astype(np.float32, copy=False))
            if not vanished:
                break
        all_keys = np.concatenate(keys) if keys else np.zeros((0,), KEY_DTYPE)
        self._chunks = [np.concatenate(vectors)] if vectors else []
        self._rows = len(all_keys)
        self._index = {key: row for row, key in enumerate(all_keys.tolist())}
        return len(self._index)

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
        """Delete half-written shards that killed runs left behind (never a running writer's)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.dir.glob(".tmp-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass  # another run removed it first, or it is not ours to remove

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def _all_vectors(self) -> np.ndarray:
        """Every row, as one array (chunks added this run are merged on first use)."""
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks
                            else np.zeros((0, self.feature_dim), np.float32)]
        return self._chunks[0]

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """Vectors for keys that are all present (loaded or added this run)."""
        return self._all_vectors()[[self._index[k] for k in keys]]

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Add vectors; they reach the disk at the next flush (by size or time)."""
        vectors = np.asarray(vectors, np.float32)
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
        vectors = np.concatenate(self._pending_vectors).astype(np.float32, copy=False)
        self._write_shard(keys, vectors)
        self._pending_keys, self._pending_vectors = [], []

    def compact(self) -> None:
        """Merge many small shards into one, so loading stays a few large reads."""
        self.flush()
        old = sorted(self.dir.glob("shard-*.npz"))
        if len(old) <= COMPACT_ABOVE_SHARDS:
            return
        self.load()
        keys = list(self._index)
        self._write_shard(np.array(keys, dtype=KEY_DTYPE), self.get(keys))
        for path in old:
            if path in self._loaded:  # never a shard whose vectors did not make it into the merged one
                path.unlink(missing_ok=True)
        log.info("compacted %d bottleneck shards into one (%d vectors)", len(old), len(keys))

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=keys, vectors=vectors)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.dir / name)
        except OSError as error:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise RetrainError(f"cannot write to the bottleneck cache {self.dir} (--bottleneck_dir): "
                               f"{error.strerror or error}; vectors computed so far are kept") from None
        except BaseException:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise
        self.shards_written += 1


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
