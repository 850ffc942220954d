"""Benchmark: what distortions cost, cached variants against the classic on-the-fly way.

Runs the real `retrain` command (a fresh process each, cold bottleneck cache
each) on ../shared/fixtures/flower_photos with mobilenet_v2_035_224 and prints
wall time and final test accuracy of
  (a) no distortions,
  (b) all four distortions at 10 (flip, crop, scale, brightness) with the default cached variants,
  (c) the same distortions on the fly, for a few hundred steps, extrapolated to 4,000 steps.

    python benchmarks/bench_distortions.py [--on_the_fly_steps 200] [--workdir DIR]

Timings are wall-clock and depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from fixtures import FIXTURES, require_fixtures  # noqa: E402
STEPS = 4000
DISTORTIONS = ["--flip_left_right", "--random_crop", "10", "--random_scale", "10", "--random_brightness", "10"]


def retrain(workdir: Path, name: str, extra: list[str]) -> tuple[float, str]:
    """Run `python -m retrain` with its outputs in workdir/name; return (wall seconds, stderr+stdout)."""
    out = workdir / name
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "retrain", "--image_dir", str(FIXTURES / "flower_photos"),
               "--tfhub_module", str(FIXTURES / "modules" / "mobilenet_v2_035_224"),
               "--bottleneck_dir", str(out / "bottlenecks"), "--output_graph", str(out / "graph.pb"),
               "--output_labels", str(out / "labels.txt"), "--summaries_dir", str(out / "logs"),
               "--checkpoint_path", str(out / "ckpt" / "c"), "--testing_percentage", "25", *extra]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def accuracy(output: str) -> str:
    match = re.search(r"Final test accuracy = ([\d.]+%) \(N=(\d+)\)", output)
    return f"{match.group(1)} (N={match.group(2)})" if match else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on_the_fly_steps", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    require_fixtures()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_distortions-"))
    print(f"work folder: {workdir}; os.cpu_count() = {os.cpu_count()}", flush=True)

    a_time, a_out = retrain(workdir, "a_plain", [])
    print(f"(a) no distortions:               {a_time:7.1f} s   test accuracy {accuracy(a_out)}", flush=True)

    b_time, b_out = retrain(workdir, "b_cached", DISTORTIONS)
    variants = re.search(r"distorted variants \((\d+) per training image", b_out)
    rate = re.search(r"Distorted variants: (\d+)/\d+ variants in ([\d:]+) \(([\d.]+) variants/s\)", b_out)
    print(f"(b) all four at 10, cached:       {b_time:7.1f} s   test accuracy {accuracy(b_out)}   "
          f"= {b_time / a_time:.2f}x (a); {variants.group(1) if variants else '?'} variants per image, "
          f"{rate.group(1) if rate else '?'} computed at {rate.group(3) if rate else '?'}/s", flush=True)

    b2_time, b2_out = retrain(workdir / "b_cached", "rerun", DISTORTIONS + [
        "--bottleneck_dir", str(workdir / "b_cached" / "bottlenecks")])
    print(f"(b') same, cache already filled:  {b2_time:7.1f} s   test accuracy {accuracy(b2_out)}", flush=True)

    steps = args.on_the_fly_steps
    c_time, c_out = retrain(workdir, "c_on_the_fly", DISTORTIONS + [
        "--distortion_mode", "on_the_fly", "--how_many_training_steps", str(steps)])
    trained = re.search(r"Training \(distorting on the fly\): \d+/\d+ steps in ([\d:]+) \(([\d.]+) steps/s\)", c_out)
    if not trained:
        sys.exit("(c): no training progress line found")
    step_rate = float(trained.group(2))
    projected = c_time + (STEPS - steps) / step_rate
    print(f"(c) on the fly, {steps} steps:       {c_time:7.1f} s   test accuracy {accuracy(c_out)} after {steps} steps; "
          f"{step_rate:.2f} steps/s ({100 * step_rate:.0f} images/s)", flush=True)
    print(f"(c) extrapolated to {STEPS} steps:   {projected:7.1f} s   = {projected / a_time:.1f}x (a), "
          f"{projected / b_time:.1f}x (b)", flush=True)


if __name__ == "__main__":
    main()
