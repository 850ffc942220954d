"""TFLite models (`--output_tflite`, `--tflite_quantization`), signature `serving_default`: `image` -> `prediction`.

float32, float16 (weights) and dynamic (int8 weights) take and return float32:
`image` [N, H, W, 3] RGB in [0, 1], `prediction` the scores. int8 is fully
integer, calibrated on a seeded sample of training images prepared exactly as
for training: its input is int8, real = scale * (q - zero_point); when the
calibration photos span 0..255 (real photos do) that is scale 1/255, zero point
-128, i.e. q = pixel - 128. Its output is int8 with scale 1/256 and zero point
-128, score = (q + 128) / 256. The interpreter's input/output details report
both parameters; readers should use those, not these constants.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrain.config import RetrainConfig
from retrain.errors import RetrainError
from retrain.exporters import Exporter
from retrain.names import IMAGE_KEY, OUTPUT_KEY
from retrain.outputs import Output, atomic_write_bytes, check_writable_file
from retrain.tfenv import import_tensorflow, plain_temporary_files, stderr_captured

log = logging.getLogger(__name__)


def tflite_paths(path: Path, quantizations: Sequence[str]) -> dict[str, Path]:
    """Where each variant goes: `path` for the first, `<stem>_<quantization><suffix>` beside it for the rest."""
    suffix = path.suffix or ".tflite"
    return {q: path if i == 0 else path.with_name(f"{path.stem}_{q}{suffix}") for i, q in enumerate(quantizations)}


class TFLite(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        if config.output_tflite is None:
            return []
        paths = tflite_paths(config.output_tflite, config.tflite_quantization)
        return [Output("--output_tflite", path, content="tflite",
                       role="" if path == config.output_tflite else f"the {quantization} model beside --output_tflite")
                for quantization, path in paths.items()]

    def check(self, config: RetrainConfig) -> None:
        for path in tflite_paths(config.output_tflite, config.tflite_quantization).values():  # clashes: outputs
            check_writable_file(path, flag="--output_tflite")

    def write(self, model: Any, config: RetrainConfig) -> Iterator[Path]:
        representative = model.calibration(config.tflite_representative_images) \
            if "int8" in config.tflite_quantization else None
        for quantization, path in tflite_paths(config.output_tflite, config.tflite_quantization).items():
            started = time.monotonic()
            if quantization == "int8":  # the slow one, silent while TensorFlow calibrates: said before it starts
                log.info("converting to TFLite (int8): calibrating on %d training images, each through the whole "
                         "model", len(representative))
            data = tflite_model(model, quantization=quantization, representative_images=representative)
            atomic_write_bytes(path, data, flag="--output_tflite", digest=True)  # run.files_sha256
            log.info("converted to TFLite (%s%s) in %.1f s", quantization,
                     f", calibrated on {len(representative)} training images" if quantization == "int8" else "",
                     time.monotonic() - started)
            yield path  # reported now, not after the slower variants that follow


def tflite_model(model: Any, *, quantization: str, representative_images: np.ndarray | None = None) -> bytes:
    """The classifier as a TFLite flatbuffer (see the module docstring for each quantization)."""
    tf = import_tensorflow()
    frozen = model.frozen_function(IMAGE_KEY)
    # Converting the frozen function spares the converter from saving the whole module as a
    # SavedModel first (about 3x faster); the wrapper restores the named output that freezing
    # drops, and the empty tf.Module is the trackable the converter insists on.
    signature = tf.function(lambda image: {OUTPUT_KEY: frozen(image)[0]}).get_concrete_function(
        model.input_spec(IMAGE_KEY))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([signature], tf.Module())
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if representative_images is None or not len(representative_images):
            raise RetrainError("--tflite_quantization int8 needs representative training images; none were usable")

        def representative() -> Iterator[list[np.ndarray]]:
            for image in representative_images:
                yield [np.asarray(image, np.float32)[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with stderr_captured() as captured, plain_temporary_files():
        try:
            return converter.convert()
        except Exception as error:  # noqa: BLE001 - the converter raises many kinds
            lines = [line.strip() for line in f"{error}\n{captured()}".splitlines() if line.strip()]
            telling = [line for line in lines if "error:" in line] or lines or [type(error).__name__]
            detail = telling[0].split("error: ", 1)[-1][:300]
            raise RetrainError(f"--output_tflite: TFLite conversion ({quantization}) failed: {detail}") from None
