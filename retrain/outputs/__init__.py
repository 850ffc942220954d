"""Every path a run writes: checked against each other and against the inputs before any work, then written safely.

Each exporter (and the cache, the summaries, the checkpoint) declares the paths
it will write as `Output`s; `check` compares every output with every other and
with every input (the image tree and the real targets of links inside it, the
module folders, the labels CSV) and refuses a clash with one line naming both
flags. An existing file is replaced only when it holds what retrain writes there
(a frozen graph at --output_graph, a TFLite model at --output_tflite, a retrain
report at report.json...: `check_replaceable_files`), and only by a complete new
file (temporary file, fsync, rename); a folder output (SavedModel, TF.js) is
replaced only when it is empty or holds exactly what retrain wrote there, file
for file and byte for byte, which a marker file inside it records; temporary
files that killed runs left beside an output are removed. A run's exports are
written as one set (`export_set`): if one fails, or the run is interrupted, the
files it had written are taken back and the earlier ones put back (those of a
killed process by the next run writing there, from its journal). From its
checks to its end a run holds its outputs against other runs on this machine
(`hold_outputs`).

One job a module, the imports one way (declared <- holding, checks <- writing):
- `declared`: the paths a run writes and reads (`Output`, `Input`), what each covers, and their clashes;
- `holding`: holding the outputs against other runs on this machine (`hold_outputs`, `release_outputs`);
- `checks`: the checks before any work (input files, writable folders, replaceable files and folders), and the
  same checks again as the run writes (`judge_again`, `check_still_outside`);
- `writing`: atomic writes, folders swapped in whole, the export set and its take-back (`export_set`,
  `take_back_killed`).
This package's names are those the rest of retrain uses; the modules' own state (what a run judged, held and
wrote) lives in the module that owns it: patch it there.
"""

from retrain.outputs.checks import (check_input_files, check_outside_exports, check_replaceable_files,
                                    check_replaceable_folder, check_writable_dir, check_writable_file, judge_again,
                                    record_written, written_for)
from retrain.outputs.declared import Input, Output, check_clashes, real, writes
from retrain.outputs.holding import held_elsewhere, hold_outputs, release_outputs
from retrain.outputs.writing import (Writes, atomic_write, atomic_write_bytes, bytes_text, export_set, half_written,
                                     make_folder, recording, remove_stale_temps, replace_folder, replacing, size_text,
                                     take_back_killed, temp_prefix, written_sha256)

__all__ = [
    "Input", "Output", "check_clashes", "real", "writes",
    "held_elsewhere", "hold_outputs", "release_outputs",
    "check_input_files", "check_outside_exports", "check_replaceable_files", "check_replaceable_folder",
    "check_writable_dir", "check_writable_file", "judge_again", "record_written", "written_for",
    "Writes", "atomic_write", "atomic_write_bytes", "bytes_text", "export_set", "half_written", "make_folder",
    "recording", "remove_stale_temps", "replace_folder", "replacing", "size_text", "take_back_killed", "temp_prefix",
    "written_sha256",
]
