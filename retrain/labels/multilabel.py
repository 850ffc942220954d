"""Multi-label truth in sparse form, and streaming multi-label metrics (numpy only).

`SparseLabels` holds which labels each image has as CSR arrays (offsets, label
ids): 1 M images with ~3 labels each take ~20 MB whatever the number of labels,
and a training batch becomes a dense multi-hot matrix only for its own rows.

`LabelStats` accumulates, per label, histograms of the predicted probabilities
of positive and of all images over `bins` equal bins of [0, 1] (bin k holds the
scores s with k/bins <= s < (k+1)/bins, compared in float32, and a last bin
holds s == 1). Its memory is 2 x labels x (bins + 1) int32 whatever the number
of images (5,000 labels at 1,000 bins: 40 MB), and chunks of rows can be added
in any order, with the same result as one pass. From the histograms it chooses
per-label thresholds and computes:

* per label, at threshold t_j (an image has label j when score_j >= t_j, in
  float32): TP, predictions, support (positives), precision = TP/predicted,
  recall = TP/support, F1 = 2TP/(2TP+FP+FN); NaN where the denominator is 0;
* micro precision, recall and F1: the same over the summed TP, FP, FN of all
  labels (0.0 where a denominator is 0);
* macro F1: the mean per-label F1 over labels with at least one positive or one
  prediction (F1 is undefined, not 0 or 1, for a label with neither);
* average precision per label with positives: sum over score levels from high to
  low of (recall step) x (precision at that level), ties counted together (the
  non-interpolated AP of scikit-learn's `average_precision_score`), where a score
  level is a bin; mean average precision (mAP) is its mean over labels with
  positives;
* the threshold per label maximising its F1 on the data added (validation):
  among the grid thresholds k/bins of maximal F1, the middle of the highest run
  of consecutive ones (about the middle of the gap between the last score kept
  out and the first let in, as an exact midpoint rule would give); 0.5 for a
  label with no positive.

Binning is exact for thresholds on the grid (the ones chosen here, and 0.5):
TP/FP/F1 at a chosen threshold equal the exact counts on the raw scores. The
approximations are AP, whose only error comes from ties created inside a bin,
and the threshold choice, which cannot cut between two scores sharing a bin.
Measured against exact brute force with 1,000 bins on scores shaped like a
trained sigmoid head (20,000 images, 100 labels, 0.2-20 % prevalence; see
tests/test_multilabel.py): AP error max 6e-4, mean 2e-4; best F1 lost max 5e-3
(one positive of ~100, where the exact optimum cut between two scores 2e-4
apart), mean 2e-4; 83 % of the thresholds fall inside the exact optimum's
interval, the others on another cut of nearly equal F1. On poorly separated
labels with scores spread evenly (5,000 images per label), AP error max 6e-3,
mean 8e-4 (4e-3 and 4e-4 at 2,000 bins).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from retrain.errors import RetrainError

log = logging.getLogger(__name__)

DEFAULT_BINS = 1000
MAX_BINS = 1 << 20
# A label's threshold where none was chosen: training's figures, a label without a validation positive, a model
# whose thresholds label-image does not know.
DEFAULT_THRESHOLD = 0.5
UNTRAINED_THRESHOLD = 2.0  # above any probability: a label with no training image is never predicted


def grid_thresholds(bins: int) -> np.ndarray:
    """float32 [bins + 1]: k / bins rounded up to float32, so `score >= edge` in float32 means score >= k / bins."""
    k = np.arange(bins + 1, dtype=np.float64)
    edges = (k / bins).astype(np.float32)
    low = edges.astype(np.float64) * bins < k  # exact: 24-bit mantissa times <= 2**20
    edges[low] = np.nextafter(edges[low], np.float32(np.inf))
    return edges


@dataclass(frozen=True, eq=False)
class SparseLabels:
    """Which labels each of N images has, in CSR form: image i has ids[offsets[i]:offsets[i+1]].

    `offsets` is int64 [N + 1] starting at 0, `ids` int32 [nnz] with each row's
    ids sorted and distinct, in [0, num_labels). Build with `from_lists` or
    `from_names`; never densified whole.
    """

    DRAW: ClassVar[str] = "an image, every image alike"

    offsets: np.ndarray
    ids: np.ndarray
    num_labels: int

    def __post_init__(self) -> None:
        offsets, ids = self.offsets, self.ids
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != ids.size:
            raise ValueError("offsets must be [N + 1], start at 0 and end at len(ids)")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must not decrease")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_labels):
            raise ValueError(f"label ids must lie in [0, {self.num_labels})")

    @classmethod
    def from_lists(cls, rows: Iterable[Iterable[int]], *, num_labels: int) -> SparseLabels:
        """Build from one iterable of label ids per image; ids are sorted and de-duplicated per row.

        Raises ValueError for an id outside [0, num_labels).
        """
        lengths: list[int] = []

        def flatten() -> Iterator[int]:
            for row in rows:
                row = row if isinstance(row, (list, tuple)) else list(row)
                lengths.append(len(row))
                yield from row

        # fromiter keeps no Python int per id: ~8 bytes per (image, label) pair while building.
        flat = np.fromiter(flatten(), np.int64)
        return cls._from_flat(np.asarray(lengths, np.int64), flat, num_labels=num_labels)

    @classmethod
    def from_names(cls, rows: Iterable[Iterable[str]], *, vocabulary: Sequence[str]) -> SparseLabels:
        """Build from label names per image (e.g. `CsvRow.labels`); id = position in `vocabulary`.

        Raises ValueError naming a label that is not in the vocabulary.
        """
        index = {name: i for i, name in enumerate(vocabulary)}
        try:
            return cls.from_lists(([index[name] for name in row] for row in rows), num_labels=len(vocabulary))
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not in the vocabulary") from None

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> SparseLabels:
        """Build from a small dense [N, L] 0/1 matrix (tests, tiny sets)."""
        matrix = np.asarray(matrix)
        rows, ids = np.nonzero(matrix)
        lengths = np.bincount(rows, minlength=matrix.shape[0]).astype(np.int64)
        return cls._from_flat(lengths, ids.astype(np.int64), num_labels=matrix.shape[1])

    @classmethod
    def _from_flat(cls, lengths: np.ndarray, flat: np.ndarray, *, num_labels: int) -> SparseLabels:
        """CSR from per-row lengths and the concatenated ids: sorted and de-duplicated within rows."""
        if flat.size and (flat.min() < 0 or flat.max() >= num_labels):
            bad = flat[(flat < 0) | (flat >= num_labels)][0]
            raise ValueError(f"label id {bad} is outside [0, {num_labels})")
        row_of = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        keys = np.sort(row_of * max(num_labels, 1) + flat)  # by row, then id
        if keys.size:
            keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # a label repeated in a row counts once
        row_of, ids = np.divmod(keys, max(num_labels, 1))
        offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(np.bincount(row_of, minlength=lengths.size), out=offsets[1:])
        return cls(offsets=offsets, ids=ids.astype(np.int32), num_labels=num_labels)

    def __len__(self) -> int:
        return self.offsets.size - 1

    @property
    def nnz(self) -> int:
        """Number of (image, label) pairs."""
        return int(self.ids.size)

    def labels_of(self, index: int) -> np.ndarray:
        """The sorted label ids of one image."""
        return self.ids[self.offsets[index]:self.offsets[index + 1]]

    def labels_per_row(self) -> np.ndarray:
        """int64 [N]: how many labels each image has."""
        return np.diff(self.offsets)

    def positives_per_label(self) -> np.ndarray:
        """int64 [L]: how many images have each label."""
        return np.bincount(self.ids, minlength=self.num_labels).astype(np.int64)

    def rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense float32 multi-hot [len(indices), L] for the given images only (a batch)."""
        index, positions, lengths = self._gather(indices)
        out = np.zeros((index.size, self.num_labels), np.float32)
        out[np.repeat(np.arange(index.size), lengths), self.ids[positions]] = 1.0
        return out

    def take(self, indices: Sequence[int] | np.ndarray) -> SparseLabels:
        """The given images' labels, in the given order, as a new SparseLabels."""
        index, positions, lengths = self._gather(indices)
        offsets = np.zeros(index.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return SparseLabels(offsets=offsets, ids=self.ids[positions], num_labels=self.num_labels)

    # The `retrain.labels.Targets` protocol, so the training loop samples these like class ids.

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """What the sigmoid loss takes: float32 multi-hot rows (same as `rows`)."""
        return self.rows(indices)

    def repeat(self, count: int) -> SparseLabels:
        """Each row `count` times in a row (row i becomes rows i*count .. i*count+count-1), like np.repeat."""
        return self.take(np.repeat(np.arange(len(self), dtype=np.int64), count))

    def untaught(self) -> list[int]:
        """None: a label with no positive row is one whose threshold is never reached, as for a label seen only
        in validation or testing."""
        return []

    def absent(self) -> list[int]:
        return np.flatnonzero(self.positives_per_label() == 0).tolist()

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` row indices drawn uniformly with replacement (no class to balance in multi-label)."""
        return rng.integers(0, len(self), size=count)

    def _gather(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row indices, positions in ids of their labels in row order, labels per row)."""
        index = np.asarray(indices, np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        ends = np.cumsum(lengths)
        positions = np.arange(ends[-1] if ends.size else 0, dtype=np.int64) + np.repeat(starts - (ends - lengths),
                                                                                       lengths)
        return index, positions, lengths


@dataclass(frozen=True, eq=False)
class MultiLabelMetrics:
    """Multi-label figures at given thresholds; per-label arrays are [L] (see the module docstring)."""

    rows: int
    thresholds: np.ndarray
    support: np.ndarray
    predicted: np.ndarray
    true_positives: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    average_precision: np.ndarray
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    mean_average_precision: float

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        """JSON-ready figures (NaN -> None), per label keyed by name, for report.json."""
        per_label = {
            name: {"threshold": _number(self.thresholds[j]), "support": int(self.support[j]),
                   "predicted": int(self.predicted[j]), "true_positives": int(self.true_positives[j]),
                   "precision": _number(self.precision[j]), "recall": _number(self.recall[j]),
                   "f1": _number(self.f1[j]), "average_precision": _number(self.average_precision[j])}
            for j, name in enumerate(labels)}
        return {"images": self.rows, "micro_precision": _number(self.micro_precision),
                "micro_recall": _number(self.micro_recall), "micro_f1": _number(self.micro_f1),
                "macro_f1": _number(self.macro_f1), "mean_average_precision": _number(self.mean_average_precision),
                "labels": per_label}


def _number(value: float) -> float | None:
    """A float for JSON; None for NaN."""
    value = float(value)
    return None if math.isnan(value) else value


class LabelStats:
    """Streaming per-label score histograms of positives and of all images: thresholds and metrics.

    Memory is 2 x num_labels x (bins + 1) int32 (int64 past 2**31 images),
    independent of the number of images; `add` chunks of rows in any order (the result is the same as one
    pass). See the module docstring for the definitions and the binning.
    """

    def __init__(self, *, num_labels: int, bins: int = DEFAULT_BINS) -> None:
        if num_labels < 1 or not 2 <= bins <= MAX_BINS:
            raise ValueError(f"need num_labels >= 1 and 2 <= bins <= {MAX_BINS}")
        self.num_labels = num_labels
        self.bins = bins
        self.rows = 0
        self.edges = grid_thresholds(bins)
        self._positive = np.zeros((num_labels, bins + 1), np.int32)
        self._total = np.zeros((num_labels, bins + 1), np.int32)

    def add(self, scores: np.ndarray, truth: SparseLabels) -> None:
        """Add a chunk: scores float [n, L] probabilities for n images, truth their labels (n rows).

        Scores outside [0, 1] are clipped; a non-finite score raises RetrainError
        (a diverged training run), since it has no place in a ranking. Temporary
        memory is a few tens of MB whatever the chunk's size.
        """
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 2 or scores.shape != (len(truth), self.num_labels) or truth.num_labels != self.num_labels:
            raise ValueError(f"scores {scores.shape} and truth ({len(truth)} rows, {truth.num_labels} labels) "
                             f"do not match {self.num_labels} labels")
        if not np.isfinite(scores).all():
            bad = int(np.size(scores) - np.count_nonzero(np.isfinite(scores)))
            raise RetrainError(f"the model produced {bad} non-finite score(s) (NaN or infinity): the training "
                               f"diverged; lower --learning_rate (--fine_tune_learning_rate when fine-tuning)")
        if self.rows + len(truth) >= np.iinfo(self._total.dtype).max:
            self._positive, self._total = self._positive.astype(np.int64), self._total.astype(np.int64)
        width = self.bins + 1
        # A block of labels at a time, as rows (a small transposed copy), counted by one bincount:
        # temporaries stay ~1 M values whatever the chunk and label counts, so they are reused, not faulted in.
        block = max(1, min((1 << 20) // max(len(truth), 1), (1 << 21) // width))
        for first in range(0, self.num_labels, block):
            count = min(block, self.num_labels - first)
            bins = self._bin(scores[:, first:first + count].T)
            bins += (np.arange(count, dtype=np.int64) * width)[:, None]
            counts = np.bincount(bins.ravel(), minlength=count * width)
            self._total[first:first + count] += counts.reshape(count, width).astype(self._total.dtype)
        rows = np.repeat(np.arange(len(truth)), truth.labels_per_row())
        np.add.at(self._positive, (truth.ids, self._bin(scores[rows, truth.ids])), 1)
        self.rows += len(truth)

    def _bin(self, scores: np.ndarray) -> np.ndarray:
        """int64 bin of each float32 score: the largest k with edges[k] <= score.

        float32 times an integer <= 2**20 is exact in float64, so the floor is the
        exact real floor of score * bins, which equals that k because each edge is
        k / bins rounded up to float32 (no float32 lies in between).
        """
        exact = np.empty(scores.shape, np.float64)
        exact[...] = scores
        exact *= self.bins
        np.floor(exact, out=exact)
        bins = exact.astype(np.int64)
        np.clip(bins, 0, self.bins, out=bins)
        return bins

    def _blocks(self) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
        """Per block of labels: (slice, TP and FP at each grid threshold k, support).

        TP[:, k] and FP[:, k] count the scores in bins >= k; a last zero column
        stands for thresholds above 1. Blocks keep the temporary arrays small.
        """
        block = max(1, (1 << 20) // (self.bins + 2))
        for first in range(0, self.num_labels, block):
            part = slice(first, min(first + block, self.num_labels))
            positive = self._positive[part]
            tp = np.zeros((positive.shape[0], self.bins + 2), np.int64)
            fp = np.zeros_like(tp)
            np.cumsum(positive[:, ::-1], axis=1, out=tp[:, -2::-1])
            np.cumsum((self._total[part] - positive)[:, ::-1], axis=1, out=fp[:, -2::-1])
            yield part, tp, fp, tp[:, 0].copy()

    def best_thresholds(self) -> np.ndarray:
        """float32 [L]: per label, the grid threshold k/bins of maximal F1 on the data added.

        Among thresholds of maximal F1, the middle of the highest run of
        consecutive ones; 0.5 for a label without positives.
        """
        thresholds = np.full(self.num_labels, DEFAULT_THRESHOLD, np.float32)
        grid = np.arange(self.bins + 1)
        for part, tp, fp, support in self._blocks():
            tp, fp = tp[:, :-1], fp[:, :-1]
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 = 2.0 * tp / (tp + fp + support[:, None])
            f1[support == 0] = 0.0
            is_best = f1 >= f1.max(axis=1, keepdims=True) - 1e-12
            high = self.bins - np.argmax(is_best[:, ::-1], axis=1)
            # The run of best thresholds ending at `high` starts after the last other threshold below it.
            below = np.where(~is_best & (grid[None, :] < high[:, None]), grid[None, :], -1).max(axis=1)
            chosen = self.edges[(below + 1 + high) // 2]
            thresholds[part] = np.where(support > 0, chosen, thresholds[part])
        return thresholds

    def metrics(self, thresholds: np.ndarray | float) -> MultiLabelMetrics:
        """Figures at per-label thresholds (an image has label j when score_j >= thresholds[j]).

        Exact for thresholds on the grid k/bins (those from `best_thresholds`, and
        0.5); any other threshold acts as the next grid value above it.
        """
        thresholds = np.broadcast_to(np.asarray(thresholds, np.float32), (self.num_labels,)).copy()
        grid_index = np.searchsorted(self.edges, thresholds, side="left")  # first grid edge >= threshold
        support = np.zeros(self.num_labels, np.int64)
        predicted = np.zeros_like(support)
        true_positives = np.zeros_like(support)
        average_precision = np.full(self.num_labels, np.nan)
        for part, tp, fp, block_support in self._blocks():
            rows = np.arange(tp.shape[0])
            support[part] = block_support
            true_positives[part] = tp[rows, grid_index[part]]
            predicted[part] = true_positives[part] + fp[rows, grid_index[part]]
            positive = self._positive[part]
            with np.errstate(invalid="ignore", divide="ignore"):
                precision_curve = tp[:, :-1] / (tp[:, :-1] + fp[:, :-1])
                summed = np.where(positive > 0, positive * precision_curve, 0.0).sum(axis=1)
                average_precision[part] = np.where(block_support > 0, summed / block_support, np.nan)
        return _metrics_from_counts(rows=self.rows, thresholds=thresholds, support=support, predicted=predicted,
                                    true_positives=true_positives, average_precision=average_precision)


def _metrics_from_counts(*, rows: int, thresholds: np.ndarray, support: np.ndarray, predicted: np.ndarray,
                         true_positives: np.ndarray, average_precision: np.ndarray) -> MultiLabelMetrics:
    """Per-label, micro, macro and mAP figures from per-label counts (definitions in the module docstring)."""
    support = support.astype(np.int64)
    predicted = predicted.astype(np.int64)
    tp = true_positives.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2.0 * tp / (support + predicted), np.nan)
    tp_sum, predicted_sum, support_sum = int(tp.sum()), int(predicted.sum()), int(support.sum())
    defined = support + predicted > 0
    with_positives = support > 0
    return MultiLabelMetrics(
        rows=rows, thresholds=thresholds, support=support, predicted=predicted, true_positives=tp,
        precision=precision, recall=recall, f1=f1, average_precision=average_precision,
        micro_precision=tp_sum / predicted_sum if predicted_sum else 0.0,
        micro_recall=tp_sum / support_sum if support_sum else 0.0,
        micro_f1=2.0 * tp_sum / (predicted_sum + support_sum) if predicted_sum + support_sum else 0.0,
        macro_f1=float(f1[defined].mean()) if defined.any() else math.nan,
        mean_average_precision=float(average_precision[with_positives].mean()) if with_positives.any() else math.nan,
    )


@dataclass(frozen=True, eq=False)
class FrequencyBaseline:
    """Predict the same k most frequent training labels for every image: the floor a model must beat."""

    label_ids: np.ndarray  # most frequent first
    num_labels: int
    validation_micro_f1: float  # NaN when k was given without validation labels

    @property
    def k(self) -> int:
        """How many labels every image gets."""
        return int(self.label_ids.size)

    def scores(self, n_rows: int) -> np.ndarray:
        """Dense float32 [n_rows, L] scores: 1 for the chosen labels, 0 elsewhere (for small batches)."""
        out = np.zeros((n_rows, self.num_labels), np.float32)
        out[:, self.label_ids] = 1.0
        return out

    def metrics(self, truth: SparseLabels) -> MultiLabelMetrics:
        """Exact figures of this baseline on `truth` (thresholds 0.5; AP of a constant score = prevalence)."""
        n = len(truth)
        support = truth.positives_per_label()
        chosen = np.zeros(self.num_labels, bool)
        chosen[self.label_ids] = True
        with np.errstate(invalid="ignore", divide="ignore"):
            average_precision = np.where(support > 0, support / max(n, 1), np.nan)
        return _metrics_from_counts(rows=n, thresholds=np.full(self.num_labels, DEFAULT_THRESHOLD, np.float32),
                                    support=support, predicted=np.where(chosen, n, 0),
                                    true_positives=np.where(chosen, support, 0), average_precision=average_precision)


def frequency_baseline(*, train: SparseLabels, validation: SparseLabels | None = None,
                       k: int | None = None) -> FrequencyBaseline:
    """The 'most frequent labels' baseline: every image gets the k most frequent training labels.

    With `k` given, that k; otherwise the k in 1..(labels seen in training) that
    maximises micro F1 on `validation` (the smallest such k on ties). Ties in
    frequency go to the lower label id. Computed in O(L) from label counts.
    """
    if train.num_labels != (validation.num_labels if validation is not None else train.num_labels):
        raise ValueError("train and validation must share one label vocabulary")
    counts = train.positives_per_label()
    order = np.argsort(-counts, kind="stable")
    seen = int(np.count_nonzero(counts))
    truth = validation if validation is not None else train
    n = len(truth)
    positives = truth.positives_per_label()[order].astype(np.float64)
    total = float(positives.sum())
    candidates = np.arange(1, max(seen, 1) + 1)
    # Every image gets k labels: TP(k) = positives of the top k, FP + FN = k n + total - 2 TP.
    hits = np.cumsum(positives)[candidates - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        micro_f1 = np.where(candidates * n + total > 0, 2.0 * hits / (candidates * n + total), 0.0)
    if k is None:
        if validation is None:
            raise ValueError("give k, or validation labels to choose it on")
        k = int(candidates[np.argmax(micro_f1)])
    if not 1 <= k <= train.num_labels:
        raise ValueError(f"k must lie in [1, {train.num_labels}]")
    f1_at_k = float(micro_f1[k - 1]) if validation is not None and k <= candidates.size else math.nan
    return FrequencyBaseline(label_ids=order[:k].astype(np.int64), num_labels=train.num_labels,
                             validation_micro_f1=f1_at_k)


def _some(names: Sequence[str], most: int = 10) -> str:
    return ", ".join(repr(name) for name in names[:most]) + (", ..." if len(names) > most else "")


def multi_label_set(examples: Sequence[Any], *, source: str, first: bool = True) -> Any:
    """Examples with any number of labels each -> a LabelSet whose targets are SparseLabels per split.

    Labels are sorted; an image with no label is a negative for every label. A
    label with no training image is kept (it is never predicted) with a warning; so is one with no validation
    image, whose threshold cannot be chosen (0.5).
    """
    from retrain.labels import LabelSet
    from retrain.labels.split import SPLITS

    names = tuple(sorted({label for example in examples for label in example.labels}))
    if len(names) < 2:
        raise RetrainError(f"only {len(names)} label(s) in {source} have usable images; need at least 2")
    files = {split: tuple(e.path for e in examples if e.split == split) for split in SPLITS}
    targets = {split: SparseLabels.from_names([e.labels for e in examples if e.split == split], vocabulary=names)
               for split in SPLITS}
    if first:
        trained = targets["training"].positives_per_label() > 0
        missing = [names[i] for i in np.flatnonzero(~trained)]
        if missing:
            log.warning("%d label(s) have no training image and will never be predicted: %s", len(missing),
                        _some(missing))
        unchosen = [names[i] for i in np.flatnonzero(trained & (targets["validation"].positives_per_label() == 0))]
        if unchosen and files["validation"]:  # (with no validation split at all, calibrate says it for every label)
            log.warning("%d label(s) have no image in the validation split, so their threshold cannot be chosen "
                        "there and is %g: %s", len(unchosen), DEFAULT_THRESHOLD, _some(unchosen))
    return LabelSet(names=names, files=files, targets=targets, examples=tuple(examples), source=source,
                    multi_label=True)
