"""One `retrain` run: plan (every check, before TensorFlow loads), vectors, training, evaluation, exports.

`prepare` does everything that can fail in a second: flag values were checked
when the config was made; here every output is checked for writability and
against every other output and every input, and the labels are read. `run`
then loads the feature source, fills the cache, trains through the one loop,
evaluates, and hands the model to each requested exporter.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain import exporters as formats
from retrain.catalog import hub_cache_dir
from retrain.config import RetrainConfig
from retrain.distortions import Distortions
from retrain.errors import RetrainError, raise_if_stopped
from retrain.exporters.graph import IntermediateGraphs
from retrain.exporters.labels import classic_labels_text, labels_text
from retrain.features.extract import MemoryStore, extraction_runner, file_vectors, take_rows, variant_vectors
from retrain.features.filekeys import INDEX_NAME, FileKeys
from retrain.features.module import module_location
from retrain.features.source import FeatureSource, load_feature_source
from retrain.features.store import FOLDER_PATTERN, BottleneckStore
from retrain.exporters.model import ExportModel
from retrain.images import ImageError, load_image
from retrain.insight.report import pad, table_names
from retrain.insight.earlier import check_classic_labels_left, check_earlier_models, warn_if_another_models_report
from retrain.insight.run import draw_pictures, print_table, report_run, say_untested
from retrain.insight.summaries import Summaries, claim_run_dir, run_dir
from retrain.insight.tensorboard import picture_steps
from retrain.labels import LabelSet, label_source, warn_identical_files
from retrain.labels.folder import check_image_dir
from retrain.labels.split import SPLITS, scant_training
from retrain.logs import one_line, warn_if_names_not_utf8
from retrain.names import report_path
from retrain.objectives import FIGURE_NAMES, Evaluation, evaluate, objective_for, score_chunks
from retrain.outputs import (Input, Output, Writes, bytes_text, check_clashes, check_input_files,
                             check_outside_exports, check_replaceable_files, check_writable_dir, export_set,
                             hold_outputs, release_outputs, size_text, take_back_killed, writes)
from retrain.tfenv import import_tensorflow
from retrain.train import (Diverged, Head, ImageSteps, Optimizer, Schedule, Split, VectorSteps, check_converged,
                           initial_head, load_images, rng, train)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What `prepare` found: the labelled images, the run's TensorBoard folder, the formats to write."""

    labels: LabelSet
    run_folder: Path
    exporters: tuple[formats.Exporter, ...]
    outputs: tuple[Output, ...] = ()  # every path the run writes


@dataclass(frozen=True)
class RetrainResult:
    """What a run produced: labels, the trained layer, per-split figures, the written files."""

    labels: list[str]
    head: Head
    splits: dict[str, Split]
    evaluations: dict[str, Evaluation]  # per split, on the whole split (testing: as --test_batch_size says)
    skipped: tuple[tuple[Path, str], ...]
    source: FeatureSource
    written: tuple[Path, ...]
    run_folder: Path

    @property
    def accuracy(self) -> dict[str, float]:
        """The headline figure per split (accuracy for single-label runs); NaN where a split is empty."""
        return {name: evaluation.accuracy for name, evaluation in self.evaluations.items()}

    @property
    def test_accuracy(self) -> float:
        return self.evaluations["testing"].accuracy

    @property
    def test_count(self) -> int:
        return self.evaluations["testing"].count


def _run_outputs(config: RetrainConfig, run_folder: Path) -> list[Output]:
    """What the run writes besides the model formats: the cache, its TensorBoard run folder, its report."""
    return [Output("--summaries_dir", run_folder, kind="tree", given=config.summaries_dir,
                   exclusive=False),  # each run claims its own
            Output("--output_labels", report_path(config.output_labels), content="report",
                   role="the report beside --output_labels"),
            Output("--bottleneck_dir", config.bottleneck_dir / INDEX_NAME,
                   role="the file index of --bottleneck_dir", exclusive=False),  # runs share the cache
            Output("--bottleneck_dir", config.bottleneck_dir, kind="entries", pattern=FOLDER_PATTERN,
                   exclusive=False)]


def _inputs(config: RetrainConfig) -> list[Input]:
    """What the run reads: the image tree and the module folders (or the hub cache for handles)."""
    if config.labels_csv is None:  # the whole tree is read
        inputs = [Input("--image_dir", config.image_dir)]
    else:  # only the CSV and the images it names (checked once it is read)
        inputs = [Input("--labels_csv", config.labels_csv, kind="file")]
    for handle in config.modules:
        if Path(handle).expanduser().exists():
            inputs.append(Input("--tfhub_module", Path(handle).expanduser()))
        else:
            inputs.append(Input("TFHUB_CACHE_DIR", Path(hub_cache_dir())))
    return inputs


def prepare(config: RetrainConfig, *, given: Collection[str] = ()) -> Plan:
    """Every check that needs no TensorFlow: outputs, their clashes with each other and the inputs, the labels.
    `given`: the flags the user typed (the API's keywords), which a flag with no effect is refused at even at its
    default value (`label_source`)."""
    warn_if_names_not_utf8()
    check_image_dir(config.image_dir)
    for handle in config.modules:
        module_location(handle)  # a mistyped name or a wrong path fails here, not after the scan
    requested = formats.requested(config)
    run_folder = run_dir(config.summaries_dir)
    outputs = _run_outputs(config, run_folder) + [o for e in requested for o in e.outputs(config)]
    check_clashes(outputs, _inputs(config))
    check_outside_exports(outputs)
    hold_outputs(outputs)  # until the run ends, no other run on this machine writes them
    try:
        take_back_killed(outputs)  # a killed run's half-written exports, before they are judged
        labels = label_source(config, given=given).scan()
        # Photos reached through links (or named by a CSV) may lie outside the image tree: inputs too.
        check_input_files(outputs, labels.all_files(), flag=labels.source.split()[0],
                          covered=config.image_dir if config.labels_csv is None else None, walked=labels.walked)
        check_replaceable_files([o for o in outputs if labels.multi_label or o.content != "thresholds"],
                                unchanged={config.output_labels: (labels_text(labels.names),
                                                                  classic_labels_text(labels.names))})
        # None of these creates a folder: what first writes there does, so a refused run leaves nothing behind.
        for exporter in requested:
            exporter.check(config)
        check_writable_dir(config.summaries_dir, flag="--summaries_dir")
        check_writable_dir(config.bottleneck_dir, flag="--bottleneck_dir")
        _check_earlier_models(outputs, labels)
        warn_if_another_models_report(config.output_labels)  # once the run is sure to go on (probe TT)
    except BaseException:
        release_outputs()
        raise
    return Plan(labels=labels, run_folder=run_folder, exporters=requested, outputs=tuple(outputs))


def _check_earlier_models(outputs: Sequence[Output], labels: LabelSet) -> None:
    """check_earlier_models for the folders the run writes in, with these labels (and the classic retrain.py's
    graph, which no report describes)."""
    written = [o for o in outputs if o.kind in ("file", "folder", "entries") and not o.role]
    rewritten = functools.partial(writes, outputs)
    check_earlier_models([o.path if o.kind == "entries" else o.path.parent for o in written], labels.names,
                         outputs=[o.path for o in written], rewritten=rewritten, thresholds=labels.multi_label)
    for graph in (o for o in written if o.kind == "file" and o.content == "graph"):
        check_classic_labels_left(graph.path, graph.detail, rewritten=rewritten,
                                  same=(labels_text(labels.names), classic_labels_text(labels.names)))


def run(config: RetrainConfig, *, plan: Plan | None = None, given: Collection[str] = ()) -> RetrainResult:
    """Do a whole retrain run as the classic script did; returns what it produced.

    `plan` is what prepare(config) returned, when the caller has already checked; else `given` is for prepare.
    """
    plan = plan or prepare(config, given=given)
    stored = Writes()  # intermediate graphs written: an earlier run's of the same step is kept aside until then
    try:
        result = _run(config, plan, stored=stored)
    except BaseException:
        IntermediateGraphs.put_back(stored)  # the model is not kept: the earlier run's snapshots are put back
        release_outputs()
        raise
    try:
        release_outputs()
    except KeyboardInterrupt as stop:  # a stop signal now finds the run done: the last line says so
        stop.exports = "finished"
        raise
    return result


def _run(config: RetrainConfig, plan: Plan, *, stored: Writes) -> RetrainResult:
    labels = plan.labels
    log.info("found %d %s in %s: %d training, %d validation, %d testing images", len(labels.names),
             "labels" if labels.multi_label else "classes", config.image_dir, labels.count("training"),
             labels.count("validation"), labels.count("testing"))
    source = load_feature_source(config.modules, image_size=config.image_size)
    if config.fine_tune:
        source.check_fine_tunable()  # fail before the long part, not after
    objective = objective_for(multi_label=labels.multi_label)
    probe = ExportModel(source=source, labels=labels.names, final_tensor_name=config.final_tensor_name,
                        head=initial_head(dim=source.dim, classes=len(labels.names), seed=config.seed,
                                          objective=objective))
    for exporter in plan.exporters:
        exporter.check_model(probe, config)  # e.g. ops a format cannot run: fail before the long part

    labels, splits, training, skipped = _bottlenecks(config, plan, source)
    distortions = config.distortions
    run_folder = claim_run_dir(plan.run_folder)
    log.info("TensorBoard summaries: %s (tensorboard --logdir %s)", run_folder, config.summaries_dir)
    model = ExportModel(source=source, head=initial_head(dim=source.dim, classes=len(labels.names), seed=config.seed,
                                                         objective=objective),
                        labels=labels.names, final_tensor_name=config.final_tensor_name,
                        calibration=lambda count: _calibration_images(splits["training"], source, count, config.seed))

    def store_intermediate(step: int, head: Head) -> None:
        try:
            IntermediateGraphs.store(model.with_head(head), config, step=step, writes=stored)
        except (RetrainError, OSError, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - (probe ZZS: freezing a module that assigns a variable)
            raise _one_line(error, "--intermediate_output_graphs_dir") from None

    schedule = Schedule(steps=config.how_many_training_steps, eval_interval=config.eval_step_interval,
                        store_every=config.intermediate_store_frequency)
    optimizer = Optimizer(learning_rate=config.learning_rate)
    eval_random = rng(config.seed, "validation")
    if distortions.active and config.distortion_mode == "on_the_fly":
        images = load_images(splits["training"], label="Loading training images",
                             **_sizes(distortions, source))
        log.info("training on distorted images on the fly: %d steps of %d images, each through the module",
                 config.how_many_training_steps, config.train_batch_size)
        steps = ImageSteps(images=images, source=source, head=model.head, optimizer=optimizer,
                           batch_size=config.train_batch_size, random=rng(config.seed, "training"),
                           distortions=distortions, fine_tune=False)
        label = "Training (distorting on the fly)"
    else:
        steps = VectorSteps(data=training, head=model.head, optimizer=optimizer, batch_size=config.train_batch_size,
                            random=rng(config.seed, "training"))
        label = "Training"
    try:
        head = train(steps=steps, schedule=schedule, optimizer=optimizer, label=label,
                     validate=lambda h: evaluate(h, splits["validation"].vectors, splits["validation"].targets,
                                                 batch_size=config.validation_batch_size, rng=eval_random),
                     summaries=Summaries(run_folder, objective=objective, labels=labels.names,
                                         pictured=picture_steps(steps=schedule.steps, interval=schedule.eval_interval)),
                     on_intermediate=store_intermediate)
        last = optimizer  # what trained the model kept: a divergence names its learning rate
        if config.fine_tune:
            tuned = _fine_tune_if_better(config, source=source, head=head, splits=splits, objective=objective,
                                         distortions=distortions, run_folder=run_folder,
                                         store_intermediate=store_intermediate, stored=stored)
            if tuned is not None:  # the fine-tuned model is kept
                head, splits = tuned
                last = Optimizer(learning_rate=config.fine_tune_learning_rate, flag="--fine_tune_learning_rate")

        training, validation = splits["training"], splits["validation"]
        trained = evaluate(head, training.vectors, training.targets, batch_size=-1, rng=eval_random)
        check_converged(trained, evaluate(model.head, training.vectors, training.targets, batch_size=-1,
                                          rng=eval_random), last)  # before calibrating says anything of labels
        calibrated = objective.calibrate(head, score_chunks(head, validation.vectors, validation.targets,
                                                            np.arange(len(validation))), training=training.targets,
                                         names=labels.names)
        evaluations = {"training": trained if calibrated is head else evaluate(calibrated, training.vectors,
                                                                               training.targets, batch_size=-1,
                                                                               rng=eval_random),
                       "validation": evaluate(calibrated, validation.vectors, validation.targets, batch_size=-1,
                                              rng=eval_random)}
        head = calibrated
    except Diverged:
        IntermediateGraphs.remove(stored, why="training diverged")
        raise
    intermediate_graphs = [entry.path for entry in stored.entries]  # for the report, before keep() forgets them
    if config.test_batch_size > 0 and len(splits["testing"]):  # the figures and the report count the sample
        log.warning("--test_batch_size %d draws that many of the %d test images, with repeats, each draw %s: every "
                    "figure counts the draws; -1 evaluates each image once",
                    config.test_batch_size, len(splits["testing"]), splits["testing"].targets.DRAW)
    evaluations["testing"] = test = evaluate(head, splits["testing"].vectors, splits["testing"].targets,
                                             batch_size=config.test_batch_size, rng=rng(config.seed, "testing"))
    _print_test_figures(test, objective, labels, config)
    print_table(test, labels.names)
    say_untested(labels.names, splits["testing"].targets, multi_label=objective.multi_label)
    if config.print_misclassified_test_images and test.count:
        _print_misclassified(test, splits["testing"], labels.names)

    model = model.with_head(head)
    written: list[Path] = []

    def wrote(paths: Iterable[Path]) -> None:  # said as each is written (a later failure takes them back, saying so)
        for path in paths:
            print(f"Wrote {one_line(str(path))} ({size_text(path)})", flush=True)
            written.append(path)
            raise_if_stopped()  # the TFLite converter's finalisers drop a stop signal: the set is taken back

    exported = None
    try:
        with export_set() as exported:  # one set: a failed or interrupted export takes back the files written before it
            for exporter in plan.exporters:
                wrote(_written_by(exporter, model, config))
            wrote([report_run(config=config, labels=labels.names, test=test,
                              split=splits["testing"], evaluations=evaluations, written=written,
                              intermediate_graphs=intermediate_graphs, module=source.handle,
                              objective=objective.name)])
        stored.keep()  # the model stands: the earlier run's intermediate graphs its own replaced go
        draw_pictures(config=config, run_folder=run_folder, labels=labels.names, test=test, split=splits["testing"])
        if skipped:  # repeated at the end, where the user looks, after the training log
            log.warning("skipped %d image(s) that could not be read, decoded or used (the warnings above give the "
                        "reasons)", len(skipped))
    except KeyboardInterrupt as stop:  # Ctrl-C or a stop signal: the run's last line says where the outputs are
        stop.exports = None if exported is None else "written" if exported.kept else \
            "not all taken back" if exported.failed else "taken back"
        raise
    return RetrainResult(labels=list(labels.names), head=head, splits=splits, evaluations=evaluations,
                         skipped=skipped, source=source, written=tuple(written), run_folder=run_folder)


def _bottlenecks(config: RetrainConfig, plan: Plan, source: FeatureSource
                 ) -> tuple[LabelSet, dict[str, Split], Split, tuple[tuple[Path, str], ...]]:
    """Every image's vectors, from the cache or computed (with its distorted variants when cached): the labels
    of the images that could be used, the splits, what training trains on (the variants, or the training split)
    and the images skipped. The caches' own copies go as this returns when the splits hold theirs in memory."""
    labels = plan.labels
    files = labels.all_files()
    distortions = config.distortions
    variants = config.distorted_variants if distortions.active and config.distortion_mode == "cached" else 0
    stores, in_memory = _open_stores(config, source, rows=len(files) + variants * labels.count("training"))
    file_keys = FileKeys(config.bottleneck_dir / INDEX_NAME)
    with extraction_runner(config.ray_address) as runner:  # this process, or Ray actors (--ray_address)
        vectors = file_vectors(files, source=source, stores=stores, batch_size=config.bottleneck_batch_size,
                               file_keys=file_keys, image_size=config.image_size, in_memory=in_memory, runner=runner)
        log.info("computed %d new bottlenecks, %d from cache", vectors.computed, vectors.cached)
        _compact(stores)
        if in_memory and not variants:  # the run's vectors are all in `vectors`: before the splits are cut from
            stores = []  # them, let go of the caches' own copies (a whole cache, maybe)
        if vectors.skipped:
            log.warning("skipped %d image(s) (of %d) that could not be read, decoded or used; the warnings above "
                        "give the reasons", len(vectors.skipped), len(files))
        labels = labels.keep(set(vectors.paths))
        if vectors.skipped:  # the walk's counts are out of date (probe ZZ)
            log.info("using %d %s: %d training, %d validation, %d testing images", len(labels.names),
                     "labels" if labels.multi_label else "classes", *(labels.count(split) for split in SPLITS))
        if labels.names != plan.labels.names:  # a class whose images all failed is left out: the earlier models
            _check_earlier_models(plan.outputs, labels)  # beside the outputs were judged by the walk's classes
        warn_identical_files(labels, vectors.paths, vectors.keys)
        row = {path: index for index, path in enumerate(vectors.paths)}
        splits = {name: Split(paths=labels.files[name], targets=labels.targets[name],
                              vectors=take_rows(vectors.vectors,
                                                np.array([row[p] for p in labels.files[name]], np.int64)))
                  for name in SPLITS}
        training = plain = splits["training"]
        skipped = vectors.skipped
        del vectors, row  # the splits hold copies (or StoredRows): not held through training
        if variants:
            training, splits["training"] = _variant_split(plain, source=source, stores=stores, distortions=distortions,
                                                          config=config, file_keys=file_keys, in_memory=in_memory,
                                                          runner=runner)
            _compact(stores)
            kept = set(splits["training"].paths)
            skipped += tuple((path, "its distorted variants could not be used (said above)")
                             for path in plain.paths if path not in kept)
            if not len(training):
                raise RetrainError("no training image is left: none of their distorted variants could be used (the "
                                   "warnings above give the reasons); check --tfhub_module, or train without "
                                   "distortions")
            untaught = [labels.names[index] for index in training.targets.untaught()]
            if untaught:  # the plain-vector rule would move its validation images; they have no variants
                raise RetrainError(f"class {untaught[0]!r} has no training image left: the distorted variants of "
                                   "each could not be used (the warnings above give the reasons); check "
                                   "--tfhub_module, or train without distortions")
    return labels, splits, training, skipped


def _written_by(exporter: Any, model: ExportModel, config: RetrainConfig) -> Iterable[Path]:
    """What `exporter` wrote. A failure of TensorFlow's own that retrain has no words for (probe ZZB: short of
    memory under `ulimit -v`, a protobuf "Arena alloc failed", a grappler "Resource temporarily unavailable") is
    one line naming the output, its traceback at DEBUG; the set is then taken back as for any failure."""
    try:
        return exporter.write(model, config)
    except (RetrainError, OSError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - TensorFlow and protobuf raise many kinds
        flags = dict.fromkeys(output.flag for output in exporter.outputs(config))
        raise _one_line(error, ", ".join(flags) or type(exporter).__name__) from None


def _one_line(error: Exception, written: str) -> RetrainError:
    """A failure of TensorFlow's own while writing `written`, as one line; its traceback at DEBUG."""
    log.debug("writing %s failed", written, exc_info=error)
    reason = (str(error).strip().splitlines() or [""])[-1] or type(error).__name__
    return RetrainError(f"cannot write {written} ({type(error).__name__}: {reason}); earlier outputs are kept")


def _print_test_figures(test: Evaluation, objective: object, labels: LabelSet, config: RetrainConfig) -> None:
    """`Final test accuracy = X% (N=n)` (the classic line), then any other figure the objective reports."""
    name = FIGURE_NAMES.get(objective.headline, objective.headline)
    if not test.count:
        scant = scant_training(validation_percentage=config.validation_percentage,
                               testing_percentage=config.testing_percentage)
        if all(example.split_given for example in labels.examples):
            hint = f"every row of {labels.source} names its split, so name some 'testing'"
        elif scant:  # the classes with no training image took all theirs: more testing would not help
            hint = f"{scant}, so each class trained on all its images; lower them, or add images"
        else:
            hint = "raise --testing_percentage or add images"
        print(f"Final test {name} = n/a (N=0): no test images; {hint}", flush=True)
        return
    for key, value in test.metrics.items():
        if key in FIGURE_NAMES:
            shown = f"{100 * value:.1f}%" if math.isfinite(value) else "n/a"  # e.g. a mean over no label's positives
            print(f"Final test {FIGURE_NAMES[key]} = {shown} (N={test.count})", flush=True)


def _print_misclassified(test: Evaluation, split: Split, names: Sequence[str]) -> None:
    """The classic listing: each test image whose prediction is wrong, with what was predicted; paths aligned by
    terminal columns (probe ZZE: a CJK name stuck out a column for each wide character)."""
    print("=== MISCLASSIFIED TEST IMAGES ===")
    if test.predictions is None:
        print("(too many test images and labels to list)")
        return
    shown = table_names(names, width=None)  # `#N` after labels that print alike (probe ZZS)
    names = [shown[name] for name in names]
    for row, index in enumerate(test.indices):
        predicted = test.predictions[row]
        if predicted.ndim == 0:  # one class per image
            if predicted != split.targets.ids[index]:
                print(f"{pad(one_line(str(split.paths[index])), 70, right=True)}  {names[predicted]}")
            continue
        truth = split.targets.rows([index])[0] > 0
        if not np.array_equal(predicted, truth):
            given, true = (" | ".join(names[i] for i in np.flatnonzero(row)) or "(none)" for row in (predicted, truth))
            print(f"{pad(one_line(str(split.paths[index])), 70, right=True)}  {given}  (true: {true})")


def _open_stores(config: RetrainConfig, source: FeatureSource, *, rows: int) -> tuple[list[BottleneckStore], bool]:
    """Each member's cache, and whether the run's `rows` vectors (its images' and their cached distorted
    variants') are held in memory (--bottleneck_memory_gb).

    The bound holds what the run keeps at once: the run's vectors twice while the splits are cut from them,
    and a cache read whole (the fast path) only when it fits beside those; a larger cache is read by its
    keys, its vectors from the shard files as the run needs them. (Counted once, 0.8 GB of vectors peaked at
    3.5 GB, the whole cache, the run's array and the splits' copies all held; and cached variants were held
    whatever the bound: 9 GB under the default 4.)
    """
    bound = config.bottleneck_memory_gb * 1e9
    stores = [BottleneckStore(config.bottleneck_dir, module_key=m.cache_key, feature_dim=m.feature_dim,
                              dtype=config.bottleneck_dtype) for m in source.members]
    log.info("reading the bottleneck cache in %s", config.bottleneck_dir)  # a large one takes a while: say so
    sizes = [store.load(vectors=False) * store.feature_dim * store.dtype.itemsize for store in stores]
    held = 2 * rows * source.dim * 4
    in_memory = held <= bound
    if in_memory and sum(sizes) + held <= bound:
        if sum(sizes) > 1e9:
            log.info("reading %s of cached vectors into memory", bytes_text(sum(sizes)))
        for store in stores:
            store.load()
    for store in stores:
        log.info("bottleneck cache %s: %d vectors", store.dir, len(store))
    if not in_memory:
        log.info("the run's %d vectors (%s; in memory, twice that while its splits are cut) exceed "
                 "--bottleneck_memory_gb %g: training reads them from the cache files as it goes", rows,
                 bytes_text(rows * source.dim * 4), config.bottleneck_memory_gb)
    return stores, in_memory


def _compact(stores: Sequence[BottleneckStore]) -> None:
    """Compact each cache (a function: a loop's variable in _run would keep the last one, a whole cache, alive)."""
    for store in stores:
        store.compact()


def _sizes(distortions: Distortions, source: FeatureSource) -> dict[str, int]:
    """The size training images are held at: what the largest enlargement of a distortion needs."""
    height, width = distortions.source_size(height=source.height, width=source.width)
    return {"height": height, "width": width}


def _variant_split(data: Split, *, source: FeatureSource, stores: Sequence[BottleneckStore],
                   distortions: Distortions, config: RetrainConfig, file_keys: FileKeys, in_memory: bool,
                   runner: Callable[..., dict[Path, str]]) -> tuple[Split, Split]:
    """The training split as `--distorted_variants` cached distorted copies of each image, and the split itself
    without the images whose variants could not be used (what the run trains on, counted as such)."""
    paths, vectors = variant_vectors(data.paths, source=source, stores=stores, distortions=distortions,
                                     variants=config.distorted_variants, seed=config.seed,
                                     batch_size=config.bottleneck_batch_size, file_keys=file_keys,
                                     image_size=config.image_size, in_memory=in_memory, runner=runner)
    usable = set(paths)
    kept = np.array([i for i, p in enumerate(data.paths) if p in usable], np.int64)
    return (Split(paths=tuple(p for p in paths for _ in range(config.distorted_variants)),
                  targets=data.targets.take(kept).repeat(config.distorted_variants), vectors=vectors),
            Split(paths=tuple(paths), targets=data.targets.take(kept), vectors=take_rows(data.vectors, kept)))


def _fine_tune_if_better(config: RetrainConfig, *, source: FeatureSource, head: Head, splits: dict[str, Split],
                         objective: Any, stored: Writes, **kwargs: Any) -> tuple[Head, dict[str, Split]] | None:
    """Fine-tune, then keep the fine-tuned model only if its figure on the whole validation split is not lower
    than the new layer's alone; otherwise put the modules' weights back, say so and return None (the new layer
    and the splits from before stand). A
    learning rate too high for the module (1e-3 took MobileNet V2 1.0 from 82 % to 20 %, the share of one class
    of five) must not silently replace a good model with a wrecked one. Without validation images the training
    split is the yardstick: it cannot tell overfitting, but it tells a wrecked model."""
    split = "validation" if len(splits["validation"]) else "training"
    if split == "training":
        log.warning("no validation images: the fine-tuned model is checked against the new layer alone on the "
                    "training images only")
    before = _as_shipped(head, splits[split], objective=objective, training=splits["training"])
    saved = [variable.numpy() for variable in source.trainable_variables]
    stored_before = len(stored)
    tuned_head, tuned_splits = _fine_tune(config, source=source, head=head, splits=splits, **kwargs)
    after = _as_shipped(tuned_head, tuned_splits[split], objective=objective, training=tuned_splits["training"])
    name = FIGURE_NAMES[before.headline]
    if after.accuracy >= before.accuracy:
        log.info("fine-tuning: %s %s %.1f%% -> %.1f%% (N=%d)", split, name, before.accuracy * 100,
                 after.accuracy * 100, before.count)
        return tuned_head, tuned_splits
    for variable, value in zip(source.trainable_variables, saved):
        variable.assign(value)
    IntermediateGraphs.remove(stored, start=stored_before, why="fine-tuning was undone")
    log.warning("fine-tuning lowered the %s %s from %.1f%% to %.1f%% (N=%d): keeping the model from "
                "before fine-tuning (the new layer on the module as it was); a lower --fine_tune_learning_rate "
                "(now %g) may help", split, name, before.accuracy * 100, after.accuracy * 100, before.count,
                config.fine_tune_learning_rate)
    return None


def _as_shipped(head: Head, split: Split, *, objective: Any, training: Split) -> Evaluation:
    """The head's figures on the whole split at the thresholds it would be exported with: a multi-label head's
    chosen on that split, as the run's final figures are (probe XXX: fine-tuning was judged at 0.5, and said
    81.5 % where the report gave 90.3 % for the same model)."""
    chosen = objective.calibrate(head, score_chunks(head, split.vectors, split.targets, np.arange(len(split))),
                                 training=training.targets)
    return evaluate(chosen, split.vectors, split.targets, batch_size=-1, rng=None)


def _fine_tune(config: RetrainConfig, *, source: FeatureSource, head: Head, splits: dict[str, Split],
               distortions: Distortions, run_folder: Path,
               store_intermediate: Callable[[int, Head], None]) -> tuple[Head, dict[str, Split]]:
    """Fine-tune the modules and the trained layer together; the modules' variables change in place.

    Returns the new layer and the splits with every split's vectors recomputed
    from the files through the fine-tuned modules, so that the figures and the
    convergence check describe the model exported. Validation during fine-tuning
    runs on in-memory uint8 copies, which is close enough to steer by.
    """
    tf = import_tensorflow()
    train_images = load_images(splits["training"], label="Loading training images", **_sizes(distortions, source))
    validation = load_images(splits["validation"], height=source.height, width=source.width,
                             label="Loading validation images")
    compiled = tf.function(lambda pixels: source.features(tf.cast(pixels, tf.float32) / 255.0),
                           input_signature=[tf.TensorSpec([None, source.height, source.width, 3], tf.uint8)])
    eval_random = rng(config.seed, "validation")

    def validate(current: Head) -> Evaluation:
        targets = validation.targets
        if len(targets) == 0:
            return evaluate(current, np.zeros((0, source.dim), np.float32), targets, batch_size=-1, rng=eval_random)
        indices = (np.arange(len(targets)) if config.validation_batch_size < 0
                   else targets.sample(eval_random, config.validation_batch_size))
        unique, inverse = np.unique(indices, return_inverse=True)
        vectors = np.concatenate([compiled(validation.pixels[unique[s:s + 64]]).numpy()
                                  for s in range(0, len(unique), 64)])
        return current.objective.evaluate([(current.probabilities(vectors[inverse]), targets.take(indices), indices)],
                                          thresholds=current.thresholds)

    # More images a step than there are training images repeats them and only costs memory.
    batch_size = min(config.fine_tune_batch_size, len(train_images))
    log.info("fine-tuning the module and the new layer: %d steps of %d images, learning rate %g%s",
             config.fine_tune_steps, batch_size, config.fine_tune_learning_rate,
             f" (all the training images; --fine_tune_batch_size is {config.fine_tune_batch_size})"
             if batch_size < config.fine_tune_batch_size else "")
    optimizer = Optimizer(learning_rate=config.fine_tune_learning_rate, flag="--fine_tune_learning_rate",
                          kind="momentum")
    steps = ImageSteps(images=train_images, source=source, head=head, optimizer=optimizer,
                       batch_size=batch_size, random=rng(config.seed, "fine_tune"),
                       distortions=distortions, fine_tune=True)
    head = train(steps=steps, optimizer=optimizer, validate=validate, label="Fine-tuning",
                 schedule=Schedule(steps=config.fine_tune_steps, eval_interval=config.eval_step_interval,
                                   store_every=config.intermediate_store_frequency,
                                   first_step=config.how_many_training_steps),
                 summaries=Summaries(run_folder, objective=head.objective),
                 on_intermediate=store_intermediate)
    refreshed = dict(splits)
    for name in SPLITS:
        split = splits[name]
        stores = [MemoryStore(member.feature_dim) for member in source.members]
        result = file_vectors(split.paths, source=source, stores=stores, batch_size=config.bottleneck_batch_size,
                              label=f"Recomputing {name} vectors")
        if len(result.paths) != len(split.paths):
            path, why = result.skipped[0]
            raise RetrainError(f"a {name} image became unreadable during the run: {path} ({why}); rerun")
        refreshed[name] = Split(paths=split.paths, targets=split.targets, vectors=result.vectors)
    return head, refreshed


def _calibration_images(training: Split, source: FeatureSource, count: int, seed: int) -> np.ndarray | None:
    """A seeded sample of training images, prepared exactly as for training (int8 TFLite calibration)."""
    random = rng(seed, "calibration")
    unique = list(dict.fromkeys(training.paths))
    chosen = sorted(random.choice(len(unique), size=min(count, len(unique)), replace=False))
    images = []
    for index in chosen:
        try:
            images.append(load_image(unique[index], height=source.height, width=source.width))
        except ImageError as error:  # the file changed since its bottleneck was computed
            log.warning("int8 calibration: skipping %s: %s", unique[index], error)
    return np.stack(images) if images else None

