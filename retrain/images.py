"""Encoded image bytes -> RGB float32 in [0, 1] at the module's input size.

One preprocessing for training, evaluation, export checks and label-image, so
a model never sees images prepared differently from the ones it was trained on:
Pillow decodes (every format, mode and EXIF orientation) and resizes the whole
image to the module's size (bilinear, antialiased, in floating point; no crop,
as the classic tools did). Graphs that take encoded images (the SavedModel's
bytes signature) resize with `resize_tensor`, TensorFlow's op with the same
filter: the two agree within RESIZE_TOLERANCE. A file that cannot be decoded
raises `ImageError` with the reason.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from retrain.errors import RetrainError
from retrain.filekinds import looks_like, unread_image

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS as decompression bombs; we keep
# that guard (a 180-megapixel image is almost surely hostile) but not its warning.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # what training decodes at most (graphs that decode refuse more too)
# A baseline JPEG decoded at reduced scale (1/2 to 1/8 a side) costs memory for its reduced size only: phone
# photos of 200 megapixels (probe ZZ) are decoded, up to this. (A progressive one keeps its coefficients, up to
# 8 bytes a pixel: Pillow's limit stands for it.)
JPEG_MAX_PIXELS = 2 * MAX_PIXELS
# Pillow's EXIF reader warns ("Tag data larger than file. Skipping tag 271", "Corrupt EXIF data", no file
# name) for each malformed tag it skips. The pixels still decode in full and the one tag we use, the
# orientation, is applied when it can be read, else the image is used as stored, as TensorFlow's decoders
# (and so the classic retrainer) always use it: nothing worth a line per photo. Set here, once, because
# images decode in worker threads and Ray workers, which all import this module, and catch_warnings is not
# thread-safe.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


ORIENTATION_TAG = 0x0112  # the EXIF tag
_TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}  # each EXIF orientation's turn, as ImageOps.exif_transpose's
# |resize - resize_tensor| in [0, 1] units (0.008 of an 8-bit level): measured at most 2.7e-5 on the
# 500 fixture photos, 12-megapixel JPEGs and degenerate shapes (1x1, 3000x20) at 224, 299 and 32 pixels.
RESIZE_TOLERANCE = 3e-5


class ImageError(RetrainError):
    """An image file that cannot be used; the message is the reason, for the user."""


def read_bytes(path: Path) -> bytes:
    """Read a whole regular file, turning OS errors into an ImageError with a readable reason.

    Opened non-blocking and checked with fstat first, so a pipe or device named
    like an image is refused instead of hanging the run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError("file not found (a broken link?)") from None
    except PermissionError:
        raise ImageError("permission denied (no read permission)") from None
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise ImageError("not a regular file (a pipe, socket or device)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None
    finally:
        os.close(fd)


def decode_rgb(data: bytes, *, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode encoded image bytes to an upright uint8 RGB array [h, w, 3].

    Greyscale, palette, alpha, CMYK and 16-bit images become RGB (alpha is
    dropped, as TensorFlow's decoders do); animated images give their first
    frame. With `min_size` (height, width), an image much larger than that is
    shrunk early (JPEGs are decoded at a reduced scale, others box-reduced
    right after decoding), never below twice `min_size`, which keeps huge
    photos cheap in time and memory.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with _open(data, reduced=min_size is not None) as image:
            if min_size is not None and image.format == "JPEG":
                image.draft("RGB", (2 * min_size[1], 2 * min_size[0]))
                if image.width * image.height > MAX_PIXELS:  # (a JPEG of JPEG_MAX_PIXELS at 1/8 is far below)
                    raise _too_large(image.width * image.height, "a JPEG")
            image.load()
            rgb = to_rgb(_upright(image))
            if min_size is not None:
                rgb = _shrink(rgb, min_size=min_size)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except UnidentifiedImageError:
        held = unread_image(data)
        raise ImageError("not a recognised image format" + (f": it holds {held}" if held else "")) from None
    except Image.DecompressionBombError as error:
        raise _too_large(int(found[1]) if (found := re.search(r"\((\d+) pixels\)", str(error))) else None,
                         "a JPEG" if data.startswith(b"\xff\xd8\xff") else looks_like(data)) from None
    except MemoryError:
        raise ImageError("not enough memory to decode it") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image data ({error})") from None
    except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many kinds; one bad file is never fatal
        raise ImageError(f"cannot decode ({type(error).__name__}: {error})") from None


def _open(data: bytes, *, reduced: bool) -> Image.Image:
    """Pillow's Image.open, which refuses an image over MAX_PIXELS as a decompression bomb; a baseline JPEG up to
    JPEG_MAX_PIXELS that will be decoded at reduced scale (`reduced`) is opened all the same. (Not a progressive
    one: it keeps its coefficients, 2.7 GB for a 342-megapixel CMYK one, probe BBB.)"""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        if not reduced or not data.startswith(b"\xff\xd8\xff"):
            raise
    image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))  # Image.open's bomb check left out
    if image.width * image.height > JPEG_MAX_PIXELS or "progressive" in image.info:
        image.close()
        raise _too_large(image.width * image.height, "a progressive JPEG" if "progressive" in image.info else
                         "a JPEG")
    return image


def _too_large(pixels: int | None, kind: str) -> ImageError:
    """The refusal of an image over the limits, saying its size and kind."""
    size = f"{pixels:,} pixels, " if pixels else ""
    return ImageError(f"too large to decode safely ({size}{kind}; retrain decodes up to {MAX_PIXELS:,} pixels, or "
                      f"{JPEG_MAX_PIXELS:,} for a baseline JPEG)")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation Pillow reads (as ImageOps.exif_transpose turns the pixels: it also rewrites
    the metadata, which can fail on a malformed block and lose an orientation that was read); an EXIF block
    that cannot be read leaves the pixels as stored."""
    try:
        method = _TRANSPOSES.get(image.getexif().get(ORIENTATION_TAG, 1))  # (6.0 counts as 6, as in Pillow)
    except Exception:  # noqa: BLE001 - broken metadata must not cost a good image
        return image
    return image if method is None else image.transpose(method)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, scaling 16- and 32-bit greyscale properly.

    16-bit greyscale keeps its high byte, as Pillow does for 16-bit colour and TensorFlow's decoders (serving)
    for both: one fixed scale, so a dark image stays dark. (It was read as 8-bit when no value passed 255, which
    made two nearly equal images 257 times apart in brightness.) Modes I and F do not say their range."""
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)  # float32, not 64: huge 16-bit scans stay affordable
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(values * np.float32(255.0 / top) + np.float32(0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the route Pillow asks for; converting straight to RGB warns
    return image if image.mode == "RGB" else image.convert("RGB")


def _shrink(image: Image.Image, *, min_size: tuple[int, int]) -> Image.Image:
    """Box-reduce by a whole factor while staying at least twice `min_size` (height, width)."""
    factor = min(image.height // (2 * min_size[0]), image.width // (2 * min_size[1]))
    return image.reduce(factor) if factor >= 2 else image


def resize_tensor(rgb: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: uint8 RGB [h, w, 3] -> float32 [height, width, 3] in [0, 1].

    What graphs that take encoded images use (the SavedModel's bytes
    signature, after `decode_like_training`): the filter `resize` applies, so
    serving's pixels match training's within RESIZE_TOLERANCE.
    """
    import tensorflow as tf

    pixels = tf.image.convert_image_dtype(rgb, tf.float32)
    return tf.image.resize(pixels, [height, width], method="bilinear", antialias=True)


def resize_weights(size: int, new_size: int) -> np.ndarray:
    """float32 [new_size, size]: `resize`'s filter along one axis as a matrix (a column in, W @ column out).

    Read off Pillow itself: the filter is linear and separable, so resizing the
    identity image along one axis gives each input pixel's weight in every
    output pixel.
    """
    identity = Image.fromarray(np.eye(size, dtype=np.float32))  # mode F, width = height = size
    return np.asarray(identity.resize((size, new_size), Image.Resampling.BILINEAR), np.float32)


def resize_batch_tensor(images: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: float32 [N, h, w, C] (static h, w, C) -> [N, height, width, C], filtered as `resize`.

    For resizing inside an exported model (the members of a mix of modules of
    different sizes): two matrix products with `resize_weights`, so the graph
    holds only MatMul, Transpose and Reshape, which TFLite's builtin ops and
    TF.js both run (tf.image.resize's antialiased op, ScaleAndTranslate, is in
    neither). Agrees with `resize` within float32 rounding.
    """
    import tensorflow as tf

    _, rows, columns, channels = images.shape
    if (rows, columns) == (height, width):
        return images
    with tf.name_scope("resize"):  # as tf.image.resize's: top-level MatMul and add stay the head's
        by_column = tf.constant(resize_weights(columns, width).T)  # [columns, width]
        by_row = tf.constant(resize_weights(rows, height).T)  # [rows, height]
        x = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [-1, columns])  # [N*C*rows, columns]
        x = tf.reshape(tf.matmul(x, by_column), [-1, rows, width])  # [N*C, rows, width]
        x = tf.reshape(tf.transpose(x, [0, 2, 1]), [-1, rows])  # [N*C*width, rows]
        x = tf.reshape(tf.matmul(x, by_row), [-1, channels, width, height])
        return tf.transpose(x, [0, 3, 2, 1])


def resize(rgb: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> float32 [height, width, 3] in [0, 1] (the model's input).

    Pillow resamples each channel in floating point with the antialiased
    triangle filter that `resize_tensor` (TensorFlow's resize, antialias=True)
    uses; they agree within RESIZE_TOLERANCE. Not a TensorFlow op on purpose:
    TensorFlow runs ops on one inter-op thread (see retrain.tfenv), so a resize
    op waits behind the module's ops and images could not be prepared while the
    module runs; Pillow also costs a third less CPU here.
    """
    out = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        plane = Image.fromarray(np.ascontiguousarray(rgb[:, :, channel])).convert("F")
        out[:, :, channel] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    out *= np.float32(1 / 255)
    return out


def load_image(path: Path, *, height: int, width: int) -> np.ndarray:
    """Read, decode and resize one image file; raises ImageError with the reason."""
    return prepare_image(read_bytes(path), height=height, width=width)


def prepare_image(data: bytes, *, height: int, width: int) -> np.ndarray:
    """Decode and resize an image file's bytes, as `load_image` does; raises ImageError with the reason."""
    return resize(decode_rgb(data, min_size=(height, width)), height=height, width=width)
