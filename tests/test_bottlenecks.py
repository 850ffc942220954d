"""The bottleneck cache: content-addressed, atomic, resumable, shared between modules safely."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import retrain.features.filekeys as filekeys
from retrain.features.extract import LocalRunner, file_vectors
from retrain.features.filekeys import content_key
from retrain.features.module import load_feature_extractor
from retrain.features.source import FeatureSource
from retrain.features.store import BottleneckStore
from retrain.images import read_bytes
from tests.conftest import COLOURS, colour_photo, make_colour_tree, save_tiny_module


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory):
    return load_feature_extractor(str(save_tiny_module(tmp_path_factory.mktemp("m") / "tiny")))


def files_of(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def compute(files: list[Path], extractor, cache: Path, *, store_class=BottleneckStore, **kwargs):
    store = store_class(cache, module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    store.load()
    return file_vectors(files, source=FeatureSource(members=(extractor,)), stores=[store], batch_size=4, **kwargs)


def test_vectors_are_cached_and_equal_to_a_fresh_computation(tmp_path: Path, extractor):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=5))
    first = compute(files, extractor, tmp_path / "cache")
    assert first.computed == 15 and first.vectors.shape == (15, extractor.feature_dim)
    second = compute(files, extractor, tmp_path / "cache")
    assert second.computed == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)
    # Not a text file per image: a few shard files hold everything.
    assert len(list((tmp_path / "cache").rglob("*.npz"))) <= 2


def test_renamed_image_reuses_its_vector_and_changed_image_is_recomputed(tmp_path: Path, extractor):
    root = make_colour_tree(tmp_path / "p", per_class=4)
    files = files_of(root)
    before = compute(files, extractor, tmp_path / "cache")
    moved = root / "red" / "elsewhere" / "renamed.jpg"
    moved.parent.mkdir()
    files[0].rename(moved)
    colour_photo(files[1], COLOURS["green"], seed=999)  # new content under the same name
    after = compute(files_of(root), extractor, tmp_path / "cache")
    assert after.computed == 1
    vectors = dict(zip(after.paths, after.vectors))
    np.testing.assert_array_equal(vectors[moved], before.vectors[0])
    assert not np.array_equal(vectors[files[1]], before.vectors[1])


def test_identical_photos_share_a_vector_and_are_counted_once(tmp_path: Path, extractor,
                                                             caplog: pytest.LogCaptureFixture):
    """Copies of a photo are computed once; they are not counted as found in the cache. The count of files to
    compute says so (probe ZZQ: 14 empty files counted as one, beside later lines counting files)."""
    root = make_colour_tree(tmp_path / "p", per_class=3)
    files = files_of(root)
    copies = [root / "red" / "copy1.jpg", root / "red" / "copy2.jpg"]
    for copy in copies:
        shutil.copyfile(files[0], copy)
    with caplog.at_level(logging.INFO):
        first = compute(files_of(root), extractor, tmp_path / "cache")
    assert (first.computed, first.cached, len(first.paths)) == (9, 0, 11)
    assert "0 cached, 9 to compute (2 identical file(s) counted with the first)" in caplog.text, caplog.text
    again = compute(files_of(root), extractor, tmp_path / "cache")
    assert (again.computed, again.cached) == (0, 9)


class DiesAfterTwoBatches(BottleneckStore):
    """A store whose third batch never arrives: the run is interrupted (Ctrl-C) while computing it."""

    def add(self, keys, vectors) -> None:
        self.batches = getattr(self, "batches", 0) + 1
        if self.batches > 2:
            raise KeyboardInterrupt
        super().add(keys, vectors)


def test_interrupted_run_resumes_computing_only_what_is_missing(tmp_path: Path, extractor):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=6))
    with pytest.raises(KeyboardInterrupt):
        compute(files, extractor, tmp_path / "cache", store_class=DiesAfterTwoBatches)
    resumed = compute(files, extractor, tmp_path / "cache")
    assert resumed.computed == len(files) - 8
    assert compute(files, extractor, tmp_path / "cache").computed == 0


def test_leftover_temporary_and_corrupt_shards_are_treated_as_missing(tmp_path: Path, extractor,
                                                                     caplog: pytest.LogCaptureFixture):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=3))
    compute(files, extractor, tmp_path / "cache")
    shard_dir = next((tmp_path / "cache").iterdir())
    shard = next(shard_dir.glob("shard-*.npz"))
    (shard_dir / ".tmp-half-written.npz").write_bytes(shard.read_bytes()[:100])
    shard.write_bytes(shard.read_bytes()[:200])  # damaged on disk
    with caplog.at_level(logging.WARNING):
        again = compute(files, extractor, tmp_path / "cache")
    assert again.computed == len(files)
    assert len(again.paths) == len(files)
    # Said to be damaged (not a misleading pickle message), and moved aside once: later runs are quiet.
    assert f"bottleneck shard {shard} is damaged" in caplog.text and "pickle" not in caplog.text
    assert (shard_dir / f"damaged-{shard.name}").exists() and not shard.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert compute(files, extractor, tmp_path / "cache").computed == 0
    assert "damaged" not in caplog.text


def test_a_killed_runs_old_temporary_shard_goes_and_a_running_writers_stays(tmp_path: Path, extractor) -> None:
    """Only a temporary shard older than journal.STALE_SECONDS is a killed run's (probe ZZI: the age test reversed,
    deleting a running writer's shard and keeping the dead one's, went unnoticed)."""
    from retrain.journal import STALE_SECONDS

    files = files_of(make_colour_tree(tmp_path / "p", per_class=3))
    compute(files, extractor, tmp_path / "cache")
    shard_dir = next((tmp_path / "cache").iterdir())
    dead, live = shard_dir / ".tmp-killed.npz", shard_dir / ".tmp-running.npz"
    for path in (dead, live):
        path.write_bytes(b"half written")
    old = time.time() - 2 * STALE_SECONDS
    os.utime(dead, (old, old))
    compute(files, extractor, tmp_path / "cache")
    assert not dead.exists() and live.read_bytes() == b"half written"


@pytest.mark.parametrize("change, reason", [
    (lambda keys, vectors: (np.arange(len(keys)), vectors), "its keys are int64 ({n},), expected [N] byte strings"),
    (lambda keys, vectors: (keys, vectors[:, :5]), "it holds float32 ({n}, 5) for {n} keys, expected [{n}, {d}] floats"),
    (lambda keys, vectors: (keys, vectors.astype(np.int32)), "it holds int32 ({n}, {d}) for {n} keys, expected"),
    (lambda keys, vectors: (keys, np.where(np.arange(len(keys))[:, None] == 1, np.nan, vectors).astype(np.float32)),
     "it holds vectors that are not finite numbers"),
    (lambda keys, vectors: (keys, np.where(np.arange(len(keys))[:, None] == 2, np.inf, vectors).astype(np.float32)),
     "it holds vectors that are not finite numbers"),
])
def test_a_shard_of_another_layout_is_said_so_and_set_aside(tmp_path: Path, extractor, change, reason: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    files = files_of(make_colour_tree(tmp_path / "p", per_class=3))
    compute(files, extractor, tmp_path / "cache")
    shard = next(next((tmp_path / "cache").iterdir()).glob("shard-*.npz"))
    with np.load(shard) as data:
        keys, vectors = change(data["keys"], data["vectors"])
    with shard.open("wb") as handle:
        np.savez(handle, keys=keys, vectors=vectors)
    with caplog.at_level(logging.WARNING):
        assert compute(files, extractor, tmp_path / "cache").computed == len(files)
    expected = reason.format(n=len(files), d=extractor.feature_dim)
    assert f"bottleneck shard {shard} is damaged ({expected}" in caplog.text
    assert (shard.parent / f"damaged-{shard.name}").exists()
    if "finite" in reason:  # a cache read from its files as training goes (larger than memory) checks it too
        (shard.parent / f"damaged-{shard.name}").rename(shard)
        store = BottleneckStore(tmp_path / "cache", module_key=shard.parent.name, feature_dim=extractor.feature_dim)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert store.load(vectors=False) == len(files)  # the recomputed shard's vectors, not the damaged one's
        assert f"bottleneck shard {shard} is damaged ({expected}" in caplog.text
        assert np.isfinite(store.get(list(store._index))).all()


@pytest.mark.parametrize("content", ['{"version": 2, "files": {"x": 5}}', '{"version": 1, "files": {}}',
                                     '{"version": 2, "files": {"/p": [1, 2, 3, 4, 5, "short"]}}',
                                     '{"/photos/a.jpg": [10, 20, "' + "0" * 40 + '"]}'])
def test_a_malformed_or_older_file_index_is_rebuilt(tmp_path: Path, extractor, content: str,
                                                    caplog: pytest.LogCaptureFixture):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "file_keys.json").write_text(content)
    with caplog.at_level(logging.INFO):
        result = compute(files, extractor, cache, file_keys=filekeys.FileKeys(cache / "file_keys.json"))
    assert len(result.paths) == len(files)
    assert "rebuilding the file index" in caplog.text or "malformed entries" in caplog.text
    assert json.loads((cache / "file_keys.json").read_text())["version"] == filekeys.INDEX_VERSION  # rewritten


@pytest.mark.parametrize("content", ['[1, 2, 3]', '"text"', '{"a": [1]}', '{"api_key": "abc", "keys": [1, 2]}',
                                     "{not json", "\u00ff\u00fe binary"])
def test_a_file_index_retrain_did_not_write_is_left_as_it_is(tmp_path: Path, extractor, content: str,
                                                             caplog: pytest.LogCaptureFixture):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "file_keys.json").write_text(content, encoding="latin-1")
    before = (cache / "file_keys.json").read_bytes()
    with caplog.at_level(logging.INFO):
        result = compute(files, extractor, cache, file_keys=filekeys.FileKeys(cache / "file_keys.json"))
    assert len(result.paths) == len(files)
    assert "is not a file index retrain wrote; leaving it as it is" in caplog.text
    assert (cache / "file_keys.json").read_bytes() == before
    assert [p.name for p in cache.iterdir() if p.is_file()] == ["file_keys.json"]  # no index written beside it


def test_a_file_index_left_half_written_by_a_killed_run_is_removed(tmp_path: Path, extractor) -> None:
    """...and only that: --bottleneck_dir may hold the user's other files, old temporary-looking ones too."""
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    cache = tmp_path / "cache"
    cache.mkdir()
    index = cache / "file_keys.json"
    from retrain.journal import HOST as _HOST, STALE_SECONDS

    old = time.time() - 2 * STALE_SECONDS
    left = cache / f".file_keys.json.retrain-{_HOST}-999999999-x.tmp"
    users = [cache / ".tmp-settings.json", cache / ".tmp-puc8sk_u.json", cache / ".tmp-notes.npz"]
    for path in (left, *users):
        path.write_text('{"version": 2, "fi')
        os.utime(path, (old, old))
    module_folder = cache / extractor.cache_key
    module_folder.mkdir()
    (module_folder / ".tmp-notes.txt").write_text("the user's")
    os.utime(module_folder / ".tmp-notes.txt", (old, old))
    compute(files, extractor, cache, file_keys=filekeys.FileKeys(index))
    assert not left.exists()
    assert all(path.exists() for path in (*users, module_folder / ".tmp-notes.txt"))


def test_two_modules_never_share_vectors(tmp_path: Path, extractor):
    other = load_feature_extractor(str(save_tiny_module(tmp_path / "other", feature_dim=5)))
    assert other.cache_key != extractor.cache_key
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    compute(files, extractor, tmp_path / "cache")
    assert compute(files, other, tmp_path / "cache").computed == len(files)


def test_same_module_content_in_another_folder_shares_the_cache(tmp_path: Path, extractor):
    copy = tmp_path / "copy"
    shutil.copytree(extractor.path, copy)
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    compute(files, extractor, tmp_path / "cache")
    assert compute(files, load_feature_extractor(str(copy)), tmp_path / "cache").computed == 0


def test_many_shards_are_compacted_and_still_load(tmp_path: Path, extractor):
    store = BottleneckStore(tmp_path / "cache", module_key="k", feature_dim=3)
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(20):
        key = f"{i:040d}".encode()
        expected[key] = rng.random(3, dtype=np.float32)
        store.add([key], expected[key][None])
        store.flush()
    store.compact()
    assert len(list(store.dir.glob("shard-*.npz"))) == 1
    fresh = BottleneckStore(tmp_path / "cache", module_key="k", feature_dim=3)
    assert fresh.load() == 20
    np.testing.assert_array_equal(fresh.get(list(expected)), np.stack(list(expected.values())))


def test_file_index_skips_rereading_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(filekeys, "RACY_SECONDS", 0.0)  # the photos were written a moment ago
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    index = tmp_path / "keys.json"
    first = filekeys.FileKeys(index)
    keys = [first.key(p) for p in files]
    assert keys == [filekeys.content_key(p.read_bytes()) for p in files]
    first.save()

    def no_reading(path: Path) -> bytes:
        raise AssertionError(f"re-read unchanged {path}")

    monkeypatch.setattr(filekeys, "read_bytes", no_reading)
    assert [filekeys.FileKeys(index).key(p) for p in files] == keys
    monkeypatch.setattr(filekeys, "read_bytes", read_bytes)
    colour_photo(files[0], COLOURS["red"], seed=4242, size=(50, 40))  # changed: read again
    assert filekeys.FileKeys(index).key(files[0]) == filekeys.content_key(files[0].read_bytes()) != keys[0]


def test_the_file_index_forgets_files_that_are_gone_and_keeps_other_trees(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries were never removed: a tree moved and run again doubled the index (7.5 to 15 MB at 50,000 photos),
    and a shared cache's index grew with every tree it had seen (probe Z). Files gone go as the index is
    rewritten; files of other trees that still exist stay."""
    import json

    monkeypatch.setattr(filekeys, "RACY_SECONDS", 0.0)
    kept = files_of(make_colour_tree(tmp_path / "other", per_class=1))
    moved = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    index = tmp_path / "keys.json"
    first = filekeys.FileKeys(index)
    for path in kept + moved:
        first.key(path)
    first.save()
    (tmp_path / "p").rename(tmp_path / "q")
    second = filekeys.FileKeys(index)
    for path in moved:
        second.key(tmp_path / "q" / path.relative_to(tmp_path / "p"))
    second.save()
    names = set(json.loads(index.read_text())["files"])
    assert names == {str(path) for path in kept} | {str(tmp_path / "q" / p.relative_to(tmp_path / "p")) for p in moved}


def test_a_photo_edited_in_place_with_its_size_and_time_kept_is_recomputed(tmp_path: Path, extractor,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """What "preserve date" options of metadata tools do: new bytes, same size, same mtime. Its ctime moves."""
    monkeypatch.setattr(filekeys, "RACY_SECONDS", 0.0)
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    cache = tmp_path / "cache"
    first = compute(files, extractor, cache, file_keys=filekeys.FileKeys(tmp_path / "keys.json"))
    target, donor = files[0], files[-1]  # a red photo and a blue one
    stat = target.stat()
    data = bytearray(donor.read_bytes())
    data = (data + bytes(stat.st_size))[:stat.st_size] if len(data) < stat.st_size else data
    with open(target, "r+b") as handle:  # in place, same length, so size stays the same
        handle.write(bytes(data[:stat.st_size]))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    again = compute(files, extractor, cache, file_keys=filekeys.FileKeys(tmp_path / "keys.json"))
    assert again.computed == 1
    assert not np.array_equal(again.vectors[0], first.vectors[0])


def test_a_file_changed_while_it_was_hashed_is_not_remembered(tmp_path: Path):
    """A file whose ctime is within RACY_SECONDS of now is hashed but not recorded, so a same-tick edit cannot hide."""
    photo = colour_photo(tmp_path / "a.jpg", COLOURS["red"], seed=1)
    index = filekeys.FileKeys(tmp_path / "keys.json")
    index.key(photo)
    index.save()
    assert not (tmp_path / "keys.json").exists() or str(photo) not in (tmp_path / "keys.json").read_text()


def test_a_photo_replaced_between_its_hashing_and_its_extraction_is_left_out_not_cached(tmp_path: Path,
                                                                                        extractor) -> None:
    """The key is the SHA-1 of the bytes when the files are hashed; the extraction reads the file again later.
    A photo replaced in between (edited, synced, copied over) used to get the new photo's vector cached under the
    old photo's key, poisoning every later run and every copy of that photo for good."""
    root = make_colour_tree(tmp_path / "p", per_class=3)
    files = files_of(root)
    victim, intruder = root / "red" / "red_000.jpg", root / "blue" / "blue_000.jpg"
    original = victim.read_bytes()

    def replacing_runner(job, items, *, pool):
        victim.write_bytes(intruder.read_bytes())  # after the keys were taken, before the extraction reads it
        return LocalRunner()(job, items, pool=pool)

    first = compute(files, extractor, tmp_path / "cache", runner=replacing_runner)
    assert victim not in first.paths and len(first.paths) == len(files) - 1
    assert "changed while the run was reading it" in dict(first.skipped)[victim]
    victim.write_bytes(original)
    again = compute(files, extractor, tmp_path / "cache")
    assert again.computed == 1 and victim in again.paths  # nothing was cached under the original's key
    fresh = compute([victim], extractor, tmp_path / "clean")
    np.testing.assert_array_equal(dict(zip(again.paths, again.vectors))[victim], fresh.vectors[0])
    assert content_key(original) != content_key(intruder.read_bytes())


def _sharded_store(root: Path, count: int) -> tuple[BottleneckStore, dict[bytes, np.ndarray]]:
    """A store of `count` one-vector shards (more than compaction leaves alone)."""
    store = BottleneckStore(root, module_key="k", feature_dim=3)
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(count):
        key = f"{i:040d}".encode()
        expected[key] = rng.random(3, dtype=np.float32)
        store.add([key], expected[key][None])
        store.flush()
    return store, expected


def test_a_cache_read_from_disk_survives_another_runs_compaction(tmp_path: Path) -> None:
    """A run training from a cache larger than memory reads vectors from the shard files for hours; another
    run sharing the folder compacts those shards into one and deletes them. The first run used to die
    mid-training with 'cannot read the bottleneck cache shard ... (No such file or directory)'."""
    _, expected = _sharded_store(tmp_path / "cache", 20)
    reading = BottleneckStore(tmp_path / "cache", module_key="k", feature_dim=3)
    assert reading.load(vectors=False) == 20
    other = BottleneckStore(tmp_path / "cache", module_key="k", feature_dim=3)
    other.load()
    other.compact()  # the other run, at its end
    assert len(list(reading.dir.glob("shard-*.npz"))) == 1
    np.testing.assert_array_equal(reading.get(list(expected)), np.stack(list(expected.values())))
    reading.close()


def test_cache_files_follow_the_umask_so_a_shared_cache_stays_readable(tmp_path: Path, monkeypatch) -> None:
    """Shards and the file index were created 0600 (mkstemp's mode): the other users of a shared
    --bottleneck_dir could not read them."""
    from retrain.features.filekeys import FileKeys
    from retrain.features.store import NEW_FILE_MODE

    store, _ = _sharded_store(tmp_path / "cache", 1)
    index = FileKeys(tmp_path / "cache" / "file_keys.json")
    photo = colour_photo(tmp_path / "p.jpg", COLOURS["red"], seed=1)
    monkeypatch.setattr(filekeys, "RACY_SECONDS", -1.0)  # remember the photo written just now
    index.key(photo)
    index.save()
    mask = os.umask(0)
    os.umask(mask)
    assert NEW_FILE_MODE == 0o666 & ~mask
    for path in [*store.dir.glob("shard-*.npz"), tmp_path / "cache" / "file_keys.json"]:
        assert path.stat().st_mode & 0o777 == NEW_FILE_MODE, path


def test_a_shard_the_run_may_not_read_is_recomputed_not_called_damaged(tmp_path: Path, monkeypatch,
                                                                         caplog) -> None:
    """Another user's shard in a shared cache (unreadable to this user) used to be reported as damaged and
    renamed out of that user's way. (Root reads every file, so the refusal is made here by the reader.)"""
    import retrain.features.store as store_module

    _, expected = _sharded_store(tmp_path / "cache", 2)
    locked = sorted((tmp_path / "cache" / "k").glob("shard-*.npz"))[0]
    real_load = np.load

    def load(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(store_module.np, "load", load)
    reader = BottleneckStore(tmp_path / "cache", module_key="k", feature_dim=3)
    with caplog.at_level(logging.WARNING, logger="retrain"):
        assert reader.load() == 1
    assert locked.exists() and not list(locked.parent.glob("damaged-*"))
    assert f"cannot read bottleneck shard {locked} (permission denied)" in caplog.text
    assert "damaged" not in caplog.text


def test_a_module_whose_weights_changed_under_the_same_graph_does_not_share_vectors(tmp_path: Path, extractor):
    """A module re-exported with new weights keeps its saved_model.pb: its old vectors must not be reused."""
    other = save_tiny_module(tmp_path / "other", seed=8)
    retrained = tmp_path / "retrained"
    shutil.copytree(extractor.path, retrained)  # the first module's graph...
    shutil.rmtree(retrained / "variables")
    shutil.copytree(other / "variables", retrained / "variables")  # ...with the other module's weights
    assert (retrained / "saved_model.pb").read_bytes() == (extractor.path / "saved_model.pb").read_bytes()
    reweighted = load_feature_extractor(str(retrained))
    assert reweighted.cache_key != extractor.cache_key
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    before = compute(files, extractor, tmp_path / "cache")
    after = compute(files, reweighted, tmp_path / "cache")
    assert after.computed == len(files) and not np.allclose(after.vectors, before.vectors)


def test_a_module_of_open_input_size_run_at_two_sizes_does_not_share_vectors(tmp_path: Path):
    """--image_size 32 and --image_size 40 on a module that leaves its size open give different vectors."""
    module = save_tiny_module(tmp_path / "open", size=None)
    small = load_feature_extractor(str(module), image_size=32)
    large = load_feature_extractor(str(module), image_size=40)
    assert (small.height, large.height) == (32, 40)
    assert small.cache_key != large.cache_key
    files = files_of(make_colour_tree(tmp_path / "p", per_class=2))
    compute(files, small, tmp_path / "cache")
    assert compute(files, large, tmp_path / "cache").computed == len(files)


def test_a_killed_ray_runs_marker_in_the_cache_is_removed_a_running_ones_kept(tmp_path: Path, extractor) -> None:
    """Probe XXX: a Ray run killed with -9 left its `.ray-probe-…` marker in the cache for good, though the
    README says the next run removes what a killed run left. A live run's stays: this process's, and one whose
    process cannot be seen from here but which holds its marker's lock (probe ZZA: another process namespace)."""
    from retrain import journal
    from retrain.features.store import PROBE_PREFIX

    files = files_of(make_colour_tree(tmp_path / "p", per_class=3))
    compute(files, extractor, tmp_path / "cache")
    shard_dir = next((tmp_path / "cache").iterdir())
    gone = subprocess_pid_gone()
    dead = shard_dir / f"{PROBE_PREFIX}{journal.HOST}-{gone}-0123abcd"
    alive = shard_dir / f"{PROBE_PREFIX}{journal.HOST}-{os.getpid()}-0123abcd"
    earlier = shard_dir / f"{PROBE_PREFIX}vm-0123abcd"  # an earlier version's, never held: by its age
    held = shard_dir / f"{PROBE_PREFIX}{journal.HOST}-{subprocess_pid_gone()}-4567abcd"
    for path in (dead, alive, earlier, held):
        path.write_bytes(b"")
    hour_ago = time.time() - 3700
    os.utime(earlier, (hour_ago, hour_ago))
    # A run in another process namespace, whose process this one cannot see, holds its marker (probe ZZA).
    holder = subprocess_holding(held)
    try:
        assert compute(files, extractor, tmp_path / "cache").computed == 0
    finally:
        holder.kill()
        holder.wait()
    assert not dead.exists() and alive.exists() and not earlier.exists() and held.exists()


def subprocess_holding(path: Path):
    """A process holding an flock on `path`, as a Ray run holds its marker, once it says so."""
    import subprocess
    import sys

    script = f"import fcntl, os, time; fd = os.open({str(path)!r}, os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); " \
             "print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def subprocess_pid_gone() -> int:
    """The number of a process that has ended (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def synced_before_renamed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records each os.fsync (the file it syncs) and os.replace (the file it renames): the events, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: str, target: str, **kwargs: object) -> None:
        events.append(("replace", os.path.abspath(source)))
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_shard_and_an_output_are_on_disk_before_they_take_their_names(tmp_path: Path, extractor,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A power loss must not leave a named shard or output that is empty or half written: each temporary file is
    synced before its rename (probe ZZI: dropping either fsync went unnoticed)."""
    from retrain.outputs import atomic_write_bytes

    events = synced_before_renamed(monkeypatch)
    compute(files_of(make_colour_tree(tmp_path / "p", per_class=3)), extractor, tmp_path / "cache")
    atomic_write_bytes(tmp_path / "labels.txt", b"a\nb\n", flag="--output_labels")
    renamed = [(index, path) for index, (kind, path) in enumerate(events) if kind == "replace"]
    assert any("/.tmp-" in path for _, path in renamed) and any("labels.txt" in path for _, path in renamed), events
    for index, path in renamed:
        assert ("fsync", path) in events[:index], (path, events)
