"""Distortions: the batched tensor functions, the variant cache, and which images they touch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import retrain_command
from retrain.config import RetrainConfig
from retrain.distortions import Distortions, Parameters, distort, sample_parameters
from retrain.distortions import variant_rng
from retrain.features.extract import file_vectors, variant_keys, variant_vectors
from retrain.features.filekeys import content_key
from retrain.features.module import load_feature_extractor
from retrain.features.source import FeatureSource
from retrain.features.store import BottleneckStore
from retrain.images import load_image
from retrain.pipeline import run
from tests.conftest import PHOTOS, colour_photo, flags, invoke, require, save_tiny_module

ALL_FOUR = Distortions(flip_left_right=True, random_crop=10, random_scale=10, random_brightness=10)


def photo(height: int = 48, width: int = 40) -> np.ndarray:
    """A real photo, as float [h, w, 3] in [0, 1], so crops and flips visibly change it."""
    return load_image(require(PHOTOS / "parrot.jpg"), height=height, width=width)


def test_no_distortion_passes_pixels_through():
    image = photo()
    same = distort(image[None], sample_parameters(Distortions(), count=1, rng=np.random.default_rng(0)),
                   distortions=Distortions(), height=48, width=40)
    np.testing.assert_allclose(same.numpy()[0], image, atol=1e-6)


def test_variants_differ_from_the_original_and_each_other_but_keep_the_size():
    height, width = 48, 40
    source_size = ALL_FOUR.source_size(height=height, width=width)
    assert source_size == (59, 49)  # 48 * 1.1 * 1.1 and 40 * 1.21, rounded up
    source = photo(*source_size)
    original = photo(height, width)
    drawn = sample_parameters(ALL_FOUR, count=6, rng=np.random.default_rng(1))
    variants = distort(np.repeat(source[None], 6, axis=0), drawn, distortions=ALL_FOUR, height=height,
                       width=width).numpy()
    assert variants.shape == (6, height, width, 3) and variants.dtype == np.float32
    for i in range(6):
        assert np.abs(variants[i] - original).mean() > 0.01
        for j in range(i):
            assert np.abs(variants[i] - variants[j]).mean() > 0.01
    # Brightness stays within the classic factor range: mean intensity moves by at most ~10 % (plus crop effects).
    ratios = variants.reshape(6, -1).mean(1) / original.mean()
    assert np.all((ratios > 0.8) & (ratios < 1.2))


def test_each_distortion_does_what_its_flag_says():
    image = photo()
    one = lambda **kw: Parameters(**{"scale": np.ones(1, np.float32), "offset_y": np.zeros(1, np.float32),  # noqa: E731
                                     "offset_x": np.zeros(1, np.float32), "flip": np.zeros(1, bool),
                                     "brightness": np.ones(1, np.float32), **kw})
    flipped = distort(image[None], one(flip=np.ones(1, bool)), distortions=Distortions(flip_left_right=True),
                      height=48, width=40).numpy()[0]
    np.testing.assert_allclose(flipped, image[:, ::-1], atol=1e-6)
    brighter = distort(image[None], one(brightness=np.full(1, 1.1, np.float32)),
                       distortions=Distortions(random_brightness=10), height=48, width=40).numpy()[0]
    np.testing.assert_allclose(brighter, image * 1.1, atol=1e-5)
    # Crop 50 % at the top-left corner: the window shows the top-left 1/1.5 of the image, enlarged.
    crop = Distortions(random_crop=50)
    source = photo(*crop.source_size(height=48, width=40))
    corner = distort(source[None], one(), distortions=crop, height=48, width=40).numpy()[0]
    np.testing.assert_allclose(corner[0, 0], source[0, 0], atol=1e-6)
    assert np.abs(corner - image).mean() > 0.02


def test_random_scale_draws_scales_up_to_its_percentage(tmp_path: Path) -> None:
    """Probe ZZO: a --random_scale that drew no scale at all passed the tests."""
    scales = sample_parameters(RetrainConfig(image_dir=tmp_path, random_scale=50).distortions, count=1000,
                               rng=np.random.default_rng(0)).scale
    assert 1.0 <= scales.min() < 1.02 and 1.48 < scales.max() <= 1.5


def test_the_classic_largest_brightness_change_is_accepted(tmp_path: Path) -> None:
    """The classic script took --random_brightness 100 (brightness times 0 to 2); it was refused (probe EE)."""
    config = RetrainConfig(image_dir=tmp_path, random_brightness=100)
    factors = sample_parameters(config.distortions, count=1000, rng=np.random.default_rng(0)).brightness
    assert 0 <= factors.min() < 0.05 and 1.95 < factors.max() <= 2


def test_a_variants_draw_depends_on_its_image_index_and_seed_only():
    """What makes cached variants reusable: the draw is a function of (image key, variant index, seed)."""
    key, other = content_key(b"one image"), content_key(b"another image")

    def draw(key: bytes, variant: int, seed: int):
        return sample_parameters(ALL_FOUR, count=1, rng=variant_rng(key=key, variant=variant, seed=seed))

    def same(a, b) -> bool:
        return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("scale", "offset_y", "offset_x", "brightness"))

    assert same(draw(key, 2, 7), draw(key, 2, 7))
    assert not same(draw(key, 2, 7), draw(other, 2, 7))
    assert not same(draw(key, 2, 7), draw(key, 3, 7))
    assert not same(draw(key, 2, 7), draw(key, 2, 8))
    draws = sample_parameters(ALL_FOUR, count=200, rng=variant_rng(key=key, variant=0, seed=0))
    assert np.all((draws.scale >= 1) & (draws.scale <= 1.1)) and np.all(np.abs(draws.brightness - 1) <= 0.1)
    assert 0.3 < draws.flip.mean() < 0.7


@pytest.fixture
def tiny_training(colour_tree: Path, tiny_module: Path) -> tuple[list[Path], object]:
    return sorted(colour_tree.rglob("*.jpg"))[::3], load_feature_extractor(str(tiny_module))


def test_changing_a_distortion_flag_invalidates_the_variant_cache(tiny_training, tmp_path: Path):
    train, extractor = tiny_training
    root = tmp_path / "bottlenecks"

    class Variants:
        def __init__(self, distortions: Distortions, *, seed: int = 0, count: int = 3) -> None:
            store = BottleneckStore(root, module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
            store.load()
            self.paths, self.vectors = variant_vectors(train, source=FeatureSource(members=(extractor,)),
                                                       stores=[store], distortions=distortions, variants=count,
                                                       seed=seed, batch_size=8)
            self.store = store

    def variants(distortions: Distortions, **kwargs: int) -> tuple[Variants, BottleneckStore]:
        result = Variants(distortions, **kwargs)
        return result, result.store

    first, store = variants(ALL_FOUR)
    assert first.paths == tuple(train) and first.vectors.shape == (3 * len(train), extractor.feature_dim)
    assert store.shards_written >= 1
    again, store = variants(ALL_FOUR)
    assert store.shards_written == 0, "identical settings must come from the cache"
    np.testing.assert_array_equal(again.vectors, first.vectors)
    data = content_key(train[0].read_bytes())
    changed = {"random_crop": 20, "random_scale": 5, "random_brightness": 30, "flip_left_right": False}
    for name, value in changed.items():
        settings = Distortions(**{**ALL_FOUR.__dict__, name: value})
        assert not set(variant_keys(data, distortions=settings, variants=3, seed=0)) & \
            set(variant_keys(data, distortions=ALL_FOUR, variants=3, seed=0)), name
    other, store = variants(Distortions(**{**ALL_FOUR.__dict__, "random_brightness": 30}))
    assert store.shards_written >= 1 and not np.allclose(other.vectors, first.vectors)
    reseeded, store = variants(ALL_FOUR, seed=1)
    assert store.shards_written >= 1 and not np.allclose(reseeded.vectors, first.vectors)
    # More variants reuse the ones already computed and add only the new indices.
    more, store = variants(ALL_FOUR, count=4)
    np.testing.assert_array_equal(more.vectors.reshape(len(train), 4, -1)[:, :3],
                                  first.vectors.reshape(len(train), 3, -1))
    # Distinct variants of one image really give distinct vectors.
    per_image = first.vectors.reshape(len(train), 3, -1)
    assert all(not np.allclose(per_image[i, 0], per_image[i, 1]) for i in range(len(train)))



def test_flipping_alone_computes_each_picture_once_not_once_per_variant(tiny_training, tmp_path: Path):
    """--flip_left_right alone makes two pictures of a photo, itself and its mirror image, but each of the 5
    variants ran the module. The variants now take the two in turn, from one the photo's content picks (so even a
    single variant mirrors half the photos): the photo is its plain vector, and only the mirror image is computed."""
    train = tiny_training[0]
    extractor = load_feature_extractor(str(save_tiny_module(tmp_path / "spatial", spatial=True)))  # sees mirrors
    source = FeatureSource(members=(extractor,))
    plain = file_vectors(train, source=source, stores=[BottleneckStore(tmp_path / "plain",
                         module_key=extractor.cache_key, feature_dim=extractor.feature_dim)], batch_size=8).vectors
    store = BottleneckStore(tmp_path / "cache", module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    store.load()
    file_vectors(train, source=source, stores=[store], batch_size=8)  # as a run computes them first
    paths, vectors = variant_vectors(train, source=source, stores=[store], distortions=Distortions(flip_left_right=True),
                                     variants=5, seed=0, batch_size=8)
    assert paths == tuple(train) and len(store) == 2 * len(train)  # the plain vectors, and one mirror image each
    per_image = vectors.reshape(len(train), 5, -1)
    is_plain = np.array([[np.allclose(v, plain[i], atol=1e-5) for v in per_image[i]] for i in range(len(train))])
    assert all(list(row) in ([True, False] * 2 + [True], [False, True] * 2 + [False]) for row in is_plain)
    assert 0 < is_plain[:, 0].sum() < len(train)  # both starts occur: one variant alone mirrors some photos
    mirrored = [per_image[i][~is_plain[i]] for i in range(len(train))]
    assert all(np.array_equal(m[0], m[-1]) for m in mirrored)  # one mirror vector a photo, computed once
    other = BottleneckStore(tmp_path / "crop", module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    other.load()  # with a crop too, every variant is a picture of its own
    variant_vectors(train, source=source, stores=[other], batch_size=8, variants=5, seed=0,
                    distortions=Distortions(flip_left_right=True, random_crop=10))
    assert len(other) == 5 * len(train)


def test_validation_and_test_images_are_never_distorted(colour_tree: Path, tiny_module: Path, outputs):
    for i in range(12):  # enough images for validation and test in every class
        for label, rgb in {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}.items():
            colour_photo(colour_tree / label / f"extra_{i:03d}.jpg", rgb, seed=5000 + 31 * i + rgb[0])
    config = RetrainConfig(image_dir=colour_tree, tfhub_module=str(tiny_module), how_many_training_steps=20,
                           distorted_variants=2, flip_left_right=True, random_crop=30, random_scale=30,
                           random_brightness=30, validation_percentage=20, testing_percentage=20, **outputs)
    result = run(config)
    extractor = load_feature_extractor(str(tiny_module))
    store = BottleneckStore(outputs["bottleneck_dir"], module_key=extractor.cache_key,
                            feature_dim=extractor.feature_dim)
    assert store.load() == 72 + 2 * len(result.splits["training"])  # plain vectors of all + 2 variants per training image
    for name in ("validation", "testing"):
        split = result.splits[name]
        assert len(split) >= 3
        plain = store.get([content_key(p.read_bytes()) for p in split.paths])
        np.testing.assert_array_equal(split.vectors, plain)
        fresh = file_vectors(list(split.paths), source=FeatureSource(members=(extractor,)), batch_size=8,
                             stores=[BottleneckStore(Path(outputs["bottleneck_dir"]) / "fresh", module_key="k",
                                                     feature_dim=8)])
        np.testing.assert_allclose(split.vectors, fresh.vectors, atol=1e-6)
        for path in split.paths:
            for key in variant_keys(content_key(path.read_bytes()), distortions=Distortions(
                    flip_left_right=True, random_crop=30, random_scale=30, random_brightness=30), variants=2, seed=0):
                assert key not in store, f"a distorted variant of held-out image {path} was computed"


def test_on_the_fly_mode_trains_with_progress_and_exports(colour_tree: Path, tiny_module: Path, outputs):
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=tiny_module, how_many_training_steps=30,
                                           train_batch_size=16, distortion_mode="on_the_fly", random_crop=20,
                                           random_brightness=20, flip_left_right=True,
                                           **{k: v for k, v in outputs.items()}))
    assert re.search(r"Training \(distorting on the fly\): 30/30 steps in \d+:\d\d", result.stderr)
    assert "Step 29: Validation accuracy" in result.stderr
    assert "Final test accuracy" in result.stdout and outputs["output_graph"].stat().st_size > 0
    assert "Distorted variants" not in result.stderr  # nothing precomputed in this mode


@pytest.mark.parametrize(("args", "message"), [
    (["--random_brightness", "100.5"], "--random_brightness must be a percentage between 0 and 100, got 100.5"),
    (["--random_crop", "-5"], "--random_crop must be a percentage"),
    (["--distorted_variants", "0"], "--distorted_variants must be positive"),
    (["--distortion_mode", "sometimes"], "--distortion_mode"),
    # flags that tune what the run does not do: refused, not silently ignored
    (["--distortion_mode", "on_the_fly"], "--distortion_mode on_the_fly has no effect without a distortion flag"),
    (["--distorted_variants", "50"], "--distorted_variants 50 has no effect without a distortion flag and "
                                     "--distortion_mode cached"),
    (["--distorted_variants", "50", "--random_crop", "10", "--distortion_mode", "on_the_fly"],
     "--distorted_variants 50 has no effect without a distortion flag and --distortion_mode cached"),
    (["--fine_tune_steps", "5"], "--fine_tune_steps 5 has no effect without --fine_tune; add it or drop"),
    (["--fine_tune_learning_rate", "0.1"], "--fine_tune_learning_rate 0.1 has no effect without --fine_tune"),
    (["--fine_tune_batch_size", "8"], "--fine_tune_batch_size 8 has no effect without --fine_tune"),
    (["--label_delimiter", ","], "--label_delimiter ',' has no effect without --labels_csv"),
    # typed at their defaults: still what the user expected done, and ignored before (probe BB)
    (["--fine_tune_steps", "200"], "--fine_tune_steps 200 has no effect without --fine_tune"),
    (["--fine_tune_batch_size", "16"], "--fine_tune_batch_size 16 has no effect without --fine_tune"),
    (["--distorted_variants", "5"], "--distorted_variants 5 has no effect without a distortion flag"),
    (["--distortion_mode", "cached"], "--distortion_mode cached has no effect without a distortion flag"),
    (["--tflite_quantization", "float32"], "--tflite_quantization float32 has no effect without --output_tflite"),
    (["--tflite_representative_images", "300"],
     "--tflite_representative_images 300 has no effect without --output_tflite PATH and int8"),
    (["--label_delimiter", " "], "--label_delimiter ' ' has no effect without --labels_csv"),
    # bounds that keep a typo from eating all memory
    (["--fine_tune", "--fine_tune_batch_size", "1024"], "--fine_tune_batch_size"),
    (["--random_crop", "10", "--distortion_mode", "on_the_fly", "--train_batch_size", "65536"],
     "--train_batch_size"),
])
def test_bad_distortion_flags_are_usage_errors(colour_tree: Path, outputs, args: list[str], message: str):
    result = invoke(retrain_command, flags(image_dir=colour_tree, **outputs) + args, expect=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_random_brightness_both_darkens_and_brightens() -> None:
    """--random_brightness 20 multiplies by a factor drawn from [0.8, 1.2], as the classic script did."""
    drawn = sample_parameters(Distortions(random_brightness=20), count=400, rng=np.random.default_rng(0)).brightness
    assert drawn.min() >= 0.8 and drawn.max() <= 1.2
    assert (drawn < 0.9).any() and (drawn > 1.1).any()
    assert 0.4 < (drawn > 1).mean() < 0.6
