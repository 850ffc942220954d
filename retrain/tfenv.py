"""Import TensorFlow quietly and configure it for small CPU machines, once.

TensorFlow (and tensorflow_hub, through tf_keras) print CUDA and CPU-feature
notices on import; they worry users and say nothing about their run. We hide
them unless logging is at DEBUG, and replay what else they print if the import itself fails.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

_configured = False


@contextlib.contextmanager
def stderr_captured(*, enabled: bool = True) -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 (what native code prints) to a temporary file; yields a reader of it."""
    if not enabled or sys.stderr is None:  # None: stderr closed (`2>&-`), nothing to hide it from
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# TensorFlow's start-up notices, printed by every import: not replayed when one fails (probe ZZD: under
# `ulimit -v` they came before the one-line error, twice)
_NOTICES = ("before absl::InitializeLog() is called", "oneDNN custom operations are on",
            "Could not find cuda drivers", "cpu_feature_guard")


def _without_notices(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not any(notice in line for notice in _NOTICES))


def _quiet_import(name: str, *, verbose: bool) -> ModuleType:
    """Import a noisy module; on failure, show what it printed and re-raise."""
    if name in sys.modules:
        return sys.modules[name]
    text = ""
    try:
        with stderr_captured(enabled=not verbose) as captured:
            try:
                __import__(name)
            except BaseException:
                text = _without_notices(captured())
                raise
    except BaseException as error:
        if sys.stderr is not None:
            sys.stderr.write(text)
        if isinstance(error, (ImportError, SystemError)):  # a broken install, or too little memory to map its
            # libraries (probe ZZZ: `ulimit -v` gave a traceback ending "failed to map segment from shared object")
            from retrain.errors import RetrainError

            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise RetrainError(f"cannot load {name} ({reason}); if the memory this run may use is limited "
                               "(ulimit -v), raise the limit, else reinstall it") from None
        raise
    return sys.modules[name]


def import_tensorflow(*, verbose: bool = False) -> ModuleType:
    """Return the tensorflow module, imported with its start-up noise hidden.

    Also sets inter-op parallelism to 1 (before any op runs): on 2 cores the
    default oversubscribes and batched inference runs slower than one image at
    a time.
    """
    global _configured
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = _quiet_import("tensorflow", verbose=verbose)
    if not _configured:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow was already initialised by the caller; keep its settings.
        _configured = True
    tf.get_logger().setLevel("ERROR")  # (each time: the Python API puts the caller's levels back after a call)
    if not verbose:  # absl's: e.g. a full traceback for a SavedModel's damaged fingerprint.pb, which loads fine
        logging.getLogger("absl").setLevel(logging.CRITICAL)
    return tf


def import_hub(*, verbose: bool = False) -> ModuleType:
    """Return tensorflow_hub (only `retrain` needs it: it costs label-image a second of start-up)."""
    import_tensorflow(verbose=verbose)
    return _quiet_import("tensorflow_hub", verbose=verbose)


_PATTERN_CHARACTERS = "*?[\\"  # what TensorFlow's file matching reads as a pattern


def _plain(path: str) -> bool:
    return not any(character in os.path.abspath(path) for character in _PATTERN_CHARACTERS)


def _plain_folder() -> str | None:
    """A folder for temporary files whose path TensorFlow's file matching reads as itself: the usual one, else
    /tmp, else the home folder ($TMPDIR may hold a pattern character too: probes BBB, DDD); None if none."""
    return next((folder for folder in dict.fromkeys([tempfile.gettempdir(), "/tmp", os.path.expanduser("~")])
                 if _plain(folder) and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)), None)


def loadable(path: Path) -> Path:
    """Where TensorFlow can load the SavedModel at `path` from: `path`, or, when it holds a character that
    TensorFlow's file matching reads as a pattern, a link to it in a temporary folder, removed when the process
    ends (TensorFlow finds a SavedModel's variables by matching their names: in `sm[1]` it found none and said
    they were missing, probe ZZ)."""
    if _plain(str(path)) or (where := _plain_folder()) is None:
        return path
    folder = tempfile.mkdtemp(prefix="retrain-model-", dir=where)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    link = Path(folder) / "model"
    link.symlink_to(os.path.abspath(path), target_is_directory=True)
    return link


@contextlib.contextmanager
def plain_temporary_files() -> Iterator[None]:
    """Inside the block Python's temporary files go to `_plain_folder()` when the usual folder's path holds a
    pattern character: the TFLite converter saves a SavedModel there and loads it back (probe DDD: with
    TMPDIR=/tmp/tm[x] every --output_tflite failed, and the run's files were taken back)."""
    saved = tempfile.tempdir
    where = None if _plain(tempfile.gettempdir()) else _plain_folder()
    if where is not None:
        tempfile.tempdir = where
    try:
        yield
    finally:
        if where is not None:
            tempfile.tempdir = saved
