"""The bottleneck cache: content-addressed, atomic, resumable, shared between modules safely."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain.bottlenecks import BottleneckStore, compute_bottlenecks
from retrain.modules import batch_function, load_feature_extractor
from tests.conftest import COLOURS, colour_photo, make_colour_tree, save_tiny_module


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory):
    return load_feature_extractor(str(save_tiny_module(tmp_path_factory.mktemp("m") / "tiny")))


def files_of(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def compute(files: list[Path], extractor, cache: Path, **kwargs):
    store = BottleneckStore(cache, module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    store.load()
    return compute_bottlenecks(files, extractor=batch_function(extractor), height=extractor.height,
                               width=extractor.width, store=store, batch_size=4, **kwargs)


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


def test_interrupted_run_resumes_computing_only_what_is_missing(tmp_path: Path, extractor):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=6))
    call = batch_function(extractor)
    calls = {"n": 0}

    def dies_after_two_batches(images: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return call(images)

    store = BottleneckStore(tmp_path / "cache", module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    store.load()
    with pytest.raises(KeyboardInterrupt):
        compute_bottlenecks(files, extractor=dies_after_two_batches, height=extractor.height, width=extractor.width,
                            store=store, batch_size=4)
    resumed = compute(files, extractor, tmp_path / "cache")
    assert resumed.computed == len(files) - 8
    assert compute(files, extractor, tmp_path / "cache").computed == 0


def test_leftover_temporary_and_corrupt_shards_are_treated_as_missing(tmp_path: Path, extractor):
    files = files_of(make_colour_tree(tmp_path / "p", per_class=3))
    compute(files, extractor, tmp_path / "cache")
    shard_dir = next((tmp_path / "cache").iterdir())
    shard = next(shard_dir.glob("shard-*.npz"))
    (shard_dir / ".tmp-half-written.npz").write_bytes(shard.read_bytes()[:100])
    shard.write_bytes(shard.read_bytes()[:200])  # damaged on disk
    again = compute(files, extractor, tmp_path / "cache")
    assert again.computed == len(files)
    assert len(again.paths) == len(files)


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
    import retrain.filekeys as filekeys

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
    monkeypatch.undo()
    colour_photo(files[0], COLOURS["red"], seed=4242, size=(50, 40))  # changed: read again
    assert filekeys.FileKeys(index).key(files[0]) == filekeys.content_key(files[0].read_bytes()) != keys[0]
