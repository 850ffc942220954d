"""The feature source: what turns images into the vectors the head is trained on.

A source has one member module or several (`--tfhub_module A,B`). Each member
keeps its own input size, preprocessing and cache key, so its vectors are
cached on their own; an image's vector is the concatenation of its members'
vectors, in the order given. The exported model takes one image input at the
source's size (the largest member's) and resizes it in the graph for members
of a smaller size (`images.resize_batch_tensor`: training's filter, as matrix
products that every export's runtime can run); training computed each
member's vectors from the photo at the member's own size, so for such members
an export's pixels differ slightly from training's (see the README). With one
member nothing is resized and the graph is the classic one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from retrain.errors import RetrainError, UsageError
from retrain.features.module import FeatureExtractor, load_feature_extractor
from retrain.images import resize_batch_tensor
from retrain.tfenv import import_tensorflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSource:
    """One or more modules whose vectors are concatenated: float [N, H, W, 3] in [0, 1] -> [N, dim]."""

    members: tuple[FeatureExtractor, ...]

    @property
    def height(self) -> int:
        return max(member.height for member in self.members)

    @property
    def width(self) -> int:
        return max(member.width for member in self.members)

    @property
    def dim(self) -> int:
        return sum(member.feature_dim for member in self.members)

    @property
    def handle(self) -> str:
        return ",".join(member.handle for member in self.members)

    def features(self, images: Any) -> Any:
        """TensorFlow ops: images at (height, width) -> the concatenated member vectors."""
        tf = import_tensorflow()
        outputs = []
        for member in self.members:
            outputs.append(member(resize_batch_tensor(images, height=member.height, width=member.width)))
        return outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=1, name="features")

    __call__ = features

    @property
    def trainable_variables(self) -> list[Any]:
        return [v for member in self.members for v in member.trainable_variables]

    @property
    def regularization_losses(self) -> list[Any]:
        return [loss for member in self.members for loss in member.regularization_losses]

    def check_fine_tunable(self) -> None:
        for member in self.members:
            member.check_fine_tunable()


def load_feature_source(handles: tuple[str, ...], *, image_size: int | None = None) -> FeatureSource:
    """Load every member module; --image_size applies to members that leave their size open."""
    members = tuple(load_feature_extractor(handle, image_size=image_size, strict_size=len(handles) == 1)
                    for handle in handles)
    keys: dict[str, str] = {}
    for member in members:
        other = keys.setdefault(member.cache_key, member.handle)
        if other != member.handle:
            raise UsageError(f"--tfhub_module names one module twice ({other} and {member.handle}); "
                             "give each module once")
    if image_size is not None and len(members) > 1 and not any(m.size_from_flag for m in members) and \
            any((m.height, m.width) != (image_size, image_size) for m in members):
        raise UsageError(f"--image_size {image_size} has no effect: every --tfhub_module member fixes its input size "
                         f"({', '.join(f'{m.height}x{m.width}' for m in members)}); drop --image_size")
    if len(members) > 1:
        log.info("feature source: %s -> %d features (input %dx%d)", " + ".join(
            f"{m.handle} ({m.feature_dim})" for m in members), sum(m.feature_dim for m in members),
            max(m.height for m in members), max(m.width for m in members))
    if not members:
        raise RetrainError("--tfhub_module names no module")
    return FeatureSource(members=members)
