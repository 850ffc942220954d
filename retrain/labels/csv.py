"""A labels CSV (`--labels_csv`) -> rows of (image path, labels, split), checked line by line.

Pure Python (stdlib `csv`), no TensorFlow. The file needs a header naming the
columns `path` and `labels` (any order, any letter case; extra columns are
ignored) and may name a `split` column. `read_labels_csv` documents every rule;
in short, what cannot be used is skipped with a warning naming the line (at most
`MAX_WARNINGS_PER_KIND` of each kind, then one summary), and what makes the whole
file unusable is one `RetrainError` line naming `--labels_csv` and the line.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import re
import shlex
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from retrain import mounts
from retrain.errors import RetrainError, UsageError
from retrain.labels.folder import IMAGE_EXTENSIONS, count_words, label_problem, look_alikes
from retrain.names import seeming, shown
from retrain.labels.split import SPLITS, scant_training

if TYPE_CHECKING:
    from retrain.labels import LabelSet

log = logging.getLogger(__name__)

FLAG = "--labels_csv"
COLUMNS = ("path", "labels", "split")
# A 1 M-row CSV with a bad export could name the same problem on every line:
# name the first few, then count the rest in the closing summary.
MAX_WARNINGS_PER_KIND = 10
# A fast screen for folder.label_problem's rule (categories Cc, Zl, Zp): none of these
# survives a labels file with one label per line, or a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EXPECTED_HEADER = "path,labels[,split]"
_SEPARATORS = (",", ";", "\t")  # the first is the default
_SEPARATOR_NAMES = {",": ("a comma", "commas"), ";": ("a semicolon", "semicolons"), "\t": ("a tab", "tabs")}
# A split cell, case-folded -> the split: our names and the short ones other tools write (train/val/test folders).
_SPLIT_NAMES = {**{name: name for name in SPLITS}, "train": "training", "val": "validation", "valid": "validation",
                "test": "testing"}


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One usable CSV row.

    `line` is the physical line (1-based) where the row starts; `path` is the
    image file (`image_dir / written path`, or the absolute path as written);
    `labels` are the row's distinct labels, sorted (empty = negative for every
    label); `split` is 'training', 'validation', 'testing', or None when the
    hash decides; `name` is the written path, POSIX-normalized and relative to
    `image_dir` when it lies inside it: the key to hash for the split.
    """

    line: int
    path: Path
    labels: tuple[str, ...]
    split: str | None
    name: str = ""


@dataclass(frozen=True, slots=True)
class SkipCounts:
    """What `read_labels_csv` left out or corrected, by kind."""

    malformed: int = 0  # wrong number of fields, a field spanning lines, empty path, repeated header
    duplicates: int = 0  # the same path again with the same labels and split (dropped)
    conflicts: int = 0  # the same path again with other labels or split (dropped; the first row wins)
    missing: int = 0  # the path does not exist (or cannot be checked)
    not_images: int = 0  # not a regular file with an image extension
    bad_labels: int = 0  # a label holds a control character or line break (row dropped)
    blank_labels: int = 0  # whitespace-only labels between delimiters (label dropped, row kept)
    bad_splits: int = 0  # split value not training/validation/testing (row kept, the hash decides)
    blank_lines: int = 0  # empty lines (ignored)

    @property
    def rows(self) -> int:
        """Rows dropped (blank lines and rows kept with a correction are not counted)."""
        return (self.malformed + self.duplicates + self.conflicts + self.missing + self.not_images
                + self.bad_labels)

    def describe(self) -> str:
        """'missing 2, duplicates 1; kept with corrections: bad splits 3' for the non-zero kinds, or 'nothing'."""
        dropped = _nonzero(self, ("malformed", "duplicates", "conflicts", "missing", "not_images", "bad_labels"))
        corrected = _nonzero(self, ("blank_labels", "bad_splits"))
        text = dropped or "nothing"
        return text + (f"; kept with corrections: {corrected}" if corrected else "")


def _nonzero(counts: SkipCounts, names: tuple[str, ...]) -> str:
    """'missing 2, not images 1' for the named counters that are non-zero."""
    return ", ".join(f"{name.replace('_', ' ')} {getattr(counts, name)}" for name in names if getattr(counts, name))


@dataclass(frozen=True)
class LabelTable:
    """A read labels CSV: usable rows in file order, the sorted label vocabulary, what was skipped."""

    source: Path
    image_dir: Path
    rows: tuple[CsvRow, ...]
    labels: tuple[str, ...]
    skipped: SkipCounts = field(default_factory=SkipCounts)
    has_split_column: bool = False


def is_multi_label(table: LabelTable) -> bool:
    """True when any row holds more than one label (such a CSV trains a sigmoid head)."""
    return any(len(row.labels) > 1 for row in table.rows)


MAX_CSV_BYTES = 1 << 30  # parsing takes about six times the file's size in memory


def read_labels_csv(path: Path, *, image_dir: Path, delimiter: str = " ") -> LabelTable:
    """Read and check a labels CSV; return its usable rows and label vocabulary.

    Rules (warnings name `--labels_csv FILE line N`; errors are one line):

    * File: missing, a folder or unreadable -> `UsageError` (exit 2). UTF-8 with or
      without a BOM; any other byte sequence -> `RetrainError` naming the first bad
      line (UTF-16 is recognised and named). LF, CRLF and CR line ends all work.
    * Header: required, the first non-blank line. It must name `path` and `labels` (any
      order, letter case and surrounding spaces ignored) and may name `split`;
      other columns are ignored with one info log; a column named twice is an
      error. A first line that looks like data (a field ending in an image
      extension) is an error explaining the header; so is a header without
      `path` or `labels`, or an empty file.
    * Rows: parsed by the `csv` module (comma-separated, `"` quotes, a space after
      the comma is skipped; a header that names path and labels only when split on
      semicolons or tabs makes the whole file semicolon- or tab-separated). Blank
      lines and rows of empty fields are ignored, and so are empty fields after the
      last column (spreadsheets add them). A
      row with more or fewer fields than the header, an empty path, or a copy of
      the header line -> warning, skipped. A field over the csv module's limit
      (131,072 characters) -> error naming the line. A quoted field spanning several lines
      -> warning, skipped (a label cannot hold a line break: the labels file has
      one label per line); when such a field runs to the end of the file, the
      quote was never closed -> error.
    * Path: relative to `image_dir` or absolute; `..` is fine. Not ending in an
      image extension (jpg jpeg png gif bmp webp, any case), not existing, or not
      a regular file -> warning, skipped. Whether the file decodes is the image
      loader's business, as for folder trees.
    * Labels: the `labels` field split on `delimiter` (a space means any run of
      whitespace, as fastai and the Planet CSVs write them); each label is
      stripped; empty pieces (doubled or trailing delimiters) are ignored; a
      piece blank after stripping -> warning, that piece ignored, row kept; a
      label holding a control character or line break -> warning, row skipped;
      a label repeated within a row counts once. An empty field is a row with
      no label: a negative for every label.
    * Split: optional column; `training`/`validation`/`testing` (or `train`, `val`,
      `valid`, `test`) in any case; empty
      means the hash decides (None); anything else -> warning, the hash decides.
    * Duplicates (the same file named twice, compared after normalising the
      path): the same labels and split -> warning, the later row dropped; other
      labels or split -> warning naming both lines, the first row kept.
    * Whole file: no usable row, or fewer than 2 distinct labels over the usable
      rows -> error. Labels differing only by letter case stay distinct, with a
      warning.

    At most `MAX_WARNINGS_PER_KIND` warnings of each kind are logged, then one
    summary line with the counts (also in `LabelTable.skipped`).
    """
    if not delimiter:
        raise UsageError("--label_delimiter is empty; expected the character(s) between labels, e.g. ' ' or ';'")
    source = Path(path)
    image_dir = Path(image_dir)
    text = _decode(source, _read_source(source))
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, delimiter=_separator(text), skipinitialspace=True)
    notes = _Notes(source)
    try:
        header = _read_header(source, reader, notes)
        table = _read_rows(source, reader, stream, notes, header=header, image_dir=image_dir, delimiter=delimiter,
                           text=text)
    except csv.Error as error:
        # Only the field size limit trips the non-strict reader: a quote ran far past its line.
        raise RetrainError(f"{FLAG} {shown(source)} line {reader.line_num}: {error} "
                           f"(a quote that is never closed?)") from None
    notes.summarize(table)
    return table


def _separator(text: str) -> str:
    """The field separator: a comma, unless the header line names path and labels only when split on a semicolon
    or a tab (spreadsheets in many locales save "CSV" with semicolons)."""
    first = next((match.group() for match in re.finditer(r"[^\r\n]+", text) if match.group().strip()), "")
    for separator in _SEPARATORS:
        try:
            cells = next(csv.reader([first], delimiter=separator, skipinitialspace=True), [])
        except csv.Error:  # a line past the field size limit: the reader names it below
            break
        if {"path", "labels"} <= {cell.strip().casefold() for cell in cells}:
            return separator
    return _SEPARATORS[0]


def _read_source(source: Path) -> bytes:
    """The file's bytes, or a UsageError that names what is wrong with the path (also a stream that does not end,
    such as /dev/zero: at most MAX_CSV_BYTES are read; a pipe, as `<(...)` gives, is read like a file)."""
    try:
        with source.open("rb") as handle:
            data = handle.read(MAX_CSV_BYTES + 1)
        if len(data) > MAX_CSV_BYTES:
            raise UsageError(f"{FLAG} {shown(source)} holds more than {MAX_CSV_BYTES >> 30} GB; expected a CSV of "
                             "image paths and labels (split a larger table over several runs)")
        return data
    except FileNotFoundError:
        raise UsageError(f"{FLAG} {shown(source)} does not exist; expected a CSV file with a header "
                         f"{_EXPECTED_HEADER}") from None
    except IsADirectoryError:
        raise UsageError(f"{FLAG} {shown(source)} is a folder; expected a CSV file with a header "
                         f"{_EXPECTED_HEADER}") from None
    except OSError as error:
        raise UsageError(f"cannot read {FLAG} {shown(source)}: {error.strerror or error}") from None


def _decode(source: Path, data: bytes) -> str:
    """UTF-8 (a BOM is dropped) or a RetrainError naming the first line that is not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RetrainError(f"{FLAG} {shown(source)} line 1: the file is UTF-16; "
                           f"save it as UTF-8 (with or without a BOM)")
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # zip (.xlsx, .ods), OLE2 (.xls)
        raise RetrainError(f"{FLAG} {shown(source)} is a spreadsheet file, not a CSV; save it as CSV (UTF-8) "
                           "from your spreadsheet program")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = len(re.findall(rb"\r\n|\r|\n", data[:error.start])) + 1
        raise RetrainError(f"{FLAG} {shown(source)} line {line}: byte 0x{data[error.start]:02x} is not UTF-8; "
                           f"save the file as UTF-8 (with or without a BOM)") from None


class _Notes:
    """Per-kind counters and capped warnings for one CSV."""

    def __init__(self, source: Path) -> None:
        self.source = shown(source)
        self.folder = os.path.dirname(os.path.abspath(source))  # where missing relative paths may lie instead
        self.counts: Counter[str] = Counter()

    def beside_hint(self, image_dir: Path) -> str:
        """When missing rows' paths exist relative to the CSV's own folder, the --image_dir they need."""
        count = self.counts["beside_csv"]
        return (f"; {count} of the missing paths exist relative to the folder of {FLAG} instead: paths are relative "
                f"to --image_dir (now {shown(image_dir)}), so pass --image_dir {shlex.quote(shown(self.folder))}"
                if count else "")

    def warn(self, kind: str, line: int, message: str, *args: object) -> None:
        """Count one problem of `kind`; log it while that kind is under the cap."""
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_WARNINGS_PER_KIND:
            log.warning(f"{FLAG} %s line %d: {message}", self.source, line, *args)
        elif self.counts[kind] == MAX_WARNINGS_PER_KIND + 1:
            log.warning("%s %s line %d: more rows with this problem (%s); counted in the summary, not listed",
                        FLAG, self.source, line, kind.replace("_", " "))

    def skipped(self) -> SkipCounts:
        """The counters as a SkipCounts."""
        return SkipCounts(**{f.name: self.counts[f.name] for f in fields(SkipCounts)})

    def summarize(self, table: LabelTable) -> None:
        """One closing line: rows used and, when anything was left out, what."""
        skipped = table.skipped
        message = "%s %s: %d rows, %d labels%s"
        args = (FLAG, self.source, len(table.rows), len(table.labels),
                "" if not table.has_split_column else ", splits from its split column (empty: by hash)")
        if skipped.rows or skipped.blank_labels or skipped.bad_splits:
            log.warning(message + "; skipped %d row(s): %s%s", *args, skipped.rows, skipped.describe(),
                        self.beside_hint(table.image_dir))
        else:
            log.info(message, *args)


@dataclass(frozen=True)
class _Header:
    """The header line: where it is, its cells (casefolded) and the index of each known column."""

    line: int
    names: tuple[str, ...]
    columns: dict[str, int]
    separator: str = _SEPARATORS[0]


def _read_header(source: Path, reader: csv.reader, notes: _Notes) -> _Header:
    """The first non-blank line as a header; errors for a missing, incomplete or data-like header."""
    for row in reader:
        if any(cell.strip() for cell in row):
            break
        notes.counts["blank_lines"] += 1
    else:
        raise RetrainError(f"{FLAG} {shown(source)} is empty; expected a header line {_EXPECTED_HEADER} "
                           f"and one row per image")
    line = reader.line_num
    names = tuple(cell.strip().casefold() for cell in row)
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in COLUMNS:
            if name in columns:
                raise RetrainError(f"{FLAG} {shown(source)} line {line}: the header names column {name!r} twice; "
                                   f"expected each of {', '.join(COLUMNS)} at most once")
            columns[name] = index
    if "path" not in columns or "labels" not in columns:
        found = _shorten(",".join(cell.strip() for cell in row))
        if any(Path(cell.strip()).suffix.lower() in IMAGE_EXTENSIONS for cell in row):
            raise RetrainError(f"{FLAG} {shown(source)} line {line}: {found!r} looks like data, not a header; "
                               f"the first line must name the columns: {_EXPECTED_HEADER}")
        missing = " and ".join(repr(name) for name in ("path", "labels") if name not in columns)
        raise RetrainError(f"{FLAG} {shown(source)} line {line}: the header {found!r} has no {missing} column; "
                           f"expected a header {_EXPECTED_HEADER} (any order, extra columns ignored)")
    extra = [row[index].strip() for index, name in enumerate(names) if name not in COLUMNS]
    if extra:
        log.info("%s %s: ignoring column(s) %s", FLAG, shown(source), ", ".join(repr(name) for name in extra))
    return _Header(line=line, names=names, columns=columns, separator=reader.dialect.delimiter)


def _read_rows(source: Path, reader: csv.reader, stream: io.StringIO, notes: _Notes, *, header: _Header,
               image_dir: Path, delimiter: str, text: str) -> LabelTable:
    """Every data row checked and de-duplicated: see read_labels_csv for the rules."""
    rows: list[CsvRow] = []
    seen: dict[tuple[int, int], CsvRow] = {}  # by the file (device, inode)
    _real_folder.cache_clear()  # (links and mounts may have changed since an earlier read in this process)
    _same_folder.cache_clear()
    mounts.reset()
    interned: dict[str, str] = {}
    image_root = os.path.abspath(image_dir)
    end = reader.line_num
    while True:
        start = stream.tell()
        try:
            cells = next(reader)
        except StopIteration:
            break
        line, end = end + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            notes.counts["blank_lines"] += 1
            continue
        if stream.tell() == len(text) and '"' in text[start:] and _unclosed(text[start:]):
            where = f", line {end}" if end > line else ""
            raise RetrainError(f"{FLAG} {shown(source)} line {line}: a quote is never closed (the field runs "
                               f"to the end of the file{where}); close it or remove it")
        if end > line:
            notes.warn("malformed", line, "a quoted field spans lines %d-%d; a path or label cannot hold a line "
                       "break (is a quote not closed?); row skipped", line, end)
            continue
        parsed = _parse_row(notes, line=line, cells=cells, header=header, image_dir=image_dir,
                            image_root=image_root, delimiter=delimiter, interned=interned)
        if parsed is None:
            continue
        key, row = parsed
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = row
            rows.append(row)
        elif earlier.labels == row.labels and earlier.split == row.split:
            notes.warn("duplicates", line, "repeats line %d (the same %s, labels and split); dropped", earlier.line,
                       "path" if earlier.name == row.name else f"file, there {_display(earlier.name)}")
        else:  # the same file however spelt (a link, the other Unicode form): said when spelt otherwise (probe UU)
            named = _display(row.name) + ("" if earlier.name == row.name else
                                          f" (the file line {earlier.line} names as {_display(earlier.name)})")
            if earlier.labels == row.labels:  # said as such: the split alone differs
                notes.warn("conflicts", line, "names %s again with the same labels but %s where line %d has %s; "
                           "keeping line %d", named, _split(row), earlier.line, _split(earlier), earlier.line)
            else:
                notes.warn("conflicts", line, "names %s again, with %s where line %d has %s; keeping line %d",
                           named, _describe(row), earlier.line, _describe(earlier), earlier.line)
    skipped = notes.skipped()
    if not rows:
        raise RetrainError(f"{FLAG} {shown(source)} has no usable rows (skipped: {skipped.describe()}); expected rows "
                           f"'path,labels' naming image files relative to --image_dir {shown(image_dir)}"
                           + notes.beside_hint(image_dir))
    vocabulary = tuple(sorted({label for row in rows for label in row.labels}))
    if len(vocabulary) < 2:
        found = f"only the label {vocabulary[0]!r}" if vocabulary else "no labels"
        hint = (f" (for a {vocabulary[0]!r} / not {vocabulary[0]!r} model, label the other rows too, such as "
                f"'not_{vocabulary[0]}')" if vocabulary and not skipped.rows else "")
        left_out = f" (skipped: {skipped.describe()})" if skipped.rows else ""  # the cause, more likely
        raise RetrainError(f"{FLAG} {shown(source)} has {found} in its {len(rows)} usable rows{left_out}; "
                           f"need at least 2 distinct labels to train{hint}{notes.beside_hint(image_dir)}")
    _warn_case_collisions(source, vocabulary)
    return LabelTable(source=source, image_dir=image_dir, rows=tuple(rows), labels=vocabulary, skipped=skipped,
                      has_split_column="split" in header.columns)


def _parse_row(notes: _Notes, *, line: int, cells: list[str], header: _Header, image_dir: Path, image_root: str,
               delimiter: str, interned: dict[str, str]) -> tuple[tuple[int, int], CsvRow] | None:
    """(duplicate key: the file's device and inode, row) for a usable row; None, after a warning, for one that is
    not."""
    width = len(header.names)
    if len(cells) > width and not any(cell.strip() for cell in cells[width:]):
        cells = cells[:width]  # trailing empty fields, as spreadsheets write them
    if len(cells) != width:
        separator = header.separator
        other = next((s for s in _SEPARATORS if s != separator and s in cells[0]), None) if len(cells) == 1 else None
        hint = (f"quote a field that holds {_SEPARATOR_NAMES[separator][0]}" if len(cells) > width
                else f"the header separates its fields with {_SEPARATOR_NAMES[separator][1]}, this row seems to use "
                     f"{_SEPARATOR_NAMES[other][1]}" if other
                else f"write 'path{separator}' for an image with no label")
        notes.warn("malformed", line, "has %d field(s) where the header has %d (%s); row skipped",
                   len(cells), width, hint)
        return None
    if tuple(cell.strip().casefold() for cell in cells) == header.names:
        notes.warn("malformed", line, "repeats the header (two CSVs pasted together?); row skipped")
        return None
    written = cells[header.columns["path"]].strip()
    if not written:
        notes.warn("malformed", line, "the path is empty; row skipped")
        return None
    if os.path.splitext(written)[1].lower() not in IMAGE_EXTENSIONS:
        notes.warn("not_images", line, "%s is not an image file (expected %s, any case); row skipped",
                   _display(written), " ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS)))
        return None
    labels = _split_labels(notes, line=line, text=cells[header.columns["labels"]], delimiter=delimiter,
                           interned=interned)
    if labels is None:
        return None
    split = None
    if "split" in header.columns:
        value = cells[header.columns["split"]].strip()
        split = _SPLIT_NAMES.get(value.casefold())
        if split is None and value:
            notes.warn("bad_splits", line, "split %r is not training, validation or testing (or train, val, valid, "
                       "test; or empty); the hash decides this row's split", _shorten(value))
    checked, name = _locate(written, image_dir=image_dir, image_root=image_root)
    problem, key = _file_problem(checked)
    stored = _stored_form(written, image_dir) if problem is not None and problem[0] == "missing" else None
    if stored is not None:  # a name with accents, on disk as macOS writes them (NFD), typed composed (NFC)
        notes.warn("unicode_forms", line, "%s is on disk with its accents written another way (Unicode %s); "
                   "using that file", _display(written), stored[1])
        written = stored[0]  # the split still hashes the name as the CSV writes it (`name`)
        checked, _ = _locate(written, image_dir=image_dir, image_root=image_root)
        problem, key = _file_problem(checked)  # the file's: a repeat in the other form is a repeat
    if problem is not None:
        kind, reason = problem
        if kind == "missing" and "\\" in written:
            reason += " (write paths with / between folders)"
        if kind == "missing" and not os.path.isabs(written) and os.path.isfile(os.path.join(notes.folder, written)):
            notes.counts["beside_csv"] += 1
            reason += f" (it exists relative to the folder of {FLAG})"
        notes.warn(kind, line, "%s %s; row skipped", _display(written), reason)
        return None
    # A Path per kept row (a str went to stat, so the Path's cached string is not built).
    path = Path(written) if os.path.isabs(written) else image_dir / written
    return key, CsvRow(line=line, path=path, labels=labels, split=split, name=name)


def _split_labels(notes: _Notes, *, line: int, text: str, delimiter: str,
                  interned: dict[str, str]) -> tuple[str, ...] | None:
    """The field's distinct labels, sorted; None (after a warning) when a label cannot be used."""
    pieces = text.split() if delimiter == " " else text.split(delimiter)
    labels: set[str] = set()
    for piece in pieces:
        label = piece.strip()
        known = interned.get(label)
        if known is not None:
            labels.add(known)
            continue
        if not label:
            if piece:
                notes.warn("blank_labels", line, "a label is blank (only spaces between delimiters %r); ignored",
                           delimiter)
            continue
        if not seeming(label):  # (probe ZZU: a zero-width space was a label, its line in the labels file empty)
            notes.warn("blank_labels", line, "label %s prints as blank (only invisible or blank characters); ignored",
                       ascii(label))
            continue
        if _CONTROL.search(label):
            notes.warn("bad_labels", line, "label %r cannot be used: %s, and the labels file has one label per "
                       "line; row skipped", _shorten(label), label_problem(label))
            return None
        labels.add(interned.setdefault(label, label))
    return tuple(sorted(labels))


def _locate(written: str, *, image_dir: Path, image_root: str) -> tuple[str, str]:
    """(path to check, split-hash name) as strings, for a path as written in the CSV. The name of a file inside
    --image_dir is its path from there however the CSV spells it (probe FFF: `../photos/a.jpg` beside `a.jpg`,
    or a photo's real path under an --image_dir that is a link, hashed other names: photos changed splits; probe
    III: a bind mount's spelling, a `..` after a link): as written, normalised, when that is inside the tree and
    names the same folder (a class folder that is a link keeps its name, as the folder walk names it: probe
    KKK), else its folder's real path from the tree's; one outside keeps the path as written, normalised."""
    checked = written if os.path.isabs(written) else os.path.join(image_dir, written)
    folder, file = os.path.split(os.path.join(image_root, written))  # (`..` kept: the kernel follows links first)
    spelt = os.path.normpath(os.path.join(image_root, written))
    name = _within(spelt, image_root) if _same_folder(os.path.dirname(spelt), folder) else None
    if name is None:
        name = _within(os.path.join(_real_folder(folder), file), _real_folder(image_root))
    if name is None:  # Outside the tree: as written, unless that reads as inside it (probe LLL: a `..` after a
        # link out of the tree took the name of the tree's photo of that name): then its real path.
        real = os.path.join(_real_folder(folder), file)
        name = real if _within(spelt, image_root) is not None else os.path.normpath(written)
    return checked, name.replace(os.sep, "/")


def _within(path: str, root: str) -> str | None:
    """`path` from `root` when it lies inside it (by the spelling of both), else None."""
    return os.path.relpath(path, root) if path.startswith(root.rstrip(os.sep) + os.sep) else None


@functools.lru_cache(maxsize=4096)
def _same_folder(one: str, two: str) -> bool:
    """Whether two spellings name one existing folder (once per pair: a CSV's rows share few folders)."""
    try:
        return os.path.samefile(one, two)
    except (OSError, ValueError):
        return False


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    """The folder with links resolved and one spelling through bind mounts (`mounts.canonical`), once per folder
    (a CSV's rows share few folders)."""
    return mounts.canonical(os.path.realpath(folder))


def _stored_form(written: str, image_dir: Path) -> tuple[str, str] | None:
    """(path as the CSV would write it, form) when the missing file the CSV names as `written` exists with some
    of its names in the other Unicode form, NFD or NFC: each folder and the file is looked up as written, else in
    either form (a Mac's copy decomposes the names it copies, inside a folder made elsewhere, say)."""
    absolute = os.path.isabs(written)
    here, parts, forms = ("" if absolute else str(image_dir)), [], []
    for part in Path(written).parts:
        for form, name in (("", part), ("NFD", unicodedata.normalize("NFD", part)),
                           ("NFC", unicodedata.normalize("NFC", part))):
            if os.path.lexists(os.path.join(here, name)) or name in ("/", "..", "."):
                break
        else:
            return None
        here, parts = os.path.join(here, name), parts + [name]
        forms += [form] if form and name != part else []
    if not forms or not os.path.isfile(here):
        return None
    return os.path.join(*parts), forms[0]


def _file_problem(path: str) -> tuple[tuple[str, str] | None, tuple[int, int] | None]:
    """(None, the file's device and inode: the duplicate key) for an existing regular file, else ((skip kind,
    reason), None). The file, not its spelling: one photo named through a link to --image_dir and by its own
    path was trained under two labels (probe SS)."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ("missing", "does not exist"), None
    except OSError as error:
        return ("missing", f"cannot be checked ({error.strerror or error})"), None
    except ValueError:  # an embedded NUL
        return ("missing", "is not a valid path (it holds a NUL character)"), None
    if stat.S_ISDIR(found.st_mode):
        return ("not_images", "is a folder, not an image file"), None
    if not stat.S_ISREG(found.st_mode):
        return ("not_images", "is not a regular file (a pipe, socket or device)"), None
    return None, (found.st_dev, found.st_ino)


def _unclosed(rest: str) -> bool:
    """True when the text from a record's start ends inside a quoted field."""
    try:
        for _ in csv.reader(io.StringIO(rest, newline=""), skipinitialspace=True, strict=True):
            pass
    except csv.Error as error:
        return "end of data" in str(error)
    return False


def _describe(row: CsvRow) -> str:
    """"labels 'a' 'b c', split training" for a conflict warning (each label quoted: labels may hold spaces)."""
    described = f"labels {' '.join(map(repr, row.labels))}" if row.labels else "no labels"
    return described + (f", split {row.split}" if row.split else "")


def _split(row: CsvRow) -> str:
    """"split testing", or "no split" (the row's split is then worked out from its path)."""
    return f"split {row.split}" if row.split else "no split"


def _display(text: str) -> str:
    """User text for a log line: shortened, and quoted with escapes when it holds control characters."""
    return _shorten(repr(text) if _CONTROL.search(text) else text)


def _shorten(text: str, limit: int = 80) -> str:
    """At most `limit` characters, for quoting user text in one log line."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _warn_case_collisions(source: Path, labels: tuple[str, ...]) -> None:
    """Labels that look alike stay separate; say so, since that surprises people."""
    for names, count, how in look_alikes(labels):
        log.warning("%s %s: labels %s differ only %s; they are trained as %s labels", FLAG, shown(source), names, how,
                    count_words(count))


@dataclass(frozen=True)
class CsvSource:
    """A labels CSV as a label source: each row's image, its labels, and its split (the column, or the hash).

    With rows that hold several labels, or `multi_label`, the set is multi-label
    (a sigmoid per label); otherwise every row needs exactly one label and the
    CSV is just another way to give classes.
    """

    path: Path
    image_dir: Path
    delimiter: str
    validation_percentage: float
    testing_percentage: float
    multi_label: bool = False
    tuned_split: tuple[tuple[str, float], ...] = ()  # the split flags the user set: (('--testing_percentage', 30),)

    def scan(self) -> "LabelSet":
        from retrain.labels import Example, build
        from retrain.labels.split import split_of

        table = read_labels_csv(self.path, image_dir=self.image_dir, delimiter=self.delimiter)
        if self.tuned_split and all(row.split is not None for row in table.rows):
            flag, value = self.tuned_split[0]
            raise UsageError(f"{flag} {value:g} has no effect: every row of {FLAG} {shown(self.path)} names its "
                             f"split; drop {flag} or empty the split cells the percentages should decide")
        multi = self.multi_label or is_multi_label(table)
        if multi and not self.multi_label:
            row = next(row for row in table.rows if len(row.labels) > 1)
            log.warning("%s %s: line %d holds %d labels (%s), so this run trains a multi-label model (a sigmoid "
                        "per label); pass --multi_label to confirm, or another --label_delimiter (now %r) if your "
                        "labels hold it", FLAG, self.path, row.line, len(row.labels),
                        ", ".join(repr(label) for label in row.labels[:4]), self.delimiter)
        examples, unlabeled = [], []
        for row in table.rows:
            if not multi and not row.labels:
                unlabeled.append(row.line)
                continue
            split = row.split or split_of(row.name, validation_percentage=self.validation_percentage,
                                          testing_percentage=self.testing_percentage)
            examples.append(Example(path=row.path, labels=row.labels, split=split, split_given=row.split is not None))
        if unlabeled:
            lines = ", ".join(map(str, unlabeled[:MAX_WARNINGS_PER_KIND]))
            log.warning("%s %s: skipping %d row(s) with no label (line %s%s): every image of a single-label run "
                        "needs a class; pass --multi_label to train with images that have none", FLAG, self.path,
                        len(unlabeled), lines, ", ..." if len(unlabeled) > MAX_WARNINGS_PER_KIND else "")
        expected = () if table.has_split_column else tuple(
            name for name, percent in (("validation", self.validation_percentage),
                                       ("testing", self.testing_percentage)) if percent > 0)
        scant = "" if table.has_split_column else scant_training(validation_percentage=self.validation_percentage,
                                                                  testing_percentage=self.testing_percentage)
        return build(examples, source=f"{FLAG} {self.path}", multi_label=multi, expected_splits=expected, scant=scant)
