"""Several modules at once: each member alone and the mix, on the fixture flowers with one fixed split.

    python benchmarks/bench_modules.py                 # MobileNet V2 1.0, MobileNet V1 0.75, and both
    python benchmarks/bench_modules.py --testing_percentage 30 --seeds 0 1 2

Each run is a real `retrain` (the pipeline, cold cache, default head) with a frozen graph, a SavedModel and a
TFLite export; the table gives test accuracy (mean over seeds), wall time of the first run and export sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fixtures import FIXTURES, require_fixtures  # noqa: E402


def size(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=["mobilenet_v2_100_224", "mobilenet_v1_075_224"])
    parser.add_argument("--testing_percentage", type=float, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    require_fixtures()

    from retrain.config import RetrainConfig
    from retrain.pipeline import run

    runs = [[m] for m in args.modules] + [args.modules]
    print(f"fixture flowers, testing {args.testing_percentage:g} %, seeds {args.seeds}; load {os.getloadavg()[0]:.1f}")
    print(f"{'modules':45} {'features':>8} {'test acc %':>10} {'wall s':>7} {'graph MB':>9} {'SavedModel MB':>14} "
          f"{'TFLite MB':>10}")
    for members in runs:
        accuracies, first = [], None
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(scratch)
                config = RetrainConfig(
                    image_dir=FIXTURES / "flower_photos", seed=seed, testing_percentage=args.testing_percentage,
                    tfhub_module=",".join(str(FIXTURES / "modules" / m) for m in members),
                    output_graph=out / "graph.pb", output_labels=out / "labels.txt", summaries_dir=out / "logs",
                    bottleneck_dir=out / "cache", checkpoint_path=out / "ckpt" / "c", saved_model_dir=out / "saved",
                    output_tflite=out / "model.tflite")
                started = time.monotonic()
                with contextlib.redirect_stdout(io.StringIO()):
                    result = run(config)
                seconds = time.monotonic() - started
                accuracies.append(result.test_accuracy)
                if first is None:
                    first = (seconds, size(out / "graph.pb"), size(out / "saved"), size(out / "model.tflite"),
                             result.source.dim, result.test_count)
        seconds, graph, saved, lite, dim, count = first
        name = " + ".join(members)
        print(f"{name:45} {dim:8d} {100 * sum(accuracies) / len(accuracies):10.1f} {seconds:7.1f} {graph:9.1f} "
              f"{saved:14.1f} {lite:10.1f}   (N={count})", flush=True)


if __name__ == "__main__":
    main()
