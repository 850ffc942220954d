"""Bottleneck extraction on a real local Ray cluster (2 CPUs, no network): `retrain.features.ray`.

Integration tests (`pytest -m integration`): they start Ray's processes and,
in each Ray actor, TensorFlow and the real fixture module, so each extraction
costs tens of seconds of start-up on 2 cores. They check that the cluster
computes the in-process path's vectors into the same cache, that a rerun
computes nothing, that killing a worker (an actor, or the node's raylet)
mid-run loses nothing that was written and a rerun completes the rest, and a
whole `python -m retrain --ray_address local` run. A missing Ray is a failure
here, never a skip.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import FLOWERS, MODULES, flags, require, run_script

pytestmark = pytest.mark.integration

MODULE = MODULES / "mobilenet_v2_035_224"
PER_CLASS = 8
BATCH = 8
TOLERANCE = 1e-5
FLUSH_EVERY = "4"  # vectors per shard: small, so a kill lands between shards


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """A few dozen real photos: the first PER_CLASS of each fixture class."""
    classes = sorted(p for p in require(FLOWERS).iterdir() if p.is_dir())
    return [path for folder in classes for path in sorted(folder.glob("*.jpg"))[:PER_CLASS]]


@pytest.fixture(scope="module")
def source() -> Any:
    from retrain.features.source import load_feature_source

    return load_feature_source((str(require(MODULE)),))


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One throw-away local cluster (2 CPUs) for the in-process tests of this module."""
    from retrain.features.ray import connect

    with connect("local") as connected:
        assert connected.started and connected.cpus == (os.cpu_count() or 1)
        yield connected
    import ray

    assert not ray.is_initialized()


def open_store(root: Path, source: Any) -> Any:
    from retrain.features.store import BottleneckStore

    member = source.members[0]
    store = BottleneckStore(root, module_key=member.cache_key, feature_dim=member.feature_dim)
    store.load()
    return store


def shards(root: Path) -> set[str]:
    return {path.name for path in root.rglob("shard-*.npz")}


@pytest.fixture(scope="module")
def reference(photos: list[Path], source: Any, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The in-process path's vectors of the photos (today's path: ExtractionJob.run)."""
    from retrain.features.extract import file_vectors

    root = tmp_path_factory.mktemp("in_process")
    result = file_vectors(photos, source=source, stores=[open_store(root, source)], batch_size=BATCH)
    assert result.computed == len(photos) and not result.skipped
    return result.vectors


def test_ray_computes_the_in_process_vectors_and_a_rerun_computes_nothing(
        cluster: Any, photos: list[Path], source: Any, reference: np.ndarray, tmp_path: Path) -> None:
    from retrain.features.extract import file_vectors
    from retrain.features.ray import ray_runner

    runner = ray_runner("local")  # joins the module's cluster: this process is already connected
    result = file_vectors(photos, source=source, stores=[open_store(tmp_path, source)], batch_size=BATCH,
                          runner=runner)
    assert (result.computed, result.cached, result.skipped) == (len(photos), 0, ())
    difference = float(np.abs(result.vectors - reference).max())
    print(f"\n[ray] {len(photos)} photos: max |Ray - in-process| = {difference:.2e}")
    assert difference <= TOLERANCE
    written = shards(tmp_path)
    assert written, "the actors wrote no shard into the cache"

    fresh = open_store(tmp_path, source)  # a new run: its store reads the cache from disk
    again = file_vectors(photos, source=source, stores=[fresh], batch_size=BATCH, runner=runner)
    assert (again.computed, again.cached) == (0, len(photos))
    assert shards(tmp_path) == written
    np.testing.assert_allclose(again.vectors, result.vectors, atol=0)
    runner.close()
    assert cluster.started, "closing a runner that joined a cluster must leave the cluster running"


def test_ray_computes_the_in_process_distorted_variants(cluster: Any, photos: list[Path], source: Any,
                                                         tmp_path: Path) -> None:
    from retrain.distortions import Distortions
    from retrain.features.extract import variant_vectors
    from retrain.features.ray import ray_runner

    distortions = Distortions(flip_left_right=True, random_crop=10, random_scale=10, random_brightness=10)
    sample = photos[::4]
    settings = dict(source=source, distortions=distortions, variants=2, seed=3, batch_size=BATCH)
    here_paths, here = variant_vectors(sample, stores=[open_store(tmp_path / "here", source)], **settings)
    with ray_runner("local") as runner:
        ray_paths, on_ray = variant_vectors(sample, stores=[open_store(tmp_path / "ray", source)], runner=runner,
                                            **settings)
        assert ray_paths == here_paths == tuple(sample)
        assert on_ray.shape == (2 * len(sample), source.dim)
        difference = float(np.abs(on_ray - here).max())
        print(f"\n[ray] {len(sample)} photos x 2 distorted variants: max |Ray - in-process| = {difference:.2e}")
        assert difference <= TOLERANCE
        written = shards(tmp_path / "ray")
        _, again = variant_vectors(sample, stores=[open_store(tmp_path / "ray", source)], runner=runner, **settings)
        assert shards(tmp_path / "ray") == written, "a rerun computed variants again"
        np.testing.assert_allclose(again, on_ray, atol=0)


def test_a_killed_actor_loses_nothing_written_and_the_run_completes(
        cluster: Any, photos: list[Path], source: Any, reference: np.ndarray, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the actor that wrote the first shard: Ray restarts it and retries its batch; no shard is lost."""
    from retrain.features.extract import file_vectors
    from retrain.features.ray import ray_runner

    monkeypatch.setenv("RETRAIN_BOTTLENECK_FLUSH_EVERY", FLUSH_EVERY)
    store = open_store(tmp_path, source)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = file_vectors(photos, source=source, stores=[store], batch_size=BATCH,
                                             runner=ray_runner("local"))
        except BaseException as error:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    before = wait_for_shards(tmp_path, thread=thread)
    actor = int(sorted(before)[0].split("-")[2])  # shard-<time>-<pid>-<uuid>.npz: the writer's pid
    assert actor != os.getpid()
    os.kill(actor, signal.SIGKILL)
    killed_mid_run = thread.is_alive()
    thread.join(timeout=600)
    assert not thread.is_alive(), "the run did not finish after an actor was killed"
    assert killed_mid_run, "the run had finished before the kill; the test proves nothing"
    assert "error" not in outcome, f"the run failed after an actor was killed: {outcome.get('error')}"
    assert before <= shards(tmp_path), "a shard written before the kill is gone"
    result = outcome["result"]
    assert (result.computed, result.skipped) == (len(photos), ())
    assert float(np.abs(result.vectors - reference).max()) <= TOLERANCE

    again = file_vectors(photos, source=source, stores=[open_store(tmp_path, source)], batch_size=BATCH,
                  runner=ray_runner("local"))
    assert (again.computed, again.cached) == (0, len(photos))


DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from retrain.errors import RetrainError
    from retrain.features.extract import file_vectors
    from retrain.features.ray import ray_runner
    from retrain.features.source import load_feature_source
    from retrain.features.store import BottleneckStore

    module, cache, photos = sys.argv[1], Path(sys.argv[2]), [Path(p) for p in json.loads(sys.argv[3])]
    source = load_feature_source((module,))
    member = source.members[0]
    store = BottleneckStore(cache, module_key=member.cache_key, feature_dim=member.feature_dim)
    store.load()
    with ray_runner("local") as runner:
        try:
            result = file_vectors(photos, source=source, stores=[store], batch_size=8, runner=runner)
        except RetrainError as error:
            print("RetrainError:", error, flush=True)
            sys.exit(1)
    print("computed", result.computed, flush=True)
""")


def test_a_killed_raylet_loses_nothing_written_and_a_rerun_completes_the_rest(
        cluster: Any, photos: list[Path], source: Any, reference: np.ndarray, tmp_path: Path) -> None:
    """SIGKILL the raylet of a run's own local cluster mid-run: the run dies, its shards stay, a rerun finishes."""
    import subprocess

    from retrain.features.extract import file_vectors
    from retrain.features.ray import ray_runner

    cache = tmp_path / "cache"
    env = {**os.environ, "RETRAIN_BOTTLENECK_FLUSH_EVERY": FLUSH_EVERY, "RAY_ADDRESS": ""}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(MODULE), str(cache),
                               json.dumps([str(p) for p in photos])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_shards(cache, process=driver)
        raylets = [pid for pid in descendants(driver.pid) if command_of(pid).split(" ")[0].endswith("/raylet")]
        assert len(raylets) == 1, f"expected the run's one raylet among {descendants(driver.pid)}"
        cluster_processes = descendants(driver.pid)
        os.kill(raylets[0], signal.SIGKILL)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode != 0, f"the run survived its node's death:\n{output[-3000:]}"
    assert not wait_gone(cluster_processes), "the killed run left Ray processes behind"
    from retrain.features.ray import TEMP_PREFIX, _remove_abandoned_temp_dirs

    _remove_abandoned_temp_dirs()  # what the next `--ray_address local` run does first
    assert not list(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{driver.pid}-*")), "its files were left"

    written = shards(cache)
    on_disk = len(open_store(cache, source))
    assert 0 < on_disk < len(photos), f"{on_disk} of {len(photos)} vectors on disk: the kill was not mid-run"
    rerun = file_vectors(photos, source=source, stores=[open_store(cache, source)], batch_size=BATCH,
                         runner=ray_runner("local"))
    assert (rerun.computed, rerun.cached) == (len(photos) - on_disk, on_disk)
    assert written <= shards(cache), "a shard written before the kill is gone"
    assert float(np.abs(rerun.vectors - reference).max()) <= TOLERANCE


def test_a_cache_the_workers_cannot_see_fails_with_one_line(cluster: Any, photos: list[Path], source: Any,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers whose --bottleneck_dir is another folder (no shared file system) stop before computing anything."""
    import dataclasses

    from retrain.errors import RetrainError
    from retrain.features import ray as ray_runner_module
    from retrain.features.extract import file_vectors

    elsewhere = tmp_path / "not_shared"
    portable = ray_runner_module._portable
    monkeypatch.setattr(ray_runner_module, "_portable",
                        lambda spec: dataclasses.replace(portable(spec), store_root=elsewhere))
    with pytest.raises(RetrainError) as caught:
        file_vectors(photos[:4], source=source, stores=[open_store(tmp_path / "cache", source)], batch_size=BATCH,
                     runner=ray_runner_module.ray_runner("local"))
    message = str(caught.value)
    assert "\n" not in message and "not shared with Ray node" in message and "--bottleneck_dir" in message
    assert not shards(tmp_path), "workers computed vectors into a cache nobody reads"


def test_connecting_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray installed: say how to install it. Nothing listening at the address: say so in seconds."""
    from retrain.errors import RetrainError
    from retrain.features.ray import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(RetrainError, match=r"pip install 'retrain\[ray\]'"):
        connect("local")
    monkeypatch.undo()

    code = ("from retrain.errors import RetrainError\nfrom retrain.features.ray import connect\n"
            "try:\n    connect('127.0.0.1:1')\nexcept RetrainError as error:\n    print('RetrainError:', error)\n")
    start = time.monotonic()
    result = run_script("-c", code, timeout=120, env={"RAY_ADDRESS": ""})
    assert time.monotonic() - start < 60
    line = result.stdout.strip()
    assert line.startswith("RetrainError: --ray_address 127.0.0.1:1: nothing answers at 127.0.0.1:1"), result.stdout
    assert "\n" not in line


def test_cli_run_on_a_local_cluster(photos: list[Path], tmp_path: Path) -> None:
    """`python -m retrain ... --ray_address local` end to end, distorted variants too; a rerun starts no cluster."""
    import shutil

    tree = tmp_path / "flowers"
    for photo in photos:
        (tree / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tree / photo.parent.name / photo.name)
    out = tmp_path / "out"
    out.mkdir()
    args = ["-m", "retrain", *flags(
        image_dir=tree, tfhub_module=MODULE, ray_address="local", how_many_training_steps=30,
        bottleneck_dir=out / "bottlenecks", output_graph=out / "graph.pb", output_labels=out / "labels.txt",
        summaries_dir=out / "logs", checkpoint_path=out / "ckpt" / "ckpt",
        intermediate_output_graphs_dir=out / "intermediate", flip_left_right=True, random_crop=10,
        distorted_variants=2, bottleneck_batch_size=BATCH)]
    first = run_script(*args, timeout=900, env={"RAY_ADDRESS": ""})
    assert "Final test accuracy" in first.stdout, first.stdout
    assert (out / "graph.pb").is_file() and (out / "labels.txt").read_text().split() == sorted(
        {p.parent.name for p in photos})
    assert "on Ray" in first.stderr, "the bottlenecks were not computed on Ray"
    assert "Traceback" not in first.stderr
    written = shards(out / "bottlenecks")
    assert written

    second = run_script(*args, timeout=900, env={"RAY_ADDRESS": ""})
    assert "Final test accuracy" in second.stdout
    assert "Ray cluster" not in second.stderr, "a fully cached rerun started a cluster"
    assert "computed 0 new bottlenecks" in second.stderr


def test_sigterm_during_ray_extraction_stops_with_one_line(tmp_path: Path) -> None:
    """ray.init installs SIGTERM handlers of its own (exit 15 with no message, or a native stack dump and exit
    134): a `kill` during the Ray phase must still stop the run as everywhere else, one line and exit 143."""
    import subprocess

    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "retrain", *flags(
        image_dir=FLOWERS, tfhub_module=MODULE, ray_address="local", how_many_training_steps=30,
        bottleneck_dir=out / "bottlenecks", output_graph=out / "graph.pb", output_labels=out / "labels.txt",
        summaries_dir=out / "logs", bottleneck_batch_size=BATCH)]
    with open(tmp_path / "stderr", "w+") as stderr:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                   env={**os.environ, "RAY_ADDRESS": "", "RETRAIN_BOTTLENECK_FLUSH_EVERY": FLUSH_EVERY})
        try:
            wait_for_shards(out / "bottlenecks", process=process)  # the actors are computing
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        stderr.seek(0)
        text = stderr.read()
    assert code == 143, text[-3000:]
    assert text.rstrip().splitlines()[-1] == ("retrain: terminated; finished files and cached bottlenecks are "
                                              "kept, rerun to continue")
    assert "SIGTERM received" not in text and "Traceback" not in text


# ---------------------------------------------------------------- helpers: waiting and processes


def wait_for_shards(root: Path, *, thread: threading.Thread | None = None, process: Any = None,
                    timeout: float = 600) -> set[str]:
    """The shard names once the first shard appears (the run must still be going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = shards(root) if root.exists() else set()
        if found:
            return found
        if thread is not None and not thread.is_alive():
            pytest.fail("the run ended before writing any shard")
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended before writing any shard:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.02)
    pytest.fail(f"no shard in {root} after {timeout:.0f} s")


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """Every live process below `root` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def wait_gone(pids: list[int], *, timeout: float = 60) -> list[int]:
    """The pids still alive after `timeout` (killed then, so no test leaves Ray processes behind)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]
        time.sleep(0.2)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return alive


def _state(pid: int) -> str:
    try:
        return "zombie" if (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else ""
    except OSError:
        return "zombie"
