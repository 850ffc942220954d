"""Encoded image bytes -> RGB float32 in [0, 1] at the module's input size.

One preprocessing for training, evaluation, export checks and label-image, so
a model never sees images prepared differently from the ones it was trained on:
Pillow decodes (every format, mode and EXIF orientation), TensorFlow resizes the
whole image to the module's size (bilinear, antialiased; no crop, as the classic
tools did). A file that cannot be decoded raises `ImageError` with the reason.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS as decompression bombs; we keep
# that guard (a 180-megapixel image is almost surely hostile) but not its warning.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageError(Exception):
    """An image file that cannot be used; the message is the reason, for the user."""


def read_bytes(path: Path) -> bytes:
    """Read a whole file, turning OS errors into an ImageError with a readable reason."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError("file not found (a broken link?)") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except IsADirectoryError:
        raise ImageError("is a folder, not a file") from None
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None


def decode_rgb(data: bytes, *, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode encoded image bytes to an upright uint8 RGB array [h, w, 3].

    Greyscale, palette, alpha, CMYK and 16-bit images become RGB (alpha is
    dropped, as TensorFlow's decoders do); animated images give their first
    frame. With `min_size` (height, width), a JPEG much larger than that is
    decoded at a reduced scale (never below twice `min_size`), which keeps huge
    photos cheap in time and memory.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min_size is not None and image.format == "JPEG":
                image.draft("RGB", (2 * min_size[1], 2 * min_size[0]))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_array(image)
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"too large to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image data ({error})") from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to uint8 RGB, scaling 16- and 32-bit greyscale properly."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def resize_tensor(rgb: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: uint8 RGB [h, w, 3] -> float32 [height, width, 3] in [0, 1].

    Shared with the exported bytes-input signature, so serving prepares pixels
    exactly as training did.
    """
    import tensorflow as tf

    pixels = tf.image.convert_image_dtype(rgb, tf.float32)
    return tf.image.resize(pixels, [height, width], method="bilinear", antialias=True)


@functools.lru_cache(maxsize=8)
def _compiled_resize(height: int, width: int) -> Callable[[np.ndarray], Any]:
    import tensorflow as tf

    # Compiled once per size: about twice as fast as running the ops eagerly.
    return tf.function(lambda rgb: resize_tensor(rgb, height=height, width=width),
                       input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])


def resize(rgb: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """uint8 RGB [h, w, 3] -> float32 [height, width, 3] in [0, 1] (the model's input)."""
    return _compiled_resize(height, width)(rgb).numpy()


def load_image(path: Path, *, height: int, width: int) -> np.ndarray:
    """Read, decode and resize one image file; raises ImageError with the reason."""
    return resize(decode_rgb(read_bytes(path), min_size=(height, width)), height=height, width=width)
