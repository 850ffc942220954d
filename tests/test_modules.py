"""Module loading: real tfhub.dev handles through tensorflow_hub's resolver, local folders, TF1 Hub modules."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import retrain_command
from retrain.errors import RetrainError, UsageError
from retrain.features.module import load_feature_extractor
from tests.conftest import FIXTURES, MODULES, copy_tree, flags, invoke, require

HANDLE = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"


@pytest.mark.integration  # 5 s: two real module loads; the handle end to end stays in the default suite
def test_tfhub_handle_resolves_through_tfhub_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = copy_tree(require(FIXTURES / "tfhub_cache"), tmp_path / "tfhub_cache")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    extractor = load_feature_extractor(HANDLE)
    assert extractor.path.resolve().parent == cache.resolve()
    assert (extractor.height, extractor.width, extractor.feature_dim) == (224, 224, 1280)
    assert not extractor.is_tf1
    local = load_feature_extractor(str(require(MODULES / "mobilenet_v2_100_224")))
    assert local.cache_key == extractor.cache_key  # same content, same cached vectors


@pytest.mark.integration  # a run in a fresh process with a handle resolved offline (5-10 s): kept out of the 3-minute suite
def test_retrain_with_a_handle_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colour_tree: Path,
                                          outputs: dict[str, Path]):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(copy_tree(require(FIXTURES / "tfhub_cache"), tmp_path / "cache")))
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=HANDLE + "/",  # as copied from a page
                                           how_many_training_steps=20, **outputs))
    assert "Final test accuracy" in result.stdout
    assert outputs["output_graph"].stat().st_size > 1_000_000


def test_a_web_handle_is_taken_without_its_trailing_slash(tmp_path: Path) -> None:
    """`.../feature_vector/5/` missed the TFHUB_CACHE_DIR copy that `.../feature_vector/5` filled: TensorFlow Hub
    names its cache folder after the handle's text (probe JJ). A file URL's path and a folder keep theirs."""
    from retrain.config import RetrainConfig

    (tmp_path / "m").mkdir()
    config = RetrainConfig(image_dir=tmp_path, tfhub_module=f"{HANDLE}/, file://{tmp_path}/m/,{tmp_path}/")
    assert config.modules == (HANDLE, f"{tmp_path}/m/", f"{tmp_path}/")
    # An upper-case scheme, which TensorFlow's file systems do not know; a bare scheme stays as typed (probe KK).
    assert RetrainConfig(image_dir=tmp_path, tfhub_module="HTTPS://tfhub.dev/a/b/5//").modules == (
        "https://tfhub.dev/a/b/5",)
    assert RetrainConfig(image_dir=tmp_path, tfhub_module="https://").modules == ("https://",)
    # `link/../m`, which the system follows through the link but TensorFlow cleans as text (probe KK).
    (tmp_path / "far" / "sub").mkdir(parents=True)
    (tmp_path / "far" / "m").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "far" / "sub")
    assert RetrainConfig(image_dir=tmp_path, tfhub_module=f"{tmp_path}/link/../m").modules == (
        str(tmp_path / "far" / "m"),)
    # The same as a file URL (it loaded the folder the text names, another one, probe LL); an upper-case host.
    assert RetrainConfig(image_dir=tmp_path, tfhub_module=f"file://LOCALHOST{tmp_path}/link/../m").modules == (
        str(tmp_path / "far" / "m"),)
    assert RetrainConfig(image_dir=tmp_path, tfhub_module="https://TFHUB.DEV/A/b/5/").modules == (
        "https://tfhub.dev/A/b/5",)
    # `#` and `?` are part of a folder's name, as TensorFlow takes them (the URL was cut there, and loaded the
    # folder `m`, probe MM); %FF is a byte that is not UTF-8, refused (it became U+FFFD, another folder).
    (tmp_path / "m#1").mkdir()
    assert RetrainConfig(image_dir=tmp_path, tfhub_module=f"file://{tmp_path}/m#1").modules == (f"{tmp_path}/m#1",)
    with pytest.raises(UsageError, match=r"hub\\xff is not valid UTF-8"):
        RetrainConfig(image_dir=tmp_path, tfhub_module=f"file://{tmp_path}/hub%FF")


def test_unreachable_handle_fails_fast_naming_handle_cache_and_local_path(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    handle = "https://invalid.invalid/google/no-such-module/1"
    start = time.monotonic()
    with pytest.raises(RetrainError) as error:
        load_feature_extractor(handle)
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert handle in message and "TFHUB_CACHE_DIR" in message and "local" in message
    assert "\n" not in message
    # Without TFHUB_CACHE_DIR, tensorflow_hub caches in TMPDIR, not always /tmp (said so wrongly, probe OO).
    monkeypatch.delenv("TFHUB_CACHE_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what TMPDIR=... gives tempfile.gettempdir()
    with pytest.raises(RetrainError, match=re.escape(f"pre-fill TFHUB_CACHE_DIR={tmp_path}/tfhub_modules (its "
                                                     "default), or pass")):
        load_feature_extractor(handle)


def test_tf1_hub_module_loads_and_trains(colour_tree: Path, outputs: dict[str, Path]):
    module = require(MODULES / "tf1_tiny_32")
    extractor = load_feature_extractor(str(module))
    assert extractor.is_tf1 and (extractor.height, extractor.width, extractor.feature_dim) == (32, 32, 4)
    vectors = extractor(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)).numpy()
    assert vectors.shape == (2, 4)
    result = invoke(retrain_command, flags(image_dir=colour_tree, tfhub_module=module, how_many_training_steps=30,
                                           saved_model_dir=outputs["output_graph"].parent / "saved", **outputs))
    assert "Final test accuracy" in result.stdout
    assert outputs["output_graph"].exists() and (outputs["output_graph"].parent / "saved" / "saved_model.pb").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "not a SavedModel"),
    (lambda p: p.write_text("hi"), "is a file; expected a folder holding a TF2 image feature-vector SavedModel"),
    (lambda p: None, "neither an existing folder nor a handle"),
])
def test_bad_local_module_paths(tmp_path: Path, make, message: str):
    path = tmp_path / "module"
    make(path)
    with pytest.raises(RetrainError, match=message):
        load_feature_extractor(str(path))
