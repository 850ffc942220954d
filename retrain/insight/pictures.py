"""Pictures for TensorBoard, drawn with Pillow: the confusion matrix, misclassified images, the projector sprite.

Pillow and numpy only (both already dependencies), so `import retrain` and
`--help` stay light and nothing new needs installing. Text uses a font with wide
coverage from the system's font folders when there is one (DejaVu Sans, Noto
Sans, Liberation Sans, Arial), else Pillow's built-in font (ASCII only); a character the font lacks is
drawn as a readable stand-in (é as e, 猫 as <U+732B>), never as a box. Every function
returns an RGB uint8 array [H, W, 3], ready for `tf.summary.image` or a PNG.

An image that cannot be read (missing, not a regular file, undecodable, too
large) becomes a grey placeholder tile: pictures never fail a run.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from retrain.images import to_rgb
from retrain.insight.report import cut_middle, marked_alike
from retrain.progress import Progress

# Blues, as in most confusion-matrix plots: white for 0, dark blue for a whole row.
_BLUES = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], dtype=np.float64)
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (110, 110, 110)
_WRONG = (190, 30, 30)
_PLACEHOLDER = (205, 205, 205)
_GRID_LINE = (225, 225, 225)
MAX_LABEL_PIXELS = 180  # longer class names are elided with "…"
MISCLASSIFIED_LIMIT = 48  # tiles in the misclassified grid; the rest are counted as "+N more"


# Fonts with wide coverage (Latin with accents, Greek, Cyrillic...) that systems commonly have, in the order
# preferred, and the folders systems keep fonts in. Pillow's built-in font, the last resort, has ASCII only.
_FONT_FILES = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf", "Arial Unicode.ttf",
               "arial.ttf", "Arial.ttf")
_FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts",
                 "/System/Library/Fonts", "~/Library/Fonts")
_FONT_DEPTH = 3  # font folders keep fonts at most this far down (/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf)


def _font_folders() -> list[str]:
    """The system's font folders, as absolute paths (a "~" without a home folder is left out)."""
    folders = [os.path.expanduser(folder) for folder in _FONT_FOLDERS]
    if os.name == "nt" and os.environ.get("WINDIR"):
        folders.append(os.path.join(os.environ["WINDIR"], "Fonts"))
    return [folder for folder in folders if os.path.isabs(folder)]


@functools.lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    """The paths of _FONT_FILES found in the system's font folders, in the order preferred: regular files only,
    never in the current folder, looked for at most _FONT_DEPTH folders down (a font folder linked to a large
    tree is not walked whole), and no further once the first choice is found."""
    found: dict[str, str] = {}
    for folder in _font_folders():
        for root, dirs, files in os.walk(folder):
            if root[len(folder):].count(os.sep) >= _FONT_DEPTH:
                dirs.clear()
            for name in set(files) & set(_FONT_FILES):
                path = os.path.join(root, name)
                if name not in found and os.path.isfile(path):
                    found[name] = path
        if _FONT_FILES[0] in found:
            break
    return tuple(found[name] for name in _FONT_FILES if name in found)


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The first font of `_font_files` that loads and draws, at `size` pixels; else Pillow's built-in font (a
    fixed bitmap font where Pillow lacks FreeType or is < 10.1). A damaged font file is passed over."""
    for path in _font_files():
        try:
            font = ImageFont.truetype(path, size)
            font.getmask("Agé 0123456789…")  # a damaged file may load, then fail to draw
            font.getbbox("Agé 0123456789…")
            return font
        except Exception:  # noqa: BLE001 - FreeType reports a damaged file as OSError, ValueError and others
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 has no size argument
        return ImageFont.load_default()


@functools.lru_cache(maxsize=4096)
def _has_glyph(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, character: str) -> bool:
    """Whether `font` draws `character` as itself rather than as its box for a missing glyph (the glyph it
    draws for a private-use character, which no font has)."""
    if character == " ":
        return True
    if not character.isprintable():  # a line break or another control character: Pillow's layout may fail on it
        return False
    try:
        drawn, missing = font.getmask(character), font.getmask("\U0010FFFD")
    except (UnicodeEncodeError, ValueError, RuntimeError, OSError):  # the bitmap font takes Latin-1 only
        return False
    return drawn.size != missing.size or bytes(drawn) != bytes(missing)


def _drawable(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """`text` with each character the font cannot draw replaced by a readable stand-in: the letter without its
    accent when the font has that (é -> e), else its code point (猫 -> <U+732B>). Never boxes."""
    return "".join(_drawn_pieces(text, font))


def _drawn_pieces(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> list[str]:
    """What `_drawable` draws for each character of `text`, one piece a character with its accents (so a cut
    keeps stand-ins and accented letters whole)."""
    drawn: list[str] = []
    for character in unicodedata.normalize("NFC", text):  # é as one character, as macOS's names spell it e + ´
        accent = bool(drawn) and bool(unicodedata.combining(character))  # on the letter before it
        plain = "".join(c for c in unicodedata.normalize("NFKD", character) if not unicodedata.combining(c))
        piece = (character if _has_glyph(font, character) else
                 "" if accent else  # an accent the font lacks is left out, as for é -> e
                 plain if plain and all(_has_glyph(font, c) for c in plain) else f"<U+{ord(character):04X}>")
        if accent:  # it stays with its letter when a name is cut
            drawn[-1] += piece
        else:
            drawn.append(piece)
    return drawn


def _text_width(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> float:
    """Rendered width of `text` in pixels."""
    return font.getlength(text)


def _elide(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_width: float) -> str:
    """`text` cut in the middle with '…' so that it renders at most `max_width` pixels wide.

    The middle, because names that share a long start (`specimen_category_1`, `_2`) differ at the end.
    Characters the font lacks are replaced first (`_drawable`), and a cut never splits a stand-in.
    """
    pieces = _drawn_pieces(text, font)
    if _text_width("".join(pieces), font) <= max_width:
        return "".join(pieces)
    low, high = 0, len(pieces)
    while low < high:  # the most pieces kept, half from each end, that fit with the ellipsis
        middle = (low + high + 1) // 2
        if _text_width(cut_middle(pieces, middle), font) <= max_width:
            low = middle
        else:
            high = middle - 1
    return cut_middle(pieces, low)


def _caption(name: str, suffix: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_width: float) -> str:
    """`name` then `suffix` (a score) within `max_width` pixels, only the name cut: `sunfl…ers 51%`."""
    room = max_width - _text_width(suffix, font)
    if room < _text_width("…", font):
        return _elide(name + suffix, font, max_width)
    return _elide(name, font, room) + suffix


def _axis_names(labels: Sequence[str], font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
                max_width: float) -> list[str]:
    """Each label within `max_width` pixels, followed by its line in the labels file (` #N`) when another would
    show alike (probe ZZQ: two long names cut to one, `café` in its two Unicode forms, `dog` and `dog `)."""
    return marked_alike(labels, lambda label, suffix: _caption(label, suffix, font, max_width))


def _row_colours(fractions: np.ndarray) -> np.ndarray:
    """Blues colour map: fractions in [0, 1] -> RGB uint8, interpolated between the stops."""
    positions = np.clip(fractions, 0.0, 1.0) * (len(_BLUES) - 1)
    lower = np.minimum(np.floor(positions).astype(int), len(_BLUES) - 2)
    weight = (positions - lower)[..., None]
    return np.round(_BLUES[lower] * (1 - weight) + _BLUES[lower + 1] * weight).astype(np.uint8)


def _vertical_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, fill: tuple[int, int, int]) -> Image.Image:
    """`text` rendered bottom-to-top on a transparent RGBA image (for column labels)."""
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGBA", (max(1, int(math.ceil(right)) + 2), max(1, int(math.ceil(bottom)) + 2)), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), text, font=font, fill=fill + (255,))
    return canvas.rotate(90, expand=True)


def _fitting_font_size(texts: Sequence[str], *, width: float, height: float, largest: int, smallest: int) -> int | None:
    """The largest font size (<= largest) at which every text fits the box; None below `smallest`."""
    for size in range(largest, smallest - 1, -1):
        font = _font(size)
        if all(_text_width(t, font) <= width for t in texts) and font.getbbox("0123456789")[3] <= height:
            return size
    return None


def confusion_matrix_image(*, labels: Sequence[str], matrix: np.ndarray, title: str = "Confusion matrix") -> np.ndarray:
    """Draw a confusion matrix: true classes as rows, predicted as columns, counts in the cells.

    Each cell's colour is its share of its row (of the true class's images), so
    the diagonal reads as per-class recall whatever the class sizes; zero cells
    stay blank. Class names label both axes (columns rotated), elided past
    MAX_LABEL_PIXELS; the last column gives each row's total. Cells shrink from
    72 px (2 classes) to 20 px (~36 classes and more); counts that no longer fit
    at 7 px are left out and only the colours remain. Returns RGB uint8 [H, W, 3].
    """
    labels = [str(label) for label in labels]
    matrix = np.asarray(matrix, dtype=np.int64)
    k = len(labels)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {k} labels")
    cell = int(np.clip(720 // max(k, 1), 20, 72))
    label_font = _font(int(np.clip(cell * 0.55, 11, 16)))
    names = _axis_names(labels, label_font, MAX_LABEL_PIXELS)
    name_width = int(math.ceil(max((_text_width(n, label_font) for n in names), default=0)))
    row_totals = matrix.sum(axis=1)
    fractions = np.divide(matrix, row_totals[:, None], out=np.zeros(matrix.shape), where=row_totals[:, None] > 0)
    count_texts = [str(v) for v in matrix.reshape(-1) if v]
    count_size = _fitting_font_size(count_texts or ["0"], width=cell - 4, height=cell - 4,
                                    largest=int(np.clip(cell * 0.45, 7, 22)), smallest=7)
    total_texts = [str(v) for v in row_totals]
    total_font = _font(int(np.clip(cell * 0.45, 11, 14)))
    total_width = int(math.ceil(max(_text_width(t, total_font) for t in total_texts + ["total"]))) + 12

    title_font, note_font, axis_font = _font(18), _font(12), _font(15)
    note = "rows: true class, columns: predicted class, colour: share of the row"
    pad = 12
    axis_band = 24  # room for the axis titles
    header = 50  # title and note
    grid_left = pad + axis_band + name_width + 8
    grid_top = pad + header + axis_band + name_width + 8
    grid_size = k * cell
    width = max(grid_left + grid_size + total_width + pad, int(_text_width(title, title_font)) + 2 * pad,
                int(_text_width(note, note_font)) + 2 * pad)
    height = grid_top + grid_size + pad
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)

    draw.text((pad, pad), title, font=title_font, fill=_INK)
    draw.text((pad, pad + 26), note, font=note_font, fill=_MUTED)
    draw.text((grid_left + grid_size / 2, pad + header), "predicted class", font=axis_font, fill=_INK, anchor="mt")
    true_axis = _vertical_text("true class", axis_font, _INK)
    image.paste(true_axis, (pad, grid_top + grid_size // 2 - true_axis.height // 2), true_axis)

    colours = _row_colours(fractions)
    for i in range(k):
        y = grid_top + i * cell
        draw.text((grid_left - 8, y + cell / 2), names[i], font=label_font, fill=_INK, anchor="rm")
        draw.text((grid_left + grid_size + 8, y + cell / 2), total_texts[i], font=total_font, fill=_MUTED, anchor="lm")
        for j in range(k):
            x = grid_left + j * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=tuple(int(c) for c in colours[i, j]),
                           outline=_GRID_LINE)
            if matrix[i, j] and count_size is not None:
                ink = (255, 255, 255) if fractions[i, j] > 0.5 else _INK
                draw.text((x + cell / 2, y + cell / 2), str(matrix[i, j]), font=_font(count_size), fill=ink, anchor="mm")
        if row_totals[i]:  # the diagonal cell gets a dark frame so it stands out at any colour
            x = grid_left + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=(60, 60, 60))
    draw.text((grid_left + grid_size + 8, grid_top - 4), "total", font=total_font, fill=_MUTED, anchor="lb")
    for j in range(k):
        column = _vertical_text(names[j], label_font, _INK)
        x = grid_left + j * cell + cell // 2 - column.width // 2
        image.paste(column, (x, grid_top - 8 - column.height), column)
    return np.asarray(image, dtype=np.uint8)


def _open_thumbnail(path: Path | str, size: int) -> Image.Image | None:
    """The image at `path` upright, RGB, fitted within size×size; None when it cannot be read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a pipe or device would block or never end
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
                upright = ImageOps.exif_transpose(opened)
                if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
                    rgba = upright.convert("RGBA")
                    rgb = Image.new("RGB", rgba.size, _BACKGROUND)
                    rgb.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    rgb = to_rgb(upright)  # as training reads it: a 16-bit image's high byte, not white
                rgb.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                return rgb
    except Exception:  # noqa: BLE001 - any unreadable image becomes a placeholder, by design
        return None


def _placeholder(size: int, text: str = "unreadable") -> Image.Image:
    """A grey tile with a cross and a word, standing for an image that could not be read."""
    tile = Image.new("RGB", (size, size), _PLACEHOLDER)
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, size - 1, size - 1), fill=(170, 170, 170), width=1)
    draw.line((0, size - 1, size - 1, 0), fill=(170, 170, 170), width=1)
    font = _font(max(8, size // 9))
    draw.text((size / 2, size / 2), _elide(text, font, size - 4), font=font, fill=_INK, anchor="mm")
    return tile


def _tile(path: Path | str, size: int) -> Image.Image:
    """A size×size tile: the thumbnail centred on white, or the placeholder."""
    thumbnail = _open_thumbnail(path, size)
    if thumbnail is None:
        return _placeholder(size)
    tile = Image.new("RGB", (size, size), _BACKGROUND)
    tile.paste(thumbnail, ((size - thumbnail.width) // 2, (size - thumbnail.height) // 2))
    return tile


def misclassified_grid(items: Sequence[tuple[Path, str, str, float]], *, thumbnail: int = 96, columns: int = 8,
                       limit: int = MISCLASSIFIED_LIMIT) -> np.ndarray:
    """A grid of misclassified images, each captioned with its true and predicted label and score.

    `items` are (image path, true label, predicted label, score of the
    prediction in [0, 1]), drawn in the given order; past `limit` they are
    counted in the heading as "+N more". Unreadable images get a placeholder
    tile. No items gives a small picture saying so. Returns RGB uint8 [H, W, 3].
    """
    items = list(items)
    shown = items[: max(0, limit)]
    font = _font(max(10, thumbnail // 8))
    heading_font = _font(15)
    line = int(math.ceil(font.getbbox("Ag")[3])) + 3
    caption = 3 * line + 4
    gap = 8
    pad = 12
    columns = max(1, min(columns, len(shown))) if shown else 1
    rows = math.ceil(len(shown) / columns) if shown else 0
    heading = (f"{len(items)} misclassified image{'s' if len(items) != 1 else ''}" if len(shown) == len(items)
               else f"{len(shown)} of {len(items)} misclassified images (+{len(items) - len(shown)} more)")
    heading += ": true label, then predicted (red) and its score"  # no "true:"/"pred:" on tiles: room for names
    if not items:
        heading = "No misclassified images"
    tile_w, tile_h = thumbnail, thumbnail + caption
    width = max(pad * 2 + columns * tile_w + (columns - 1) * gap, int(_text_width(heading, heading_font)) + 2 * pad)
    top = pad + 26
    height = top + rows * (tile_h + gap) + pad
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), heading, font=heading_font, fill=_INK)
    for n, (path, true_label, predicted_label, score) in enumerate(shown):
        x = pad + (n % columns) * (tile_w + gap)
        y = top + (n // columns) * (tile_h + gap)
        image.paste(_tile(path, thumbnail), (x, y))
        text_y = y + thumbnail + 3
        draw.text((x, text_y), _elide(true_label, font, tile_w), font=font, fill=_INK)
        score_text = f" {score:.0%}" if isinstance(score, (int, float)) and math.isfinite(score) else ""
        draw.text((x, text_y + line), _caption(predicted_label, score_text, font, tile_w), font=font, fill=_WRONG)
        draw.text((x, text_y + 2 * line), _elide(Path(path).name, font, tile_w), font=font, fill=_MUTED)
    return np.asarray(image, dtype=np.uint8)


def sprite(paths: Sequence[Path], *, size: int) -> np.ndarray:
    """The Embedding Projector's sprite: size×size thumbnails row by row in a square grid.

    Image i sits at row i // side, column i % side, where side =
    ceil(sqrt(len(paths))); unused cells stay white, unreadable images get a
    placeholder. Returns RGB uint8 [side·size, side·size, 3] ([0, 0, 3] for no paths).
    """
    paths = list(paths)
    if not paths:
        return np.zeros((0, 0, 3), dtype=np.uint8)
    side = math.ceil(math.sqrt(len(paths)))
    image = Image.new("RGB", (side * size, side * size), _BACKGROUND)
    placeholder = _placeholder(size)
    # Each photo is decoded in full: 2,000 large ones take minutes, silent after the run's last line (probe PP).
    progress = Progress(len(paths), "Drawing the Embedding Projector's thumbnails", delay=5.0)
    for n, path in enumerate(paths):
        thumbnail = _open_thumbnail(path, size)
        x, y = (n % side) * size, (n // side) * size
        if thumbnail is None:
            image.paste(placeholder, (x, y))
        else:
            image.paste(thumbnail, (x + (size - thumbnail.width) // 2, y + (size - thumbnail.height) // 2))
        progress.update()
    progress.close()
    return np.asarray(image, dtype=np.uint8)
