"""What the file index costs on a warm run (issue 9: stale vectors), against reading and hashing every photo.

    python benchmarks/bench_file_index.py [--copies 20]

Copies the fixture flower photos `--copies` times into a temporary tree (so the
tree is large enough to time), then measures, with the page cache warm:
  cold   every photo read and hashed (SHA-1 of its bytes): what a run without an index pays;
  warm   the index loaded from disk and every photo's key looked up: one `stat` per photo, compared on
         size, mtime, ctime, inode and device (ctime and inode are what version 2 of the index adds:
         the same `stat` call carries them, so they cost nothing extra);
  touched  one photo in ten rewritten in place with its size and mtime restored (what "preserve date"
         does): only those are read again, and every one of them gets its new key.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fixtures import FIXTURES, require_fixtures  # noqa: E402


def main() -> None:
    from retrain.features import filekeys
    from retrain.features.filekeys import FileKeys, content_key

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=20)
    args = parser.parse_args()
    require_fixtures()
    photos = sorted((FIXTURES / "flower_photos").rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        files = []
        for copy in range(args.copies):
            for photo in photos:
                target = tree / f"{copy:03d}" / photo.parent.name / photo.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(photo, target)
                files.append(target)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        filekeys.RACY_SECONDS = 0.0  # the copies are brand new; let the index remember them at once
        time.sleep(0.05)
        index = Path(scratch) / "file_keys.json"

        start = time.perf_counter()
        cold = {f: content_key(f.read_bytes()) for f in files}
        cold_s = time.perf_counter() - start

        keys = FileKeys(index)
        for f in files:
            keys.key(f)
        keys.save()
        start = time.perf_counter()
        keys = FileKeys(index)  # a new run: load the index, then look every photo up
        warm = {f: keys.key(f) for f in files}
        warm_s = time.perf_counter() - start
        assert warm == cold

        touched = files[::10]
        for f in touched:  # same size, same mtime, other bytes: only the ctime tells
            stat = f.stat()
            data = bytearray(f.read_bytes())
            data[-3] ^= 0xFF
            f.write_bytes(bytes(data))
            os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        start = time.perf_counter()
        keys = FileKeys(index)
        after = {f: keys.key(f) for f in files}
        touched_s = time.perf_counter() - start
        changed = sum(after[f] != cold[f] for f in files)
        print(f"{len(files):,} photos, {megabytes:.0f} MB, index {index.stat().st_size / 1e6:.1f} MB")
        print(f"cold (read + SHA-1 every photo): {cold_s:.2f} s ({1e6 * cold_s / len(files):.0f} us per photo)")
        print(f"warm (index load + stat each):   {warm_s:.2f} s ({1e6 * warm_s / len(files):.0f} us per photo)")
        print(f"{len(touched):,} rewritten with size and mtime kept: {touched_s:.2f} s; "
              f"{changed:,} keys changed (expected {len(touched):,})")


if __name__ == "__main__":
    main()
