"""Handle or path -> FeatureExtractor: a callable image feature-vector module.

Accepts tfhub.dev and Kaggle handles (resolved by tensorflow_hub, which honours
TFHUB_CACHE_DIR), local TF2 SavedModel folders, and classic TF1 Hub-format
modules. The input size comes from the module's own signature.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from retrain import catalog
from retrain.errors import RetrainError, UsageError, reason
from retrain.tfenv import import_hub, import_tensorflow, loadable

log = logging.getLogger(__name__)

# Bump when images.py changes how pixels are prepared: cached vectors then go stale.
# 2: huge non-JPEGs box-reduced before resizing; 3: Pillow resizes (float, same filter as TensorFlow's, within 3e-5);
# 4: 16-bit greyscale keeps its high byte (a dark one was read as 8-bit)
PREPROCESSING_VERSION = "pil-exif+pil-float-bilinear-aa/4"
DOWNLOAD_TIMEOUT_SECONDS = 60
_TF1_OUTPUTS = ("image_feature_vector", "default")


@dataclass(frozen=True)
class FeatureExtractor:
    """A loaded module: float32 [N, H, W, 3] in [0, 1] -> float32 [N, D]."""

    handle: str
    path: Path
    height: int
    width: int
    feature_dim: int
    cache_key: str
    model: Any
    is_tf1: bool
    size_from_flag: bool = False  # the module leaves its input size open: height and width came from --image_size

    def __call__(self, images: Any) -> Any:
        """Always in inference mode, also when fine-tuning: `training=True` would switch batch normalization to
        the statistics of each small batch and overwrite the module's moving averages with them."""
        if self.is_tf1:
            signature = self.model.signatures.get("image_feature_vector") or self.model.signatures["default"]
            outputs = signature(images=images)
            return next(outputs[k] for k in (*_TF1_OUTPUTS, *outputs) if k in outputs)
        return self.model(images)

    @property
    def trainable_variables(self) -> list[Any]:
        return [] if self.is_tf1 else list(getattr(self.model, "trainable_variables", None) or [])

    @property
    def regularization_losses(self) -> list[Any]:
        return [] if self.is_tf1 else list(getattr(self.model, "regularization_losses", None) or [])

    def check_fine_tunable(self) -> None:
        """Raise a clear error for modules whose weights cannot be trained."""
        if self.is_tf1:
            raise RetrainError(f"--tfhub_module {self.handle} is a classic TF1 Hub module, which cannot be "
                               "fine-tuned in TensorFlow 2; use a TF2 module or drop --fine_tune")
        if not self.trainable_variables:
            raise RetrainError(f"--tfhub_module {self.handle} exposes no trainable variables, so it cannot be "
                               "fine-tuned; use a TF2 module saved with its trainable_variables or drop --fine_tune")


def module_location(handle: str) -> Path | str:
    """A module flag's local SavedModel folder, or the handle to fetch (a catalog name gives its handle).

    Needs no TensorFlow and no network, so a wrong value is a usage error before any work.
    """
    local = Path(handle).expanduser()
    if local.exists():
        if local.is_file() and local.name == "saved_model.pb":
            raise UsageError(f"--tfhub_module {handle} is the SavedModel's graph file; pass the folder that holds "
                             f"it ({local.parent})")
        if not local.is_dir():
            raise UsageError(f"--tfhub_module {handle} is a file; expected a folder holding a TF2 image feature-vector "
                             "SavedModel, or a tfhub.dev/Kaggle handle")
        if not (local / "saved_model.pb").is_file():
            raise UsageError(f"--tfhub_module {handle} is not a SavedModel folder (no saved_model.pb inside); "
                             "expected a TF2 image feature-vector SavedModel or a tfhub.dev/Kaggle handle")
        return local
    entry = catalog.lookup(handle)
    if entry is not None:
        return entry.handle
    if "://" not in handle:
        family = catalog.starting_with(handle)  # a family's name alone: its members, not the one closest
        if re.match(r"(www\.)?(tfhub\.dev|kaggle\.com)/", handle, re.IGNORECASE):  # a handle without its scheme
            hint = f"did you mean https://{handle}? "
        elif len(family) > 1:
            more = f", and {len(family) - 6} more" if len(family) > 6 else ""
            hint = f"did you mean one of {', '.join(family[:6])}{more}? "
        else:
            close = catalog.closest(handle) or next(iter(family), None)
            hint = f"did you mean {close}? " if close else ""
        raise UsageError(f"--tfhub_module {handle} is neither an existing folder nor a handle, nor a module name "
                         f"({hint}see retrain --list_modules); expected a "
                         "local SavedModel folder, a name such as mobilenet_v2_100_224, or a https://tfhub.dev/... "
                         "or https://www.kaggle.com/models/... handle")
    return handle


def resolve_module_path(handle: str) -> Path:
    """Turn a handle or local path into a local SavedModel folder, downloading if needed."""
    location = module_location(handle)
    if isinstance(location, Path):
        return location
    if location != handle:
        log.info("--tfhub_module %s is %s", handle, location)
        handle = location
    hub = import_hub()

    cache = catalog.hub_cache_dir() + ("" if os.environ.get("TFHUB_CACHE_DIR") else " (its default)")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)  # hub's urllib download has no timeout of its own
    try:
        return Path(hub.resolve(handle))
    except Exception as error:  # noqa: BLE001 - hub raises many kinds; all mean "could not fetch"
        raise RetrainError(f"cannot fetch module --tfhub_module {handle} ({reason(error)}); check the handle and the "
                           f"network, or pre-fill TFHUB_CACHE_DIR={cache}, or pass a local SavedModel folder "
                           "as --tfhub_module") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_feature_extractor(handle: str, *, image_size: int | None = None, strict_size: bool = True) -> FeatureExtractor:
    """Load a module and check that it maps [N, H, W, 3] images to [N, D] vectors.

    `image_size` is required for modules whose signature leaves the size open,
    and (with `strict_size`, i.e. when this is the only module) must agree with
    modules that fix it.
    """
    tf = import_tensorflow()
    hub = import_hub()

    path = resolve_module_path(handle)
    try:
        model = hub.load(str(loadable(path)))
    except Exception as error:  # noqa: BLE001
        raise RetrainError(f"--tfhub_module {handle}: cannot load the SavedModel at {path} "
                           f"({reason(error)})") from None
    is_tf1 = not callable(model)
    if is_tf1 and not any(k in model.signatures for k in ("default", "image_feature_vector")):
        raise RetrainError(f"--tfhub_module {handle} is not callable and has no 'default' signature; "
                           "expected an image feature-vector module")
    # A catalog name knows the size its module was trained at: the fallback when the signature leaves it open.
    entry = None if Path(handle).expanduser().exists() else catalog.lookup(handle)
    height, width = _input_size(model, is_tf1=is_tf1, handle=handle, image_size=image_size,
                                fallback=entry.size if entry else None, strict=strict_size)
    size_from_flag = image_size is not None and not _fixed_sizes(model, is_tf1=is_tf1)
    extractor = FeatureExtractor(handle=handle, path=path, height=height, width=width, feature_dim=0,
                                 cache_key="", model=model, is_tf1=is_tf1)
    try:
        probe = extractor(tf.zeros([1, height, width, 3], tf.float32))
    except Exception as error:  # noqa: BLE001
        raise RetrainError(f"--tfhub_module {handle} failed on a [1, {height}, {width}, 3] float image batch "
                           f"({reason(error)}); expected an image feature-vector module") from None
    if probe.shape.rank != 2 or not probe.dtype.is_floating:
        raise RetrainError(f"--tfhub_module {handle} outputs {probe.dtype.name} {probe.shape.as_list()}; expected a "
                           "float feature vector [N, D] (use an image feature_vector module)")
    feature_dim = int(probe.shape[1])
    key = _cache_key(path, height=height, width=width, feature_dim=feature_dim)
    log.info("module %s: input %dx%d, %d features%s", handle, height, width, feature_dim, " (TF1 Hub format)" if is_tf1 else "")
    return FeatureExtractor(handle=handle, path=path, height=height, width=width, feature_dim=feature_dim,
                            cache_key=key, model=model, is_tf1=is_tf1, size_from_flag=size_from_flag)


def _input_size(model: Any, *, is_tf1: bool, handle: str, image_size: int | None,
                fallback: int | None = None, strict: bool = True) -> tuple[int, int]:
    """Read (height, width) from the module's signature; fall back to --image_size, then `fallback`."""
    fixed = _fixed_sizes(model, is_tf1=is_tf1)
    if fixed:
        if strict and image_size is not None and (image_size, image_size) != fixed[0]:
            raise UsageError(f"--image_size {image_size} does not match the input size "
                             f"{fixed[0][0]}x{fixed[0][1]} fixed by --tfhub_module {handle}; drop --image_size")
        return fixed[0]
    if image_size is None and fallback is not None:
        log.info("--tfhub_module %s does not fix its input size; using %dx%d, the size it was trained at",
                 handle, fallback, fallback)
        return fallback, fallback
    if image_size is None:
        raise UsageError(f"--tfhub_module {handle} does not fix its input size (its signature leaves "
                         "height and width open); pass --image_size, e.g. --image_size 224")
    return image_size, image_size


def _fixed_sizes(model: Any, *, is_tf1: bool) -> list[tuple[int, int]]:
    """The (height, width) pairs the module's call and signatures fix, in that order; [] when they leave it open."""
    shapes = []
    if not is_tf1:
        for function in getattr(model.__call__, "concrete_functions", []):
            args = function.structured_input_signature[0]
            if args and hasattr(args[0], "shape"):
                shapes.append(args[0].shape)
    for name in ("image_feature_vector", "default", "serving_default"):
        if name in model.signatures:
            specs = list(model.signatures[name].structured_input_signature[1].values())
            shapes += [s.shape for s in specs if s.shape.rank == 4]
    return [(int(s[1]), int(s[2])) for s in shapes if s.rank == 4 and s[1] is not None and s[2] is not None]


def _cache_key(path: Path, *, height: int, width: int, feature_dim: int) -> str:
    """Identity of the module's content and our preprocessing, for the bottleneck cache."""
    digest = hashlib.sha256()
    for name in ("saved_model.pb", "tfhub_module.pb", "variables/variables.index"):
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    digest.update(f"{height}x{width}:{feature_dim}:{PREPROCESSING_VERSION}".encode())
    return digest.hexdigest()[:24]


