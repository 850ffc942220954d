"""What a file on disk is, told from its bytes without TensorFlow (the checks run before it loads).

A frozen graph retrain wrote, a TFLite model retrain wrote, a retrain report, a
labels or thresholds file, a checkpoint index of the new layer, or, for a
message, what else it looks like (a photo, another model, text). Every reader
is bounded: a crafted or huge file is judged "not one" in bounded time and
memory, never waited on (pipes, devices) and never a traceback.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from retrain.names import (FINAL_TENSOR_NAME, IMAGE_KEY, OUTPUT_KEY, REPORT_FORMAT, SERVING_SIGNATURE, SIGMOID_OPS,
                           SOFTMAX_OPS, report_path)


MAX_GRAPH_NODES = 2_000_000  # more than any real frozen graph holds: a file with more is judged not to be ours


class CutShort(ValueError):
    """Protobuf bytes that end inside a field: a file cut short (a copy or download that stopped)."""


def graph_nodes(data: Any) -> Iterator[tuple[bytes, bytes]]:
    """The (name, op) of each node, as long as `data` parses as a GraphDef's top level (only its fields: node,
    library, version, versions, debug info, each with its wire type); ValueError where it stops parsing as one, or
    at its MAX_GRAPH_NODES + 1st node. Read from the wire format: the checks run before TensorFlow loads."""
    kinds = {1: 2, 2: 2, 3: 0, 4: 2, 5: 2}
    count = 0
    for number, kind, start, end in _fields(data, 0, len(data)):
        if kinds.get(number) != kind:
            raise ValueError("not a GraphDef field")
        if number == 1:
            count += 1
            if count > MAX_GRAPH_NODES:
                raise ValueError("too many nodes")
            found = {1: b"", 2: b""}  # a NodeDef: its fields 1 and 2, the others skipped
            for field, wire, begin, finish in _fields(data, start, end):
                if wire == 2 and field in found:
                    found[field] = bytes(data[begin:finish])
            yield found[1], found[2]


def _fields(data: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of the protobuf message in data[start:end], in wire format: (number, wire type, start, end)
    of each, where data[start:end] is a length-delimited field's bytes or a fixed-size field's, and a varint's
    value is `start` (`end` 0). ValueError where it does not parse as a message."""
    position = start

    def varint() -> int:
        nonlocal position
        value = shift = 0
        while position < end and shift < 64:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise CutShort("a varint runs past the end") if position >= end else ValueError("not a varint")

    while position < end:
        key = varint()
        number, kind = key >> 3, key & 7
        if kind == 0:
            yield number, kind, varint(), 0
            continue
        if kind not in (1, 2, 5):
            raise ValueError("not a message")
        length = varint() if kind == 2 else 8 if kind == 1 else 4
        if position + length > end:
            raise CutShort("a field runs past the end")
        yield number, kind, position, position + length
        position += length


def _field(data: Any, start: int, end: int, number: int) -> tuple[int, int] | None:
    """Where the last length-delimited field `number` of the message in data[start:end] lies (None if none)."""
    found = None
    for field, kind, begin, finish in _fields(data, start, end):
        if field == number and kind == 2:
            found = (begin, finish)
    return found


def _const_shape(data: Any, node: tuple[int, int]) -> list[int] | None:
    """The shape of a Const NodeDef's value (its attr "value": a TensorProto's tensor_shape), None if none."""
    for field, kind, start, end in _fields(data, *node):
        if field == 5 and kind == 2 and (key := _field(data, start, end, 1)) and data[key[0]:key[1]] == b"value":
            where = _field(data, start, end, 2)  # AttrValue -> tensor -> tensor_shape, each a message
            for number in (8, 2):
                where = where and _field(data, *where, number)
            if where:
                return [value for field, kind, begin, finish in _fields(data, *where) if field == 2 and kind == 2
                        for number, wire, value, _ in _fields(data, begin, finish) if number == 1 and wire == 0]
    return None


# What a classifier's output node is, when it is not named: each objective's score op, from names.py as the
# objectives take them (read here without importing numpy through objectives: probe ZZL). A new objective adds
# its op here too; tests/test_seams.py checks every objective's is (probe ZZR: a new objective's own graph was
# refused as another model's on a rerun).
SCORE_OPS = (SOFTMAX_OPS[0], SIGMOID_OPS[0])
_SCORE_OPS = tuple(op.encode() for op in SCORE_OPS)  # as graph_nodes reads them

_PASSED = (b"Identity", b"FakeQuantWithMinMaxVars", b"FakeQuantWithMinMaxArgs")  # a read; a quantized layer's
_LAYER_OPS = frozenset({*_PASSED, b"Add", b"AddV2", b"BiasAdd", b"Const", *_SCORE_OPS})  # walked


def graph_class_count(data: Any, final: str) -> int | None:
    """How many classes the frozen graph `data` scores, read from the new layer that retrain (and the classic
    retrain.py) builds: its score node, `final` or final_result, a Softmax or Sigmoid of MatMul + biases, the
    biases a constant of one dimension once frozen (through Identity nodes: a variable's read). None when the
    graph is not so built."""
    nodes: dict[bytes, tuple[bytes, list[bytes], tuple[int, int]]] = {}
    try:
        for count, (number, kind, start, end) in enumerate(_fields(data, 0, len(data))):
            if count > MAX_GRAPH_NODES:
                return None
            if number == 1 and kind == 2:
                name, op, inputs = b"", b"", []
                for field, wire, begin, finish in _fields(data, start, end):
                    if field in (1, 2) and wire == 2:
                        name, op = (bytes(data[begin:finish]), op) if field == 1 else (name, bytes(data[begin:finish]))
                    elif field == 3 and wire == 2 and len(inputs) < 2:
                        inputs.append(bytes(data[begin:finish]).lstrip(b"^").split(b":")[0])
                if op in _LAYER_OPS:  # (a crafted graph's millions of other nodes are not kept: probe BBB)
                    nodes[name] = (op, inputs, (start, end))

        def source(name: bytes) -> tuple[bytes, list[bytes], tuple[int, int]] | None:
            for _ in range(8):  # a variable's read, the Identity a freeze leaves, a quantized module's FakeQuant
                node = nodes.get(name)
                if node is None or node[0] not in _PASSED or not node[1]:
                    return node
                name = node[1][0]
            return None

        score = next((node for name in dict.fromkeys([final.encode(), FINAL_TENSOR_NAME.encode()])
                      if (node := nodes.get(name)) is not None and node[0] in _SCORE_OPS and node[1]), None)
        logits = score and source(score[1][0])
        if not logits or logits[0] not in (b"Add", b"AddV2", b"BiasAdd"):
            return None
        for term in logits[1]:
            biases = source(term)
            if biases and biases[0] == b"Const" and len(shape := _const_shape(data, biases[2]) or []) == 1:
                return shape[0]
    except ValueError:
        return None
    return None


def is_graph_def(data: Any) -> bool:
    """Whether `data` parses whole as a GraphDef with nodes."""
    try:
        return sum(1 for _ in graph_nodes(data)) > 0
    except ValueError:
        return False


def head(path: Path, size: int) -> bytes:
    """The first `size` bytes of the regular file at `path`; b"" for anything else (a pipe or device is never
    waited on) or a file that cannot be read."""
    try:
        if not path.is_file():
            return b""
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def is_saved_model_file(path: Path) -> bool:
    """Whether `path` is a SavedModel's saved_model.pb, by name and by its first field (the schema version);
    a frozen graph given that name starts with its first node."""
    return path.name == "saved_model.pb" and head(path, 1) == b"\x08"



def is_retrain_graph(data: Any, final: str, path: Path | None = None, report: Path | None = None) -> bool:
    """A frozen graph retrain (or the classic retrain.py) wrote: its final node, named `final_result`, this run's
    --final_tensor_name (`final`) or the one a retrain report gives for a graph of exactly these bytes
    (`reported_final_names`: the report beside the graph at `path`, or `report`, the one beside this run's
    labels), is a Softmax or Sigmoid. Another model's graph at --output_graph (an Inception V3 you serve, a TF1
    model with a Placeholder and a Softmax) is not replaced. The reports are read (and the bytes hashed) only for
    a graph whose scores have another name: each of a folder's intermediate graphs is judged."""
    try:
        scores = {name for name, op in graph_nodes(data) if op in _SCORE_OPS}
    except ValueError:
        return False
    if scores & {FINAL_TENSOR_NAME.encode(), final.encode()}:
        return True
    return bool(scores) and path is not None and any(
        name.encode() in scores for name in reported_final_names(data, path, report))


def score_nodes(data: Any, *, most: int = 16) -> list[str]:
    """The names of a frozen graph's Softmax and Sigmoid nodes (at most `most`; none if it is not a graph)."""
    try:
        return [name.decode(errors="replace") for name, op in itertools.islice(
            ((name, op) for name, op in graph_nodes(data) if op in _SCORE_OPS), most)]
    except ValueError:
        return []


def reported_final_names(data: Any, path: Path, report: Path | None = None) -> list[str]:
    """The --final_tensor_name that a retrain report gives the graph `data` (at `path`), by its SHA-256 among the
    graphs retrain wrote (`run.graph_sha256`): such a graph, written with `--final_tensor_name x`, a rerun without
    that flag replaces. The reports are the one beside the graph (where a link there leads) and `report` (beside
    the labels of the run that asks, where a run that wrote the graph into another folder left it). The bytes
    decide, not the paths: a user's own graph whose output has that name, put where a copy of the run's folder
    lies or where a moved link now leads, is not vouched for; a copy or a move of the run's graph is."""
    real = Path(os.path.realpath(path))
    recorded = []
    for where in dict.fromkeys([report_path(real), *([Path(os.path.realpath(report))] if report else [])]):
        try:
            digests = read_report(where)["run"]["graph_sha256"]  # type: ignore[index]
        except (KeyError, TypeError):
            continue
        if isinstance(digests, dict):
            recorded.append(digests)
    if not recorded:
        return []
    digest = hashlib.sha256(data).hexdigest()
    names = [digests.get(digest) for digests in recorded]
    return [name for name in names if isinstance(name, str) and name.isascii()]  # node names are ASCII


def tflite_signatures(data: Any, *, most: int = 16, longest: int = 256) -> list[tuple[str, list[str], list[str]]]:
    """(key, input names, output names) of each signature of a TFLite model, read from its FlatBuffer without
    TensorFlow (the checks run before it loads): the Model table's field 7, SignatureDef's fields 0-2, TensorMap's
    field 0. ValueError where it does not parse as one, or holds more than `most` signatures (or inputs, or
    outputs of one) or a name longer than `longest` bytes: a crafted file whose vectors share their entries
    would otherwise cost gigabytes."""
    size = len(data)

    def number(position: int, width: int, signed: bool = False) -> int:
        if not 0 <= position <= size - width:
            raise ValueError("past the end")
        return int.from_bytes(data[position:position + width], "little", signed=signed)

    def field(table: int, index: int) -> int | None:  # where a table's field is, or None when absent
        vtable = table - number(table, 4, signed=True)
        if 4 + 2 * index >= number(vtable, 2):
            return None
        offset = number(vtable + 4 + 2 * index, 2)
        return table + offset if offset else None

    def follow(position: int | None) -> int | None:
        return None if position is None else position + number(position, 4)

    def vector(position: int | None) -> list[int]:
        start = follow(position)
        if start is None:
            return []
        count = number(start, 4)
        if count > most:
            raise ValueError("too many entries")
        return [follow(start + 4 + 4 * i) for i in range(count)]

    def string(position: int | None) -> str:
        start = follow(position)
        if start is None:
            return ""
        length = number(start, 4)
        if length > longest:
            raise ValueError("too long a name")
        if length:
            number(start + 3 + length, 1)  # its last byte lies within the data
        return bytes(data[start + 4:start + 4 + length]).decode()

    model = follow(0)
    return [(string(field(signature, 2)), [string(field(t, 0)) for t in vector(field(signature, 0))],
             [string(field(t, 0)) for t in vector(field(signature, 1))]) for signature in vector(field(model, 7))]


def is_tflite(data: Any) -> bool:
    """A TFLite model (anyone's), by its FlatBuffer file identifier; the first 8 bytes are enough."""
    return bytes(data[4:8]) == b"TFL3"


def is_retrain_tflite(data: Any) -> bool:
    """A TFLite model retrain wrote: one signature, serving_default, from `image` to `prediction` and nothing
    else (another model at --output_tflite, a Keras export or a detector that also gives boxes, is not replaced)."""
    if not is_tflite(data):
        return False
    try:
        return tflite_signatures(data, most=1, longest=len(SERVING_SIGNATURE)) == [
            (SERVING_SIGNATURE, [IMAGE_KEY], [OUTPUT_KEY])]
    except (ValueError, UnicodeDecodeError):
        return False


def is_json(data: Any) -> bool:
    """A JSON object or array (a small file only: what sits at report.json is at most a few megabytes)."""
    if len(data) > 16 << 20 or bytes(data[:64]).lstrip()[:1] not in (b"{", b"["):
        return False
    try:
        json.loads(bytes(data[:]))
    except (ValueError, RecursionError):
        return False
    return True


def is_text(data: Any) -> bool:
    """UTF-8 text (judged on its first 64 kB) with no NUL byte."""
    head = bytes(data[:65536])
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
    return b"\0" not in head


def is_labels(data: Any, path: Path) -> bool:
    """A labels file an earlier run wrote: one distinct label a line, the labels of the retrain report beside it
    (beside the file a link at `path` points to: what is judged), as label-image reads them (a last line with no
    line break, blank lines after the last, CRLF, a BOM: an editor's saving, probe TT). (A file holding this
    run's own labels, or the classic retrain.py's for this run's classes, is accepted through
    `check_replaceable_files(unchanged=...)`; the classic script's own, by the graph beside it: `classic_pair`.)
    A CSV, a script, notes, settings or another model's labels at --output_labels are none of these, and are not
    replaced."""
    lines = labels_lines(data)
    if not lines or not all(lines) or len(set(lines)) != len(lines):
        return False
    report = read_report(labels_report(path))
    return report is not None and report.get("labels") == lines


# The classic retrain.py's two outputs by its defaults, and by TensorFlow for Poets' flags: a labels file of one of
# these names, beside the graph of the other, with no report, is that classic run's (`classic_pair`).
CLASSIC_PAIRS = {"output_labels.txt": "output_graph.pb", "retrained_labels.txt": "retrained_graph.pb"}
_CLASSIC_LABEL = re.compile(r"[a-z0-9 ]+")  # a folder name as the classic script wrote it (lowercased, others a space)


def classic_pair(labels: Path, data: Any, final: str, *, reports: bool = True) -> Path | None:
    """The graph whose labels the file at `labels` (its bytes: `data`) are, by the classic retrain.py's names:
    `/tmp/output_labels.txt` beside `/tmp/output_graph.pb` (or `retrained_labels.txt` beside `retrained_graph.pb`),
    neither a link, no retrain report there speaking of either, one label a line as the classic script wrote them
    (lowercase letters, digits, spaces), each once, as many as the graph scores (its output node `final` or
    final_result). None otherwise: a labels file of any other name is told by its report alone (probe BBB: links,
    to-do lists and other models' labels beside a graph of that many classes). `reports` False: whatever a
    report there says (for the refusal to leave such a file beside a graph of other classes)."""
    lines = labels_lines(data)
    if labels.name not in CLASSIC_PAIRS or not lines or len(set(lines)) != len(lines) or \
            not all(_CLASSIC_LABEL.fullmatch(line) for line in lines):
        return None
    graph = labels.with_name(CLASSIC_PAIRS[labels.name])
    try:
        if labels.is_symlink() or graph.is_symlink() or not graph.is_file() or graph.stat().st_size == 0 or \
                reports and _speaks_of(read_report(report_path(labels)), graph, lines):
            return None
        with open(graph, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as graph_data:
            return graph if graph_class_count(graph_data, final) == len(lines) else None
    except (OSError, ValueError):
        return None


def _speaks_of(report: dict[str, Any] | None, graph: Path, lines: list[str]) -> bool:
    """Whether the retrain report there is the one of these files: it lists these labels, or the graph's bytes
    as they are now (`files_sha256`; by its name for a report written before the digests, or edited by hand).
    Another run's report there, or one whose graph the classic script has written over since, is not (probes
    DDD, EEE)."""
    if report is None:
        return False
    try:
        run = report["run"]
        digests = run.get("files_sha256")
        if report.get("labels") == lines:
            return True
        if isinstance(digests, list):
            return file_sha256(graph) in digests
        return graph.name in {Path(name).name for name in run.get("files", []) if isinstance(name, str)}
    except (KeyError, TypeError, AttributeError, OSError):
        return True  # (a report edited by hand: taken to speak of them)


def labels_lines(data: Any) -> list[str] | None:
    """The lines of a labels file's bytes as label-image reads them (`labels_of_text`); None for what is not
    text."""
    if len(data) > 1 << 26 or not is_text(data):
        return None
    return labels_of_text(bytes(data).decode("utf-8", errors="surrogateescape"))


def labels_of_text(text: str) -> list[str]:
    """A labels file's lines, in class-index order: a leading BOM (Notepad's), CRLF and blank lines at the end
    left out; each line as it is (a label may start or end with a space: folders "cat" and "cat " are two)."""
    lines = text.removeprefix("\ufeff").splitlines()
    while lines and not lines[-1]:
        lines.pop()
    return lines


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path` (where a link leads), read in blocks; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def labels_report(path: Path) -> Path:
    """The retrain report that vouches for a labels file at `path`: beside the file a link there points to."""
    return report_path(Path(os.path.realpath(path)))


def is_numbers(data: Any) -> bool:
    """Text holding numbers only, as a thresholds file does."""
    if len(data) > 1 << 26 or not is_text(data):
        return False
    try:
        [float(line) for line in bytes(data).decode("utf-8-sig").split() if line]
    except ValueError:
        return False
    return True


MAX_REPORT_BYTES = 64 << 20  # a report is kilobytes; a larger file at report.json is not one


def _report_in(data: Any) -> dict[str, Any] | None:
    """The retrain report these bytes hold, or None: too large to be one, not JSON (nested beyond Python's
    recursion too), or not a retrain report."""
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(bytes(data))
    except (ValueError, RecursionError):
        return None
    return report if isinstance(report, dict) and report.get("format") == REPORT_FORMAT else None


def is_report(data: Any) -> bool:
    return _report_in(data) is not None


def read_report(path: Path) -> dict[str, Any] | None:
    """The retrain report at `path`, or None: nothing there, a pipe or device (never waited on), or bytes that
    are not one (`_report_in`)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
            return None
        return _report_in(path.read_bytes())
    except OSError:
        return None


def is_checkpoint_index(data: Any) -> bool:
    """The .index file of a checkpoint of the new layer: a TensorFlow checkpoint table (it ends with the table
    format's magic number) holding retrain's variable `final_biases`, or the classic retrain.py's
    `final_retrain_ops/...`. Another model's checkpoint at --checkpoint_path is not replaced."""
    return bytes(data[-8:]) == bytes.fromhex("57fb808b247547db") and len(data) < 1 << 26 and (
        data.find(b"final_biases/.ATTRIBUTES/VARIABLE_VALUE") >= 0 or data.find(b"final_retrain_ops/") >= 0)


_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"RIFF", "a RIFF file (WebP image, audio or video)"), (b"%PDF", "a PDF"),
          (b"PK\x03\x04", "a zip file (or a document that is one)"))


# ISO base media files (`....ftyp<brand>`) that hold photos or videos no decoder here reads, by brand.
_HEIF = "a HEIC/HEIF photo (as iPhones save them); convert it to JPEG or PNG"
_FTYP_BRANDS = {**dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"), _HEIF),
                **dict.fromkeys((b"avif", b"avis"), "an AVIF image; convert it to JPEG or PNG"),
                b"crx ": "a Canon CR3 raw photo; convert it to JPEG or PNG",
                **dict.fromkeys((b"qt  ", b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
                                 b"dash", b"M4V ", b"f4v ", b"3gp4", b"3gp5", b"3g2a"), "a video, not a photo"),
                b"M4A ": "an audio file, not a photo"}


def unread_image(data: Any) -> str:
    """What a file no image decoder recognised holds, when its first bytes say ('' when they do not): an iPhone's
    HEIC photo named .jpg, a PNG whose header is damaged were all 'not a recognised image format' (probe NNN)."""
    head = bytes(data[:16])
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_BRANDS:
        return _FTYP_BRANDS[head[8:12]]
    if head.startswith(b"\x1a\x45\xdf\xa3") or (head.startswith(b"RIFF") and head[8:12] == b"AVI "):
        return "a video, not a photo"  # (WebM, Matroska; AVI)
    for magic, name in _MAGIC[:3]:  # JPEG, PNG, GIF: signatures no text starts with
        if head.startswith(magic):
            return f"a damaged {name[2:]} (its header does not read)"
    return "a PDF, not a photo" if head.lstrip().startswith(b"%PDF") else ""


def is_one_of(data: Any, same: Sequence[bytes]) -> bool:
    """Whether the file holds one of `same` (with line ends written on Windows, too), without copying a large one."""
    if not same or len(data) > 2 * max(map(len, same)):
        return False
    return data[:].replace(b"\r\n", b"\n") in same


def looks_like(data: Any) -> str:
    """What a file that is none of retrain's looks like, for a message: a photo, another model, text, data."""
    head = bytes(data[:16])
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if is_tflite(data):
        return "another TFLite model"
    if is_graph_def(data):  # retrain's own, at another flag's path (--output_tflite), is said so
        return "a frozen graph retrain wrote" if is_retrain_graph(data, FINAL_TENSOR_NAME) else \
            "another model's frozen graph"
    if is_text(data):
        return "a JSON file" if is_json(data) else "a text file"
    control = re.search(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]", bytes(data[:65536]))  # none in text of any 8-bit encoding
    return "a text file not in UTF-8" if len(data) and control is None else "other data"
