"""Import TensorFlow quietly and configure it for small CPU machines, once.

TensorFlow prints CUDA and CPU-feature notices on every import; they worry
users and say nothing about their run. We hide them unless logging is at
DEBUG, and replay them if the import itself fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType

_configured = False


def import_tensorflow(*, verbose: bool = False) -> ModuleType:
    """Return the tensorflow module, imported with its start-up noise hidden.

    Also sets inter-op parallelism to 1 (before any op runs): on 2 cores the
    default oversubscribes and batched inference runs slower than one image at
    a time.
    """
    global _configured
    if "tensorflow" in sys.modules and _configured:
        return sys.modules["tensorflow"]
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        if not verbose:
            os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
            import tensorflow_hub  # noqa: F401  (its import is noisy too)
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if not _configured:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow was already initialised by the caller; keep its settings.
        tf.get_logger().setLevel("ERROR")
        _configured = True
    return tf
