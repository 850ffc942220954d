"""Names that exported models and their readers share: nodes, signature keys, companion files.

Defined once here and imported by the exporters and by label-image, so a
reader never re-types what a writer chose. Importing this module costs nothing.
"""

from __future__ import annotations

import codecs
import errno
import locale
import os
import re
import sys
import unicodedata
from pathlib import Path

# The classic frozen-graph contract: feed `Placeholder`, fetch `final_result` (the default of
# --final_tensor_name). The input takes float32 [N, H, W, 3] RGB scaled to [0, 1].
INPUT_NODE = "Placeholder"
FINAL_TENSOR_NAME = "final_result"
# The op of an exported model's score node, by objective: a frozen graph's, and a TFLite model's (objectives).
SOFTMAX_OPS = ("Softmax", "SOFTMAX")
SIGMOID_OPS = ("Sigmoid", "LOGISTIC")
# What our exports take: RGB in [0, 1], i.e. the classic (pixel - mean) / std with these values.
EXPORT_INPUT_MEAN = 0.0
EXPORT_INPUT_STD = 255.0

# SavedModel and TFLite signatures: `serving_default` takes IMAGE_KEY (float [N, H, W, 3] in
# [0, 1]); the SavedModel's BYTES_SIGNATURE takes BYTES_KEY (encoded files); both return OUTPUT_KEY.
SERVING_SIGNATURE = "serving_default"
IMAGE_KEY = "image"
BYTES_SIGNATURE = "serving_bytes"
BYTES_KEY = "image_bytes"  # TF Serving's REST API base64-decodes {"b64": ...} values; `_bytes` says so
OUTPUT_KEY = "prediction"

# Ops the exported graph names at its top level besides the final tensor: --final_tensor_name
# must not take one of these (TensorFlow would rename one of them, breaking the contract).
RESERVED_NODE_NAMES = frozenset({INPUT_NODE, "MatMul", "add", "NoOp", "Identity", "concat", "features",
                                 "mirror", "mirrored_features", "logits", "thresholds"})
# ... nor the scopes of the resizes between members of different sizes: resize, resize_1, ...
RESERVED_NODE_SCOPE = re.compile(r"resize(_\d+)?")
# A node name TensorFlow accepts, minus what would put the node in a scope ('/') or clash with
# the numbered constants that freezing creates (names made of digits).
NODE_NAME = re.compile(r"[A-Za-z.][A-Za-z0-9_.\-]*")

# A folder that retrain writes whole (SavedModel, TF.js) holds this file, listing what it wrote:
# only such a folder (or an empty one) is ever replaced by a later run.
OWNER_MARKER = ".retrain-export.json"

# A multi-label model's per-label thresholds: one per line, in label order, beside the labels file
# (labels.txt -> labels_thresholds.txt). Frozen graphs also hold them as a Const node named
# THRESHOLDS_NODE, SavedModels as the THRESHOLDS_SIGNATURE signature, TF.js models in model.json.
THRESHOLDS_NODE = "thresholds"
THRESHOLDS_SIGNATURE = "thresholds"

# A SavedModel holds its labels, one a line in class-index order, in this file (assets.extra is where files that
# live beside a SavedModel's graph go: TensorFlow and TF Serving leave it alone), so a SavedModel folder is whole
# without the labels file beside it, as a TF.js folder is with its labels.txt.
SAVED_MODEL_LABELS = "assets.extra/labels.txt"

# report.json, beside the labels file, says what it is in its "format" key.
REPORT_FORMAT = "retrain-report"
REPORT_NAME = "report.json"


def thresholds_path(labels: Path) -> Path:
    """Where a multi-label model's thresholds go, beside its labels file."""
    return labels.with_name(f"{labels.stem}_thresholds{labels.suffix or '.txt'}")


def report_path(labels: Path) -> Path:
    """report.json, beside the labels file (one per folder)."""
    return labels.parent / REPORT_NAME


def shown(path: str | Path) -> str:
    """A path for messages, even when its name is not valid UTF-8 (shown with \\x escapes)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


# Characters that are neither format characters (Cf) nor spaces but print as nothing (the combining grapheme
# joiner, variation selectors, Mongolian selectors, Khmer inherent vowels) or as a blank (Hangul fillers, a blank
# braille cell): probes ZZS, ZZT.
_UNSEEN = re.compile("[\u034f\u17b4\u17b5\u180b-\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Format characters that print as a sign (the Arabic number sign and end of ayah, the Syriac abbreviation mark...)
_SHOWN_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u08e2\U000110bd\U000110cd")
_BLANK = re.compile("[\u115f\u1160\u2800\u3164\uffa0]")


def seeming(name: str) -> str:
    """A name as a reader sees it: in its compatibility form (`é` as one character or two, a ligature as its
    letters), without invisible characters (a zero-width space, a soft hyphen, a variation selector), its
    spaces as one (none at either end). Names equal in it print alike."""
    visible = "".join(c for c in unicodedata.normalize("NFKC", name)
                      if unicodedata.category(c) != "Cf" or c in _SHOWN_FORMAT)
    return " ".join(_BLANK.sub(" ", _UNSEEN.sub("", visible)).split())


def valid_name(name: str) -> bool:
    """Whether a file or folder name is valid UTF-8 (Python keeps undecodable bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def spelt_otherwise(path: Path) -> str:
    """For a path that does not exist: ' (NAME exists: ...)' when it does with its names in another Unicode form
    (a file copied from a Mac keeps `e` and an accent apart, where a keyboard types `é`: probe NNN) or another
    letter case, else ''."""
    found, how = Path(path.anchor), set()
    for part in path.parts[1:] if path.anchor else path.parts:
        if (found / part).exists() or part in (".", ".."):
            found = found / part
            continue
        if os.path.lexists(found / part):  # (probe SSS: a broken link was said to exist in another form)
            try:
                os.stat(found / part)
            except OSError as error:
                looped = error.errno == errno.ELOOP  # (probe TTT: a loop of links called a link to nothing)
                return f" ({shown(found / part)} is {'a loop of links' if looped else 'a link to nothing'})"
        try:
            names = os.listdir(found if str(found) else ".")
        except OSError:
            return ""
        for kind, key in (("another Unicode form", lambda n: unicodedata.normalize("NFC", n)),
                          ("other letter case", lambda n: unicodedata.normalize("NFC", n).casefold())):
            match = next((name for name in sorted(names) if name != part and key(name) == key(part)
                          and (found / name).exists()), None)  # (probe UUU: a broken link said to exist)
            if match is not None:
                found, how = found / match, how | {kind}
                break
        else:
            return ""
    return f" ({shown(found)} exists: the same name in {' and '.join(sorted(how))})" if how else ""


def locale_encoding() -> str:
    """The encoding of the user's locale (`ISO-8859-1`, `ANSI_X3.4-1968`...; '' when unknown), which Python's UTF-8
    mode, the commands' own (`entry.in_utf8_mode`), leaves as it is."""
    try:
        return locale.nl_langinfo(locale.CODESET)
    except (AttributeError, ValueError):
        return ""


def is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() == "utf8"


def terminal_encoding(utf8_mode: bool | None = None) -> str | None:
    """The encoding stdout and stderr should speak in Python's UTF-8 mode: the locale's, when it is another than
    UTF-8 and ASCII (a Latin-1 terminal was sent UTF-8, cafÃ©: probe RRR), else None: under C or POSIX, UTF-8,
    Python's own choice there (probe SSS: escapes where labels were), and never over PYTHONIOENCODING."""
    encoding = locale_encoding()
    if not (sys.flags.utf8_mode if utf8_mode is None else utf8_mode) or os.environ.get("PYTHONIOENCODING") \
            or not encoding or is_utf8(encoding):
        return None
    try:
        return None if codecs.lookup(encoding).name == "ascii" else encoding
    except LookupError:
        return None


def in_locale(text: str) -> str:
    """For a name that is not valid UTF-8: how it reads in the locale's own encoding, when that is another that
    reads it (probe RRR: a Latin-1 system's `café`, which the code before UTF-8 mode took as it is), else ''."""
    encoding = locale_encoding()
    if not encoding or is_utf8(encoding):
        return ""
    try:
        reading = os.fsencode(text).decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return ""
    return (f" (in this system's {encoding} it reads {reading!r}: rename it in UTF-8, e.g. with convmv -f {encoding} "
            "-t UTF-8 --notest and its path)")


def names_not_utf8() -> str:
    """Why file names are read otherwise than as UTF-8 in this process ('' when they are not): a Python whose
    locale is not UTF-8 and that could not be put in UTF-8 mode (`python -E`, `-I`, `-X utf8=0`, a script read
    from stdin, the Python API: probes QQQ and RRR, `café` became the label `cafÃ©`, exit 0)."""
    encoding = sys.getfilesystemencoding()
    if sys.flags.utf8_mode or is_utf8(encoding):
        return ""
    return (f"this Python reads file names in {encoding}, not UTF-8, so names outside ASCII become other labels and "
            "paths than they are; start it in UTF-8 mode (PYTHONUTF8=1 or -X utf8, without -E or -I) or under a "
            "UTF-8 locale (LC_ALL=C.UTF-8)")


def unreadable_name(name: str) -> str:
    """Why a file or folder name cannot be used (`valid_name` False): not UTF-8 (with how it reads in the locale's
    encoding), or, in a Python that is not in UTF-8 mode, UTF-8 this Python does not read as such (probe VVV:
    `café` was told to be renamed)."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return "its name is not valid UTF-8" + (in_locale(name) or "; rename it to use it")
    return (f"its name is UTF-8, which this Python reads as {sys.getfilesystemencoding()}: start it in UTF-8 mode "
            "(see the warning above)")

