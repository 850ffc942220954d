"""Bottleneck extraction on a Ray cluster (`--ray_address`): the same ExtractionJob, run by Ray Data actors.

The driver ships each job as plain values (`ExtractionJob.spec`) and its work
items (absolute paths and cache keys) to a pool of actors sized to the
cluster. Each actor rebuilds the job once (`ExtractionJob.from_spec`: imports
TensorFlow, loads the module, opens the same cache folder) and runs batches of
items exactly as the in-process path does: read -> decode -> resize -> module
-> one atomically renamed shard per batch. A batch is reported back only after
its shard is in place, so the driver's progress counts vectors on disk, and a
worker that dies loses at most its current batch (Ray restarts the actor and
retries the batch). When the job is done the driver re-reads the cache and
checks that every vector reported is there: a `--bottleneck_dir` that the
workers cannot share with the driver fails with one clear line.

Images, the module and the cache must be reachable at the same paths on every
node (a shared file system); see the README. Ray is an optional extra
(`pip install 'retrain[ray]'`), imported only here and only when used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from retrain import journal
from retrain.errors import RetrainError
from retrain.features.extract import ExtractionJob, JobSpec, WorkItem
from retrain.features.store import PROBE_PREFIX, BottleneckStore
from retrain.progress import Progress

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'retrain[ray]'"
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"
# CPUs (TensorFlow threads, and as many threads decoding) per actor, at most: fewer on
# smaller nodes, so a 2-CPU machine runs one actor of 2. Each actor holds TensorFlow
# and the module (0.6-1 GB) and spends seconds loading them, so one actor per CPU
# would multiply memory and start-up (measured on 2 CPUs: first batch after 22 s
# with 2 actors of 1 CPU, 14 s with 1 actor of 2).
CPUS_PER_ACTOR = 4
BATCHES_PER_ACTOR = 4  # work split finely enough that actors finish together, progress moves
CONNECT_TIMEOUT_SECONDS = 10.0
VISIBLE_WITHIN_SECONDS = 60.0  # how late a shared file system may show another machine's new files
TEMP_PREFIX = "retrain-ray-"  # + the pid of the run that started the local cluster
NOT_FOUND = "file not found"  # the start of images.read_bytes's reason for a missing file


def _import_ray() -> ModuleType:
    """Import Ray with its usage reporting off (unless the user chose otherwise), or say how to install it."""
    os.environ.setdefault(USAGE_STATS_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401 - the engine; ray[data] brings pyarrow and pandas
    except ImportError as error:
        raise RetrainError(f"--ray_address needs Ray, which cannot be imported here ({error}); install it with "
                           f"{INSTALL_HINT}, or drop --ray_address to compute bottlenecks in this process") from None
    return ray


@dataclasses.dataclass
class RayCluster:
    """A connection to a Ray cluster: its CPUs, and whether we started it (and so must stop it)."""

    address: str
    cpus: int
    started: bool
    temp_dir: Path | None = None  # a local cluster's session files, removed with it

    def close(self) -> None:
        """Stop a cluster this process started (`local`) and remove its files; leave a joined cluster running."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __enter__(self) -> "RayCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _keep_sigterm(handler: Any) -> None:
    """ray.init installs its own SIGTERM handlers, a Python one (exit 15, no message) and a native one (a
    stack dump, exit 134): put back the handler from before, so a `kill` stops the run as retrain says it
    does (one line, exit 143)."""
    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGTERM, handler)


def connect(address: str) -> RayCluster:
    """Connect to Ray as --ray_address says.

    `local` starts a throw-away single-machine cluster sized to this machine
    (no dashboard, no usage reporting, Ray's token authentication on), stopped
    and its files removed by `close()`; `auto` joins the cluster this machine
    belongs to (`ray start`); `ray://HOST:PORT` joins through Ray Client;
    `HOST:PORT` joins the cluster whose head (GCS) listens there, from one of
    its nodes. A process that has already called `ray.init` keeps its
    connection.
    """
    ray = _import_ray()
    _quiet_ray_data(ray)
    if ray.is_initialized():
        return RayCluster(address=address, cpus=_cluster_cpus(ray), started=False)
    started = address == "local"
    temp_dir = None
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if started:
            _remove_abandoned_temp_dirs()
            temp_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
            _local_environment()
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     _node_ip_address="127.0.0.1", _temp_dir=str(temp_dir), logging_level=logging.WARNING)
        else:
            _check_reachable(os.environ.get("RAY_ADDRESS", "") if address == "auto" else address, flag=address)
            ray.init(address=address, logging_level=logging.WARNING)
    except RetrainError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, gRPC errors
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if started:
            raise RetrainError(f"--ray_address local: cannot start a local Ray cluster ({reason})") from None
        raise RetrainError(f"--ray_address {address}: cannot connect to a Ray cluster ({reason}); start one "
                           "(ray start --head) or fix the address, or use --ray_address local") from None
    _keep_sigterm(sigterm)
    cluster = RayCluster(address=address, cpus=_cluster_cpus(ray), started=started, temp_dir=temp_dir)
    log.info("Ray cluster %s: %d CPUs", "started on this machine" if started else address, cluster.cpus)
    return cluster


def _remove_abandoned_temp_dirs() -> None:
    """Remove the session files of local clusters whose run was killed before it could (their process is gone)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, but another user's


def _check_reachable(address: str, *, flag: str) -> None:
    """Fail in seconds when nothing listens at HOST:PORT (Ray itself retries an unreachable head for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # not HOST:PORT (e.g. auto without RAY_ADDRESS): Ray finds the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RetrainError(f"--ray_address {flag}: nothing answers at {host}:{port} ({reason}); check the "
                           "head node's address and port (ray start --head prints them) and the network") from None


def _local_environment() -> None:
    """Quieter start-up for a throw-away cluster.

    Ray's token authentication stays on (its default for a new local cluster:
    a token in ~/.ray/auth_token, created once); only its notice is hidden.
    """
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def _cluster_cpus(ray: ModuleType) -> int:
    """CPUs the cluster has now (an autoscaling cluster may grow later; we size to what is there)."""
    return int(ray.cluster_resources().get("CPU", 0))


def _quiet_ray_data(ray: ModuleType) -> None:
    """Our own progress line replaces Ray Data's bars and start-up messages."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "Progress bars disabled"


class RayRunner:
    """A `runner` for file_vectors / variant_vectors that sends extraction jobs to Ray actors.

    Connects on first use (a run whose vectors are all cached never starts a
    cluster); `close()` stops a cluster it started.
    """

    def __init__(self, address: str, *, cpus_per_actor: int = CPUS_PER_ACTOR) -> None:
        self.address = address
        self.cpus_per_actor = cpus_per_actor
        self.cluster: RayCluster | None = None
        self.stats: dict[str, float] = {}  # of the last job sent to Ray (see run_on_ray)

    def __call__(self, job: ExtractionJob, items: Sequence[WorkItem], *,
                 pool: concurrent.futures.Executor | None = None) -> dict[Path, str]:
        """Compute every item's vectors into the job's store through Ray; returns {path: reason} for failures."""
        if not items:
            return {}
        if not isinstance(job.store, BottleneckStore):
            # Vectors that must not be cached (a fine-tuned module held only in this process): workers
            # would load the module from disk, without the new weights. Compute them here.
            return job.run(items, pool=pool) if pool else _run_with_pool(job, items)
        if self.cluster is None:
            self.cluster = connect(self.address)
        self.stats = {}
        return run_on_ray(job, items, cpus_per_actor=self.cpus_per_actor, stats=self.stats)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> "RayRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ray_runner(address: str, *, cpus_per_actor: int = CPUS_PER_ACTOR) -> RayRunner:
    """The runner that `--ray_address ADDRESS` gives file_vectors and variant_vectors (close it after the run)."""
    return RayRunner(address, cpus_per_actor=cpus_per_actor)


def _run_with_pool(job: ExtractionJob, items: Sequence[WorkItem]) -> dict[Path, str]:
    """Run a job in this process with a pool of its own."""
    from retrain.pool import thread_pool

    with thread_pool() as pool:
        return job.run(items, pool=pool)


def run_on_ray(job: ExtractionJob, items: Sequence[WorkItem], *, cpus_per_actor: int = CPUS_PER_ACTOR,
               stats: dict[str, float] | None = None) -> dict[Path, str]:
    """Run one job's items on the connected cluster's actors; the job's store then holds every new vector.

    Returns {path: reason} for images that could not be read or decoded.
    `stats`, if given, receives "seconds" (the whole call), "busy" (the
    longest time one actor spent computing) and "actors".
    """
    started = time.perf_counter()
    ray = _import_ray()
    _quiet_ray_data(ray)
    cpus_per_actor, actors = _pool_shape(ray, cpus_per_actor=cpus_per_actor)
    spec = _portable(job.spec)
    probe, held = _write_probe(job.store.dir)
    total = sum(len(item.keys) for item in items)
    actors = min(actors, len(items))
    per_batch = _items_per_batch(items, actors=actors, flush_every=job.store.flush_every,
                                 module_batch=job.batch_size)
    actors = min(actors, math.ceil(len(items) / per_batch))  # no idle actors loading the module for nothing
    rows = [{"index": index, "path": os.path.abspath(item.path), "keys": [k.decode() for k in item.keys],
             "variants": list(item.variants), "content": item.content.decode()} for index, item in enumerate(items)]
    dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_batch))
    results = dataset.map_batches(
        _Extractor, fn_constructor_kwargs={"spec": spec, "threads": cpus_per_actor,
                                           "probe": str(probe.relative_to(job.store.dir.parent)),
                                           "flush_every": job.store.flush_every},
        batch_size=per_batch, batch_format="pyarrow", num_cpus=cpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2))
    log.info("%s: %d %s on Ray, %d actor(s) of %d CPUs, batches of %d", job.label, total,
             "images" if job.distortions is None else "variants", actors, cpus_per_actor, per_batch)
    progress = Progress(total, job.label, unit="images" if job.distortions is None else "variants")
    failed: dict[Path, str] = {}
    busy: dict[int, float] = {}  # seconds each actor spent computing, by process id
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            fatal = next((text for text in batch["fatal"].tolist() if text), "")
            if fatal:
                raise RetrainError(fatal)
            for index, reason in zip(batch["index"].tolist(), batch["reason"].tolist()):
                if reason:
                    failed[items[index].path] = reason
            for pid, seconds in zip(batch["pid"].tolist(), batch["seconds"].tolist()):
                busy[pid] = busy.get(pid, 0.0) + seconds
            progress.update(int(batch["count"].sum()))
    except RetrainError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray wraps worker errors in several exception types
        raise _worker_error(error, job=job) from None
    finally:
        probe.unlink(missing_ok=True)
        os.close(held)
    progress.close()
    _check_visible(job, items, failed)
    if stats is not None:
        stats.update(seconds=time.perf_counter() - started, busy=max(busy.values(), default=0.0), actors=actors)
    return failed


def _pool_shape(ray: ModuleType, *, cpus_per_actor: int) -> tuple[int, int]:
    """(CPUs per actor, actors): as many actors as the cluster's nodes hold now, none larger than its smallest node."""
    nodes = [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    nodes = [cpus for cpus in nodes if cpus > 0]
    if not nodes:
        raise RetrainError("the Ray cluster has no node with CPUs to compute bottlenecks on; start worker nodes "
                           "(ray start --address HEAD:PORT), or use --ray_address local")
    per_actor = max(1, min(cpus_per_actor, min(nodes)))
    return per_actor, sum(cpus // per_actor for cpus in nodes)


def _portable(spec: JobSpec) -> JobSpec:
    """The spec with absolute paths, so workers whose working folder differs find the same files."""
    module = spec.module
    local = Path(module).expanduser()
    if local.exists():
        module = str(local.absolute())
    return dataclasses.replace(spec, module=module, store_root=Path(os.path.abspath(spec.store_root)))


def _write_probe(folder: Path) -> tuple[Path, int]:
    """A marker file in the cache folder, which every actor must see before it computes anything, and a descriptor
    holding an flock on it while the run goes on: the cache of a later run removes a marker no run holds
    (`BottleneckStore`: a killed run's)."""
    probe = folder / f"{PROBE_PREFIX}{journal.HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        held = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as error:
        raise RetrainError(f"cannot write to the bottleneck cache {folder} (--bottleneck_dir): "
                           f"{error.strerror or error}") from None
    with contextlib.suppress(OSError, AttributeError):  # (no locks there: the marker is left to its age)
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return probe, held


def _items_per_batch(items: Sequence[WorkItem], *, actors: int, flush_every: int, module_batch: int) -> int:
    """Items per Ray batch: at most one shard of vectors, and enough batches that the actors finish together.

    A few dozen images make one batch per actor; thousands make batches of one
    shard (FLUSH_EVERY_VECTORS), BATCHES_PER_ACTOR or more per actor.
    """
    keys_per_item = max(1.0, sum(len(item.keys) for item in items) / len(items))
    shard_items = max(1, round(flush_every / keys_per_item))
    fair_share = math.ceil(len(items) / actors)
    module_items = min(max(1, math.ceil(module_batch / keys_per_item)), fair_share)
    spread = math.ceil(len(items) / (BATCHES_PER_ACTOR * actors))
    return max(1, min(shard_items, max(module_items, spread)))


def _check_visible(job: ExtractionJob, items: Sequence[WorkItem], failed: dict[Path, str]) -> None:
    """Re-read the cache; fail clearly when workers could not reach the images or wrote where we cannot see.

    A shared file system may show other machines' new files late (NFS caches
    folder listings for up to a minute), so missing vectors are looked for
    again for VISIBLE_WITHIN_SECONDS before this gives up.
    """
    unseen = [path for path, reason in failed.items() if reason.startswith(NOT_FOUND) and path.exists()]
    if unseen:
        raise RetrainError(f"{len(unseen)} images exist here but not on the Ray workers (e.g. {unseen[0]}); put "
                           "--image_dir on storage every Ray node mounts at the same path")
    deadline = time.monotonic() + VISIBLE_WITHIN_SECONDS
    while True:
        job.store.reload()  # the shards the workers wrote, in the mode the store was opened in
        missing = sum(1 for item in items if item.path not in failed for key in item.keys if key not in job.store)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RetrainError(f"Ray workers computed {missing} vectors that this machine cannot see in "
                               f"{job.store.dir}; --bottleneck_dir must be a folder every Ray node mounts at the "
                               "same path (a shared file system)")
        time.sleep(2.0)


def _worker_error(error: BaseException, *, job: ExtractionJob) -> RetrainError:
    """One line for a failure on the cluster: our own error's message when a worker raised one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RetrainError):
            return RetrainError(str(current))
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    text = str(error).strip()
    found = [line for line in text.splitlines() if "RetrainError: " in line]
    if found:
        return RetrainError(found[-1].split("RetrainError: ", 1)[1].strip())
    reason = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), type(error).__name__)
    return RetrainError(f"{job.label}: the Ray cluster failed ({type(error).__name__}: {reason}); vectors "
                        "written so far are kept, rerun to compute the rest")


class _Extractor:
    """A Ray Data actor: rebuilds the job once, then computes batches of work items into the shared cache.

    Our own errors (a cache or module this node cannot reach, a full disk) are
    returned with the batch rather than raised, so the driver stops with
    their one line instead of Ray's actor-death tracebacks.
    """

    def __init__(self, *, spec: JobSpec, threads: int, probe: str, flush_every: int) -> None:
        self.spec, self.flush_every, self.fatal = spec, flush_every, ""
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
        self.quiet = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the actor
        try:
            self._start(threads=threads, probe=probe)
        except RetrainError as error:
            self.fatal = str(error)

    def _start(self, *, threads: int, probe: str) -> None:
        """Check that the cache is shared, then load the module once."""
        from retrain.tfenv import import_tensorflow

        tf = import_tensorflow()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)  # our CPU share, not the node's
        except RuntimeError:
            pass  # TensorFlow already ran in this worker process; keep its threads
        marker = self.spec.store_root / probe
        if not _appears(marker):
            raise RetrainError(f"the bottleneck cache {marker.parent} (--bottleneck_dir) is not shared with Ray "
                               f"node {socket.gethostname()}; put it on storage every node mounts at the same path")
        self.job = ExtractionJob.from_spec(self.spec)
        self.job.store.flush_every = self.flush_every

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        rows = batch.to_pylist()
        items = [WorkItem(path=Path(row["path"]), keys=tuple(k.encode() for k in row["keys"]),
                          variants=tuple(row["variants"]), content=row["content"].encode()) for row in rows]
        failed: dict[Path, str] = {}
        started = time.perf_counter()
        if not self.fatal:
            try:
                total = sum(len(item.keys) for item in items)
                failed = self.job.run(items, pool=self.pool,
                                      progress=Progress(total, self.job.label, stream=self.quiet, interval=math.inf))
                self.job.store.flush()  # the batch is reported only once its shard is in place
                self._fresh_store()
            except RetrainError as error:
                self.fatal = str(error)
        return {"index": np.array([row["index"] for row in rows], np.int64),
                "reason": np.array([failed.get(item.path, "") for item in items], dtype=object),
                "count": np.array([0 if self.fatal else len(item.keys) for item in items], np.int64),
                "fatal": np.array([self.fatal] * len(items), dtype=object),
                # the batch's computing time, once per batch (on its first row), and who computed it
                "seconds": np.array([time.perf_counter() - started] + [0.0] * (len(items) - 1)),
                "pid": np.full(len(items), os.getpid(), np.int64)}

    def _fresh_store(self) -> None:
        """An empty store object on the same folder: the vectors just written need not stay in the actor's memory."""
        store = self.job.store
        self.job.store = BottleneckStore(self.spec.store_root, module_key=self.spec.cache_key,
                                         feature_dim=store.feature_dim, dtype=self.spec.store_dtype)
        self.job.store.flush_every = self.flush_every


def _appears(path: Path, *, seconds: float = 10.0) -> bool:
    """Whether a file another machine just created shows up here within `seconds`."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True
