"""The new layer's variables as a TensorFlow checkpoint at the `--checkpoint_path` prefix.

Written under a temporary prefix beside the destination, then renamed into
place file by file (the data file first, the index last), so a crash never
leaves a half-written file under the destination's name.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.errors import RetrainError, UsageError, reason
from retrain.exporters import Exporter
from retrain.outputs import (Output, check_writable_dir, judge_again, make_folder, record_written, remove_stale_temps,
                             replacing, temp_prefix)
from retrain.tfenv import import_tensorflow


class Checkpoint(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        prefix = config.checkpoint_path
        return [Output("--checkpoint_path", prefix.parent, kind="entries",
                       pattern=re.escape(prefix.name) + r"\.(index|data-\d+-of-\d+)", content="checkpoint",
                       given=prefix, exclusive=False)]  # training's scratch, which runs share as the classic ones did

    def check(self, config: RetrainConfig) -> None:
        prefix = config.checkpoint_path
        if prefix.is_dir():  # its files would go beside it, as `ck.index` beside `ck` (`~`: beside the home folder)
            inside = prefix / RetrainConfig.checkpoint_path.name
            raise UsageError(f"--checkpoint_path {prefix} is a folder; it is the prefix of the checkpoint's files "
                             f"({prefix.name}.index, ...), so give a name in it, such as {inside}")
        check_writable_dir(prefix.parent, flag="--checkpoint_path")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        tf = import_tensorflow()
        prefix = config.checkpoint_path
        make_folder(prefix.parent, flag="--checkpoint_path")
        remove_stale_temps(prefix)
        tmp = prefix.with_name(f"{temp_prefix(prefix.name)}{uuid.uuid4().hex[:8]}")
        classifier = model.classifier
        try:
            tf.train.Checkpoint(final_weights=classifier.final_weights,
                                final_biases=classifier.final_biases).write(str(tmp))
            written = sorted(tmp.parent.glob(f"{glob.escape(tmp.name)}.*"), key=lambda p: p.suffix == ".index")
            if not any(path.suffix == ".index" for path in written):  # TensorFlow wrote elsewhere: no silent gap
                raise RetrainError(f"cannot write --checkpoint_path {prefix}: TensorFlow did not write its index "
                                   f"where asked; earlier outputs are kept")
            targets = [prefix.with_name(prefix.name + path.name[len(tmp.name):]) for path in written]
            for target in targets:  # files saved there while the run went on are the user's: all judged first
                remove_stale_temps(target)  # what killed runs kept aside of this file
                judge_again(target)
            for path, target in zip(written, targets):  # the index last: it is what readers open first
                with replacing(target, path):
                    os.replace(path, target)
                record_written(target)
        except (OSError, tf.errors.OpError) as error:
            cause = reason(error).rsplit("; ", 1)[-1]  # TensorFlow's "<its temporary file>; <the cause>"
            raise RetrainError(f"cannot write --checkpoint_path {prefix}: {cause}; earlier outputs are kept") from None
        finally:
            for path in tmp.parent.glob(f"{glob.escape(tmp.name)}*"):  # also TensorFlow's `<tmp>_temp` folder
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        return []
