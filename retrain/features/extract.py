"""The extraction worker: read -> decode -> resize -> module -> cache, for one member module.

`ExtractionJob` is the unit: given work items (an image file and the cache keys
still missing for it) it prepares pixels in a thread pool while the module runs
on full batches, and adds each batch's vectors to the member's store. A plain
job computes one vector per image at the member's size; a variant job decodes
each image once and computes its missing distorted variants (crop, scale,
flip, brightness drawn from the image's key, the variant index and the seed).
The same job runs in-process (here) and on a cluster (`retrain.features.ray`).

`file_vectors` and `variant_vectors` are what a run calls: they hash the files
once, run each member's job over what its cache lacks, and return the
concatenated vectors of every usable image.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain.distortions import Distortions, Parameters, crop_boxes, distort_tensors, variant_parameters, view_of
from retrain.features.filekeys import FileKeys, content_key
from retrain.features.module import FeatureExtractor
from retrain.features.source import FeatureSource
from retrain.features.store import BottleneckStore
from retrain.images import ImageError, prepare_image, read_bytes
from retrain.logs import warn_skipped
from retrain import errors
from retrain.errors import RetrainError, stops_after
from retrain.pool import thread_pool, windowed
from retrain.progress import Progress
from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)


class MemoryStore:
    """A store that keeps vectors in memory only: for vectors that must not be cached (a fine-tuned module)."""

    def __init__(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self.dtype = np.dtype(np.float32)
        self._vectors: dict[bytes, np.ndarray] = {}

    def __contains__(self, key: bytes) -> bool:
        return key in self._vectors

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        self._vectors.update(zip(keys, np.asarray(vectors, np.float32)))

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, self.feature_dim), np.float32)

    def flush(self) -> None:
        pass


NOT_FINITE = ("the module gave {what} a vector holding NaN or infinity (the module's fault, not the image's; "
              "nothing was cached): check --tfhub_module")
TOO_LARGE = ("the module gave {what} a vector with values beyond what --bottleneck_dtype {dtype} holds (its largest "
             "is {largest:g}): the default, float32, holds them")


def _unusable(vectors: np.ndarray, dtype: np.dtype, *, what: str = "it") -> list[str]:
    """Why each row of float32 `vectors` cannot be cached as `dtype`, or "" (NaN or infinity; a float16 cache
    would make values over 65504 infinite). `what` the row is of the image: it, or one of its distorted variants."""
    finite = np.isfinite(vectors).all(axis=1)
    with np.errstate(over="ignore"):
        fits = np.isfinite(vectors.astype(dtype, copy=False)).all(axis=1)
    not_finite = NOT_FINITE.format(what=what)
    too_large = TOO_LARGE.format(what=what, dtype=dtype.name, largest=float(np.finfo(dtype).max))
    return ["" if ok else not_finite if not number else too_large for ok, number in zip(finite & fits, finite)]


@dataclass(frozen=True)
class WorkItem:
    """An image file and the cache keys to compute for it (one, or one per missing variant)."""

    path: Path
    keys: tuple[bytes, ...]
    variants: tuple[int, ...] = ()  # variant index of each key, for variant jobs
    content: bytes = b""  # the content key the keys derive from: the file must still hold those bytes


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to rebuild an ExtractionJob in another process (a cluster worker): plain values only."""

    module: str  # the member's handle or path, as given (resolved again where the job runs)
    image_size: int | None  # --image_size, for modules that leave their size open
    cache_key: str  # the member's cache key: the rebuilt module must have the same
    store_root: Path  # --bottleneck_dir: the worker writes shards into store_root / cache_key
    batch_size: int
    label: str
    distortions: Distortions | None = None
    seed: int = 0
    store_dtype: str = "float32"  # --bottleneck_dtype: the store's folder and the shards' dtype depend on it


class ExtractionJob:
    """Compute vectors of work items with one member module and add them to its store.

    With `distortions`, each item's keys are distorted variants: the image is
    decoded once at the size the largest enlargement needs, and every variant's
    window, flip and brightness are drawn from its key, index and `seed`.
    """

    def __init__(self, member: FeatureExtractor, store: Any, *, batch_size: int, label: str,
                 distortions: Distortions | None = None, seed: int = 0, image_size: int | None = None) -> None:
        self.member, self.store, self.batch_size, self.label = member, store, batch_size, label
        self.distortions, self.seed, self.image_size = distortions, seed, image_size
        tf = import_tensorflow()
        height, width = member.height, member.width
        if distortions is None:
            self.source_size = (height, width)
            call = tf.function(lambda images: member(images),
                               input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)])
            self._compute = lambda rows: call(np.stack([r[1] for r in rows])).numpy()
        else:
            self.source_size = distortions.source_size(height=height, width=width)
            margin = distortions.margin

            @tf.function(input_signature=[tf.TensorSpec([None, *self.source_size, 3], tf.float32),
                                          tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.bool),
                                          tf.TensorSpec([None], tf.float32)])
            def distorted(images, boxes, flip, brightness):
                return member(distort_tensors(images, boxes, flip, brightness, height=height, width=width))

            def compute(rows: list) -> np.ndarray:
                drawn = Parameters.concatenate([r[2] for r in rows])
                return distorted(np.stack([r[1] for r in rows]), crop_boxes(drawn, margin=margin), drawn.flip,
                                 drawn.brightness).numpy()

            self._compute = compute

    @property
    def spec(self) -> JobSpec:
        """This job as plain values, for a worker elsewhere (the store must be a BottleneckStore on shared disk)."""
        return JobSpec(module=self.member.handle, image_size=self.image_size, cache_key=self.member.cache_key,
                       store_root=self.store.dir.parent, batch_size=self.batch_size, label=self.label,
                       distortions=self.distortions, seed=self.seed, store_dtype=str(self.store.dtype))

    @classmethod
    def from_spec(cls, spec: JobSpec) -> "ExtractionJob":
        """Rebuild a job where it runs: load the module once, open the same store."""
        from retrain.features.module import load_feature_extractor

        member = load_feature_extractor(spec.module, image_size=spec.image_size, strict_size=False)
        if member.cache_key != spec.cache_key:
            raise RetrainError(f"--tfhub_module {spec.module} loads differently on this worker (cache key "
                               f"{member.cache_key}, expected {spec.cache_key}); give every worker the same module")
        store = BottleneckStore(spec.store_root, module_key=member.cache_key, feature_dim=member.feature_dim,
                                dtype=spec.store_dtype)
        return cls(member, store, batch_size=spec.batch_size, label=spec.label, distortions=spec.distortions,
                   seed=spec.seed, image_size=spec.image_size)

    def _vectors(self, rows: Sequence[Any]) -> np.ndarray:
        """The module's vectors of a batch; a module that fails on photos (its own check, a shape it cannot take)
        is one line naming it (probe ZZK: a traceback)."""
        tf = import_tensorflow()
        try:
            vectors = np.asarray(self._compute(rows), np.float32)
        except tf.errors.ResourceExhaustedError as error:
            raise RetrainError(f"--tfhub_module {self.member.handle} ran out of memory on a batch of {len(rows)} "
                               f"images ({errors.reason(error)}); lower --bottleneck_batch_size") from None
        except tf.errors.OpError as error:
            raise RetrainError(f"--tfhub_module {self.member.handle} failed on a batch of {len(rows)} images "
                               f"({errors.reason(error)}); expected an image feature-vector module (one that fails "
                               "only on large batches takes a smaller --bottleneck_batch_size)") from None
        if vectors.shape != (len(rows), self.member.feature_dim):  # stored under the wrong images' keys (probe ZZM)
            raise RetrainError(f"--tfhub_module {self.member.handle} gave {vectors.shape} vectors for a batch of "
                               f"{len(rows)} images, expected [{len(rows)}, {self.member.feature_dim}]: one vector "
                               "per image; expected an image feature-vector module")
        return vectors

    def prepare(self, item: WorkItem) -> np.ndarray:
        """The image's pixels as this job feeds them: at the module's size, or at the distortion source size.

        The file is read again here, after its key was taken: if its bytes changed meanwhile (a photo being
        edited or replaced during the run), caching its vector under the old key would poison the cache for
        good, so the image is refused for this run instead.
        """
        data = read_bytes(item.path)
        if item.content and content_key(data) != item.content:
            raise ImageError("changed while the run was reading it; left out of this run (its vector is not "
                             "cached): rerun to include it")
        height, width = self.source_size if self.distortions is not None else (self.member.height, self.member.width)
        return prepare_image(data, height=height, width=width)

    def _rows(self, item: WorkItem, pixels: np.ndarray) -> list[tuple[bytes, np.ndarray, Parameters | None]]:
        if self.distortions is None:
            return [(key, pixels, None) for key in item.keys]
        return [(key, pixels, variant_parameters(self.distortions, key=key, content=item.content, variant=variant,
                                                 seed=self.seed))
                for key, variant in zip(item.keys, item.variants)]

    def run(self, items: Sequence[WorkItem], *, pool: concurrent.futures.Executor,
            progress: Progress | None = None) -> dict[Path, str]:
        """Compute every item's vectors into the store; returns {path: reason} for images that failed.

        `progress` counts finished keys; by default a new bar on stderr, closed at the end.
        """
        total = sum(len(item.keys) for item in items)
        own_progress = progress is None
        if progress is None:
            progress = Progress(total, self.label, unit="images" if self.distortions is None else "variants")
        failed: dict[Path, str] = {}
        rows: list = []
        owners: list[Path] = []  # the image of each row

        def prepare(item: WorkItem) -> tuple[WorkItem, np.ndarray | None, str]:
            try:
                return item, self.prepare(item), ""
            except ImageError as error:
                return item, None, str(error)

        def run_batch() -> None:
            with stops_after():
                vectors = self._vectors(rows)
            reasons = _unusable(vectors, self.store.dtype,  # a faulty module's NaN: not cached, nor trained on
                                what="it" if self.distortions is None else "one of its distorted variants")
            for owner, reason in zip(owners, reasons):
                if reason:
                    failed[owner] = reason
            usable = np.array([not reason for reason in reasons])
            if usable.any():
                self.store.add([row[0] for row, ok in zip(rows, usable) if ok], vectors[usable])
            progress.update(len(rows))
            rows.clear()
            owners.clear()

        try:
            for item, pixels, reason in windowed(items, lambda i: pool.submit(prepare, i), 4 * self.batch_size):
                if pixels is None:
                    failed[item.path] = reason
                    progress.update(len(item.keys))
                    continue
                for row in self._rows(item, pixels):
                    rows.append(row)
                    owners.append(item.path)
                    if len(rows) == self.batch_size:
                        run_batch()
            if rows:
                run_batch()
        finally:
            self.store.flush()  # keep finished work even when interrupted (Ctrl-C, SIGTERM)
        if own_progress:
            progress.close()
        return failed


class StoredRows:
    """Concatenated member vectors of many rows, read from the stores when indexed: [N, dim], never held whole.

    `rows[indices]` gives float32 [len(indices), dim]; `rows.subset(indices)` another StoredRows.
    What training and evaluation use when a run's vectors exceed --bottleneck_memory_gb.
    """

    def __init__(self, stores: Sequence[Any], keys: np.ndarray) -> None:
        self.stores, self.keys = tuple(stores), keys
        self.shape = (len(keys), sum(store.feature_dim for store in self.stores))

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, indices: Any) -> np.ndarray:
        keys = self.keys[indices].tolist()
        return _concatenate([store.get(keys) for store in self.stores], len(keys), self.shape[1])

    def subset(self, indices: Any) -> "StoredRows":
        return StoredRows(self.stores, self.keys[indices])


def take_rows(rows: Any, indices: Any) -> Any:
    """The rows `indices` of an array (a copy) or of StoredRows (still lazy)."""
    return rows.subset(indices) if isinstance(rows, StoredRows) else rows[indices]


@dataclass(frozen=True)
class Vectors:
    """Concatenated vectors of the usable images, in input order, and why the others were skipped."""

    paths: tuple[Path, ...]
    vectors: Any  # [len(paths), source.dim]: a numpy array, or StoredRows when the run streams from disk
    keys: np.ndarray  # S40 [len(paths)]: each path's content key (equal keys, identical files)
    skipped: tuple[tuple[Path, str], ...]
    computed: int  # member vectors computed by this call
    cached: int  # member vectors found in the cache (one per distinct content, as `computed`)


def content_keys(paths: Sequence[Path], *, file_keys: FileKeys | None,
                 pool: concurrent.futures.Executor) -> tuple[dict[Path, bytes], dict[Path, str]]:
    """Each readable file's content key (read and hashed in parallel) and each unreadable file's reason."""
    index = file_keys or FileKeys(None)

    def key_of(path: Path) -> tuple[Path, bytes | None, str]:
        try:
            return path, index.key(path), ""
        except ImageError as error:
            return path, None, str(error)

    keys: dict[Path, bytes] = {}
    skipped: dict[Path, str] = {}
    # Shown when it takes a while: a first run reads and hashes every photo (a million took 45 s, in silence)
    progress = Progress(len(paths), "Checking photos (content hashes for the cache)", unit="files", delay=5.0)
    for path, key, reason in windowed(paths, lambda p: pool.submit(key_of, p), 64):
        if key is None:
            skipped[path] = reason
        else:
            keys[path] = key
        progress.update()
    progress.close()
    index.save()
    return keys, skipped


def _member_label(base: str, source: FeatureSource, member: FeatureExtractor) -> str:
    return base if len(source.members) == 1 else f"{base} ({member.handle})"


def file_vectors(paths: Sequence[Path], *, source: FeatureSource, stores: Sequence[Any], batch_size: int,
                 file_keys: FileKeys | None = None, label: str = "Bottlenecks",
                 runner: Callable[..., dict[Path, str]] | None = None, image_size: int | None = None,
                 in_memory: bool = True) -> Vectors:
    """The vector of every decodable image, computing what each member's cache lacks.

    `runner(job, items)` runs a job over work items (default: in this process);
    undecodable files are skipped with their reason, never fatal. With
    `in_memory=False` the vectors stay in the stores (StoredRows).
    """
    computed = cached = 0
    with thread_pool() as pool:
        keys, skipped = content_keys(paths, file_keys=file_keys, pool=pool)
        for member, store in zip(source.members, stores):
            todo: dict[bytes, Path] = {}
            for path, key in keys.items():
                if key not in store and key not in todo:
                    todo[key] = path
            name = _member_label(label, source, member)
            distinct = len(set(keys.values()))
            found = distinct - len(todo)  # identical files share one vector: counted once
            cached += found
            if not todo:
                continue
            log.info("%s: %d cached, %d to compute%s", name, found, len(todo),  # (probe ZZQ: units said)
                     f" ({len(keys) - distinct} identical file(s) counted with the first)" if len(keys) > distinct
                     else "")
            job = ExtractionJob(member, store, batch_size=batch_size, label=name, image_size=image_size)
            items = [WorkItem(path=path, keys=(key,), content=key) for key, path in todo.items()]
            failed = (runner or LocalRunner())(job, items, pool=pool)
            by_key = {keys[p]: reason for p, reason in failed.items()}
            for path, key in list(keys.items()):
                if key in by_key:
                    skipped[path] = by_key[key]
                    del keys[path]
            computed += len(todo) - len(failed)
    warn_skipped(log, skipped.items())
    good = tuple(p for p in paths if p in keys)
    rows = StoredRows(stores, np.array([keys[p] for p in good], dtype="S40").reshape(len(good)))
    vectors = rows[np.arange(len(good))] if in_memory else rows
    return Vectors(paths=good, vectors=vectors, keys=rows.keys,
                   skipped=tuple((p, skipped[p]) for p in paths if p in skipped), computed=computed, cached=cached)


class LocalRunner:
    """Runs extraction jobs in this process; a context manager, like the Ray runner it stands in for."""

    def __call__(self, job: ExtractionJob, items: Sequence[WorkItem], *,
                 pool: concurrent.futures.Executor) -> dict[Path, str]:
        return job.run(items, pool=pool)

    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def extraction_runner(ray_address: str | None) -> Any:
    """What computes missing vectors: Ray actors with --ray_address (connecting on first use), else this process."""
    if ray_address is None:
        return LocalRunner()
    from retrain.features.ray import ray_runner

    return ray_runner(ray_address)


def _concatenate(parts: list[np.ndarray], rows: int, dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def variant_keys(key: bytes, *, distortions: Distortions, variants: int, seed: int) -> list[bytes]:
    """Cache keys of an image's distorted variants 0..variants-1, from its content key: one per variant, or, when
    the distortions make only a few pictures (`Distortions.views`), one per picture (repeated, seed-free; the
    first picture, the photo as it is, under the photo's own key: its plain vector, computed already)."""
    if distortions.views:
        views = [view_of(distortions, content=key, variant=index) for index in range(variants)]
        return [key if view == 0 else _variant_key(key, f"distorted:{distortions.tag()}:view={view}") for view in views]
    tag = f"distorted:{distortions.tag()}:seed={seed}"
    return [_variant_key(key, f"{tag}:variant={index}") for index in range(variants)]


def _variant_key(key: bytes, variant: str) -> bytes:
    return hashlib.sha1(key + b"\0" + variant.encode()).hexdigest().encode()


def variant_vectors(paths: Sequence[Path], *, source: FeatureSource, stores: Sequence[Any], distortions: Distortions,
                    variants: int, seed: int, batch_size: int, file_keys: FileKeys | None = None,
                    runner: Callable[..., dict[Path, str]] | None = None,
                    image_size: int | None = None, in_memory: bool = True) -> tuple[tuple[Path, ...], Any]:
    """`variants` distorted vectors of each image: (the usable paths, vectors [len(paths) * variants, dim]).

    Rows of one image are consecutive. Keys cover the image's content, every
    distortion setting, the variant index and the seed (for flipping alone, which
    picture), so changing any of them computes new vectors and never reuses stale ones.
    """
    with thread_pool() as pool:
        keys, skipped = content_keys(paths, file_keys=file_keys, pool=pool)
        all_keys = {path: variant_keys(key, distortions=distortions, variants=variants, seed=seed)
                    for path, key in keys.items()}
        for member, store in zip(source.members, stores):
            items = []
            for path, image_keys in all_keys.items():
                first: dict[bytes, int] = {}  # each distinct key once, with the first variant that has it
                for variant, k in enumerate(image_keys):
                    first.setdefault(k, variant)
                missing = [(k, v) for k, v in first.items() if k not in store]
                if missing and path not in skipped:
                    items.append(WorkItem(path=path, keys=tuple(k for k, _ in missing),
                                          variants=tuple(v for _, v in missing), content=keys[path]))
            missing_count = sum(len(item.keys) for item in items)
            distinct = sum(len(set(image_keys)) for image_keys in all_keys.values())
            log.info("distorted variants (%d per training image%s, %s)%s: %d cached, %d to compute", variants,
                     ", the photo and its mirror image in turn" if distortions.views else "", distortions.tag(),
                     "" if len(source.members) == 1 else f" for {member.handle}", distinct - missing_count,
                     missing_count)
            if not items:
                continue
            job = ExtractionJob(member, store, batch_size=batch_size, distortions=distortions, seed=seed,
                                label=_member_label("Distorted variants", source, member), image_size=image_size)
            skipped.update((runner or LocalRunner())(job, items, pool=pool))
    warn_skipped(log, skipped.items())
    good = tuple(p for p in paths if p in all_keys and p not in skipped)
    rows = StoredRows(stores, np.array([k for p in good for k in all_keys[p]], dtype="S40").reshape(-1))
    return good, (rows[np.arange(len(rows))] if in_memory else rows)


