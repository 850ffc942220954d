"""What the kill journal costs an export set: the same files written as one set, with and without the journal.

    python benchmarks/bench_export_journal.py [--files 8] [--megabytes 1] [--repeats 15]

Each set writes `--files` files of `--megabytes` over earlier ones (each kept aside until the set is kept, as a
run's exports are). With the journal, each write is recorded (a small JSON file, written and fsynced) before
it happens, and the set is marked kept before what it replaced is deleted. Prints the median and the fastest
time of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from retrain.outputs import Writes, atomic_write_bytes, recording  # noqa: E402


def one_set(folder: Path, data: bytes, files: int, *, journaled: bool) -> float:
    writes = Writes(journaled=journaled)
    start = time.perf_counter()
    with recording(writes):
        for index in range(files):
            atomic_write_bytes(folder / f"export_{index}.bin", data, flag="--output_graph")
    writes.keep()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    data = os.urandom(int(args.megabytes * (1 << 20)))
    with tempfile.TemporaryDirectory() as folder:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved, so both see the same disk
            for journaled in (False, True):
                times[journaled].append(one_set(Path(folder), data, args.files, journaled=journaled))
    for journaled, label in ((False, "without the journal"), (True, "with the journal")):
        print(f"{label:20s} median {1000 * statistics.median(times[journaled]):6.1f} ms, fastest "
              f"{1000 * min(times[journaled]):6.1f} ms ({args.files} files of {args.megabytes:g} MB, "
              f"{args.repeats} sets)")


if __name__ == "__main__":
    main()
