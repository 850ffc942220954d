"""How long `label-image` takes: one image, and 100 images in one call, per model kind.

Trains a mobilenet_v2_035_224 head on the real flower photos once (library call,
outputs in a temporary folder) exporting every model kind, TFLite float32 and
int8 included, then times fresh `label-image` processes, as a user runs them:

    python benchmarks/bench_label_image.py [--repeats 3] [--keep DIR]

Start-up (importing TensorFlow, loading the model) dominates one-image calls;
the 100-image figure shows the steady rate. The machine's load average is
printed too: on a shared 2-core machine it moves these figures a lot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from fixtures import FIXTURES, require_fixtures  # noqa: E402
MODULE = FIXTURES / "modules" / "mobilenet_v2_035_224"
FLOWERS = FIXTURES / "flower_photos"
COUNT = 100


def export_models(work: Path) -> tuple[dict[str, Path], Path]:
    """Retrain once and write every model kind; returns ({kind: model path}, labels path). Reuses a kept set."""
    kept = {"frozen graph": work / "graph.pb", "SavedModel": work / "saved_model",
            "TFLite float": work / "model.tflite", "TFLite int8": work / "model_int8.tflite"}
    if all(p.exists() for p in kept.values()) and (work / "labels.txt").exists():
        return kept, work / "labels.txt"
    from retrain.config import RetrainConfig
    from retrain.pipeline import run

    config = RetrainConfig(image_dir=FLOWERS, tfhub_module=str(MODULE), how_many_training_steps=200,
                           output_graph=kept["frozen graph"], output_labels=work / "labels.txt",
                           summaries_dir=work / "logs", bottleneck_dir=work / "bottlenecks",
                           checkpoint_path=work / "checkpoint" / "ckpt", saved_model_dir=kept["SavedModel"],
                           output_tflite=kept["TFLite float"], tflite_quantization=("float32", "int8"))
    run(config)  # writes model.tflite and model_int8.tflite beside each other
    return kept, config.output_labels


def command() -> list[str]:
    script = shutil.which("label-image")
    if script:
        return [script]
    return [sys.executable, "-c", "from retrain.cli import label_image_command; "
            "label_image_command(prog_name='label-image')"]


def timed(args: list[str], *, repeats: int) -> float:
    """Median wall time of a fresh process; fails loudly if the command fails."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode:
            sys.exit(f"failed ({result.returncode}): {' '.join(args[:6])} ...\n{result.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--keep", type=Path, help="keep the exported models in this folder (reused when present)")
    args = parser.parse_args()
    require_fixtures()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_label_image_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"exporting models into {work} ...", file=sys.stderr)
        models, labels = export_models(work)
        photos = sorted(FLOWERS.glob("*/*.jpg"))[:: max(1, 500 // COUNT)][:COUNT]
        base = command()
        floor = timed([sys.executable, "-c", "import tensorflow"], repeats=args.repeats)
        print(f"\nlabel-image wall time, mobilenet_v2_035_224 head, median of {args.repeats} "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"  python -c 'import tensorflow' alone: {floor:.2f} s")
        print(f"  {'model':<14} {'1 image':>9} {f'{COUNT} images':>11} {'images/s':>9} {'after start-up':>15}")
        for kind, model in models.items():
            one = timed([*base, "--graph", str(model), "--labels", str(labels), str(photos[0])], repeats=args.repeats)
            many = timed([*base, "--graph", str(model), "--labels", str(labels), *map(str, photos)],
                         repeats=args.repeats)
            # (the extra 99 images) / (the extra time); "n/a" when start-up noise swamps the difference
            steady = f"{(COUNT - 1) / (many - one):>11.1f} img/s" if many > one + 0.05 else f"{'n/a':>17}"
            print(f"  {kind:<14} {one:>7.2f} s {many:>9.2f} s {COUNT / many:>9.1f} {steady}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
