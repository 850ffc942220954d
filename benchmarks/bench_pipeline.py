"""Benchmark the cache and the training loop (prints figures; not a test).

    python benchmarks/bench_pipeline.py [--vectors 100000] [--dim 1280]

Prints:
  1. seconds to load N cached vectors from the bottleneck store, whole (the fast path)
     and by keys only (the path for caches larger than --bottleneck_memory_gb);
  2. wall time of 4,000 training steps at batch 100 through retrain's one loop (with the
     classic evaluations every 10 steps and TensorBoard summaries).
Targets (issue 2): loading in seconds; training under 10 s on 2 cores.
Bottleneck throughput (images/s against the module's raw forward rate) is in
benchmarks/bench_throughput.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrain.tfenv import import_tensorflow  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    args = parser.parse_args()

    tf = import_tensorflow()
    from retrain.features.store import FLUSH_EVERY_VECTORS, BottleneckStore
    from retrain.insight.summaries import Summaries
    from retrain.labels import ClassIds
    from retrain.objectives import Softmax, evaluate
    from retrain.train import Optimizer, Schedule, Split, VectorSteps, initial_head, rng, train

    print(f"tensorflow {tf.__version__}; load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as cache:
        store = BottleneckStore(Path(cache), module_key="bench", feature_dim=args.dim)
        random = np.random.default_rng(1)
        keys = [f"{i:040x}".encode() for i in range(args.vectors)]
        for start_row in range(0, args.vectors, FLUSH_EVERY_VECTORS):
            chunk = keys[start_row:start_row + FLUSH_EVERY_VECTORS]
            store.add(chunk, random.random((len(chunk), args.dim), dtype=np.float32))
        store.compact()
        for whole in (True, False):
            start = time.perf_counter()
            fresh = BottleneckStore(Path(cache), module_key="bench", feature_dim=args.dim)
            count = fresh.load(vectors=whole)
            vectors = fresh.get(keys[:10_000] if not whole else keys)
            seconds = time.perf_counter() - start
            assert count == args.vectors and vectors.shape[1] == args.dim
            what = "whole" if whole else "by keys, then 10,000 vectors read from the files"
            print(f"1. load {args.vectors:,} cached vectors ({what}): {seconds:6.2f} s")

    classes = 5
    labels = random.integers(0, classes, 2000)
    vectors = random.random((2000, args.dim), dtype=np.float32) + labels[:, None] * 0.01
    targets = ClassIds(labels, class_count=classes)
    data = Split(paths=(), targets=targets, vectors=vectors)
    head = initial_head(dim=args.dim, classes=classes, seed=0, objective=Softmax())
    optimizer = Optimizer(learning_rate=0.01)
    steps = VectorSteps(data=data, head=head, optimizer=optimizer, batch_size=100, random=rng(0, "training"))
    start = time.perf_counter()
    train(steps=steps, schedule=Schedule(steps=4000, eval_interval=10), optimizer=optimizer,
          validate=lambda h: evaluate(h, vectors, targets, batch_size=100, rng=rng(0, "validation")),
          summaries=Summaries(Path(tempfile.mkdtemp()), objective=head.objective))
    print(f"2. 4,000 training steps (batch 100, {args.dim}-d, with evaluations and summaries): "
          f"{time.perf_counter() - start:5.1f} s")


if __name__ == "__main__":
    main()
