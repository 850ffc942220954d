"""Random crop, scale, flip and brightness, as batched TensorFlow tensor functions.

The classic retrain.py semantics (`add_input_distortions`), one image at a time:
enlarge the image to `input size * margin * scale` where margin = 1 + crop/100
and scale ~ U(1, 1 + scale/100), cut an input-sized window out of it at a random
place, maybe mirror it, then multiply every pixel by brightness
~ U(1 - brightness/100, 1 + brightness/100) (not clipped, as in the classic).

Here the same view is taken for a whole batch at once: each source image is
prepared once at `source_size` (the largest enlargement any draw can need) and
`tf.image.crop_and_resize` samples every image's window from it in one op. A
window of relative size 1/(margin*scale) at a random place of the whole image
is exactly what "enlarge, then crop back to size" shows. With crop and scale at
0 the window is the whole image and the pixels pass through unchanged.

The random draws are plain numpy arrays (`Parameters`), so callers choose how
they are seeded: per image and variant for the cache, per run for on-the-fly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain.tfenv import import_tensorflow

# Bump when the distortion arithmetic changes: cached variant vectors then go stale.
DISTORTION_VERSION = "crop-and-resize/1"


@dataclass(frozen=True)
class Distortions:
    """The four classic distortion flags (percentages; flip on or off)."""

    flip_left_right: bool = False
    random_crop: float = 0
    random_scale: float = 0
    random_brightness: float = 0

    @property
    def active(self) -> bool:
        return bool(self.flip_left_right or self.random_crop or self.random_scale or self.random_brightness)

    @property
    def views(self) -> int:
        """How many distinct pictures the cached variants can be when they are few: flipping alone makes the
        photo or its mirror image (2); 0 when every draw is a picture of its own."""
        return 2 if self.flip_left_right and not (self.random_crop or self.random_scale or self.random_brightness) \
            else 0

    @property
    def margin(self) -> float:
        return 1.0 + self.random_crop / 100.0

    @property
    def max_scale(self) -> float:
        return 1.0 + self.random_scale / 100.0

    def source_size(self, *, height: int, width: int) -> tuple[int, int]:
        """Size to prepare source images at: the largest enlargement any draw can ask for."""
        factor = self.margin * self.max_scale
        return math.ceil(round(height * factor, 6)), math.ceil(round(width * factor, 6))

    def tag(self) -> str:
        """Everything that changes the distorted pixels, for cache keys."""
        return (f"{DISTORTION_VERSION}:crop={self.random_crop:g}:scale={self.random_scale:g}:"
                f"brightness={self.random_brightness:g}:flip={int(bool(self.flip_left_right))}")


@dataclass(frozen=True)
class Parameters:
    """One random draw per image: window scale and place, flip, brightness factor."""

    scale: np.ndarray  # [N] in [1, max_scale]
    offset_y: np.ndarray  # [N] in [0, 1]: where the window sits in the free room
    offset_x: np.ndarray  # [N] in [0, 1]
    flip: np.ndarray  # [N] bool
    brightness: np.ndarray  # [N] in [1 - b/100, 1 + b/100]

    def __len__(self) -> int:
        return len(self.scale)

    @staticmethod
    def concatenate(parts: list["Parameters"]) -> "Parameters":
        return Parameters(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("scale", "offset_y", "offset_x", "flip", "brightness")))


def sample_parameters(distortions: Distortions, *, count: int, rng: np.random.Generator) -> Parameters:
    """Draw `count` images' distortions, as the classic script's random ops did."""
    scale = rng.uniform(1.0, distortions.max_scale, count)
    offset_y, offset_x = rng.uniform(0.0, 1.0, count), rng.uniform(0.0, 1.0, count)
    flip = rng.uniform(0.0, 1.0, count) < 0.5 if distortions.flip_left_right else np.zeros(count, bool)
    spread = distortions.random_brightness / 100.0
    brightness = rng.uniform(1.0 - spread, 1.0 + spread, count)
    return Parameters(scale=scale.astype(np.float32), offset_y=offset_y.astype(np.float32),
                      offset_x=offset_x.astype(np.float32), flip=flip, brightness=brightness.astype(np.float32))


def crop_boxes(parameters: Parameters, *, margin: float) -> np.ndarray:
    """Normalised [y1, x1, y2, x2] windows: the part of the image an enlarge-and-crop keeps."""
    side = 1.0 / (margin * parameters.scale.astype(np.float64))
    y1 = parameters.offset_y * (1.0 - side)
    x1 = parameters.offset_x * (1.0 - side)
    return np.stack([y1, x1, y1 + side, x1 + side], axis=1).astype(np.float32)


def distort(images: Any, parameters: Parameters, *, distortions: Distortions, height: int, width: int) -> Any:
    """Distort a batch: float [N, h, w, 3] source images in [0, 1] -> float [N, height, width, 3].

    Source images should be prepared at `distortions.source_size(...)`; any
    size works (the window is resampled to `height` x `width`).
    """
    tf = import_tensorflow()
    return distort_tensors(tf.convert_to_tensor(images, tf.float32),
                            tf.constant(crop_boxes(parameters, margin=distortions.margin)),
                            tf.constant(parameters.flip), tf.constant(parameters.brightness),
                            height=height, width=width)


def distort_tensors(images: Any, boxes: Any, flip: Any, brightness: Any, *, height: int, width: int) -> Any:
    """The tensor arithmetic of `distort` on [N, 4] boxes (see `crop_boxes`); usable inside a tf.function."""
    tf = import_tensorflow()
    count = tf.shape(images)[0]
    windows = tf.image.crop_and_resize(images, boxes, tf.range(count), [height, width], method="bilinear")
    mirrored = tf.where(tf.reshape(flip, [-1, 1, 1, 1]), tf.reverse(windows, axis=[2]), windows)
    return mirrored * tf.reshape(tf.cast(brightness, tf.float32), [-1, 1, 1, 1])


def view_of(distortions: Distortions, *, content: bytes, variant: int) -> int:
    """Which picture cached variant `variant` of an image is, when the distortions make only a few (`views`;
    flipping alone: 0 the photo, 1 its mirror image): they take turns from one the image's content key picks, so
    that each picture is computed once, and even a single variant is the mirror image for half the photos."""
    return (variant + int(content[:1], 16)) % distortions.views


def variant_parameters(distortions: Distortions, *, key: bytes, content: bytes, variant: int, seed: int) -> Parameters:
    """The distortion of cached variant `variant` of an image (`key` the variant's, `content` the image's): the
    random draw of (image, variant, seed); or, when the distortions make only a few pictures, its `view_of`."""
    if not distortions.views:
        return sample_parameters(distortions, count=1, rng=variant_rng(key=key, variant=variant, seed=seed))
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    flip = view_of(distortions, content=content, variant=variant) == 1
    return Parameters(scale=one, offset_y=zero, offset_x=zero, flip=np.array([flip]), brightness=one)


def variant_rng(*, key: bytes, variant: int, seed: int) -> np.random.Generator:
    """The random draws of one cached variant depend only on the image, its variant index and the seed."""
    return np.random.default_rng([seed % 2**32, int(key[:15], 16), variant])
