"""Benchmark the core pipeline (prints figures; not a test).

    python benchmarks/bench_pipeline.py [--module DIR] [--photos DIR] [--vectors 100000]

Prints, for one module on the same photos:
  1. images/s of the module's raw batched forward pass on in-memory tensors (the limit);
  2. images/s of retrain's bottleneck pipeline from the image files (empty cache);
  3. images/s of a classic-style loop (decode one file, call the module on one image);
  4. seconds to load N cached vectors from the bottleneck store;
  5. wall time of 4,000 training steps at batch 100 on the module's vectors' width.
Targets (issue 2): 2 >= 85 % of 1 and >= 1.4x 3; 5 under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures"

from retrain.tfenv import import_tensorflow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", default=str(FIXTURES / "modules" / "mobilenet_v2_100_224"))
    parser.add_argument("--photos", default=str(FIXTURES / "flower_photos"))
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    tf = import_tensorflow()
    from retrain.bottlenecks import FLUSH_EVERY_VECTORS, BottleneckStore, compute_bottlenecks
    from retrain.images import load_image
    from retrain.modules import load_feature_extractor
    from retrain.modules import batch_function
    from retrain.train import Split, train_head

    extractor = load_feature_extractor(args.module)
    size = (extractor.height, extractor.width)
    files = sorted(p for p in Path(args.photos).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    call = batch_function(extractor)
    print(f"module {args.module}: {size[0]}x{size[1]} -> {extractor.feature_dim}; {len(files)} photos; "
          f"batch {args.batch}; {tf.__version__}")

    # 1. Raw batched forward pass on in-memory tensors.
    images = np.random.default_rng(0).random((args.batch, *size, 3), dtype=np.float32)
    call(images)
    batches = max(4, len(files) // args.batch // 2)
    start = time.perf_counter()
    for _ in range(batches):
        call(images)
    raw = batches * args.batch / (time.perf_counter() - start)
    print(f"1. raw batched forward pass:   {raw:7.1f} images/s")

    # 2. retrain's pipeline from files, empty cache.
    with tempfile.TemporaryDirectory() as cache:
        store = BottleneckStore(Path(cache), module_key=extractor.cache_key, feature_dim=extractor.feature_dim)
        start = time.perf_counter()
        result = compute_bottlenecks(files, extractor=call, height=size[0], width=size[1], store=store,
                                     batch_size=args.batch)
        pipeline = result.computed / (time.perf_counter() - start)
    print(f"2. retrain bottleneck pipeline: {pipeline:7.1f} images/s  ({100 * pipeline / raw:.0f} % of raw)")

    # 3. Classic-style loop: one file decoded, one image per module call.
    single = tf.function(lambda x: extractor(x))
    single(images[:1])
    sample = files[: min(len(files), 150)]
    start = time.perf_counter()
    for path in sample:
        single(load_image(path, height=size[0], width=size[1])[None]).numpy()
    classic = len(sample) / (time.perf_counter() - start)
    print(f"3. classic one-image loop:      {classic:7.1f} images/s  (pipeline is {pipeline / classic:.2f}x)")

    # 4. Loading N cached vectors, written the way runs write them (shards, then compaction).
    with tempfile.TemporaryDirectory() as cache:
        store = BottleneckStore(Path(cache), module_key="bench", feature_dim=extractor.feature_dim)
        rng = np.random.default_rng(1)
        keys = [f"{i:040x}".encode() for i in range(args.vectors)]
        for start_row in range(0, args.vectors, FLUSH_EVERY_VECTORS):
            chunk = keys[start_row:start_row + FLUSH_EVERY_VECTORS]
            store.add(chunk, rng.random((len(chunk), extractor.feature_dim), dtype=np.float32))
        store.compact()
        start = time.perf_counter()
        fresh = BottleneckStore(Path(cache), module_key="bench", feature_dim=extractor.feature_dim)
        count = fresh.load()
        vectors = fresh.get(keys)
        load_seconds = time.perf_counter() - start
        assert count == args.vectors and vectors.shape == (args.vectors, extractor.feature_dim)
    print(f"4. load {args.vectors:,} cached vectors:   {load_seconds:7.2f} s")

    # 5. 4,000 training steps at batch 100.
    rng = np.random.default_rng(2)
    classes = 5
    labels = rng.integers(0, classes, 2000)
    vectors = rng.random((2000, extractor.feature_dim), dtype=np.float32) + labels[:, None] * 0.01
    train = Split(vectors=vectors, labels=labels, paths=())
    start = time.perf_counter()
    train_head(train=train, validation=train, class_count=classes, steps=4000, learning_rate=0.01,
               train_batch_size=100, validation_batch_size=100, eval_step_interval=10, seed=0,
               summaries_dir=Path(tempfile.mkdtemp()))
    print(f"5. 4,000 training steps (batch 100, {extractor.feature_dim}-d, with summaries): "
          f"{time.perf_counter() - start:5.1f} s")


if __name__ == "__main__":
    main()
