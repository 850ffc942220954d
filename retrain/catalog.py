"""Short module names -> canonical TF2 image feature-vector handles, with each input size.

`--tfhub_module mobilenet_v2_100_224` is shorthand for the full tfhub.dev
handle below (tensorflow_hub resolves tfhub.dev handles through Kaggle Models
now; the handles stay valid). Every entry is an image feature-vector module
mapping float32 [N, H, W, 3] RGB in [0, 1] to [N, D]; all are TF2 SavedModels
except EfficientNet B0-B7, published in the classic TF1 Hub format (they load
and train, but cannot be fine-tuned). The size is the
one the module was trained at; it is used when a module's signature leaves the
size open and no --image_size is given. Pure Python: `retrain --list_modules`
prints this table without importing TensorFlow. `hub_cache_dir` says where
tensorflow_hub keeps what it fetches for a handle.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass


def hub_cache_dir() -> str:
    """Where tensorflow_hub keeps the modules it fetched: TFHUB_CACHE_DIR, else `tfhub_modules` in the system's
    temporary folder (TMPDIR, then /tmp), as tensorflow_hub's resolver decides."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    handle: str
    size: int  # input height = width, in pixels
    note: str


_IMAGENET = "https://tfhub.dev/google/imagenet/{}/feature_vector/5"
DEFAULT_MODULE = _IMAGENET.format("inception_v3")  # the classic retrain.py's default --tfhub_module
_EFFICIENTNET = "https://tfhub.dev/tensorflow/efficientnet/{}/feature-vector/1"
_EFFICIENTNET_V2 = "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet1k_{}/feature_vector/2"


def _entries() -> tuple[CatalogEntry, ...]:
    rows = [
        CatalogEntry("inception_v3", DEFAULT_MODULE, 299, "Inception V3 (the default), 2048-d"),
        CatalogEntry("inception_resnet_v2", _IMAGENET.format("inception_resnet_v2"), 299, "Inception-ResNet V2, 1536-d"),
        *(CatalogEntry(f"resnet_{v}_{d}", _IMAGENET.format(f"resnet_{v}_{d}"), 224, f"ResNet {v.upper()}-{d}, 2048-d")
          for v in ("v1", "v2") for d in (50, 101, 152)),
        CatalogEntry("nasnet_mobile", _IMAGENET.format("nasnet_mobile"), 224, "NASNet-A mobile, 1056-d"),
        CatalogEntry("nasnet_large", _IMAGENET.format("nasnet_large"), 331, "NASNet-A large, 4032-d"),
        CatalogEntry("pnasnet_large", _IMAGENET.format("pnasnet_large"), 331, "PNASNet-5 large, 4320-d"),
        *(CatalogEntry(f"mobilenet_v1_{w}_224", _IMAGENET.format(f"mobilenet_v1_{w}_224"), 224,
                       f"MobileNet V1, width {int(w) / 100}, {int(1024 * int(w) / 100)}-d")
          for w in ("025", "050", "075", "100")),
        *(CatalogEntry(f"mobilenet_v2_{w}_224", _IMAGENET.format(f"mobilenet_v2_{w}_224"), 224,
                       f"MobileNet V2, width {int(w) / 100}, {1792 if w == '140' else 1664 if w == '130' else 1280}-d")
          for w in ("035", "050", "075", "100", "130", "140")),
        *(CatalogEntry(f"mobilenet_v3_{kind}_{w}_224", _IMAGENET.format(f"mobilenet_v3_{kind}_{w}_224"), 224,
                       f"MobileNet V3 {kind}, width {int(w) / 100}, {1024 if kind == 'small' else 1280}-d")
          for kind in ("small", "large") for w in ("075", "100")),
        *(CatalogEntry(f"efficientnet_b{i}", _EFFICIENTNET.format(f"b{i}"), size, f"EfficientNet-B{i}, TF1 Hub format")
          for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))),
        *(CatalogEntry(f"efficientnet_v2_{v}", _EFFICIENTNET_V2.format(v), size, f"EfficientNetV2-{v.upper()}, ImageNet-1k")
          for v, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384), ("m", 480), ("l", 480))),
        CatalogEntry("bit_s_r50x1", "https://tfhub.dev/google/bit/s-r50x1/1", 224, "BiT-S R50x1 (any input size), 2048-d"),
        CatalogEntry("bit_m_r50x1", "https://tfhub.dev/google/bit/m-r50x1/1", 224, "BiT-M R50x1 (any input size), 2048-d"),
    ]
    return tuple(rows)


CATALOG: tuple[CatalogEntry, ...] = _entries()
_BY_NAME = {entry.name: entry for entry in CATALOG}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def lookup(name: str) -> CatalogEntry | None:
    """The entry for a short name (case and dashes ignored), or None if it is not one."""
    return _BY_NAME.get(_normalise(name))


# TensorFlow for Poets' --architecture names of MobileNet V1: mobilenet_0.50_224, mobilenet_1.0_224_quantized...;
# and the same with a version, as Keras and papers write them: mobilenet_v2_1.0_224.
_POETS_MOBILENET = re.compile(r"mobilenet(?:_v([123]))?_(\d\.\d+)_(\d+)(_quantized)?")


def closest(name: str) -> str | None:
    """The catalog name a mistyped one was most likely meant to be (mobilenet_v2_100_22 -> mobilenet_v2_100_224;
    TensorFlow for Poets' mobilenet_0.50_224, a MobileNet V1, -> mobilenet_v1_050_224; mobilenet_v2_1.0_224 ->
    mobilenet_v2_100_224), or None when none is close."""
    poets = _POETS_MOBILENET.fullmatch(_normalise(name))
    if poets:  # never a near miss of another width (mobilenet_v2_1.0_224 was taken for mobilenet_v2_140_224)
        meant = f"mobilenet_v{poets[1] or 1}_{round(float(poets[2]) * 100):03d}_{poets[3]}"
        return meant if meant in _BY_NAME else None
    matches = difflib.get_close_matches(_normalise(name), _BY_NAME, n=1, cutoff=0.8)
    return matches[0] if matches else None


def starting_with(name: str) -> list[str]:
    """Catalog names a partial one begins, underscores aside (mobilenet_v2, mobilenetv2 -> the MobileNet V2
    sizes): for a name too short for `closest` to pick one."""
    squeezed = _normalise(name).replace("_", "")
    if len(squeezed) < 3:
        return []
    return [entry for entry in _BY_NAME if entry.replace("_", "").startswith(squeezed)]


def format_table() -> str:
    """The catalog as a plain-text table for `retrain --list_modules`, newline-terminated."""
    width = max(len(e.name) for e in CATALOG)
    lines = [f"{'NAME':<{width}}  SIZE  HANDLE  (description)"]
    lines += [f"{e.name:<{width}}  {e.size:>4}  {e.handle}  ({e.note})" for e in CATALOG]
    lines.append("")
    lines.append("Use a name with --tfhub_module NAME; full tfhub.dev/Kaggle handles and local SavedModel folders "
                 "work too. SIZE is the input height and width in pixels.")
    return "\n".join(lines) + "\n"
