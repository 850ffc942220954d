"""One `retrain` run: check flags, scan images, cache bottlenecks, train, evaluate, export."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain import export, finetune
from retrain.bottlenecks import BottleneckStore, compute_bottlenecks
from retrain.config import TFLITE_QUANTIZATIONS, RetrainConfig, RetrainError, UsageError
from retrain.dataset import SPLITS, ImageTree, check_image_dir, scan_image_tree
from retrain.filekeys import FileKeys
from retrain.images import ImageError, load_image
from retrain.modules import FeatureExtractor, batch_function, load_feature_extractor
from retrain.train import Head, Split, evaluate, train_head
from retrain.variants import compute_variant_split

log = logging.getLogger(__name__)

FILE_KEYS_NAME = "file_keys.json"


@dataclass(frozen=True)
class RetrainResult:
    labels: list[str]
    head: Head
    splits: dict[str, Split]
    test_accuracy: float
    test_count: int
    skipped: tuple[tuple[Path, str], ...]
    extractor: FeatureExtractor
    written: tuple[Path, ...]


def validate(config: RetrainConfig) -> None:
    """Reject impossible flag values before any work starts."""
    if config.how_many_training_steps <= 0:
        raise UsageError(f"--how_many_training_steps must be positive, got {config.how_many_training_steps}")
    for flag, value in (("--train_batch_size", config.train_batch_size), ("--eval_step_interval", config.eval_step_interval),
                        ("--bottleneck_batch_size", config.bottleneck_batch_size)):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    for flag, value in (("--validation_batch_size", config.validation_batch_size),
                        ("--test_batch_size", config.test_batch_size)):
        if value == 0 or value < -1:
            raise UsageError(f"{flag} must be positive, or -1 for the whole set; got {value}")
    for flag, value in (("--testing_percentage", config.testing_percentage),
                        ("--validation_percentage", config.validation_percentage)):
        if not 0 <= value < 100:
            raise UsageError(f"{flag} must be between 0 and 100, got {value}")
    if config.testing_percentage + config.validation_percentage >= 100:
        raise UsageError(f"--testing_percentage {config.testing_percentage} + --validation_percentage "
                         f"{config.validation_percentage} leave no images for training; keep their sum below 100")
    if config.learning_rate <= 0:
        raise UsageError(f"--learning_rate must be positive, got {config.learning_rate}")
    if config.intermediate_store_frequency < 0:
        raise UsageError(f"--intermediate_store_frequency must be 0 (never) or positive, got "
                         f"{config.intermediate_store_frequency}")
    if config.image_size is not None and config.image_size <= 0:
        raise UsageError(f"--image_size must be positive, got {config.image_size}")
    if not config.final_tensor_name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise UsageError(f"--final_tensor_name {config.final_tensor_name!r} is not a valid node name; "
                         "use letters, digits and underscores")
    finetune.check_flags(config)
    check_image_dir(config.image_dir)
    export.check_output_file(config.output_graph, flag="--output_graph")
    export.check_output_file(config.output_labels, flag="--output_labels")
    export.check_output_dir(config.summaries_dir, flag="--summaries_dir")
    export.check_output_dir(config.bottleneck_dir, flag="--bottleneck_dir")
    export.check_output_dir(config.checkpoint_path.parent, flag="--checkpoint_path")
    if config.intermediate_store_frequency > 0:
        export.check_output_dir(config.intermediate_output_graphs_dir, flag="--intermediate_output_graphs_dir")
    if config.saved_model_dir:
        export.check_saved_model_dir(config.saved_model_dir)
    _validate_tflite(config)


def _validate_tflite(config: RetrainConfig) -> None:
    """--tflite_quantization names known variants, once each; every TFLite file can be written."""
    quantizations = config.tflite_quantization
    if config.output_tflite is None:
        if tuple(quantizations) != RetrainConfig.tflite_quantization:
            raise UsageError(f"--tflite_quantization {','.join(quantizations)} needs --output_tflite PATH")
        return
    unknown = [q for q in quantizations if q not in TFLITE_QUANTIZATIONS]
    if unknown or not quantizations or len(set(quantizations)) != len(quantizations):
        raise UsageError(f"--tflite_quantization {','.join(quantizations) or '(empty)'}: expected one or more of "
                         f"{', '.join(TFLITE_QUANTIZATIONS)}, each once (comma-separated or repeated)")
    for path in export.tflite_paths(config.output_tflite, quantizations).values():
        if path in (config.output_graph, config.output_labels):
            raise UsageError(f"--output_tflite would write {path}, which is also --output_graph or --output_labels; "
                             "choose another --output_tflite")
        export.check_output_file(path, flag="--output_tflite")


def run_dir(summaries_dir: Path) -> Path:
    """A new sub-folder per run, so earlier runs stay visible side by side in TensorBoard."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, number = summaries_dir / stamp, 1
    while candidate.exists():
        number += 1
        candidate = summaries_dir / f"{stamp}-{number}"
    return candidate


def _splits(tree: ImageTree, vectors: dict[Path, np.ndarray]) -> tuple[list[str], dict[str, Split]]:
    """Group usable vectors by split, dropping classes left with no usable image."""
    labels: list[str] = []
    grouped: dict[str, list[tuple[np.ndarray, int, Path]]] = {name: [] for name in SPLITS}
    for image_class in tree.classes:
        usable = {name: [p for p in image_class.split(name) if p in vectors] for name in SPLITS}
        if not any(usable.values()):
            log.warning("class %r has no usable images left; leaving it out", image_class.label)
            continue
        if not usable["training"]:
            log.warning("class %r has no usable training images; training on all %d of its usable images",
                        image_class.label, sum(map(len, usable.values())))
            usable = {"training": [p for name in SPLITS for p in usable[name]], "validation": [], "testing": []}
        index = len(labels)
        labels.append(image_class.label)
        for name in SPLITS:
            grouped[name] += [(vectors[p], index, p) for p in usable[name]]
    if len(labels) < 2:
        raise RetrainError(f"only {len(labels)} class(es) in --image_dir {tree.root} have usable images; need at least 2")
    splits = {}
    for name, rows in grouped.items():
        dim = next(iter(vectors.values())).shape[0]
        splits[name] = Split(vectors=np.array([r[0] for r in rows], np.float32).reshape(len(rows), dim),
                             labels=np.array([r[1] for r in rows], np.int64),
                             paths=tuple(r[2] for r in rows))
    return labels, splits


def scan(config: RetrainConfig) -> ImageTree:
    """Check the flags, then walk and split --image_dir: everything that can fail before TensorFlow loads."""
    validate(config)
    return scan_image_tree(config.image_dir, validation_percentage=config.validation_percentage,
                           testing_percentage=config.testing_percentage)


def run(config: RetrainConfig, *, tree: ImageTree | None = None) -> RetrainResult:
    """Do a whole retrain run as the classic script did; returns what it produced.

    `tree` is what scan(config) returned, when the caller has already checked.
    """
    tree = tree or scan(config)
    counts = {name: sum(len(c.split(name)) for c in tree.classes) for name in SPLITS}
    log.info("found %d classes in %s: %d training, %d validation, %d testing images", len(tree.classes),
             config.image_dir, counts["training"], counts["validation"], counts["testing"])
    extractor = load_feature_extractor(config.tfhub_module, image_size=config.image_size)
    if config.fine_tune:
        finetune.check_fine_tunable(extractor)  # fail before the long part, not after

    store = BottleneckStore(config.bottleneck_dir, module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
    cached = store.load()
    log.info("bottleneck cache %s: %d vectors", store.dir, cached)
    files = [p for c in tree.classes for p in c.all_files]
    result = compute_bottlenecks(files, extractor=batch_function(extractor), height=extractor.height,
                                 width=extractor.width, store=store, batch_size=config.bottleneck_batch_size,
                                 file_keys=FileKeys(config.bottleneck_dir / FILE_KEYS_NAME))
    log.info("computed %d new bottlenecks, %d from cache", result.computed, len(result.paths) - result.computed)
    store.compact()
    if result.skipped:
        log.warning("skipped %d images (of %d) that could not be read or decoded; each is named above with "
                    "the reason", len(result.skipped), len(files))
    labels, splits = _splits(tree, dict(zip(result.paths, result.vectors)))

    summaries = run_dir(config.summaries_dir)
    log.info("TensorBoard summaries: %s (tensorboard --logdir %s)", summaries, config.summaries_dir)

    def store_intermediate(step: int, head: Head) -> None:
        path = config.intermediate_output_graphs_dir / f"intermediate_{step}.pb"
        export.write_frozen_graph(path, export.build_classifier(extractor, head,
                                                                final_tensor_name=config.final_tensor_name))
        log.info("saved intermediate graph %s", path)

    distortions = finetune.distortions_of(config)
    train_split = splits["training"]
    if distortions.active and config.distortion_mode == "cached":
        train_split = compute_variant_split(splits["training"], extractor=extractor, distortions=distortions,
                                            variants=config.distorted_variants, seed=config.seed, store=store,
                                            batch_size=config.bottleneck_batch_size)
        store.compact()
    if distortions.active and config.distortion_mode == "on_the_fly":
        head = finetune.train_on_the_fly(config=config, extractor=extractor, splits=splits, class_count=len(labels),
                                         summaries_dir=summaries, on_intermediate=store_intermediate)
    else:
        head = train_head(train=train_split, validation=splits["validation"], class_count=len(labels),
                          steps=config.how_many_training_steps, learning_rate=config.learning_rate,
                          train_batch_size=config.train_batch_size, validation_batch_size=config.validation_batch_size,
                          eval_step_interval=config.eval_step_interval, seed=config.seed, summaries_dir=summaries,
                          intermediate_store_frequency=config.intermediate_store_frequency,
                          on_intermediate=store_intermediate)
    if config.fine_tune:
        head, splits = finetune.fine_tune(config=config, extractor=extractor, head=head, splits=splits,
                                          class_count=len(labels), summaries_dir=summaries,
                                          on_intermediate=store_intermediate)

    test = evaluate(head, splits["testing"], batch_size=config.test_batch_size,
                    rng=np.random.default_rng(config.seed + 2), class_count=len(labels))
    if test.count:
        print(f"Final test accuracy = {100 * test.accuracy:.1f}% (N={test.count})", flush=True)
    else:
        print("Final test accuracy = n/a (N=0): no test images; raise --testing_percentage or add images", flush=True)
    if config.print_misclassified_test_images and test.count:
        print("=== MISCLASSIFIED TEST IMAGES ===")
        for index, predicted in zip(test.indices, test.predictions):
            if predicted != splits["testing"].labels[index]:
                print(f"{str(splits['testing'].paths[index]):>70}  {labels[predicted]}")

    classifier = export.build_classifier(extractor, head, final_tensor_name=config.final_tensor_name)
    export.write_frozen_graph(config.output_graph, classifier)
    export.write_labels(config.output_labels, labels)
    export.write_checkpoint(config.checkpoint_path, classifier)
    written = [config.output_graph, config.output_labels]
    if config.saved_model_dir:
        export.write_saved_model(config.saved_model_dir, classifier)
        written.append(config.saved_model_dir)
    if config.output_tflite:
        written += _write_tflite(config, classifier, training=splits["training"], extractor=extractor)
    for path in written:
        print(f"Wrote {path} ({_size(path)})")
    if result.skipped:  # repeated at the end, where the user looks, after the training log
        log.warning("skipped %d images that could not be read or decoded (listed above)", len(result.skipped))
    return RetrainResult(labels=labels, head=head, splits=splits, test_accuracy=test.accuracy,
                         test_count=test.count, skipped=result.skipped, extractor=extractor, written=tuple(written))


def _write_tflite(config: RetrainConfig, classifier: object, *, training: Split,
                  extractor: FeatureExtractor) -> list[Path]:
    """Each requested TFLite variant; int8 is calibrated on a seeded sample of training images."""
    representative = None
    if "int8" in config.tflite_quantization:
        rng = np.random.default_rng(config.seed)
        count = min(config.tflite_representative_images, len(training.paths))
        chosen = sorted(rng.choice(len(training.paths), size=count, replace=False))
        images = []
        for index in chosen:
            try:  # prepared exactly as for training, so calibration sees the pixel ranges training saw
                images.append(load_image(training.paths[index], height=extractor.height, width=extractor.width))
            except ImageError as error:  # the file changed since its bottleneck was computed
                log.warning("int8 calibration: skipping %s: %s", training.paths[index], error)
        representative = np.stack(images) if images else None
    written = []
    for quantization, path in export.tflite_paths(config.output_tflite, config.tflite_quantization).items():
        started = time.monotonic()
        export.write_tflite(path, classifier, quantization=quantization, representative_images=representative)
        log.info("converted to TFLite (%s%s) in %.1f s", quantization,
                 f", calibrated on {len(representative)} training images" if quantization == "int8" else "",
                 time.monotonic() - started)
        written.append(path)
    return written


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    if total >= 100_000:
        return f"{total / 1e6:.1f} MB"
    return f"{total / 1e3:.1f} kB" if total >= 1000 else f"{total} bytes"
