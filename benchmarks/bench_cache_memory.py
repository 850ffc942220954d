"""Training beyond memory: a synthetic cache of N vectors, trained with the run's memory bound, peak RSS measured.

    python benchmarks/bench_cache_memory.py                      # N = 2,000,000 at 1,280-d, bound 2 GB
    python benchmarks/bench_cache_memory.py --count 200000 --dim 1280 --bound_gb 0.5

Phases, each in a fresh process so its peak RSS (ru_maxrss) is its own:
1. build: N vectors (5 classes: class centres plus noise) written through retrain's own BottleneckStore
   (add, flush, compact), as a run's extraction writes them;
2. stream: the store opened by its keys only and 4,000 training steps of 100 (retrain's VectorSteps over
   StoredRows), then a full evaluation of 10 % of the rows, exactly as a run whose vectors exceed
   --bottleneck_memory_gb does;
3. equal: on a small N, the same training from memory and from the files gives the same weights;
4. float16 (with --flowers): test accuracy on the fixture flowers with a float32 and a float16 cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fixtures import require_fixtures  # noqa: E402
CLASSES = 5


def _keys(count: int) -> list[bytes]:
    return [f"{i:040x}".encode() for i in range(count)]


def build(folder: Path, count: int, dim: int, dtype: str) -> dict:
    import numpy as np

    from retrain.features.store import BottleneckStore

    started = time.monotonic()
    store = BottleneckStore(folder, module_key="synthetic", feature_dim=dim, dtype=dtype)
    store.load(vectors=False)  # as a run whose vectors exceed the bound: flushed vectors leave memory
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLASSES, dim)).astype(np.float32)
    keys = _keys(count)
    step = 16_384
    for start in range(0, count, step):
        labels = np.arange(start, min(start + step, count)) % CLASSES
        vectors = centres[labels] + rng.normal(scale=25.0, size=(len(labels), dim)).astype(np.float32)
        for offset in range(0, len(labels), 4096):  # flushes of 4,096, as a run's extraction flushes
            store.add(keys[start + offset:start + offset + 4096], vectors[offset:offset + 4096])
            store.flush()
    store.compact()
    size = sum(p.stat().st_size for p in store.dir.glob("shard-*.npz"))
    return {"seconds": time.monotonic() - started, "disk_gb": size / 1e9,
            "shards": len(list(store.dir.glob("shard-*.npz")))}


def train(folder: Path, count: int, dim: int, dtype: str, bound_gb: float, steps: int) -> dict:
    import numpy as np

    from retrain.features.extract import StoredRows
    from retrain.features.store import BottleneckStore
    from retrain.labels import ClassIds
    from retrain.objectives import Softmax, evaluate
    from retrain.train import Optimizer, Schedule, Split, VectorSteps, initial_head, rng, train

    started = time.monotonic()
    store = BottleneckStore(folder, module_key="synthetic", feature_dim=dim, dtype=dtype)
    in_memory = count * dim * 4 <= bound_gb * 1e9
    store.load(vectors=in_memory)
    keys = np.array(_keys(count), dtype="S40")
    rows = StoredRows([store], keys)
    vectors = rows[np.arange(count)] if in_memory else rows
    labels = ClassIds(np.arange(count) % CLASSES, class_count=CLASSES)
    held_out = np.arange(0, count, 10)
    data = Split(paths=(), targets=labels, vectors=vectors)
    head = initial_head(dim=dim, classes=CLASSES, seed=0, objective=Softmax())
    optimizer = Optimizer(learning_rate=0.01)
    steps_run = VectorSteps(data=data, head=head, optimizer=optimizer, batch_size=100, random=rng(0, "training"))
    validation = Split(paths=(), targets=labels.take(held_out), vectors=vectors[held_out] if in_memory
                       else rows.subset(held_out))
    trained = train(steps=steps_run, schedule=Schedule(steps=steps, eval_interval=max(steps // 10, 1)),
                    optimizer=optimizer, validate=lambda h: evaluate(h, validation.vectors, validation.targets,
                                                                     batch_size=100, rng=rng(0, "validation")))
    trained_at = time.monotonic()
    final = evaluate(trained, validation.vectors, validation.targets, batch_size=-1, rng=rng(0, "validation"))
    return {"in_memory": in_memory, "train_seconds": trained_at - started,
            "evaluate_seconds": time.monotonic() - trained_at, "accuracy": final.accuracy,
            "weights_sum": float(np.abs(trained.weights).sum()), "weights": trained.weights.ravel()[:50].tolist()}


def flowers(dtype: str, out: Path) -> dict:
    import contextlib
    import io

    from retrain.config import RetrainConfig
    from retrain.pipeline import run

    fixtures = require_fixtures()
    out.mkdir(parents=True, exist_ok=True)
    config = RetrainConfig(image_dir=fixtures / "flower_photos", tfhub_module=str(fixtures / "modules" / "mobilenet_v2_100_224"),
                           output_graph=out / "g.pb", output_labels=out / "l.txt", summaries_dir=out / "logs",
                           bottleneck_dir=out / "cache", checkpoint_path=out / "c" / "c", bottleneck_dtype=dtype,
                           testing_percentage=30)
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(config)
    return {"accuracy": result.test_accuracy, "count": result.test_count,
            "cache_mb": sum(p.stat().st_size for p in (out / "cache").rglob("shard-*")) / 1e6}


def child(phase: str, args: argparse.Namespace) -> None:
    """One phase in this process; prints its result and peak RSS as JSON."""
    from retrain.tfenv import import_tensorflow

    import_tensorflow()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    folder = Path(args.folder)
    if phase == "build":
        result = build(folder, args.count, args.dim, args.dtype)
    elif phase == "flowers":
        result = flowers(args.dtype, folder)
    else:
        result = train(folder, args.count, args.dim, args.dtype, args.bound_gb, args.steps)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["tensorflow_rss_mb"] = baseline
    print(json.dumps(result))


def run_phase(phase: str, **values: object) -> dict:
    argv = [sys.executable, __file__, "--phase", phase] + [f"--{k}={v}" for k, v in values.items()]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--bound_gb", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--small", type=int, default=20_000, help="rows of the equal-results check")
    parser.add_argument("--flowers", action="store_true", help="also compare float16 and float32 on the flowers")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return child(args.phase, args)
    with tempfile.TemporaryDirectory() as scratch:
        big = Path(scratch) / "big"
        print(f"N = {args.count:,} vectors of {args.dim} ({args.dtype}), bound {args.bound_gb} GB")
        built = run_phase("build", folder=big, count=args.count, dim=args.dim, dtype=args.dtype)
        print(f"build:  {built['seconds']:.0f} s, {built['disk_gb']:.2f} GB in {built['shards']} shards, "
              f"peak RSS {built['peak_rss_mb']:.0f} MB")
        streamed = run_phase("train", folder=big, count=args.count, dim=args.dim, dtype=args.dtype,
                             bound_gb=args.bound_gb, steps=args.steps)
        print(f"train:  {'in memory' if streamed['in_memory'] else 'from the files'}: {args.steps} steps "
              f"{streamed['train_seconds']:.1f} s, evaluation of {args.count // 10:,} rows "
              f"{streamed['evaluate_seconds']:.1f} s, accuracy {100 * streamed['accuracy']:.1f}%, peak RSS "
              f"{streamed['peak_rss_mb']:.0f} MB (TensorFlow alone {streamed['tensorflow_rss_mb']:.0f} MB)")
        small = Path(scratch) / "small"
        run_phase("build", folder=small, count=args.small, dim=args.dim, dtype=args.dtype)
        memory = run_phase("train", folder=small, count=args.small, dim=args.dim, dtype=args.dtype, bound_gb=1e6,
                           steps=args.steps)
        disk = run_phase("train", folder=small, count=args.small, dim=args.dim, dtype=args.dtype, bound_gb=0,
                         steps=args.steps)
        same = memory["weights"] == disk["weights"] and memory["accuracy"] == disk["accuracy"]
        print(f"equal:  N = {args.small:,}: in memory {100 * memory['accuracy']:.2f}% ({memory['train_seconds']:.1f} s), "
              f"from the files {100 * disk['accuracy']:.2f}% ({disk['train_seconds']:.1f} s); identical weights: {same}")
        if args.flowers:
            for dtype in ("float32", "float16"):
                figures = run_phase("flowers", folder=Path(scratch) / dtype, dtype=dtype)
                print(f"flowers {dtype}: test accuracy {100 * figures['accuracy']:.1f}% (N={figures['count']}), "
                      f"cache {figures['cache_mb']:.2f} MB")


if __name__ == "__main__":
    main()
