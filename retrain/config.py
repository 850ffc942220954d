"""Every setting of `retrain` and `label-image`, each default defined once.

The CLI reads its defaults from these dataclasses; library code receives them
keyword-only. Importing this module must stay cheap (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODULE = "https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5"
LOGGING_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# What retrain's exported models take: RGB scaled to [0, 1] = (pixel - 0) / 255.
EXPORT_INPUT_MEAN = 0.0
EXPORT_INPUT_STD = 255.0
DISTORTION_MODES = ("cached", "on_the_fly")
# TFLite variants: float32 as trained; float16 weights; dynamic-range (int8 weights, float
# activations); full int8 (int8 weights, activations, input and output).
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


class RetrainError(Exception):
    """A problem with the user's input or environment, reported as one clean line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(RetrainError):
    """A bad flag value: reported before any work starts, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


@dataclass(frozen=True)
class RetrainConfig:
    """The classic retrain.py flags (same names, meanings and defaults) plus ours."""

    image_dir: Path
    output_graph: Path = Path("/tmp/output_graph.pb")
    output_labels: Path = Path("/tmp/output_labels.txt")
    summaries_dir: Path = Path("/tmp/retrain_logs")
    bottleneck_dir: Path = Path("/tmp/bottleneck")
    intermediate_output_graphs_dir: Path = Path("/tmp/intermediate_graph/")
    intermediate_store_frequency: int = 0
    final_tensor_name: str = "final_result"
    how_many_training_steps: int = 4000
    learning_rate: float = 0.01
    testing_percentage: float = 10
    validation_percentage: float = 10
    eval_step_interval: int = 10
    train_batch_size: int = 100
    validation_batch_size: int = 100
    test_batch_size: int = -1
    print_misclassified_test_images: bool = False
    flip_left_right: bool = False
    random_crop: float = 0
    random_scale: float = 0
    random_brightness: float = 0
    saved_model_dir: Path | None = None
    tfhub_module: str = DEFAULT_MODULE
    logging_verbosity: str = "INFO"
    checkpoint_path: Path = Path("/tmp/_retrain_checkpoint")
    # Beyond the classic script.
    seed: int = 0
    image_size: int | None = None
    bottleneck_batch_size: int = 32
    # Distortions: "cached" precomputes `distorted_variants` distorted copies of each
    # training image and trains on their cached vectors (minutes); "on_the_fly"
    # distorts every sample of every step as the classic script did (hours).
    # 5 variants keep a cold-cache distorted run near 2x a plain one (10 measured 3.4x on
    # flower_photos with MobileNet V2 0.35); later runs with the same settings reuse them.
    distortion_mode: str = "cached"
    distorted_variants: int = 5
    # Fine-tuning the module's own weights after the new layer is trained. CPU-sized
    # defaults: each step runs the module forwards and backwards on every image
    # (MobileNet V2 0.35: about 1 s per step of 16 on 2 cores). With batch norm kept
    # in inference mode, 1e-3 (momentum 0.9) wrecked MobileNet V2 within 20 steps; 1e-4 is safe.
    fine_tune: bool = False
    fine_tune_steps: int = 200
    fine_tune_batch_size: int = 16
    fine_tune_learning_rate: float = 0.0001
    # TFLite export: PATH gets the first quantization, PATH's siblings `<stem>_<q>.tflite` the others.
    output_tflite: Path | None = None
    tflite_quantization: tuple[str, ...] = ("float32",)
    tflite_representative_images: int = 100  # int8 calibration: seeded sample of training images

    def replace(self, **changes: object) -> "RetrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LabelImageConfig:
    """The classic label_image.py flags; None means "read it from the model".

    Mean and std keep the classic meaning, (pixel_0_255 - mean) / std; retrain's
    exports take RGB in [0, 1], i.e. EXPORT_INPUT_MEAN and EXPORT_INPUT_STD.
    """

    graph: Path = RetrainConfig.output_graph
    labels: Path = RetrainConfig.output_labels
    images: tuple[Path, ...] = ()
    input_height: int | None = None
    input_width: int | None = None
    input_mean: float | None = None
    input_std: float | None = None
    input_layer: str | None = None
    output_layer: str | None = None
    top_k: int = 5
    json: bool = False
    batch_size: int = 32
