"""read_labels_csv on real files: header, encodings, line ends, quotes, duplicates, paths, labels, splits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from retrain.errors import RetrainError, UsageError
from retrain.labels.csv import MAX_WARNINGS_PER_KIND, CsvRow, is_multi_label, read_labels_csv
from tests.conftest import unreadable

LOGGER = "retrain.labels.csv"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Image files only need to exist here: the CSV reader never decodes them."""
    root = tmp_path / "images"
    for name in ["a.jpg", "b.jpg", "c.png", "d.JPEG", "sub/e.webp", "sub/f.bmp", "g.gif", "café.jpg", "notes.txt",
                 "with, comma.jpg"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\xff\xd8 not decoded here")
    (root / "folder.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    return root


def write(tmp_path: Path, content: str | bytes, name: str = "labels.csv") -> Path:
    """The CSV exactly as given: str is UTF-8 encoded with no newline translation."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def by_name(rows: tuple[CsvRow, ...]) -> dict[str, CsvRow]:
    return {row.name: row for row in rows}


def test_basic_rows_in_file_order_with_sorted_vocabulary(tmp_path: Path, image_dir: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    csv_path = write(tmp_path, "path,labels\nb.jpg,dog cat\na.jpg,cat\nsub/e.webp,bird\nc.png,\n")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        table = read_labels_csv(csv_path, image_dir=image_dir)
    assert [row.line for row in table.rows] == [2, 3, 4, 5]
    assert table.rows[0] == CsvRow(line=2, path=image_dir / "b.jpg", labels=("cat", "dog"), split=None, name="b.jpg")
    assert [row.labels for row in table.rows] == [("cat", "dog"), ("cat",), ("bird",), ()]
    assert table.rows[2].path == image_dir / "sub" / "e.webp" and table.rows[2].name == "sub/e.webp"
    assert table.labels == ("bird", "cat", "dog")
    assert table.skipped.rows == 0 and not table.has_split_column
    assert is_multi_label(table)
    assert warnings_of(caplog) == []
    assert any("4 rows, 3 labels" in r.getMessage() for r in caplog.records)


def test_single_label_csv_is_not_multi_label(tmp_path: Path, image_dir: Path) -> None:
    table = read_labels_csv(write(tmp_path, "path,labels\na.jpg,cat\nb.jpg,dog\nc.png,\n"), image_dir=image_dir)
    assert not is_multi_label(table)
    assert table.labels == ("cat", "dog")


def test_header_any_order_and_case_extra_columns_logged_once(tmp_path: Path, image_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    csv_path = write(tmp_path, "id, LABELS ,Notes,Path\n1,cat,x,a.jpg\n2,dog,y,b.jpg\n")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        table = read_labels_csv(csv_path, image_dir=image_dir)
    assert [(row.name, row.labels) for row in table.rows] == [("a.jpg", ("cat",)), ("b.jpg", ("dog",))]
    ignored = [r.getMessage() for r in caplog.records if "ignoring column" in r.getMessage()]
    assert len(ignored) == 1 and "'id'" in ignored[0] and "'Notes'" in ignored[0]


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbfpath,labels\r\na.jpg,cat\r\n\r\nb.jpg,dog\r\n",  # BOM + CRLF (Excel)
    b"path,labels\ra.jpg,cat\r\rb.jpg,dog\r",  # old Mac CR
    b"path,labels\na.jpg,cat\n\nb.jpg,dog",  # LF, no final newline
])
def test_bom_and_line_endings(tmp_path: Path, image_dir: Path, content: bytes) -> None:
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.line, row.name, row.labels) for row in table.rows] == [(2, "a.jpg", ("cat",)), (4, "b.jpg", ("dog",))]
    assert table.skipped.blank_lines == 1


def test_quoted_fields(tmp_path: Path, image_dir: Path) -> None:
    content = 'path,labels\n"with, comma.jpg","cat dog"\na.jpg, "cat"\n'
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.name, row.labels) for row in table.rows] == [("with, comma.jpg", ("cat", "dog")), ("a.jpg", ("cat",))]
    # With a comma as the label delimiter, the quoted field stays one CSV field and is then split.
    comma = read_labels_csv(write(tmp_path, 'path,labels\na.jpg,"sea lion,cat"\nb.jpg,dog\n', "comma.csv"),
                            image_dir=image_dir, delimiter=",")
    assert comma.rows[0].labels == ("cat", "sea lion")


def test_label_with_a_newline_is_refused_and_line_numbers_stay_physical(tmp_path: Path, image_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    content = 'path,labels\na.jpg,"cat\ndog"\nb.jpg,dog\nc.png,"x\r\ny"\nd.JPEG,cat\n'
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.line, row.name) for row in table.rows] == [(4, "b.jpg"), (7, "d.JPEG")]
    messages = warnings_of(caplog)
    assert any("line 2:" in m and "lines 2-3" in m and "line break" in m for m in messages)
    assert any("line 5:" in m and "lines 5-6" in m for m in messages)
    assert table.skipped.malformed == 2


def test_unclosed_quote_is_one_error_naming_its_line(tmp_path: Path, image_dir: Path) -> None:
    content = 'path,labels\na.jpg,cat\nb.jpg,"dog\nc.png,cat\nd.JPEG,dog\n'
    with pytest.raises(RetrainError, match=r"--labels_csv .* line 3: a quote is never closed") as error:
        read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("end", ["\n", "", "\r\n"])
def test_unclosed_quote_on_the_last_line_is_the_same_error(tmp_path: Path, image_dir: Path, end: str) -> None:
    """Opened on the last line, the quoted field holds no line break: still never closed, not a short row."""
    content = f'path,labels\na.jpg,cat\nb.jpg,dog\n"c.png,cat{end}'
    with pytest.raises(RetrainError, match=r"line 4: a quote is never closed \(the field runs to the end of the "
                                           r"file\); close it or remove it$"):
        read_labels_csv(write(tmp_path, content), image_dir=image_dir)


def test_a_huge_field_is_one_error_naming_its_line(tmp_path: Path, image_dir: Path) -> None:
    content = 'path,labels\na.jpg,cat\nb.jpg,"' + "x" * 200_000 + '"\n'
    with pytest.raises(RetrainError, match=r"line 3: field larger than field limit"):
        read_labels_csv(write(tmp_path, content), image_dir=image_dir)


def test_wrong_field_counts_blank_lines_and_trailing_empty_fields(tmp_path: Path, image_dir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\n\na.jpg\nb.jpg,cat,dog\nc.png,cat,\n ,\nd.JPEG,dog,,\n,cat\n\n\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.line, row.name) for row in table.rows] == [(5, "c.png"), (7, "d.JPEG")]
    messages = warnings_of(caplog)
    assert any("line 3: has 1 field(s) where the header has 2" in m and "'path,'" in m for m in messages)
    assert any("line 4: has 3 field(s)" in m and "quote" in m for m in messages)
    assert any("line 8: the path is empty" in m for m in messages)
    assert table.skipped.malformed == 3 and table.skipped.blank_lines == 4


def test_duplicates_identical_dropped_conflicting_keep_first(tmp_path: Path, image_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    content = (f"path,labels\na.jpg,cat dog\nb.jpg,dog\n./a.jpg,dog cat\nb.jpg,cat\n{image_dir / 'a.jpg'},cat\n"
               "sub/../b.jpg,dog\n")
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.line, row.name, row.labels) for row in table.rows] == [(2, "a.jpg", ("cat", "dog")),
                                                                        (3, "b.jpg", ("dog",))]
    messages = warnings_of(caplog)
    assert any("line 4: repeats line 2" in m for m in messages)
    assert any("line 5: names b.jpg again, with labels 'cat' where line 3 has labels 'dog'; keeping line 3" in m
               for m in messages)
    assert any("line 6: names a.jpg again" in m and "keeping line 2" in m for m in messages)
    assert any("line 7: repeats line 3" in m for m in messages)
    assert (table.skipped.duplicates, table.skipped.conflicts) == (2, 2)


def test_a_conflict_quotes_each_label_as_labels_may_hold_spaces(tmp_path: Path, image_dir: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\na.jpg,daisy|yellow centre\na.jpg,daisy yellow|centre\n"
    read_labels_csv(write(tmp_path, content), image_dir=image_dir, delimiter="|")
    assert any("with labels 'centre' 'daisy yellow' where line 2 has labels 'daisy' 'yellow centre'" in m
               for m in warnings_of(caplog))


def test_a_duplicate_with_another_split_is_a_conflict(tmp_path: Path, image_dir: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels,split\na.jpg,cat,training\nb.jpg,dog,\na.jpg,cat,testing\nb.jpg,dog,\nb.jpg,dog,testing\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.line, row.split) for row in table.rows] == [(2, "training"), (3, None)]
    messages = warnings_of(caplog)
    assert any("line 4: names a.jpg again with the same labels but split testing where line 2 has split training; "
               "keeping line 2" in m for m in messages)
    assert any("line 6: names b.jpg again with the same labels but split testing where line 3 has no split; "
               "keeping line 3" in m for m in messages)
    assert any("line 5: repeats line 3" in m for m in messages)


def test_unknown_paths_folders_and_non_images_are_skipped(tmp_path: Path, image_dir: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    content = ("path,labels\nmissing.jpg,cat\nnotes.txt,cat\nfolder.jpg,cat\nsub\\e.webp,cat\nd.JPEG,cat\n"
               "sub/f.bmp,dog\n../outside.jpg,dog\n" f"{tmp_path / 'outside.jpg'},cat\n../nowhere.jpg,dog\n")
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    rows = by_name(table.rows)
    assert sorted(rows) == ["../outside.jpg", "d.JPEG", "sub/f.bmp"]
    assert rows["../outside.jpg"].path.resolve() == (tmp_path / "outside.jpg").resolve()
    messages = warnings_of(caplog)
    assert any("line 2: missing.jpg does not exist" in m for m in messages)
    assert any("line 3: notes.txt is not an image file" in m and "webp" in m for m in messages)
    assert any("line 4: folder.jpg is a folder" in m for m in messages)
    assert any("line 5:" in m and "with / between folders" in m for m in messages)
    assert any("line 9: names" in m and "again" in m for m in messages)  # the absolute spelling of line 8's file
    assert any("line 10: ../nowhere.jpg does not exist" in m for m in messages)
    assert (table.skipped.missing, table.skipped.not_images, table.skipped.conflicts) == (3, 2, 1)


def test_absolute_paths_inside_image_dir_hash_like_relative_ones(tmp_path: Path, image_dir: Path) -> None:
    table = read_labels_csv(write(tmp_path, f"path,labels\n{image_dir / 'sub' / 'e.webp'},cat\nb.jpg,dog\n"),
                            image_dir=image_dir)
    assert table.rows[0].path == image_dir / "sub" / "e.webp" and table.rows[0].name == "sub/e.webp"


def test_blank_labels_and_delimiters(tmp_path: Path, image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    spaced = read_labels_csv(write(tmp_path, "path,labels\na.jpg,  cat   dog \t bird \nb.jpg,cat cat\n"),
                             image_dir=image_dir)
    assert [row.labels for row in spaced.rows] == [("bird", "cat", "dog"), ("cat",)]
    assert warnings_of(caplog) == []
    content = "path,labels\na.jpg,cat;;dog;\nb.jpg,sea lion; ;cat\nc.png,;\n"
    table = read_labels_csv(write(tmp_path, content, "semi.csv"), image_dir=image_dir, delimiter=";")
    assert [row.labels for row in table.rows] == [("cat", "dog"), ("cat", "sea lion"), ()]
    messages = warnings_of(caplog)
    assert [m for m in messages if " line " in m] == [m for m in messages if "line 3: a label is blank" in m]
    assert len(messages) == 2 and "kept with corrections: blank labels 1" in messages[-1]
    assert table.skipped.blank_labels == 1 and table.skipped.rows == 0


def test_labels_that_print_as_blank_are_ignored_as_blank_ones(tmp_path: Path, image_dir: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Probe ZZU: a label of a zero-width space (or a blank braille cell) was trained, its row in the table and its
    line in the labels file empty to the eye, where a class folder of that name is refused."""
    content = "path,labels\na.jpg,cat \u200b\nb.jpg,\u2800 dog\nc.png,dog\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert table.labels == ("cat", "dog") and [row.labels for row in table.rows] == [("cat",), ("dog",), ("dog",)]
    messages = [m for m in warnings_of(caplog) if "prints as blank" in m]
    assert len(messages) == 2 and "line 2: label '\\u200b' prints as blank (only invisible or blank characters); " \
        "ignored" in messages[0], messages
    assert table.skipped.blank_labels == 2


def test_labels_with_control_characters_skip_the_row(tmp_path: Path, image_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\na.jpg,cat\nb.jpg,do\x07g\nc.png,dog\nd.JPEG,dog;\x00\ng.gif,cat;\x1b[31mred\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir, delimiter=";")
    assert [row.name for row in table.rows] == ["a.jpg", "c.png"]
    messages = warnings_of(caplog)
    assert any("line 3: label 'do\\x07g' cannot be used: it holds the control or line-break character '\\x07'" in m
               for m in messages)
    assert any("line 5: label '\\x00'" in m and "one label per line" in m for m in messages)
    assert any("line 6:" in m and "'\\x1b'" in m for m in messages)
    assert table.skipped.bad_labels == 3


def test_unicode_line_separator_in_a_label(tmp_path: Path, image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\na.jpg,cat\nb.jpg,dog\u2028cat\nc.png,dog\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir, delimiter=";")
    assert [row.name for row in table.rows] == ["a.jpg", "c.png"]
    assert any("line 3:" in m and "line-break character '\\u2028'" in m for m in warnings_of(caplog))


def test_unicode_labels_and_paths(tmp_path: Path, image_dir: Path) -> None:
    table = read_labels_csv(write(tmp_path, "path,labels\ncafé.jpg,fleur été\na.jpg,chat\n"), image_dir=image_dir)
    assert table.rows[0].path == image_dir / "café.jpg"
    assert table.labels == ("chat", "fleur", "été")


def test_a_name_on_disk_in_the_other_unicode_form_is_that_file(tmp_path: Path, image_dir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Photos copied from a Mac keep their accents decomposed (NFD); a CSV typed elsewhere composes them (NFC):
    each row was 'does not exist', naming what looks like the file on disk (probe PP). It is that file."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "crème.jpg")
    (image_dir / "sub" / decomposed).write_bytes(b"x")
    table = read_labels_csv(write(tmp_path, "path,labels\nsub/crème.jpg,dessert\na.jpg,chat\n"), image_dir=image_dir)
    assert table.rows[0].path == image_dir / "sub" / decomposed and table.rows[0].name == "sub/crème.jpg"
    assert warnings_of(caplog) == [f"--labels_csv {tmp_path / 'labels.csv'} line 2: sub/crème.jpg is on disk with "
                                   "its accents written another way (Unicode NFD); using that file"]
    # The same file in both forms is one file: a conflict, not two photos with two labels (probe QQ); a folder
    # so named (a Mac decomposes every name) too.
    (image_dir / unicodedata.normalize("NFD", "été")).mkdir()
    (image_dir / unicodedata.normalize("NFD", "été") / "x.jpg").write_bytes(b"x")
    caplog.clear()
    table = read_labels_csv(write(tmp_path, f"path,labels\nsub/crème.jpg,dessert\nsub/{decomposed},chat\n"
                                            "été/x.jpg,chat\n"), image_dir=image_dir)
    assert [row.path for row in table.rows] == [image_dir / "sub" / decomposed,
                                                image_dir / unicodedata.normalize("NFD", "été") / "x.jpg"]
    assert table.skipped.conflicts == 1
    # Forms mixed along one path: a folder made here (NFC) holding a Mac's copy (NFD), and the reverse (probe RR).
    nfd = unicodedata.normalize("NFD", "café")
    (image_dir / "Fotos_été" / nfd).mkdir(parents=True)
    (image_dir / "Fotos_été" / nfd / unicodedata.normalize("NFD", "crème0.jpg")).write_bytes(b"x")
    (image_dir / nfd / "noël0.jpg").parent.mkdir()
    (image_dir / nfd / "noël0.jpg").write_bytes(b"x")
    table = read_labels_csv(write(tmp_path, "path,labels\nFotos_été/café/crème0.jpg,a\n./café/noël0.jpg,b\n"),
                            image_dir=image_dir)
    assert [row.path for row in table.rows] == [
        image_dir / "Fotos_été" / nfd / unicodedata.normalize("NFD", "crème0.jpg"), image_dir / nfd / "noël0.jpg"]


def test_paths_relative_to_the_csvs_own_folder_are_said(tmp_path: Path, image_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Rows written relative to the CSV's folder, not --image_dir: the error blamed the one usable row's single
    label, and said nothing of the rows skipped (probe PP)."""
    table = write(tmp_path, f"path,labels\nimages/a.jpg,cat\nimages/b.jpg,dog\n{image_dir / 'c.png'},cat\n")
    with pytest.raises(RetrainError) as error:
        read_labels_csv(table, image_dir=image_dir)
    assert str(error.value) == (
        f"--labels_csv {table} has only the label 'cat' in its 1 usable rows (skipped: missing 2); need at least 2 "
        f"distinct labels to train; 2 of the missing paths exist relative to the folder of --labels_csv instead: "
        f"paths are relative to --image_dir (now {image_dir}), so pass --image_dir {tmp_path}")
    assert any("line 2: images/a.jpg does not exist (it exists relative to the folder of --labels_csv)" in message
               for message in warnings_of(caplog))


def test_split_column(tmp_path: Path, image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    content = ("path,labels,split\na.jpg,cat,training\nb.jpg,dog, Validation \nc.png,cat,TESTING\nd.JPEG,dog,\n"
               "g.gif,cat,holdout\nsub/e.webp,cat,Train\nsub/f.bmp,dog,val\ncafé.jpg,cat,valid\n"
               "\"with, comma.jpg\",dog,TEST\n")
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [row.split for row in table.rows] == ["training", "validation", "testing", None, None,
                                                 "training", "validation", "validation", "testing"]
    assert table.has_split_column
    messages = warnings_of(caplog)
    assert len(messages) == 2  # the bad split, then the closing summary
    assert "line 6: split 'holdout' is not training, validation or testing (or train, val, valid, test" in messages[0]
    assert table.skipped.bad_splits == 1 and table.skipped.rows == 0


@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_files_as_spreadsheets_save_them(tmp_path: Path, image_dir: Path,
                                                                     separator: str) -> None:
    """Spreadsheets in many locales save "CSV" with semicolons; the header line tells which separator the file uses."""
    content = (f"\ufeff Path{separator}Labels{separator}split\r\n"
               f"a.jpg{separator}cat dog{separator}train\r\n"
               f"\"with, comma.jpg\"{separator}dog{separator}\r\n"
               f"c.png{separator}cat,bird{separator}test\r\n")
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert [(row.name, row.labels, row.split) for row in table.rows] == [
        ("a.jpg", ("cat", "dog"), "training"), ("with, comma.jpg", ("dog",), None), ("c.png", ("cat,bird",), "testing")]


@pytest.mark.parametrize("header, row, expected", [
    ("path;labels", "a.jpg,cat", "the header separates its fields with semicolons, this row seems to use commas"),
    ("path,labels", "a.jpg;cat", "the header separates its fields with commas, this row seems to use semicolons"),
    ("path;labels", "a.jpg", "write 'path;' for an image with no label"),
    ("path;labels", "a.jpg;cat;dog", "quote a field that holds a semicolon"),
])
def test_a_row_whose_field_count_is_wrong_gets_a_hint_in_the_header_separator(
        tmp_path: Path, image_dir: Path, caplog: pytest.LogCaptureFixture, header: str, row: str, expected: str) -> None:
    """A header saved with semicolons above rows typed with commas (or the reverse) is said so, not taken for
    rows that lack a label."""
    separator = header[4]
    read_labels_csv(write(tmp_path, f"{header}\n{row}\nb.jpg{separator}cat\nc.png{separator}dog\n"),
                    image_dir=image_dir)
    assert any("line 2: has" in m and expected in m for m in warnings_of(caplog)), warnings_of(caplog)


def test_a_comma_header_keeps_semicolons_inside_its_fields(tmp_path: Path, image_dir: Path) -> None:
    table = read_labels_csv(write(tmp_path, "path,labels\na.jpg,cat;dog\nb.jpg,cat\n"), image_dir=image_dir,
                            delimiter=";")
    assert [row.labels for row in table.rows] == [("cat", "dog"), ("cat",)]


@pytest.mark.parametrize("content, expected", [
    ("a.jpg,cat\nb.jpg,dog\n", r"line 1: 'a.jpg,cat' looks like data, not a header; .*path,labels\[,split\]"),
    ("image_name,tags\na.jpg,cat\n", r"line 1: the header 'image_name,tags' has no 'path' and 'labels' column"),
    ("path,tags\na.jpg,cat\n", r"line 1: the header 'path,tags' has no 'labels' column"),
    ("\n\npath,labels,Path\n", r"line 3: the header names column 'path' twice"),
    ("", r"is empty; expected a header line path,labels"),
    ("\r\n \r\n", r"is empty"),
    ("path,labels\n", r"has no usable rows"),
    ("path,labels\nmissing.jpg,cat\nnotes.txt,dog\n", r"has no usable rows \(skipped: missing 1, not images 1\)"),
    ("path,labels\na.jpg,cat\nb.jpg,cat\n", r"has only the label 'cat' in its 2 usable rows; need at least 2 "
                                           r"distinct labels to train \(for a 'cat' / not 'cat' model, label the "
                                           r"other rows too, such as 'not_cat'\)$"),
    ("path,labels\na.jpg,\nb.jpg,\n", r"has no labels in its 2 usable rows"),
])
def test_whole_file_errors_are_one_line(tmp_path: Path, image_dir: Path, content: str, expected: str) -> None:
    with pytest.raises(RetrainError, match=expected) as error:
        read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert str(error.value).startswith("--labels_csv ") and "\n" not in str(error.value)
    assert error.value.exit_code == 1


def test_non_utf8_bytes_are_one_error_naming_the_line(tmp_path: Path, image_dir: Path) -> None:
    latin1 = "path,labels\r\na.jpg,cat\r\ncafé.jpg,dog\r\n".encode("latin-1")
    with pytest.raises(RetrainError, match=r"line 3: byte 0xe9 is not UTF-8; save the file as UTF-8"):
        read_labels_csv(write(tmp_path, latin1), image_dir=image_dir)
    utf16 = "path,labels\na.jpg,cat\n".encode("utf-16")
    with pytest.raises(RetrainError, match=r"line 1: the file is UTF-16"):
        read_labels_csv(write(tmp_path, utf16, "u16.csv"), image_dir=image_dir)


def test_nul_in_a_path_is_a_skipped_row_not_a_crash(tmp_path: Path, image_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    table = read_labels_csv(write(tmp_path, "path,labels\na\x00b.jpg,cat\na.jpg,cat\nb.jpg,dog\n"), image_dir=image_dir)
    assert [row.name for row in table.rows] == ["a.jpg", "b.jpg"]
    assert any("line 2: 'a\\x00b.jpg' is not a valid path (it holds a NUL character)" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("make", ["missing", "folder", "through_a_file", "no_permission"])
def test_missing_or_unreadable_csv_is_a_usage_error(tmp_path: Path, image_dir: Path, make: str) -> None:
    target = tmp_path / "labels.csv"
    if make == "folder":
        target.mkdir()
    elif make == "through_a_file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "labels.csv"
    elif make == "no_permission":
        target = unreadable(target, b"path,labels\na.jpg,cat\n")
    with pytest.raises(UsageError, match=r"--labels_csv .*labels.csv") as error:
        read_labels_csv(target, image_dir=image_dir)
    assert error.value.exit_code == 2 and "\n" not in str(error.value)



def test_empty_delimiter_is_a_usage_error(tmp_path: Path, image_dir: Path) -> None:
    with pytest.raises(UsageError, match="--label_delimiter"):
        read_labels_csv(write(tmp_path, "path,labels\na.jpg,cat\n"), image_dir=image_dir, delimiter="")


def test_repeated_header_and_case_collisions(tmp_path: Path, image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\na.jpg,Cat\npath,labels\nb.jpg,cat\n"
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert table.labels == ("Cat", "cat")
    messages = warnings_of(caplog)
    assert any("line 3: repeats the header" in m for m in messages)
    assert any("'Cat' and 'cat' differ only by letter case" in m for m in messages)


def test_labels_that_print_alike_are_said_to_differ_only_invisibly(tmp_path: Path, image_dir: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`café` typed on a Mac (e and a combining accent) and on Windows, a soft hyphen or a zero-width space pasted
    in, a ligature: two labels each that print the same (`label-image` showed `tulips 0.30` and `tulips 0.19`).
    The warning escapes them, so the two can be told apart; only a difference of case is called one."""
    decomposed = "cafe\u0301"
    content = (f"path,labels\na.jpg,caf\u00e9\nb.jpg,{decomposed}\nc.png,tulips\u00ad\nd.JPEG,tulips\n"
               "sub/e.webp,\u200brose\nsub/f.bmp,rose\ng.gif,fire\ncaf\u00e9.jpg,\ufb01re\n")
    table = read_labels_csv(write(tmp_path, content), image_dir=image_dir)
    assert len(table.labels) == 8
    messages = warnings_of(caplog)
    pairs = (("caf\u00e9", decomposed), ("tulips", "tulips\u00ad"), ("rose", "\u200brose"), ("fire", "\ufb01re"))
    for first, second in pairs:
        assert any(f"labels {a} and {b} differ only in spaces, Unicode form or invisible characters" in m
                   for m in messages for a, b in ((ascii(first), ascii(second)), (ascii(second), ascii(first)))), \
            (first, messages)
    assert "'caf\\xe9'" in "".join(messages) and "by letter case" not in "".join(messages)


def test_warnings_are_capped_per_kind_then_counted(tmp_path: Path, image_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    missing = "".join(f"gone_{i}.jpg,cat\n" for i in range(25))
    table = read_labels_csv(write(tmp_path, "path,labels\na.jpg,cat\nb.jpg,dog\n" + missing), image_dir=image_dir)
    messages = warnings_of(caplog)
    named = [m for m in messages if "does not exist" in m]
    assert len(named) == MAX_WARNINGS_PER_KIND
    assert sum("more rows with this problem (missing)" in m for m in messages) == 1
    assert table.skipped.missing == 25
    assert "2 rows, 2 labels; skipped 25 row(s): missing 25" in messages[-1]


def test_a_spreadsheet_file_given_as_the_csv_says_so(tmp_path: Path, image_dir: Path) -> None:
    import zipfile

    workbook = tmp_path / "labels.xlsx"
    with zipfile.ZipFile(workbook, "w") as archive:  # an .xlsx is a zip of XML files
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(RetrainError, match=r"labels\.xlsx is a spreadsheet file, not a CSV; save it as CSV"):
        read_labels_csv(workbook, image_dir=image_dir)


def scan(tmp_path: Path, image_dir: Path, content: str, **flags: object):
    from retrain.labels.csv import CsvSource

    return CsvSource(write(tmp_path, content), image_dir=image_dir, delimiter=flags.pop("delimiter", " "),
                     validation_percentage=10, testing_percentage=10, **flags).scan()


def test_the_split_column_is_never_overridden(tmp_path: Path, image_dir: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A class the user put only in validation or testing is left out, never trained on its test photos."""
    content = ("path,labels,split\na.jpg,cat,training\nb.jpg,cat,testing\nc.png,dog,training\n"
               "d.JPEG,dog,validation\ng.gif,fox,testing\nsub/e.webp,fox,validation\nsub/f.bmp,owl,training\n")
    labels = scan(tmp_path, image_dir, content)
    assert labels.names == ("cat", "dog", "owl")
    assert [p.name for p in labels.files["testing"]] == ["b.jpg"]  # fox's test photo is not trained on either
    assert "g.gif" not in {p.name for p in labels.all_files()}
    assert any("class 'fox' has no training image: --labels_csv" in m and "leaving the class out" in m
               for m in caplog.messages)
    everything_tested = "path,labels,split\n" + "".join(f"{n},{c},testing\n" for n, c in
                                                         [("a.jpg", "cat"), ("b.jpg", "dog"), ("c.png", "cat")])
    with pytest.raises(RetrainError, match=r"only 0 class\(es\) .* have usable images \(2 more have images only in "
                                           r"the validation and testing splits\)"):
        scan(tmp_path, image_dir, everything_tested)


def test_rows_without_a_split_still_follow_the_small_class_rule(tmp_path: Path, image_dir: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A class whose given-split rows are all held out trains on its rows the hash placed: only those move."""
    from retrain.labels.split import split_of

    held_out = next(name for name in ("c.png", "d.JPEG", "g.gif", "sub/e.webp", "sub/f.bmp", "café.jpg")
                    if split_of(name, validation_percentage=10, testing_percentage=10) != "training")
    hashed_to_training = [name for name in ("c.png", "d.JPEG", "g.gif", "sub/e.webp", "sub/f.bmp")
                          if name != held_out and split_of(name, validation_percentage=10,
                                                           testing_percentage=10) == "training"][:1]
    content = (f"path,labels,split\na.jpg,cat,training\nb.jpg,dog,testing\n{held_out},dog,\n"
               + "".join(f"{name},cat,\n" for name in hashed_to_training))
    labels = scan(tmp_path, image_dir, content)
    assert labels.names == ("cat", "dog")
    assert [p.name for p in labels.files["testing"]] == ["b.jpg"]  # the given split stays
    assert Path(held_out).name in {p.name for p in labels.files["training"]}  # the hashed row moves
    assert any("class 'dog' has no training image; training on the 1 of its 2 image(s) whose split" in m
               for m in caplog.messages)


def test_a_csv_that_turns_multi_label_by_itself_says_so(tmp_path: Path, image_dir: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    content = "path,labels\na.jpg,golden retriever\nb.jpg,cat\nc.png,cat\n"
    labels = scan(tmp_path, image_dir, content)
    assert labels.multi_label
    said = [m for m in warnings_of(caplog) if "multi-label" in m]
    assert len(said) == 1 and "line 2 holds 2 labels ('golden', 'retriever')" in said[0]
    assert "--multi_label" in said[0] and "--label_delimiter" in said[0]
    caplog.clear()
    scan(tmp_path, image_dir, content, multi_label=True)  # asked for: nothing to say
    assert not [m for m in warnings_of(caplog) if "multi-label" in m]


def test_rows_without_a_split_follow_each_percentage_flag(tmp_path: Path) -> None:
    """--validation_percentage 10 --testing_percentage 30 puts 10 % of the rows in validation, not 30 %."""
    from retrain.labels.csv import CsvSource
    from retrain.labels.split import split_of

    root = tmp_path / "many"
    names = [f"{label}/{label}_{i:02d}.jpg" for label in ("cat", "dog") for i in range(30)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\xff\xd8 not decoded here")
    expected = {name: split_of(name, validation_percentage=10, testing_percentage=30) for name in names}
    assert any(split != split_of(name, validation_percentage=30, testing_percentage=10)
               for name, split in expected.items())  # the two flags would place some rows elsewhere
    content = "path,labels\n" + "".join(f"{name},{name.split('/')[0]}\n" for name in names)
    labels = CsvSource(write(tmp_path, content), image_dir=root, delimiter=" ", validation_percentage=10,
                       testing_percentage=30).scan()
    assert {e.path.relative_to(root).as_posix(): e.split for e in labels.examples} == expected


def test_a_path_written_with_dot_segments_is_hashed_for_the_split_as_without_them(tmp_path: Path,
                                                                                   image_dir: Path) -> None:
    """`./sub/e.webp` and `sub/e.webp` name one file: the split (a hash of `name`) must not depend on the spelling."""
    plain = read_labels_csv(write(tmp_path, "path,labels\na.jpg,cat\nsub/e.webp,dog\nsub/f.bmp,dog\n", "plain.csv"),
                            image_dir=image_dir)
    dotted = read_labels_csv(write(tmp_path, "path,labels\n./a.jpg,cat\n./sub/e.webp,dog\nsub/./f.bmp,dog\n",
                                   "dotted.csv"), image_dir=image_dir)
    assert [row.name for row in dotted.rows] == [row.name for row in plain.rows] == ["a.jpg", "sub/e.webp", "sub/f.bmp"]


def test_a_photo_inside_image_dir_hashes_one_name_however_the_csv_spells_it(tmp_path: Path, image_dir: Path) -> None:
    """Probe FFF: `../images/sub/e.webp` beside `sub/e.webp`, or a photo's real path under an --image_dir that is
    a link (a CSV a tool wrote with resolved paths), hashed other names, so photos changed splits between two
    spellings of one CSV. A file outside --image_dir keeps its own spelling."""
    link = tmp_path / "link"
    link.symlink_to(image_dir)
    far = tmp_path / "a" / "b" / "far"  # a link whose `..` the kernel takes after the link (probe III):
    far.parent.mkdir(parents=True)  # far/../images is the photos; as spelt (a/b/images), nothing
    far.symlink_to(image_dir)
    real_path, linked_path = image_dir / "sub" / "e.webp", link / "sub" / "e.webp"
    for folder, written in ((image_dir, "sub/e.webp"), (image_dir, "../images/sub/e.webp"), (image_dir, real_path),
                            (image_dir, linked_path), (link, "sub/e.webp"), (link, "../images/sub/e.webp"),
                            (link, real_path), (link, linked_path), (link, "sub/../sub/e.webp"),
                            (far, "../images/sub/e.webp")):
        table = read_labels_csv(write(tmp_path, f"path,labels\n{written},cat\n../outside.jpg,dog\n"),
                                image_dir=folder)
        assert [row.name for row in table.rows] == ["sub/e.webp", "../outside.jpg"], (folder, written)
    # A class folder that links to another folder in the tree keeps its own name, as the folder walk gives it,
    # whatever it leads to (probe KKK: named by its target, the split moved when the link was retargeted).
    (image_dir / ".store" / "v3").mkdir(parents=True)
    (image_dir / ".store" / "v3" / "x.jpg").write_bytes(b"\xff\xd8")
    (image_dir / "cats").symlink_to(".store/v3")
    table = read_labels_csv(write(tmp_path, "path,labels\ncats/x.jpg,cat\na.jpg,dog\n"), image_dir=image_dir)
    assert [row.name for row in table.rows] == ["cats/x.jpg", "a.jpg"]
    # A `..` after a class folder that links out of the tree reads as inside it, and is not (probe LLL: it took
    # the name of the photo of the same name in the tree): its real path.
    (tmp_path / "away" / "out").mkdir(parents=True)
    (tmp_path / "away" / "a.jpg").write_bytes(b"\xff\xd8 another photo")
    (image_dir / "exits").symlink_to(tmp_path / "away" / "out")
    table = read_labels_csv(write(tmp_path, "path,labels\nexits/../a.jpg,cat\na.jpg,dog\n"), image_dir=image_dir)
    assert [row.name for row in table.rows] == [str(tmp_path / "away" / "a.jpg"), "a.jpg"]


def test_one_file_named_through_a_link_and_by_its_own_path_is_one_photo(tmp_path: Path, image_dir: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """--image_dir a link to the photos, one row relative to it and another by the photo's own absolute path: the
    same photo trained under two labels, exit 0 (probe SS). One file is one photo however it is spelt."""
    link = tmp_path / "photos"
    link.symlink_to(image_dir)
    os.link(image_dir / "b.jpg", image_dir / "hard.jpg")  # a hard link: the same file too
    table = read_labels_csv(write(tmp_path, f"path,labels\na.jpg,cat\n{image_dir / 'a.jpg'},dog\nb.jpg,dog\n"
                                            "hard.jpg,dog\nhard.jpg,cat\n"), image_dir=link)
    assert [row.line for row in table.rows] == [2, 4] and (table.skipped.conflicts, table.skipped.duplicates) == (2, 1)
    assert any("line 3: names a.jpg again, with labels 'dog' where line 2 has labels 'cat'" in m
               for m in warnings_of(caplog))  # (its real path is a.jpg from --image_dir too: probe FFF)
    assert any("line 6: names hard.jpg (the file line 4 names as b.jpg) again, with labels 'cat' where line 4 "
               "has labels 'dog'" in m for m in warnings_of(caplog))
    assert any("line 5: repeats line 4 (the same file, there b.jpg, labels and split); dropped" in m
               for m in warnings_of(caplog))
