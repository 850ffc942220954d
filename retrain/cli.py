"""The two console scripts. The only module that imports click: options -> config -> calls.

TensorFlow is imported only once the arguments are known to be good, so
`--help` and usage errors answer at once.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from retrain.config import (BOTTLENECK_DTYPES, DISTORTION_MODES, LOGGING_LEVELS, TOP_K, LabelImageConfig,
                            RetrainConfig, check_no_effect)
from retrain.errors import RECEIVED, STOP_SIGNALS, RetrainError, Terminated, stop_for, stops_held
from retrain.logs import (ClosedStdout, NamedStdout, commentary, one_line, setup_logging, to_null,
                          warn_if_names_not_utf8)
from retrain.names import EXPORT_INPUT_MEAN, EXPORT_INPUT_STD

_R = RetrainConfig  # defaults are read from the config dataclasses, never repeated here
_L = LabelImageConfig


def _on_signal(signum: int, _frame: Any) -> None:
    """Remember the signal and raise where the program is. If that is a finaliser (`__del__`), Python
    reports and drops the exception; the remembered signal still stops the run at its next safe point
    (`raise_if_stopped`), or once it returns."""
    RECEIVED.append(signum)
    if not stops_held() or len(RECEIVED) > 1:  # inside a TensorFlow call: raised as it returns (errors.stops_after),
        raise stop_for(signum)  # unless it is the second (probe ZZH: the first fine-tuning step traces for seconds)


def _exit_at_once(signum: int, _frame: Any) -> None:
    """A second Ctrl-C (or SIGTERM) while an interrupted run winds down (joining its reader threads): exit now,
    with the same status, instead of a traceback from Python's shutdown. Every finished file is complete."""
    os._exit(128 + signum)


def _unraisable(hook: Any) -> Any:
    """A sys.unraisablehook that stays quiet about an interrupt dropped inside a finaliser."""
    def quiet(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    return quiet


# Said after "Too many open files" (probe YYY: under `ulimit -n 16`, that was the whole message).
_OPEN_FILES_HINT = " (the process's limit on open files: raise it, e.g. ulimit -n 4096)"


def _os_error_text(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}{_OPEN_FILES_HINT if error.errno == errno.EMFILE else ''}"


def _with_limit_hint(text: str) -> str:
    """An error line that came of the limit on open files, wherever it was worded (`cannot read --image_dir ...:
    Too many open files`, TensorFlow's own RestoreV2 error: probe ZZB), with the hint once."""
    return f"{text}{_OPEN_FILES_HINT}" if "Too many open files" in text and "ulimit -n" not in text else text


def _fill_closed_descriptors() -> None:
    """Started with stdout or stderr closed (`>&-`, `2>&-`), the process would hand descriptor 1 or 2 to the next
    file it opens, a shard or an output, and TensorFlow's native log lines would land in it: /dev/null takes it."""
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            to_null(descriptor)


_ENDED: list[bool] = []  # retrain's run has returned: a stop signal in the teardown after it finds every output written

# The end of retrain's last line after a stop signal, by what became of the exports (pipeline.run's `exports`).
_AFTER_STOP = {None: "; finished files and cached bottlenecks are kept, rerun to continue",
               "taken back": "; the earlier outputs are as they were, cached bottlenecks are kept: rerun to continue",
               "not all taken back": "; not every earlier output could be put back (the error above names them), "
                                     "cached bottlenecks are kept",
               "written": "; every output is written, only the test split's TensorBoard pictures are not complete",
               "finished": "; it came as the run ended: every output is written"}


def _say(line: str) -> None:
    """The command's last line, on stderr; a stderr that cannot take it (`2>/dev/full`) does not change the exit
    status the line goes with (probe PPP: a usage error exited 1, not 2, there)."""
    try:
        click.echo(line, err=True)
    except (OSError, ValueError):
        pass


class _OneLineErrors(click.Command):
    """Report every error as `prog: error: message` on one line, with the right exit status."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        prog = self.name or "retrain"
        _fill_closed_descriptors()
        stdout = sys.stdout
        sys.stdout = ClosedStdout() if stdout is None else NamedStdout(stdout)  # None: started with stdout closed
        RECEIVED.clear()
        _ENDED.clear()
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
        if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:  # not under nohup
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _on_signal)
        hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
        try:
            try:
                result = super().main(*args, standalone_mode=False, **kwargs)
            except RetrainError:
                # The stop broke what the error reports: TensorFlow raised its own error for the interrupt while
                # it loaded a module (probe CCC).
                if RECEIVED:
                    raise stop_for(RECEIVED[-1]) from None
                raise
            if RECEIVED:  # an interrupt that a finaliser swallowed after the last safe point: the work is done
                stop = stop_for(RECEIVED[-1])
                stop.exports = "finished"
                raise stop
            return result
        except click.ClickException as error:
            _say(f"{prog}: error: {one_line(error.format_message())} (see {prog} --help)")
            sys.exit(error.exit_code)
        except RetrainError as error:
            _say(f"{prog}: error: {_with_limit_hint(one_line(str(error)))}")
            sys.exit(error.exit_code)
        except OSError as error:  # the environment failed where no clearer message was prepared (`--help >/dev/full`)
            _say(f"{prog}: error: {one_line(_os_error_text(error))}")
            sys.exit(1)
        except MemoryError as error:  # also TensorFlow's std::bad_alloc (probe YYY: a traceback under `ulimit -v`)
            detail = f" ({one_line(str(error))})" if str(error) else ""
            kept = "; finished files are kept" if prog == "retrain" else ""
            _say(f"{prog}: error: out of memory{detail}: this run needs more than the system (or ulimit -v) "
                 f"gives it{kept}")
            sys.exit(1)
        except (KeyboardInterrupt, click.Abort) as error:  # click turns KeyboardInterrupt into Abort
            previous = dict.fromkeys(previous, _exit_at_once)  # for the way out, kept by `finally`
            for held in previous:  # now, before the line below: a second Ctrl-C may come as soon as it shows
                signal.signal(held, _exit_at_once)
            stopped = error if isinstance(error, Terminated) else error.__cause__
            signum = stopped.signum if isinstance(stopped, Terminated) else signal.SIGINT
            exports = getattr(stopped, "exports", None) or ("finished" if _ENDED else None)
            kept = "" if prog != "retrain" else _AFTER_STOP[exports]
            start = "" if isinstance(error, click.Abort) else "\n"  # click has ended the line the ^C was echoed on
            _say(f"{start}{prog}: {STOP_SIGNALS[signum]}{kept}")
            sys.exit(128 + signum)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            RECEIVED.clear()  # a run of the Python API later in this process is not stopped by them
            sys.unraisablehook = hook
            sys.stdout = stdout

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """The classic tools' argparse habits: a unique prefix of a flag stands for it (`--how_many=500`), a
        flag of the older retrain.py gets a pointer to its successor (`--architecture`), and a flag where a
        value belongs is said so (`--image_dir --output_graph x.pb`; click would take the flag as the value and
        call `x.pb` an extra argument)."""
        options = [param for param in self.get_params(ctx) if isinstance(param, click.Option)]
        takes_value = {name for param in options if not param.is_flag and not param.count for name in param.opts}
        return super().parse_args(ctx, _unabbreviated(args, options, takes_value))


def _unabbreviated(args: list[str], options: list[click.Option], takes_value: set[str]) -> list[str]:
    """`args` with each long flag that is a prefix of exactly one option's names written out in full, as argparse
    (the classic scripts' parser) read it: `--how_many=500` is `--how_many_training_steps=500`. A prefix of several
    is refused naming them; a flag of the older retrain.py (TensorFlow for Poets) is refused with its successor;
    a flag (or the start of one) where a value belongs is refused naming both."""
    known = {opt for param in options for opt in param.opts + param.secondary_opts}
    written, value_next, retired, skip = [], False, [], False
    for index, arg in enumerate(args):
        if skip:  # a retired flag's value
            skip = False
            continue
        if arg == "--" and not value_next:
            break
        name, equals, value = arg.partition("=")
        if value_next and (name in known or arg.startswith("--") and len(name) > 2
                           and any(opt.startswith(name) for opt in known)):
            raise click.UsageError(f"{written[-1]} needs a value, but the next argument is the flag {name}")
        if value_next and arg.startswith("--") and " " not in arg:  # as argparse: not a value, whatever follows
            raise click.UsageError(f"{written[-1]} needs a value, but the next argument is {arg}, which reads as a "
                                   f"flag; write {written[-1]}={arg} if it is the value")
        if value_next or not arg.startswith("--") or arg == "--":
            written.append(arg)
            value_next = False
            continue
        if name in _RETIRED and name not in known and "--tfhub_module" in known:  # retrain's successors, each said
            given = value if equals else (args[index + 1] if index + 1 < len(args) else "")  # (one at a time:
            retired.append(_RETIRED[name](given))  # probe VV)
            skip = not equals
            continue
        matched = {}  # the option's first name -> its name that `name` starts
        if name not in known:
            for param in options:  # each option once, by its first (the classic, underscore) name it matches
                for opt in param.opts + param.secondary_opts:
                    if opt.startswith(name):
                        matched.setdefault(param.opts[0], opt)
        matched = {flag if flag.startswith("--") else opt: opt for flag, opt in matched.items()}  # not -h: --help
        if len(matched) > 1 and len(classic := [flag for flag in matched if flag in _CLASSIC_FLAGS]) == 1:
            matched = {classic[0]: matched[classic[0]]}  # what it meant when it was written: `--image` is --image_dir
        if len(matched) > 1:
            names = sorted(matched)
            listed = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            raise click.UsageError(f"{name} is the start of several flags: {listed}; give more of the name")
        if matched:
            name = next(iter(matched.values()))
        written.append(name + equals + value)
        value_next = not equals and name in takes_value
    else:
        index = len(args)
    if retired:
        raise click.UsageError("; and ".join(retired))
    return written + args[index:]


def _architecture(value: str) -> str:
    from retrain import catalog

    close = catalog.closest(value) if value else None
    example = f"--tfhub_module {close}" if close else "--tfhub_module NAME (retrain --list_modules shows the names)"
    return (f"--architecture is the flag of TensorFlow's older retrain.py (TensorFlow for Poets); this retrain "
            f"takes the module with --tfhub_module: {example}")


# The classic scripts' flags (retrain.py's and label_image.py's): a prefix that also starts a newer flag, such as
# --image (--image_dir, --image_size), means the classic one, as it did when the command was written.
_CLASSIC_FLAGS = frozenset(f"--{name}" for name in (
    "image_dir output_graph intermediate_output_graphs_dir intermediate_store_frequency output_labels summaries_dir "
    "how_many_training_steps learning_rate testing_percentage validation_percentage eval_step_interval "
    "train_batch_size test_batch_size validation_batch_size print_misclassified_test_images bottleneck_dir "
    "final_tensor_name flip_left_right random_crop random_scale random_brightness tfhub_module saved_model_dir "
    "logging_verbosity checkpoint_path graph labels image input_height input_width input_mean input_std input_layer "
    "output_layer help").split())

# Flags of the older retrain.py (tensorflow/examples/image_retraining, before TF Hub's), with what replaced them.
_RETIRED: dict[str, Any] = {
    "--architecture": _architecture,
    "--model_dir": lambda value: (
        "--model_dir is the flag of TensorFlow's older retrain.py, where it downloaded its model; this retrain's "
        "modules are cached by tensorflow_hub: set TFHUB_CACHE_DIR" + (f"={value}" if value else "")
        + " to choose that folder, and name the module with --tfhub_module"),
}


class _PathFlag(click.Path):
    """click.Path, except that a value stays the text typed for the config to judge (as a Path '' would be '.',
    and `gs://b` would be `gs:/b`), and a leading '~' is the home folder even where the shell leaves it
    (`--image_dir=~/photos`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.startswith("~"):
            value = os.path.expanduser(value)
        # The config makes it a Path: there a URL is refused as typed (Path() would cut a slash)
        return value if isinstance(value, str) else super().convert(value, param, ctx)


class _AnyCase(click.Choice):
    """A choice of upper-case names taken in any case, and listed as they are spelt (click's own lists them
    folded to lower case: probe ZZJ)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        upper = str(value).upper()  # a wrong value is quoted as typed (probe ZZK)
        return upper if upper in self.choices else super().convert(value, param, ctx)


class _ClassicOption(click.Option):
    """An option whose errors name it the classic way only: `'--image_dir'`, not `'--image_dir' / '--image-dir'`."""

    def get_error_hint(self, ctx: click.Context) -> str:
        return f"'{self.opts[0]}'"


def _option(*names: str, **kwargs: Any):
    """An option spelled the classic way (`--image_dir`) that also accepts `--image-dir`."""
    dashed = [n.replace("_", "-") for n in names if "_" in n]
    shown = "default" in kwargs and kwargs["default"] != " "  # a space, which the help text names in words
    return click.option(*names, *dashed, cls=_ClassicOption, show_default=shown, **kwargs)


def _print_module_catalog(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--list_modules: print the short module names and exit, before any other flag is checked."""
    if not value or ctx.resilient_parsing:
        return
    from retrain.catalog import format_table

    click.echo(format_table(), nl=False)
    ctx.exit(0)


def _comma_list(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """A repeatable option that also takes comma-separated values: ('a,b', 'c') -> ('a', 'b', 'c')."""
    return tuple(part.strip().lower() for item in value for part in item.split(",") if part.strip())


def _joined(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> str:
    """A repeatable option kept as one comma-separated string: ('a', 'b,c') -> 'a,b,c'."""
    return ",".join(value)


@click.command(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_option("--image_dir", type=_PathFlag(path_type=Path), required=True, help="Folder with one sub-folder of images per class.")
@_option("--output_graph", type=_PathFlag(path_type=Path), default=_R.output_graph, help="Where to save the trained frozen graph.")
@_option("--output_labels", type=_PathFlag(path_type=Path), default=_R.output_labels, help="Where to save the labels, one per line.")
@_option("--summaries_dir", type=_PathFlag(path_type=Path), default=_R.summaries_dir, help="TensorBoard logs; each run gets its own sub-folder.")
@_option("--how_many_training_steps", type=int, default=_R.how_many_training_steps, help="Training steps.")
@_option("--learning_rate", type=float, default=_R.learning_rate, help="SGD learning rate.")
@_option("--testing_percentage", type=float, default=_R.testing_percentage, help="Percent of images used as the test set.")
@_option("--validation_percentage", type=float, default=_R.validation_percentage, help="Percent of images used as the validation set.")
@_option("--eval_step_interval", type=int, default=_R.eval_step_interval, help="Evaluate and log every this many steps.")
@_option("--train_batch_size", type=int, default=_R.train_batch_size, help="Images per training step.")
@_option("--test_batch_size", type=int, default=_R.test_batch_size, help="Test images to evaluate; -1 = whole test set.")
@_option("--validation_batch_size", type=int, default=_R.validation_batch_size, help="Validation images per evaluation; -1 = whole set.")
@_option("--print_misclassified_test_images", is_flag=True, default=False, help="Print the test images that were misclassified.")
@_option("--bottleneck_dir", type=_PathFlag(path_type=Path), default=_R.bottleneck_dir, help="Bottleneck vector cache (safe to share between runs).")
@_option("--final_tensor_name", default=_R.final_tensor_name, help="Name of the output softmax node.")
@_option("--flip_left_right", is_flag=True, default=False, help="Randomly mirror training images horizontally.")
@_option("--random_crop", type=float, default=_R.random_crop, help="Percent margin to randomly crop training images.")
@_option("--random_scale", type=float, default=_R.random_scale, help="Percent to randomly scale training images up.")
@_option("--random_brightness", type=float, default=_R.random_brightness, help="Percent to randomly scale brightness.")
@_option("--tfhub_module", multiple=True, default=(_R.tfhub_module,), callback=_joined, metavar="MODULE[,MODULE...]", help="Feature-vector module: a name from --list_modules (e.g. mobilenet_v2_100_224), a tfhub.dev/Kaggle handle, or a local SavedModel folder. Several (comma-separated or repeated): their vectors are concatenated.")
@_option("--list_modules", is_flag=True, expose_value=False, is_eager=True, callback=_print_module_catalog, help="Print the module names --tfhub_module accepts, with input sizes and handles, and exit.")
@_option("--saved_model_dir", type=_PathFlag(path_type=Path), default=None, help="Also export a SavedModel here (signatures: serving_default takes float images, serving_bytes encoded image files).")
@_option("--output_tflite", type=_PathFlag(path_type=Path), default=None, help="Also export a TFLite model here (e.g. model.tflite).")
@_option("--tflite_quantization", multiple=True, default=_R.tflite_quantization, callback=_comma_list, metavar="Q[,Q...]", help="float32, float16, dynamic (int8 weights) or int8 (full integer, calibrated on training images). Several (comma-separated or repeated): the first goes to --output_tflite, each other to <stem>_<Q>.tflite beside it.")
@_option("--tflite_representative_images", type=int, default=_R.tflite_representative_images, help="Training images the int8 model is calibrated on.")
@_option("--output_tfjs", type=_PathFlag(path_type=Path), default=None, help="Also export a TF.js graph model into this folder (model.json, weight shards, labels.txt), for web pages.")
@_option("--logging_verbosity", type=_AnyCase(LOGGING_LEVELS), default=_R.logging_verbosity, help="How much to log on stderr.")
@_option("--intermediate_store_frequency", type=int, default=_R.intermediate_store_frequency, help="Save a frozen graph every this many steps; 0 = never.")
@_option("--intermediate_output_graphs_dir", type=_PathFlag(path_type=Path), default=_R.intermediate_output_graphs_dir, help="Where intermediate graphs go.")
@_option("--checkpoint_path", type=_PathFlag(path_type=Path), default=_R.checkpoint_path, help="Checkpoint prefix for the new layer's variables.")
@_option("--seed", type=int, default=_R.seed, help="Random seed: the same seed gives the same results on the same machine.")
@_option("--image_size", type=int, default=None, help="Input size for modules that do not fix one (e.g. 224).")
@_option("--bottleneck_batch_size", type=int, default=_R.bottleneck_batch_size, help="Images per module call when computing bottlenecks.")
@_option("--bottleneck_memory_gb", type=float, default=_R.bottleneck_memory_gb, help="Memory for the run's bottleneck vectors, in GB: they are held in memory when twice their size fits; a larger run reads them from the cache files as training needs them.")
@_option("--ray_address", default=None, metavar="local|auto|ADDRESS", help="Compute bottlenecks on a Ray cluster (pip install 'retrain[ray]'): local starts a throw-away cluster on this machine, auto joins the cluster this machine belongs to, ray://HOST:PORT joins through Ray Client. Images, module and --bottleneck_dir must be at the same paths on every node.")
@_option("--bottleneck_dtype", type=click.Choice(BOTTLENECK_DTYPES), default=_R.bottleneck_dtype, help="float16 halves the bottleneck cache on disk and in memory (kept apart from float32 vectors).")
@_option("--distortion_mode", type=click.Choice(DISTORTION_MODES), default=_R.distortion_mode, help="cached: train on precomputed distorted variants (fast); on_the_fly: distort every sample of every step (classic, slow).")
@_option("--distorted_variants", type=int, default=_R.distorted_variants, help="Distorted copies per training image in cached mode.")
@_option("--fine_tune", is_flag=True, default=False, help="After training the new layer, also train the module's own weights on images (slow on a CPU).")
@_option("--fine_tune_steps", type=int, default=_R.fine_tune_steps, help="Fine-tuning steps.")
@_option("--fine_tune_batch_size", type=int, default=_R.fine_tune_batch_size, help="Images per fine-tuning step.")
@_option("--fine_tune_learning_rate", type=float, default=_R.fine_tune_learning_rate, help="Learning rate (SGD, momentum 0.9) of fine-tuning.")
@_option("--labels_csv", type=_PathFlag(path_type=Path), default=None, help="Labels from a CSV with a header: path,labels[,split] (paths relative to --image_dir or absolute; labels separated by --label_delimiter). Rows with several labels train a multi-label model.")
@_option("--label_delimiter", default=_R.label_delimiter, help="What separates labels in the CSV's labels column (default: a space, as fastai and Kaggle CSVs do).")
@_option("--multi_label", is_flag=True, default=False, help="Train one sigmoid per label with per-label thresholds, even if no image has several labels.")
def retrain_command(**options: Any) -> None:
    """Retrain an image classifier's top layer on a folder of photos, one sub-folder per class.

    Example: retrain --image_dir ~/flower_photos
    """
    config = RetrainConfig(**options)  # every flag value is checked here
    context = click.get_current_context()
    given = [name for name in options if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    check_no_effect(config, given=given)  # a typed default is not ignored either
    with commentary():  # a closed pipe (`retrain ... | head`) must not cost the run its files
        setup_logging(config.logging_verbosity)
        from retrain.outputs import release_outputs
        from retrain.pipeline import prepare, run

        plan = prepare(config, given=given)  # bad paths and trees stop here, before TensorFlow's seconds of import
        try:
            from retrain.tfenv import import_hub

            import_hub(verbose=config.logging_verbosity == "DEBUG")
        except BaseException:  # a stop signal during the import: the outputs prepare held are let go (run does so)
            release_outputs()
            raise
        try:
            run(config, plan=plan)
        except OSError as error:  # the environment failed where no clearer message was prepared
            raise RetrainError(f"{_os_error_text(error)}; finished files are kept") from error
        _ENDED.append(True)


@click.command(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_option("--graph", type=_PathFlag(path_type=Path), default=_L.graph,
         help="Model retrain exported: frozen graph (.pb), SavedModel folder or .tflite file.")
@_option("--labels", type=_PathFlag(path_type=Path), default=_L.labels, help=f"Labels file, one per line (default: the one retrain wrote for --graph, which the report.json beside the model names; else {_R.output_labels}).")
@_option("--image", "images", type=_PathFlag(path_type=Path), multiple=True,
         help="Image file or folder of images to classify (repeatable; more may follow as arguments).")
@_option("--input_height", type=int, default=None, help="Model input height (read from the model when omitted).")
@_option("--input_width", type=int, default=None, help="Model input width (read from the model when omitted).")
@_option("--input_mean", type=float, default=None,
         help=f"Subtracted from 0-255 pixel values (default {EXPORT_INPUT_MEAN:g}, what retrain's models take).")
@_option("--input_std", type=float, default=None,
         help=f"Pixel values are then divided by this (default {EXPORT_INPUT_STD:g}, what retrain's models take).")
@_option("--input_layer", default=None, help="Input node (or signature key) name (read from the model when omitted).")
@_option("--output_layer", default=None, help="Output node (or signature key) name (read from the model when omitted).")
@_option("--top_k", type=int, default=None, help=f"How many labels to print per image (default {TOP_K}; for a multi-label model, every label at or above its threshold).")
@_option("--json", is_flag=True, default=False, help="Print results as one JSON list instead of text lines.")
@_option("--batch_size", type=int, default=_L.batch_size, help="Images per model call.")
@click.argument("more_images", nargs=-1, type=_PathFlag(path_type=Path))
def label_image_command(more_images: tuple[Path, ...], **options: Any) -> None:
    """Print the top labels for images, using a model that retrain exported.

    Example: label-image --image photo.jpg   (after a default retrain run)

    An image that cannot be decoded among several is reported on stderr and
    skipped; the exit status is then 1.
    """
    options["images"] = tuple(options["images"]) + tuple(more_images)
    config = LabelImageConfig(**options)
    setup_logging("WARN")
    warn_if_names_not_utf8()
    from retrain.inference.command import check, run

    config = check(config)  # missing files fail before TensorFlow loads
    if isinstance(sys.stdout, ClosedStdout):  # its results go nowhere: said before a model loads, not after
        sys.stdout.write("")
    from retrain.tfenv import import_tensorflow

    import_tensorflow()
    run(config)
