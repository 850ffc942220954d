"""Serve a summaries folder with a real TensorBoard and screenshot its dashboards in headless Chromium.

    python benchmarks/tensorboard_screenshot.py [--logdir DIR] [--out DIR] [--tabs images,pr_curves,...]
    python benchmarks/tensorboard_screenshot.py --measure     # cost of each picture kind, 5 and 50 classes

Without --logdir it first writes a small demo run into a temporary folder with
retrain.insight's own writers: 100 real flower photos (../shared/fixtures) as a
5-class test split with synthetic predictions, training-style scalars, a few
validation confusion matrices, PR curves, misclassified images, hparams and the
projector. It then starts `tensorboard --logdir DIR --host 127.0.0.1 --port P`
on a free port, waits until the run is served, saves one PNG per tab
(`tensorboard_<tab>.png` in --out, default /tmp/retrain_tensorboard_screenshots) with Debian's `chromium`, stops TensorBoard
and prints what it did. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
from fixtures import FIXTURES, require_fixtures  # noqa: E402
FLOWERS = FIXTURES / "flower_photos"
TABS = ("images", "pr_curves", "hparams", "projector", "text")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                  "--virtual-time-budget=15000"]


def flower_photos(per_class: int) -> dict[str, list[Path]]:
    """The first `per_class` fixture photos of each flower class (sorted, so runs repeat)."""
    require_fixtures()
    return {d.name: sorted(d.glob("*.jpg"))[:per_class] for d in sorted(FLOWERS.iterdir()) if d.is_dir()}


def synthetic_split(labels: Sequence[str], paths_per_label: Sequence[Sequence[Path]], *, dim: int,
                    seed: int = 0) -> dict:
    """Synthetic test predictions (about 80 % right) and clustered vectors for real photos."""
    rng = np.random.default_rng(seed)
    truth = np.array([i for i, paths in enumerate(paths_per_label) for _ in paths])
    paths = [p for paths in paths_per_label for p in paths]
    k = len(labels)
    logits = 2.5 * np.eye(k)[truth] + rng.normal(0, 1.0, (len(truth), k))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    centres = rng.normal(0, 1, (k, dim))
    vectors = np.maximum(centres[truth] + rng.normal(0, 0.8, (len(truth), dim)), 0).astype(np.float32)
    return {"truth": truth, "paths": paths, "probabilities": probabilities,
            "predicted": probabilities.argmax(axis=1), "vectors": vectors}


def write_demo_run(summaries_dir: Path) -> Path:
    """A small run folder written by every insight writer; returns the run folder."""
    from retrain.insight import tensorboard as insight
    from retrain.insight.report import class_report, confusion_matrix, format_table
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    photos = flower_photos(20)
    labels = list(photos)
    split = synthetic_split(labels, [photos[label] for label in labels], dim=256)
    truth, predicted, probabilities = split["truth"], split["predicted"], split["probabilities"]
    run_dir = summaries_dir / "20261125-101652"
    rng = np.random.default_rng(1)
    steps = list(range(0, 1000, 10)) + [999]
    chosen = insight.picture_steps(steps=1000, interval=10, limit=4)
    writers = {name: tf.summary.create_file_writer(str(run_dir / name)) for name in ("train", "validation")}
    for step in steps:  # what the training loop writes, roughly
        progress = 1 - np.exp(-step / 200)
        with writers["train"].as_default(step=step):
            tf.summary.scalar("accuracy", 0.3 + 0.65 * progress)
            tf.summary.scalar("cross_entropy", 1.6 * (1 - progress) + 0.2)
        with writers["validation"].as_default(step=step):
            tf.summary.scalar("accuracy", 0.3 + 0.55 * progress)
        if step in chosen:
            sample_truth = rng.integers(0, len(labels), 100)
            right = rng.random(100) < 0.3 + 0.55 * progress
            sample_predicted = np.where(right, sample_truth, rng.integers(0, len(labels), 100))
            insight.write_confusion_matrix(run_dir, split="validation", labels=labels, step=step,
                                           matrix=confusion_matrix(truth=sample_truth, predicted=sample_predicted,
                                                                   class_count=len(labels)),
                                           writer=writers["validation"])
    for writer in writers.values():
        writer.close()
    report = class_report(labels=labels, truth=truth, predicted=predicted)
    print(format_table(report))
    insight.write_confusion_matrix(run_dir, split="test", labels=labels, matrix=report.matrix, step=999)
    insight.write_pr_curves(run_dir, split="test", labels=labels, truth=truth, probabilities=probabilities, step=999)
    wrong = [(split["paths"][i], labels[truth[i]], labels[predicted[i]], float(probabilities[i, predicted[i]]))
             for i in np.flatnonzero(predicted != truth)]
    insight.write_misclassified(run_dir, items=wrong, step=999)
    insight.write_hparams(run_dir, hparams={"learning_rate": 0.01, "how_many_training_steps": 1000,
                                            "tfhub_module": "mobilenet_v2_100_224", "flip_left_right": False},
                          metrics={"test/accuracy": report.accuracy, "test/macro_f1": report.macro["f1"]}, step=999)
    insight.write_projector(run_dir, vectors=split["vectors"], labels=[labels[t] for t in truth],
                            paths=split["paths"], predicted=[labels[p] for p in predicted])
    print(f"wrote a demo run (synthetic predictions over {len(truth)} fixture photos) into {run_dir}")
    return run_dir


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, *, timeout: float = 10) -> object:
    """GET a JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


def start_tensorboard(logdir: Path, port: int, *, log_file: Path) -> subprocess.Popen:
    """Start the `tensorboard` command (or `python -m tensorboard.main`) on 127.0.0.1:port."""
    script = shutil.which("tensorboard")
    program = [script] if script else [sys.executable, "-m", "tensorboard.main"]
    with log_file.open("wb") as log:
        return subprocess.Popen([*program, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_until_served(base: str, process: subprocess.Popen, *, timeout: float = 120) -> list[str]:
    """Poll /data/runs until TensorBoard lists a run; returns the runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tensorboard exited with status {process.returncode}")
        try:
            runs = get_json(base + "/data/runs", timeout=2)
            if runs:
                return list(runs)
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tensorboard did not list any run within {timeout:.0f} s")


def screenshot(url: str, out: Path, *, chromium: str) -> float:
    """One headless Chromium screenshot of `url` into `out`; returns the seconds it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                                capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"chromium failed on {url} (status {result.returncode}):\n{result.stderr[-1500:]}")
    return time.monotonic() - started


def stop(process: subprocess.Popen) -> None:
    """Terminate TensorBoard (SIGTERM, then SIGKILL after 20 s)."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_and_screenshot(logdir: Path, out: Path, *, tabs: Sequence[str], chromium: str) -> None:
    """Start TensorBoard on `logdir`, wait for it, screenshot each tab, stop it; prints each step."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = out / "tensorboard.log"
    started = time.monotonic()
    process = start_tensorboard(logdir, port, log_file=log_file)
    print(f"started tensorboard --logdir {logdir} --host 127.0.0.1 --port {port} (pid {process.pid}, log {log_file})")
    try:
        runs = wait_until_served(base, process)
        print(f"tensorboard answered after {time.monotonic() - started:.1f} s; runs: {', '.join(sorted(runs))}")
        # The projector decides in a background thread whether it has data; ask until it says yes.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = get_json(base + "/data/plugins_listing")
            if "projector" not in tabs or listing.get("projector", {}).get("enabled"):
                break
            time.sleep(1)
        enabled = sorted(name for name, plugin in listing.items() if plugin.get("enabled"))
        print(f"active dashboards: {', '.join(enabled)}")
        images = get_json(base + "/data/plugin/images/tags")
        for run, tags in sorted(images.items()):
            print(f"  images in {run}: {', '.join(sorted(tags))}")
        for tab in tabs:
            path = out / f"tensorboard_{tab}.png"
            seconds = screenshot(f"{base}/#{tab}", path, chromium=chromium)
            print(f"screenshot of {base}/#{tab} -> {path} ({path.stat().st_size // 1024} kB, {seconds:.1f} s)")
    finally:
        stop(process)
        print(f"stopped tensorboard (exit status {process.returncode})")


def _timed(function: Callable[[], object], *, repeats: int = 3) -> float:
    """The best of `repeats` wall times of `function()`, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def measure(work: Path) -> None:
    """Print seconds per picture kind (drawing, and drawing plus writing) at 5 and 50 classes."""
    from retrain.insight import pictures
    from retrain.insight import tensorboard as insight
    from retrain.insight.report import class_report
    from retrain.tfenv import import_tensorflow

    started = time.perf_counter()
    import_tensorflow()
    print(f"importing TensorFlow: {time.perf_counter() - started:.1f} s (once per run, already paid by training)")
    photos = [p for paths in flower_photos(100).values() for p in paths]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; best of 3; seconds")
    print(f"{'classes':>7}  {'test N':>6}  {'kind':<34}  {'draw':>6}  {'draw+write':>10}")
    for k in (5, 50):
        n = 20 * k
        labels = [f"class {i:02d} {'long name ' * (i % 3)}".strip() for i in range(k)]
        chosen = [photos[i % len(photos)] for i in range(n)]
        split = synthetic_split(labels, [chosen[i::k] for i in range(k)], dim=2048)
        truth, predicted, probabilities = split["truth"], split["predicted"], split["probabilities"]
        report = class_report(labels=labels, truth=truth, predicted=predicted)
        wrong = [(split["paths"][i], labels[truth[i]], labels[predicted[i]], float(probabilities[i, predicted[i]]))
                 for i in np.flatnonzero(predicted != truth)]
        run_dir = work / f"measure-{k}"
        rows = [
            ("confusion matrix", lambda: pictures.confusion_matrix_image(labels=labels, matrix=report.matrix),
             lambda: insight.write_confusion_matrix(run_dir, split="test", labels=labels, matrix=report.matrix,
                                                    step=0)),
            (f"PR curves ({k} classes)", None,
             lambda: insight.write_pr_curves(run_dir, split="test", labels=labels, truth=truth,
                                             probabilities=probabilities, step=0)),
            (f"misclassified grid ({min(len(wrong), 48)} of {len(wrong)})",
             lambda: pictures.misclassified_grid(sorted(wrong, key=lambda w: -w[3])),
             lambda: insight.write_misclassified(run_dir, items=wrong, step=0)),
            ("hparams + 2 metrics", None,
             lambda: insight.write_hparams(run_dir, hparams={"learning_rate": 0.01, "k": k},
                                           metrics={"test/accuracy": 0.5, "test/macro_f1": 0.5})),
            (f"projector ({n} rows, 2048-d, sprite)", lambda: pictures.sprite(split["paths"], size=64),
             lambda: insight.write_projector(run_dir, vectors=split["vectors"], labels=[labels[t] for t in truth],
                                             paths=split["paths"])),
        ]
        for name, draw, write in rows:
            drawn = f"{_timed(draw):6.3f}" if draw else f"{'-':>6}"
            print(f"{k:>7}  {n:>6}  {name:<34}  {drawn}  {_timed(write):10.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, help="summaries folder to serve (default: a demo run in a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "retrain_tensorboard_screenshots",
                        help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--tabs", default="images,pr_curves,hparams,projector",
                        help=f"comma-separated dashboards to screenshot, among {', '.join(TABS)}")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="the Chromium binary")
    parser.add_argument("--measure", action="store_true", help="time each picture kind instead of screenshots")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="retrain-insight-") as scratch:
        if args.measure:
            measure(Path(scratch))
            return
        tabs = [t for t in args.tabs.split(",") if t]
        if unknown := sorted(set(tabs) - set(TABS)):
            parser.error(f"unknown tab(s) {', '.join(unknown)}; expected some of {', '.join(TABS)}")
        if not shutil.which(args.chromium):
            parser.error(f"no Chromium at {args.chromium!r}: apt-get install -y chromium, or pass --chromium")
        logdir = args.logdir
        if logdir is None:
            logdir = Path(scratch) / "logs"
            write_demo_run(logdir)
        args.out.mkdir(parents=True, exist_ok=True)
        serve_and_screenshot(logdir.resolve(), args.out.resolve(), tabs=tabs, chromium=args.chromium)


if __name__ == "__main__":
    main()
