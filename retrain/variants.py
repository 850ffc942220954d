"""Distorted variants of the training images, computed once and kept in the bottleneck cache.

The fast way to train with distortions: each training image is decoded once,
`variants` distorted copies of it go through the module in full batches, and
their vectors are cached beside the plain ones. Training then samples among
the variants, so 4,000 steps cost `variants` forward passes per image instead of
400,000. A variant's key covers the image's bytes, the distortion settings, the
variant index and the seed (and the store is per module), so changing any of
them computes new vectors and never reuses stale ones.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrain.bottlenecks import BottleneckStore, windowed
from retrain.distortions import Distortions, Parameters, crop_boxes, distort_tensors, sample_parameters, variant_rng
from retrain.filekeys import content_key
from retrain.images import ImageError, decode_rgb, read_bytes, resize
from retrain.modules import FeatureExtractor
from retrain.progress import Progress
from retrain.tfenv import import_tensorflow
from retrain.train import Split

log = logging.getLogger(__name__)


def variant_keys(data: bytes, *, distortions: Distortions, variants: int, seed: int) -> list[bytes]:
    """Cache keys of an image's distorted variants 0..variants-1."""
    tag = f"distorted:{distortions.tag()}:seed={seed}"
    return [content_key(data, variant=f"{tag}:variant={index}") for index in range(variants)]


def variant_parameters(key: bytes, variant: int, *, distortions: Distortions, seed: int) -> Parameters:
    """The random draw of one variant: a function of its image, index and seed only."""
    return sample_parameters(distortions, count=1, rng=variant_rng(key=key, variant=variant, seed=seed))


def _distorted_features(extractor: FeatureExtractor, *, distortions: Distortions) -> Any:
    """Compiled (source images, boxes, flips, brightness) -> module vectors."""
    tf = import_tensorflow()
    height, width = extractor.height, extractor.width
    source = distortions.source_size(height=height, width=width)

    @tf.function(input_signature=[tf.TensorSpec([None, *source, 3], tf.float32), tf.TensorSpec([None, 4], tf.float32),
                                  tf.TensorSpec([None], tf.bool), tf.TensorSpec([None], tf.float32)])
    def features(images, boxes, flip, brightness):
        return extractor(distort_tensors(images, boxes, flip, brightness, height=height, width=width))

    return features


def compute_variant_split(
    train: Split,
    *,
    extractor: FeatureExtractor,
    distortions: Distortions,
    variants: int,
    seed: int,
    store: BottleneckStore,
    batch_size: int = 32,
    workers: int | None = None,
) -> Split:
    """A training Split whose rows are `variants` distorted copies of each image of `train`.

    Rows of one image share its label and path, so class-uniform sampling over
    the rows picks a class, then an image, then one of its variants. Images that
    can no longer be read are left out with a warning.
    """
    workers = workers or min(4, os.cpu_count() or 2)
    height, width = extractor.height, extractor.width
    source = distortions.source_size(height=height, width=width)
    keys: dict[int, list[bytes]] = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        def read(index: int) -> tuple[int, list[bytes] | None]:
            try:
                data = read_bytes(train.paths[index])
            except ImageError as error:
                log.warning("skipping %s: %s", train.paths[index], error)
                return index, None
            return index, variant_keys(data, distortions=distortions, variants=variants, seed=seed)

        todo: list[int] = []
        for index, image_keys in pool.map(read, range(len(train))):
            if image_keys is not None:
                keys[index] = image_keys
                if any(k not in store for k in image_keys):
                    todo.append(index)
        missing = sum(k not in store for i in todo for k in keys[i])
        log.info("distorted variants (%d per training image, %s): %d cached, %d to compute", variants,
                 distortions.tag(), variants * len(keys) - missing, missing)
        if missing:
            failed = _fill(todo, train=train, keys=keys, extractor=extractor, distortions=distortions, seed=seed,
                           store=store, source=source, batch_size=batch_size, pool=pool, total=missing)
            for index in failed:
                del keys[index]
        store.flush()
    order = sorted(keys)
    all_keys = [k for i in order for k in keys[i]]
    return Split(vectors=store.get(all_keys).reshape(len(all_keys), store.feature_dim),
                 labels=np.repeat(train.labels[order], variants).astype(train.labels.dtype),
                 paths=tuple(train.paths[i] for i in order for _ in range(variants)))


def _fill(todo: Sequence[int], *, train: Split, keys: dict[int, list[bytes]], extractor: FeatureExtractor,
          distortions: Distortions, seed: int, store: BottleneckStore, source: tuple[int, int], batch_size: int,
          pool: concurrent.futures.Executor, total: int) -> set[int]:
    """Decode each image once at the source size; run its missing variants through the module in batches."""
    features = _distorted_features(extractor, distortions=distortions)
    progress = Progress(total, "Distorted variants", unit="variants")
    failed: set[int] = set()
    rows: list[tuple[bytes, np.ndarray, Parameters]] = []

    def prepare(index: int) -> tuple[int, np.ndarray | None]:
        try:
            rgb = decode_rgb(read_bytes(train.paths[index]), min_size=source)
            return index, resize(rgb, height=source[0], width=source[1])
        except ImageError as error:
            log.warning("skipping %s: %s", train.paths[index], error)
            return index, None

    def run_batch() -> None:
        parameters = Parameters.concatenate([r[2] for r in rows])
        vectors = features(np.stack([r[1] for r in rows]), crop_boxes(parameters, margin=distortions.margin),
                           parameters.flip, parameters.brightness)
        store.add([r[0] for r in rows], np.asarray(vectors))
        progress.update(len(rows))
        rows.clear()

    for index, image in windowed(todo, lambda item: pool.submit(prepare, item), max(8, batch_size // 2)):
        if image is None:
            failed.add(index)
            continue
        for variant, key in enumerate(keys[index]):
            if key in store:
                continue
            rows.append((key, image, variant_parameters(key, variant, distortions=distortions, seed=seed)))
            if len(rows) == batch_size:
                run_batch()
    if rows:
        run_batch()
    progress.close()
    return failed
