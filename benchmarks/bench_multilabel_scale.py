"""Benchmark the multi-label pieces at issue 12's scale on synthetic data (prints figures; not a test).

    python benchmarks/bench_multilabel_scale.py [--rows 1000000] [--labels 5000] [--per_row 3]
        [--batches 4000] [--batch 100] [--stats_rows 100000] [--chunk 1000] [--bins 1000]
        [--csv_rows 100000] [--phases labels,stats,csv,train]

Each phase runs in a fresh process, so its peak RSS (resource.getrusage) is its own:
  labels  1 M rows of ~3 label names each (Zipf-like over 5,000 labels, as a LabelTable
          holds them) -> SparseLabels.from_names; then 4,000 batches of 100 dense
          multi-hot rows (the cost of drawing batches alone; the `train` phase trains);
  stats   LabelStats over 100 k rows x 5,000 labels of scores, in chunks, then
          best_thresholds and metrics;
  csv     read_labels_csv on a CSV of --csv_rows rows naming that many (empty) files;
  train   retrain's training loop (VectorSteps, sigmoid objective) on 1 M synthetic vectors
          of --dim with those labels, thresholds on 50 k validation rows, micro F1 on 50 k.
Target (issue 12): nothing dense [images x labels] in memory; peak RSS far below the
1 M x 5,000 float32 matrix (20 GB) a dense design would need.

A new phase is a function added to PHASES.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrain.labels.multilabel import LabelStats, SparseLabels  # noqa: E402

def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident set size now, in MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def synthetic_label_lists(*, rows: int, labels: int, per_row: float, seed: int) -> list[tuple[str, ...]]:
    """Label names per row: 1 + Poisson(per_row - 1) labels each, drawn Zipf-like (a few common, many rare)."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(per_row - 1, rows)
    weights = 1.0 / (np.arange(labels) + 10.0)
    ids = rng.choice(labels, int(counts.sum()), p=weights / weights.sum())
    names = [f"label_{i:04d}" for i in range(labels)]
    ends = np.cumsum(counts)
    pairs = zip(ends.tolist(), counts.tolist(), strict=True)
    return [tuple(names[j] for j in ids[end - count:end]) for end, count in pairs]


def phase_labels(args: argparse.Namespace) -> dict[str, float]:
    """Build SparseLabels from 1 M rows of names, then draw dense batches for a training step."""
    lists = synthetic_label_lists(rows=args.rows, labels=args.labels, per_row=args.per_row, seed=0)
    vocabulary = sorted({name for row in lists for name in row})
    lists_rss = current_rss_mb()
    start = time.perf_counter()
    labels = SparseLabels.from_names(lists, vocabulary=vocabulary)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    checksum = 0.0
    for _ in range(args.batches):
        indices = labels.sample(rng, args.batch)
        batch = labels.batch(indices)
        checksum += float(batch[0, 0])
    batches_s = time.perf_counter() - start
    return {"rows": len(labels), "labels": len(vocabulary), "pairs": labels.nnz,
            "csr_mb": (labels.offsets.nbytes + labels.ids.nbytes) / 2**20, "rss_with_name_lists_mb": lists_rss,
            "build_s": build_s, "batches_s": batches_s, "ms_per_batch": 1000 * batches_s / args.batches,
            "peak_rss_mb": peak_rss_mb()}


def phase_stats(args: argparse.Namespace) -> dict[str, float]:
    """Stream LabelStats over stats_rows x labels scores in chunks; then thresholds and metrics."""
    rng = np.random.default_rng(2)
    lists = synthetic_label_lists(rows=args.stats_rows, labels=args.labels, per_row=args.per_row, seed=3)
    index = {f"label_{i:04d}": i for i in range(args.labels)}
    truth = SparseLabels.from_lists(([index[name] for name in row] for row in lists), num_labels=args.labels)
    del lists
    stats = LabelStats(num_labels=args.labels, bins=args.bins)
    add_s = 0.0
    for first in range(0, len(truth), args.chunk):
        rows = np.arange(first, min(first + args.chunk, len(truth)))
        part = truth.take(rows)
        # Scores like a trained head: negatives near 0, positives mostly high.
        logits = rng.standard_normal((rows.size, args.labels), dtype=np.float32) * 1.5 - 5.0
        logits[np.repeat(np.arange(rows.size), part.labels_per_row()), part.ids] += 6.0
        scores = 1.0 / (1.0 + np.exp(-logits))
        start = time.perf_counter()
        stats.add(scores, part)
        add_s += time.perf_counter() - start
    start = time.perf_counter()
    thresholds = stats.best_thresholds()
    thresholds_s = time.perf_counter() - start
    start = time.perf_counter()
    figures = stats.metrics(thresholds)
    metrics_s = time.perf_counter() - start
    return {"rows": len(truth), "labels": args.labels, "chunk": args.chunk, "bins": args.bins,
            "histograms_mb": (stats._positive.nbytes + stats._total.nbytes) / 2**20, "add_s": add_s,
            "scores_per_s_millions": len(truth) * args.labels / add_s / 1e6, "thresholds_s": thresholds_s,
            "metrics_s": metrics_s, "micro_f1": figures.micro_f1, "macro_f1": figures.macro_f1,
            "mean_average_precision": figures.mean_average_precision, "peak_rss_mb": peak_rss_mb()}


def phase_csv(args: argparse.Namespace) -> dict[str, float]:
    """read_labels_csv on csv_rows rows naming as many empty files (100 per folder)."""
    from retrain.labels.csv import read_labels_csv

    lists = synthetic_label_lists(rows=args.csv_rows, labels=args.labels, per_row=args.per_row, seed=4)
    scratch = Path(tempfile.mkdtemp(prefix="bench_multilabel_"))
    try:
        images = scratch / "images"
        lines = ["path,labels\n"]
        for i, row in enumerate(lists):
            name = f"{i // 100:05d}/img_{i:07d}.jpg"
            if i % 100 == 0:
                (images / name).parent.mkdir(parents=True)
            (images / name).touch()
            lines.append(f"{name},{' '.join(row)}\n")
        (scratch / "labels.csv").write_text("".join(lines), encoding="utf-8")
        del lists, lines
        before = current_rss_mb()
        start = time.perf_counter()
        table = read_labels_csv(scratch / "labels.csv", image_dir=images)
        read_s = time.perf_counter() - start
        after = current_rss_mb()
    finally:
        shutil.rmtree(scratch)
    return {"rows": len(table.rows), "labels": len(table.labels), "read_s": read_s,
            "us_per_row": 1e6 * read_s / len(table.rows), "table_mb": after - before,
            "bytes_per_row": (after - before) * 2**20 / len(table.rows), "peak_rss_mb": peak_rss_mb()}


def phase_train(args: argparse.Namespace) -> dict[str, float]:
    """retrain's own training loop (VectorSteps, the sigmoid objective) on --rows synthetic vectors of --dim.

    Each label has a random direction; an image's vector is the sum of its labels' directions plus noise,
    so the task is learnable. Labels stay sparse (SparseLabels): only each block of batches becomes dense.
    Then thresholds are chosen on 50,000 validation rows and micro F1 measured on 50,000 test rows.
    """
    from retrain.objectives import Sigmoid, evaluate, score_chunks
    from retrain.tfenv import import_tensorflow
    from retrain.train import Optimizer, Schedule, Split, VectorSteps, initial_head, rng, train

    import_tensorflow()
    started = time.monotonic()
    lists = synthetic_label_lists(rows=args.rows, labels=args.labels, per_row=args.per_row, seed=0)
    vocabulary = [f"label_{i:04d}" for i in range(args.labels)]
    labels = SparseLabels.from_names(lists, vocabulary=vocabulary)
    del lists
    random = np.random.default_rng(1)
    directions = random.normal(size=(args.labels, args.dim)).astype(np.float32)
    vectors = np.empty((args.rows, args.dim), np.float32)
    for start in range(0, args.rows, 50_000):
        rows = np.arange(start, min(start + 50_000, args.rows))
        block = labels.take(rows)
        summed = np.zeros((len(rows), args.dim), np.float32)
        np.add.at(summed, np.repeat(np.arange(len(rows)), block.labels_per_row()), directions[block.ids])
        vectors[rows] = summed + random.normal(scale=1.0, size=summed.shape).astype(np.float32)
    built = time.monotonic()
    held_out = min(100_000, args.rows // 5)
    held = np.arange(args.rows - held_out, args.rows)
    train_rows = np.arange(args.rows - held_out)
    data = Split(paths=(), targets=labels.take(train_rows), vectors=vectors[: len(train_rows)])
    head = initial_head(dim=args.dim, classes=args.labels, seed=0, objective=Sigmoid())
    optimizer = Optimizer(learning_rate=args.learning_rate)
    steps = VectorSteps(data=data, head=head, optimizer=optimizer, batch_size=args.batch, random=rng(0, "training"))
    validation, test = held[: held_out // 2], held[held_out // 2:]
    trained = train(steps=steps, schedule=Schedule(steps=args.train_steps, eval_interval=max(args.train_steps // 4, 1)),
                    optimizer=optimizer, validate=lambda h: evaluate(h, vectors[validation], labels.take(validation),
                                                                     batch_size=args.batch, rng=rng(0, "validation")))
    trained_at = time.monotonic()
    trained = trained.objective.calibrate(trained, score_chunks(trained, vectors[validation], labels.take(validation),
                                                                np.arange(len(validation))),
                                          training=data.targets)
    figures = evaluate(trained, vectors[test], labels.take(test), batch_size=-1, rng=rng(0, "testing")).metrics
    return {"build_s": built - started, "train_s": trained_at - built, "steps": args.train_steps,
            "evaluate_s": time.monotonic() - trained_at, "micro_f1": figures["micro_f1"],
            "macro_f1": figures["macro_f1"], "vectors_gb": vectors.nbytes / 1e9, "peak_rss_mb": peak_rss_mb()}


PHASES: dict[str, Callable[[argparse.Namespace], dict[str, float]]] = {
    "labels": phase_labels, "stats": phase_stats, "csv": phase_csv, "train": phase_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=5000)
    parser.add_argument("--per_row", type=float, default=3.0)
    parser.add_argument("--batches", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--stats_rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--csv_rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280, help="train phase: vector size")
    parser.add_argument("--train_steps", type=int, default=1000, help="train phase: steps of --batch images")
    parser.add_argument("--learning_rate", type=float, default=0.01, help="train phase")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return
    print(f"numpy {np.__version__}; {args.rows:,} rows, {args.labels:,} labels, ~{args.per_row:g} per row; "
          f"python baseline RSS {peak_rss_mb():.0f} MB")
    failed = []
    for name in args.phases.split(","):
        command = [sys.executable, __file__, *sys.argv[1:], "--phase", name]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            print(f"{name}: failed\n{result.stderr}")
            failed.append(name)
            continue
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{name:7s} " + "  ".join(f"{key}={_fmt(value)}" for key, value in figures.items()))
    if failed:
        sys.exit(f"failed phases: {', '.join(failed)}")


def _fmt(value: float) -> str:
    """Ints as they are, floats with 3 significant digits."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


if __name__ == "__main__":
    main()
