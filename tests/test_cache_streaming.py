"""Caches larger than memory: vectors read from the shard files on demand give the same run as vectors in memory;
float16 caches halve the size and stay apart from float32 ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import retrain_command
from retrain.features.store import BottleneckStore
from tests.conftest import flags, invoke, run_script


def fill(store: BottleneckStore, count: int, *, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = [f"{seed:08d}{i:032d}".encode() for i in range(count)]
    vectors = rng.normal(size=(count, store.feature_dim)).astype(np.float32)
    for start in range(0, count, 37):  # many shards of odd sizes
        store.add(keys[start:start + 37], vectors[start:start + 37])
        store.flush()
    return keys, vectors


@pytest.mark.parametrize("vectors", [True, False], ids=["in memory", "from disk"])
def test_a_shard_whose_vector_bytes_were_damaged_is_set_aside_in_both_modes(tmp_path: Path, vectors: bool,
                                                                               caplog) -> None:
    """Bytes of a shard's vectors overwritten with finite garbage: reading it whole caught it (zip CRC-32), reading
    rows from disk did not, and a run trained on the garbage with exit 0 (40 % where a clean cache gave 60 %)."""
    store = BottleneckStore(tmp_path, module_key="k", feature_dim=24)
    store.add([f"{i:040d}".encode() for i in range(50)], np.ones((50, 24), np.float32))
    store.flush()
    shard = next(store.dir.glob("shard-*.npz"))
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"A" * 64  # 0x41414141: a finite float, 12.078
    shard.write_bytes(bytes(data))
    reader = BottleneckStore(tmp_path, module_key="k", feature_dim=24)
    with caplog.at_level("WARNING", logger="retrain"):
        assert reader.load(vectors=vectors) == 0
    assert "is damaged" in caplog.text and not shard.exists()
    reader.close()


def test_a_pipe_or_a_folder_in_the_shards_place_is_set_aside_not_waited_on(tmp_path: Path) -> None:
    """Opening a pipe waits for a writer for ever: a run hung after its module loaded. (In a fresh process, so a
    hang fails the test by its timeout.)"""
    import os

    store = BottleneckStore(tmp_path, module_key="k", feature_dim=4)
    store.add([f"{i:040d}".encode() for i in range(3)], np.ones((3, 4), np.float32))
    store.flush()
    os.mkfifo(store.dir / "shard-pipe.npz")
    (store.dir / "shard-folder.npz").mkdir()
    code = ("import logging, sys; logging.basicConfig(level=logging.WARNING); from pathlib import Path; "
            "from retrain.features.store import BottleneckStore; "
            f"print(BottleneckStore(Path({str(tmp_path)!r}), module_key='k', feature_dim=4).load(vectors=False))")
    result = run_script("-c", code, timeout=60)
    assert result.stdout.split() == ["3"]
    assert result.stderr.count("is not a regular file but a pipe, a device or a folder); moved it aside") == 2
    assert sorted(p.name for p in store.dir.iterdir() if "pipe" in p.name or "folder" in p.name) == [
        "damaged-shard-folder.npz", "damaged-shard-pipe.npz"]


def test_reading_from_the_shard_files_gives_what_memory_gives(tmp_path: Path) -> None:
    keys, vectors = fill(BottleneckStore(tmp_path, module_key="k", feature_dim=24), 500)
    streamed = BottleneckStore(tmp_path, module_key="k", feature_dim=24)
    assert streamed.load(vectors=False) == 500
    order = np.random.default_rng(1).permutation(500)[:200]
    np.testing.assert_array_equal(streamed.get([keys[i] for i in order]), vectors[order])
    # Vectors added while streaming are served from memory until flushed, then from their new shard.
    extra_keys, extra = fill(streamed, 80, seed=7)
    np.testing.assert_array_equal(streamed.get(extra_keys[:5] + keys[:5]), np.concatenate([extra[:5], vectors[:5]]))
    streamed.compact()  # 16+ small shards merge into one, read without holding the vectors
    assert len(list(streamed.dir.glob("shard-*.npz"))) == 1
    np.testing.assert_array_equal(streamed.get(keys + extra_keys), np.concatenate([vectors, extra]))


def test_a_float16_cache_is_half_the_size_and_kept_apart(tmp_path: Path) -> None:
    keys, vectors = fill(BottleneckStore(tmp_path, module_key="k", feature_dim=256, dtype="float16"), 300)
    half = BottleneckStore(tmp_path, module_key="k", feature_dim=256, dtype="float16")
    assert half.dir.name == "k-float16" and half.load() == 300
    np.testing.assert_allclose(half.get(keys), vectors, rtol=1e-3, atol=1e-3)
    assert half.get(keys).dtype == np.float32
    full = BottleneckStore(tmp_path, module_key="k", feature_dim=256)
    assert full.load() == 0  # a float32 run never reads the rounded vectors
    fill(full, 300)
    size = {store.dir.name: sum(p.stat().st_size for p in store.dir.glob("shard-*")) for store in (half, full)}
    assert size["k-float16"] < 0.6 * size["k"]


def _figures(result) -> list[str]:
    return [line.split(": ", 1)[1] for line in result.stderr.splitlines() if re.search(r"Step \d+: ", line)] + \
        [line for line in result.stdout.splitlines() if line.startswith("Final test")]


def test_a_run_streaming_from_the_cache_equals_the_run_in_memory(colour_tree: Path, tiny_module: Path,
                                                                 outputs) -> None:
    args = flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=60, **outputs)
    in_memory = invoke(retrain_command, args)
    streamed = invoke(retrain_command, args + ["--bottleneck_memory_gb", "0"])
    assert "exceed --bottleneck_memory_gb 0: training reads them from the cache files" in streamed.stderr
    assert re.search(r"the run's \d+ vectors \((?!0\.0 )[\d.]+ (bytes|kB); in memory, twice that while its splits "
                     r"are cut\) exceed", streamed.stderr)  # not 0.0 GB
    assert "exceed" not in in_memory.stderr
    assert _figures(streamed) == _figures(in_memory) and len(_figures(in_memory)) > 10


@pytest.mark.parametrize("value, message", [("-1", "--bottleneck_memory_gb must be 0"),
                                            ("nan", "--bottleneck_memory_gb must be a finite number")])
def test_bad_memory_bounds_are_usage_errors(colour_tree: Path, outputs, value: str, message: str) -> None:
    result = invoke(retrain_command, flags(image_dir=colour_tree, **outputs) + ["--bottleneck_memory_gb", value],
                    expect=2)
    assert message in result.stderr


def test_the_memory_bound_counts_what_a_run_holds_at_once(tmp_path: Path, colour_tree: Path, tiny_module: Path,
                                                          outputs) -> None:
    """With the vectors counted once, the whole cache, the run's array and the splits' copies were all held (0.8 GB
    of vectors peaked at 3.5 GB), and cached distorted variants whatever the bound (9 GB under the default 4). A run is
    held in memory when twice its vectors, variants included, fit; a cache is read whole only beside those."""
    from types import SimpleNamespace

    from retrain.pipeline import _open_stores

    keys, _ = fill(BottleneckStore(tmp_path, module_key="k", feature_dim=250), 1000)  # 1 MB of vectors cached
    member = SimpleNamespace(cache_key="k", feature_dim=250)
    source = SimpleNamespace(members=[member], dim=250)

    def opened(gigabytes: float, rows: int) -> tuple[bool, bool]:
        config = SimpleNamespace(bottleneck_memory_gb=gigabytes, bottleneck_dir=tmp_path, bottleneck_dtype="float32")
        (store,), in_memory = _open_stores(config, source, rows=rows)
        return in_memory, store._memory_start == 0  # whether the cache was read whole

    assert opened(0.0015, rows=1000) == (False, False)  # 1 MB of the run's vectors, held twice, pass 1.5 MB
    assert opened(0.0025, rows=1000) == (True, False)  # the run fits twice, but not the 1 MB cache beside it
    assert opened(0.0031, rows=1000) == (True, True)
    args = flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=5, **outputs)
    result = invoke(retrain_command, args + ["--bottleneck_memory_gb", "0", "--random_brightness", "10"])
    found = re.search(r"found \d+ classes in \S+: (\d+) training, (\d+) validation, (\d+) testing", result.stderr)
    training, validation, testing = map(int, found.groups())
    assert f"the run's {6 * training + validation + testing} vectors" in result.stderr  # 5 variants a training image


def test_getting_a_runs_vectors_from_memory_makes_no_second_copy(tmp_path: Path) -> None:
    """store.get took every row at once, a temporary copy beside the cache and the result (probe Z found a run's
    peak at 3.5 to 5 times its vectors). It copies a bounded slice at a time."""
    import tracemalloc

    keys, vectors = fill(BottleneckStore(tmp_path, module_key="k", feature_dim=2048), 12000)  # 98 MB
    store = BottleneckStore(tmp_path, module_key="k", feature_dim=2048)
    store.load()
    tracemalloc.start()
    try:
        got = store.get(keys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, vectors)
    assert peak < 1.8 * got.nbytes, f"{peak / got.nbytes:.2f} times the vectors got"


def test_a_shard_compacted_away_while_the_cache_is_read_by_its_keys_is_listed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs sharing a cache: one compacted a shard away between the other's reading it and mapping its vectors
    to check them, and the other stopped with "No such file or directory (shard-….npz)" (a fresh-clone CI run)."""
    from retrain.features import store as stores

    fill(BottleneckStore(tmp_path, module_key="k", feature_dim=8), 100)  # 3 shards
    real_mapped, gone = stores._mapped, []

    def compacted_meanwhile(path: Path, *args: object) -> np.ndarray:
        if not gone:
            gone.append(len(np.load(path)["keys"]))
            path.unlink()  # as another run's compaction would
        return real_mapped(path, *args)

    monkeypatch.setattr(stores, "_mapped", compacted_meanwhile)
    store = BottleneckStore(tmp_path, module_key="k", feature_dim=8)
    assert store.load(vectors=False) == 100 - gone[0]


def test_a_shard_this_run_wrote_and_another_compacted_away_at_once_is_still_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An out-of-core run writes a shard and then reads its vectors from the file: another run's compaction
    deleting it right after it took its name (its vectors safe in a merged shard) stopped this run with one
    line. The shard is opened before it is named, so the open file stays readable."""
    from retrain.features import store as stores

    store = BottleneckStore(tmp_path, module_key="k", feature_dim=8)
    store.load(vectors=False)
    real_replace = stores.os.replace

    def compacted_at_once(source: str, destination: Path) -> None:
        real_replace(source, destination)
        Path(destination).unlink()  # as another run's compaction would, once its merged shard holds them

    monkeypatch.setattr(stores.os, "replace", compacted_at_once)
    keys, vectors = fill(store, 100)
    monkeypatch.undo()
    assert not list(store.dir.glob("shard-*.npz"))  # every shard this store wrote is gone from the folder
    assert np.array_equal(store.get(keys), vectors)  # yet its rows are read from the files it holds open
