"""A SavedModel (`--saved_model_dir`) with two signatures, both returning `prediction` [N, classes].

`serving_default` takes `image`, float32 [N, H, W, 3] RGB in [0, 1];
`serving_bytes` takes `image_bytes`, string [N] of encoded files (JPEG, PNG,
GIF, BMP, WebP), decoded by TensorFlow as training decodes (see
`decode_like_training`) and resized for each module with the very function
training uses (images.resize_tensor), so its pixels equal training's.
A multi-label model has a third signature, `thresholds`: no input, `thresholds`
[labels], the per-label thresholds chosen on validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.errors import RetrainError
from retrain.exporters import Exporter
from retrain.images import resize_tensor
from retrain.names import BYTES_KEY, BYTES_SIGNATURE, IMAGE_KEY, OUTPUT_KEY, SERVING_SIGNATURE, THRESHOLDS_SIGNATURE
from retrain.outputs import Output, check_replaceable_folder, replace_folder
from retrain.tfenv import import_tensorflow


class SavedModel(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--saved_model_dir", config.saved_model_dir, kind="folder")] if config.saved_model_dir else []

    def check(self, config: RetrainConfig) -> None:
        check_replaceable_folder(config.saved_model_dir, flag="--saved_model_dir")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        tf = import_tensorflow()
        classifier, source = model.classifier, model.source

        @tf.function(input_signature=[model.input_spec(IMAGE_KEY)])
        def serve(image: Any) -> dict[str, Any]:
            return {OUTPUT_KEY: classifier.probabilities(image)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_KEY)])
        def serve_bytes(image_bytes: Any) -> dict[str, Any]:
            features = []
            for member in source.members:
                height, width = member.height, member.width

                def decode(data: Any, height: int = height, width: int = width) -> Any:
                    rgb = decode_like_training(tf, data, height=height, width=width)
                    return resize_tensor(rgb, height=height, width=width)

                pixels = tf.map_fn(decode, image_bytes,
                                   fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
                features.append(member(pixels))
            return {OUTPUT_KEY: classifier.scores(features[0] if len(features) == 1 else tf.concat(features, 1))}

        signatures = {SERVING_SIGNATURE: serve, BYTES_SIGNATURE: serve_bytes}
        if model.head.thresholds is not None:
            thresholds = tf.constant(model.head.thresholds, tf.float32)
            signatures[THRESHOLDS_SIGNATURE] = tf.function(lambda: {THRESHOLDS_SIGNATURE: thresholds},
                                                           input_signature=[])
        classifier.serve, classifier.serve_bytes = serve, serve_bytes

        def save(tmp: Path) -> None:
            try:
                tf.saved_model.save(classifier, str(tmp), signatures=signatures)
            except tf.errors.OpError as error:  # TensorFlow's own file writing (e.g. a full disk)
                reason = str(error).strip().splitlines()[0].split("; ")[-1]
                raise RetrainError(f"cannot write --saved_model_dir {config.saved_model_dir}: {reason} "
                                   f"(in {config.saved_model_dir.parent}); earlier outputs are kept") from None

        replace_folder(config.saved_model_dir, save, flag="--saved_model_dir")
        return [config.saved_model_dir]


def decode_like_training(tf: Any, data: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: encoded bytes -> uint8 RGB [h, w, 3], as images.decode_rgb (Pillow) decodes for training.

    JPEGs use libjpeg's accurate integer IDCT, as Pillow does (TensorFlow's
    default fast IDCT differs by up to ~20 levels), and Pillow's draft rule:
    a JPEG at least 4x the input size on both sides is decoded at scale 1/2,
    1/4 or 1/8, the smallest that keeps both sides at least twice the input
    size. The pixels then match Pillow's exactly (measured on the fixtures). Other formats go through
    tf.io.decode_image (first frame, alpha dropped, 16-bit scaled to 8).
    Not replicated: EXIF orientation (send upright images) and the box
    reduction training applies to non-JPEG images over 4x the input size.
    """
    def jpeg() -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        fits = tf.minimum(shape[0] // (2 * height), shape[1] // (2 * width))
        branch = tf.cast(fits >= 2, tf.int32) + tf.cast(fits >= 4, tf.int32) + tf.cast(fits >= 8, tf.int32)
        return tf.switch_case(branch, [
            lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
            for ratio in (1, 2, 4, 8)])

    def other() -> Any:
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    rgb = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    rgb.set_shape([None, None, 3])
    return rgb
