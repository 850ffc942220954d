"""Benchmark: bottleneck creation on one machine, raw forward vs in-process vs Ray-local (prints a table; not a test).

    python benchmarks/bench_throughput.py [--module DIR] [--photos 200] [--big 24] [--repeat 2] [--no-ray]

For each photo set (the fixture flower photos, and 12-megapixel 4000x3000
JPEGs made from them, with sensor-like noise so they weigh what phone photos
weigh, ~3.7 MB), in one run:
  raw        images/s of the module's batched forward pass on in-memory tensors (the limit);
  in-process images/s of `file_vectors` from the files into an empty cache (hashing, reading,
             decoding, resizing, the module, shard writes): today's path;
  Ray-local  the same through `retrain.features.ray` on a throw-away local cluster (actor
             start-up, i.e. TensorFlow import and module load in each actor, included).
Each pipeline figure is divided by the raw rate measured just before it; the
best of `--repeat` runs is kept. The issue's target: in-process >= 0.9 x raw.
Timings on shared machines are noisy: the load average is printed per row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures"

from retrain.tfenv import import_tensorflow  # noqa: E402

BIG_SIZE = (4000, 3000)


def make_big_photos(sources: list[Path], folder: Path, *, count: int) -> list[Path]:
    """4000x3000 JPEGs (quality 92) from fixture photos, upscaled, with noise: as heavy as phone photos."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index, source in enumerate(sources[:: max(1, len(sources) // count)][:count]):
        path = folder / f"big_{index:03d}.jpg"
        with Image.open(source) as image:
            pixels = np.asarray(image.convert("RGB").resize(BIG_SIZE, Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(pixels + rng.integers(-12, 13, pixels.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, quality=92)
        paths.append(path)
    return paths


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def raw_rate(job, *, batch: int, seconds: float = 4.0) -> float:
    """Images/s of the job's own compiled module call on random in-memory batches."""
    height, width = job.member.height, job.member.width
    rows = [(b"", image, None) for image in np.random.default_rng(0).random((batch, height, width, 3), dtype=np.float32)]
    job._compute(rows)  # trace
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        job._compute(rows)
        count += batch
    return count / (time.perf_counter() - start)


def pipeline_rate(files: list[Path], *, source, batch: int, runner=None) -> float:
    """Images/s of file_vectors from the files into an empty cache."""
    from retrain.features.extract import file_vectors
    from retrain.features.store import BottleneckStore

    with tempfile.TemporaryDirectory() as cache:
        stores = [BottleneckStore(Path(cache), module_key=m.cache_key, feature_dim=m.feature_dim)
                  for m in source.members]
        start = time.perf_counter()
        result = file_vectors(files, source=source, stores=stores, batch_size=batch, runner=runner)
        seconds = time.perf_counter() - start
    assert result.computed == len(files), (result.computed, len(files), result.skipped[:3])
    return len(files) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", default=str(FIXTURES / "modules" / "mobilenet_v2_035_224"))
    parser.add_argument("--photos", type=int, default=200, help="fixture photos to use")
    parser.add_argument("--big", type=int, default=24, help="12-megapixel photos to generate")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-ray", dest="ray", action="store_false")
    args = parser.parse_args()

    import logging
    logging.basicConfig(level=logging.WARNING)
    tf = import_tensorflow()
    from retrain.features.extract import ExtractionJob, MemoryStore
    from retrain.features.source import load_feature_source

    source = load_feature_source((args.module,))
    member = source.members[0]
    job = ExtractionJob(member, MemoryStore(member.feature_dim), batch_size=args.batch, label="raw")
    fixtures = sorted((FIXTURES / "flower_photos").rglob("*.jpg"))
    runner = None
    if args.ray:
        from retrain.features.ray import ray_runner

        runner = ray_runner("local")
    print(f"module {Path(args.module).name} ({member.height}x{member.width} -> {member.feature_dim}), batch "
          f"{args.batch}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, best of {args.repeat}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sets = {"fixture photos": fixtures[:: max(1, len(fixtures) // args.photos)][: args.photos],
                "12-MP photos": make_big_photos(fixtures, Path(folder), count=args.big)}
        for name, files in sets.items():
            megabytes = statistics.mean(p.stat().st_size for p in files) / 1e6
            best = {"raw": 0.0, "in-process": 0.0, "ray": 0.0}
            ratio = {"in-process": 0.0, "ray": 0.0}
            loads = []
            for _ in range(args.repeat):
                for kind in ("in-process", "ray") if args.ray else ("in-process",):
                    raw = raw_rate(job, batch=args.batch)
                    best["raw"] = max(best["raw"], raw)
                    loads.append(load())
                    rate = pipeline_rate(files, source=source, batch=args.batch,
                                         runner=runner if kind == "ray" else None)
                    best[kind] = max(best[kind], rate)
                    ratio[kind] = max(ratio[kind], rate / raw)
            rows.append((f"{name} ({len(files)}, {megabytes:.2f} MB)", best, ratio, " ".join(loads)))
    if runner is not None:
        runner.close()

    print()
    header = f"| photos | raw forward | in-process | Ray-local | load (1-min avg, per run) |"
    print(header)
    print("|---|---|---|---|---|")
    for name, best, ratio, loads in rows:
        ray_cell = f"{best['ray']:.1f} ({ratio['ray']:.2f})" if args.ray else "-"
        print(f"| {name} | {best['raw']:.1f} | {best['in-process']:.1f} ({ratio['in-process']:.2f}) | {ray_cell} "
              f"| {loads} |")
    print("\nimages/s; (ratio) = pipeline rate / raw rate measured just before it, best of the runs")


if __name__ == "__main__":
    main()
