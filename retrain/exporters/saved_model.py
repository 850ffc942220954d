"""A SavedModel (`--saved_model_dir`) with two signatures, both returning `prediction` [N, classes].

`serving_default` takes `image`, float32 [N, H, W, 3] RGB in [0, 1];
`serving_bytes` takes `image_bytes`, string [N] of encoded files (JPEG, PNG,
GIF, BMP, WebP), decoded by TensorFlow as training decodes (see
`decode_like_training`) and resized for each module with the very function
training uses (images.resize_tensor), so its pixels equal training's.
A multi-label model has a third signature, `thresholds`: no input, `thresholds`
[labels], the per-label thresholds chosen on validation. The labels, one a line in
class-index order, are in `assets.extra/labels.txt` inside the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrain.config import RetrainConfig
from retrain.errors import RetrainError, reason
from retrain.exporters import Exporter
from retrain.exporters.labels import labels_text
from retrain.images import JPEG_MAX_PIXELS, MAX_PIXELS, ORIENTATION_TAG, resize_tensor
from retrain.names import (BYTES_KEY, BYTES_SIGNATURE, IMAGE_KEY, OUTPUT_KEY, SAVED_MODEL_LABELS, SERVING_SIGNATURE,
                           THRESHOLDS_SIGNATURE)
from retrain.outputs import Output, check_replaceable_folder, replace_folder
from retrain.tfenv import import_tensorflow


class SavedModel(Exporter):
    def outputs(self, config: RetrainConfig) -> list[Output]:
        return [Output("--saved_model_dir", config.saved_model_dir, kind="folder")] if config.saved_model_dir else []

    def check(self, config: RetrainConfig) -> None:
        check_replaceable_folder(config.saved_model_dir, flag="--saved_model_dir")

    def write(self, model: Any, config: RetrainConfig) -> list[Path]:
        tf = import_tensorflow()
        classifier, source = model.classifier, model.source

        @tf.function(input_signature=[model.input_spec(IMAGE_KEY)])
        def serve(image: Any) -> dict[str, Any]:
            return {OUTPUT_KEY: classifier.probabilities(image)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_KEY)])
        def serve_bytes(image_bytes: Any) -> dict[str, Any]:
            features = []
            for member in source.members:
                height, width = member.height, member.width

                def decode(data: Any, height: int = height, width: int = width) -> Any:
                    rgb = decode_like_training(tf, data, height=height, width=width)
                    return resize_tensor(rgb, height=height, width=width)

                pixels = tf.map_fn(decode, image_bytes,
                                   fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
                features.append(member(pixels))
            return {OUTPUT_KEY: classifier.scores(features[0] if len(features) == 1 else tf.concat(features, 1))}

        signatures = {SERVING_SIGNATURE: serve, BYTES_SIGNATURE: serve_bytes}
        if model.head.thresholds is not None:
            thresholds = tf.constant(model.head.thresholds, tf.float32)
            signatures[THRESHOLDS_SIGNATURE] = tf.function(lambda: {THRESHOLDS_SIGNATURE: thresholds},
                                                           input_signature=[])
        classifier.serve, classifier.serve_bytes = serve, serve_bytes

        def save(tmp: Path) -> None:
            try:
                tf.saved_model.save(classifier, str(tmp), signatures=signatures)
                (tmp / SAVED_MODEL_LABELS).parent.mkdir()
                (tmp / SAVED_MODEL_LABELS).write_bytes(labels_text(model.labels))
            except tf.errors.OpError as error:  # TensorFlow's own file writing (e.g. a full disk)
                raise RetrainError(f"cannot write --saved_model_dir {config.saved_model_dir}: "
                                   f"{reason(error).split('; ')[-1]} "
                                   f"(in {config.saved_model_dir.parent}); earlier outputs are kept") from None

        replace_folder(config.saved_model_dir, save, flag="--saved_model_dir")
        return [config.saved_model_dir]


def decode_like_training(tf: Any, data: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: encoded bytes -> uint8 RGB [h, w, 3], as images.decode_rgb (Pillow) decodes for training.

    JPEGs use libjpeg's accurate integer IDCT, as Pillow does (TensorFlow's
    default fast IDCT differs by up to ~20 levels), and Pillow's draft rule:
    a JPEG at least 4x the input size on both sides is decoded at scale 1/2,
    1/4 or 1/8, the smallest that keeps both sides at least twice the input
    size. The pixels then match Pillow's exactly (measured on the fixtures). A JPEG's
    EXIF orientation is applied as training applies it (`jpeg_orientation`).
    WebPs go through TensorFlow's decoder with their own channel count, alpha then
    dropped (`_webp_rgb`); BMPs of 1, 4 or 8 bits per pixel are read from their
    header, palette and rows in plain ops (`_palette_bmp_rgb`), since TensorFlow's
    BMP decoder returns wrong colours for them or fails. Both match Pillow's pixels
    exactly (tested). Other formats go through tf.io.decode_image (first frame,
    alpha dropped, 16-bit scaled to 8).
    An image still at least 4x the input size on both sides is then box-reduced
    as training's `images._shrink` (Pillow's Image.reduce: `_box_reduce`).
    Not replicated: a GIF's transparent palette index (black here; training keeps
    the palette colour, which TensorFlow's GIF decoder does not expose), the EXIF
    orientation of PNG and WebP files, an orientation given only in XMP, and
    rare BMP palettes Pillow takes for greyscale: a black-and-white one at 4 or 8
    bits and greys 0, 1, 2... at 4 bits (Pillow then misreads the rows), and greys
    0, 1, 2... with pixels past the palette's end (Pillow: their index as grey;
    here: black). BMPs with the old 12-byte OS/2 header still go to
    tf.io.decode_image, which refuses them; GIFs too, whose canvas there is the
    largest frame's extent (`_gif_refusal`). Refused with an InvalidArgumentError: animated WebPs,
    RLE-compressed BMPs, and images over training's size limits (`images.MAX_PIXELS`,
    `JPEG_MAX_PIXELS`; a progressive JPEG between the two is decoded here, refused there).
    """
    def jpeg() -> Any:
        shape = tf.io.extract_jpeg_shape(data)
        size = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)
        with tf.control_dependencies([tf.debugging.Assert(size <= JPEG_MAX_PIXELS, [tf.strings.format(
                "JPEG too large to decode safely: {} pixels (at most {})", [size, JPEG_MAX_PIXELS])])]):
            shape = tf.identity(shape)
        fits = tf.minimum(shape[0] // (2 * height), shape[1] // (2 * width))
        branch = tf.cast(fits >= 2, tf.int32) + tf.cast(fits >= 4, tf.int32) + tf.cast(fits >= 8, tf.int32)
        stored = tf.switch_case(branch, [
            lambda ratio=ratio: tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
            for ratio in (1, 2, 4, 8)])
        # Pillow's exif_transpose for orientations 1..8, in order; `turned` is the transposed image.
        turned = tf.transpose(stored, [1, 0, 2])
        return tf.switch_case(jpeg_orientation(tf, data) - 1, [
            lambda: stored,
            lambda: tf.reverse(stored, axis=[1]),  # mirrored left-right
            lambda: tf.reverse(stored, axis=[0, 1]),  # turned 180 degrees
            lambda: tf.reverse(stored, axis=[0]),  # mirrored top-bottom
            lambda: turned,
            lambda: tf.reverse(turned, axis=[1]),  # turned 90 degrees clockwise
            lambda: tf.reverse(turned, axis=[0, 1]),
            lambda: tf.reverse(turned, axis=[0])])  # turned 90 degrees counter-clockwise

    def other() -> Any:
        def checked() -> Any:
            with tf.control_dependencies([_gif_refusal(tf, data)]):
                return tf.constant(True)

        gif = _spells(tf, _bytes_at(tf, data, 0, 3), "GIF")  # (the walk only for a GIF)
        with tf.control_dependencies([tf.cond(gif, checked, lambda: tf.constant(True))]):
            return tf.io.decode_image(data, channels=3, expand_animations=False)

    # A PNG, GIF (its screen), WebP or BMP over training's limit is refused before it is decoded (probes BBB,
    # HHH, III: a 38-byte WebP of 196 megapixels took 4 GB to serve); a JPEG's limit is checked above.
    size = _declared_pixels(tf, data)
    with tf.control_dependencies([tf.debugging.Assert(size <= MAX_PIXELS, [tf.strings.format(
            "image too large to decode safely: {} pixels (at most {})", [size, MAX_PIXELS])])]):
        data = tf.identity(data)
    # Formats TensorFlow's own decoders get wrong (or fail on) get their own branch; the rest go to decode_image.
    kind = tf.where(tf.io.is_jpeg(data), 1, tf.where(_is_webp(tf, data), 2, tf.where(_is_palette_bmp(tf, data), 3, 0)))
    rgb = tf.switch_case(kind, [other, jpeg, lambda: _webp_rgb(tf, data), lambda: _palette_bmp_rgb(tf, data)])
    rgb.set_shape([None, None, 3])
    return _box_reduce(tf, rgb, height=height, width=width)


def _box_reduce(tf: Any, rgb: Any, *, height: int, width: int) -> Any:
    """TensorFlow ops: uint8 RGB [h, w, 3] box-reduced as `images._shrink` does with Pillow's Image.reduce (by
    the largest whole factor that keeps both sides at least twice the input size, when that is 2 or more): each
    output pixel the rounded mean of its factor x factor block, the last row and column of blocks cut short, in
    Pillow's integer arithmetic, so the pixels are Pillow's exactly (probe HHH: without it a 108-megapixel phone
    photo, still 4x the input after its 1/8 decode, was scored 0.006 to 0.019 off label-image's)."""
    shape = tf.shape(rgb, out_type=tf.int64)
    factor = tf.minimum(shape[0] // (2 * height), shape[1] // (2 * width))

    def reduce() -> Any:
        rows, columns = -(-shape[0] // factor), -(-shape[1] // factor)  # blocks, the last ones cut short
        padded = tf.pad(rgb, [[0, rows * factor - shape[0]], [0, columns * factor - shape[1]], [0, 0]])
        # Each block's rows summed first, in uint16 when the factor surely stays at most 257 (255 * 257 fits;
        # the factor squared is at most the image's pixels over 4 * height * width), then its columns.
        narrow = tf.uint16 if MAX_PIXELS // (4 * height * width) <= 257 ** 2 else tf.int32
        by_rows = tf.reduce_sum(tf.reshape(tf.cast(padded, narrow), [rows, factor, -1, 3]), axis=1)
        sums = tf.reduce_sum(tf.reshape(tf.cast(by_rows, tf.int64), [rows, columns, factor, 3]), axis=2)
        tall = tf.minimum(factor, shape[0] - tf.range(rows) * factor)
        wide = tf.minimum(factor, shape[1] - tf.range(columns) * factor)
        count = (tall[:, None] * wide[None, :])[:, :, None]
        return tf.cast(((sums + count // 2) * (2 ** 24 // count)) // 2 ** 24, tf.uint8)  # as Pillow's Reduce.c

    return tf.cond(factor >= 2, reduce, lambda: rgb)


def _declared_pixels(tf: Any, data: Any) -> Any:
    """int64: the pixels a PNG's header (IHDR), a GIF's (its screen), a WebP's (its VP8X canvas, or its VP8 or
    VP8L frame) or a BMP's gives; 0 for other data."""
    head = _bytes_at(tf, data, 0, 30)
    png = tf.reduce_all(tf.equal(head[:8], tf.constant([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], tf.int64)))
    big_endian = tf.constant([2 ** 24, 2 ** 16, 2 ** 8, 1], tf.int64)
    png_size = tf.reduce_sum(head[16:20] * big_endian) * tf.reduce_sum(head[20:24] * big_endian)

    def little(at: int, width: int) -> Any:
        return tf.reduce_sum(head[at:at + width] * tf.constant([256 ** i for i in range(width)], tf.int64))

    vp8l = little(21, 4)  # after its signature byte: width - 1 and height - 1, 14 bits each
    webp_size = tf.constant(0, tf.int64)
    for chunk, size in (("VP8X", (little(24, 3) + 1) * (little(27, 3) + 1)),  # the canvas: 24 bits each, minus 1
                        ("VP8L", (vp8l % 2 ** 14 + 1) * (vp8l // 2 ** 14 % 2 ** 14 + 1)),
                        ("VP8 ", (little(26, 2) % 2 ** 14) * (little(28, 2) % 2 ** 14))):  # (2 bits of scale)
        webp_size = tf.where(_spells(tf, head[12:16], chunk), size, webp_size)
    # A BMP: 16-bit sides in the old 12-byte OS/2 header, else 32-bit ones (a negative height: rows top-down).
    bmp_height = little(22, 4) - tf.cast(little(22, 4) >= 2 ** 31, tf.int64) * 2 ** 32
    bmp_size = tf.where(tf.equal(little(14, 4), 12), little(18, 2) * little(20, 2), little(18, 4) * tf.abs(bmp_height))
    gif_size = (head[6] + 256 * head[7]) * (head[8] + 256 * head[9])  # its screen (`_gif_refusal`: its frames)
    return tf.where(png, png_size, tf.where(
        _spells(tf, head[:3], "GIF"), gif_size, tf.where(
            _is_webp(tf, data), webp_size, tf.where(_spells(tf, head[:2], "BM"), bmp_size, tf.constant(0, tf.int64)))))


_GIF_STEPS = 65_536  # steps of the walk of a GIF's blocks at most
_GIF_RUN = 64  # sub-blocks of one length a step skips at most
_GIF_RASTER = 3 * MAX_PIXELS  # the frames' pixels in all at most (one byte each as TensorFlow reads them)


def _gif_refusal(tf: Any, data: Any) -> Any:
    """An Assert op refusing a GIF that TensorFlow would decode into too much memory. Its decoder reads every
    frame (one byte a pixel: at most _GIF_RASTER in all) and makes a canvas as large as the largest frame's
    extent, or the screen (at most MAX_PIXELS: probe KKK, a 16 x 16 first frame, then one of 13,500 x 13,400,
    135 kB, took 3 GB; training reads the first frame only). Every frame is read by walking the file's blocks
    and sub-blocks in TensorFlow ops (probe III: a first frame larger than the screen; KKK: 5,000 sub-blocks
    before it got past a shorter walk; LLL: 250 frames of 1280 x 720 are no more than one, 9 MB). A file longer
    than _GIF_STEPS steps is refused too."""
    raw = tf.pad(tf.io.decode_raw(data, tf.uint8), [[0, 16]])  # the file, and zeros past its end
    end = tf.cast(tf.size(raw), tf.int64) - 16

    def table(packed: Any) -> Any:  # a colour table's bytes, from its packed field
        return tf.where(packed >= 128, 3 * 2 ** (packed % 8 + 1), tf.constant(0, tf.int64))

    # What the walk expects next: a block's first byte, sub-blocks; the end.
    block, blocks, done = (tf.constant(value, tf.int64) for value in range(3))

    def step(at: Any, expect: Any, sides: Any, raster: Any, steps: Any) -> tuple[Any, Any, Any, Any, Any]:
        near = tf.cast(tf.slice(raw, [tf.minimum(at, end)], [10]), tf.int64)  # one slice a step: the walk's cost
        here = tf.where(at < end, near[0], tf.constant(0, tf.int64))
        descriptor = tf.logical_and(tf.equal(expect, block), tf.equal(here, 0x2C))
        extension = tf.logical_and(tf.equal(expect, block), tf.equal(here, 0x21))
        in_blocks = tf.equal(expect, blocks)
        word = near[1:9:2] + 256 * near[2:10:2]  # left, top, width, height
        sides = tf.where(descriptor, tf.maximum(sides, word[:2] + word[2:]), sides)
        # A run of sub-blocks as long as this one (an image's are, but its last: 255 bytes from most encoders,
        # other lengths from some, probe OOO) is skipped up to _GIF_RUN at a time.
        lengths = tf.cast(tf.gather(raw, tf.minimum(at + (here + 1) * tf.range(_GIF_RUN, dtype=tf.int64), end)),
                          tf.int64)
        alike = tf.reduce_sum(tf.cast(tf.math.cumprod(tf.cast(tf.equal(lengths, here), tf.int64)), tf.int64))
        full = tf.where(here > 0, alike, tf.constant(0, tf.int64))
        moved = tf.where(descriptor, at + 11 + table(near[9]),  # its colour table, then the LZW code size
                         tf.where(extension, at + 2, tf.where(in_blocks, tf.where(full > 0, at + (here + 1) * full,
                                                                                   at + 1 + here), at)))
        # After a trailer, junk or the end of the file: done.
        expect = tf.where(descriptor | extension, blocks, tf.where(
            in_blocks, tf.where(tf.equal(here, 0) & tf.equal(full, 0), block, blocks), done))
        area = tf.where(descriptor, word[2] * word[3], tf.constant(0, tf.int64))
        return moved, expect, sides, raster + area, steps + 1

    head = tf.cast(raw[:13], tf.int64)
    screen = head[6:10:2] + 256 * head[7:10:2]
    _, expect, sides, raster, _ = tf.while_loop(
        lambda at, expect, sides, raster, steps: tf.logical_and(tf.not_equal(expect, done), steps < _GIF_STEPS), step,
        (13 + table(head[10]), block, screen, tf.constant(0, tf.int64), tf.constant(0, tf.int64)))
    walked = tf.debugging.Assert(tf.equal(expect, done), [
        f"GIF too long to check (more than {_GIF_STEPS} steps of its blocks); send its first frame as PNG"])
    with tf.control_dependencies([walked]):
        return tf.debugging.Assert(
            tf.logical_and(sides[0] * sides[1] <= MAX_PIXELS, raster <= _GIF_RASTER), [tf.strings.format(
                "GIF too large to decode safely: a canvas of {} x {} pixels and frames of {} pixels in all as "
                "TensorFlow decodes it (at most {} and {}); send its first frame as PNG",
                [sides[0], sides[1], raster, MAX_PIXELS, _GIF_RASTER])])


def _bytes_at(tf: Any, data: Any, offset: int, count: int) -> Any:
    """int64 [count]: the bytes of data from offset on, zeros past its end (short data is no error here)."""
    head = tf.io.decode_raw(tf.strings.substr(data, 0, offset + count), tf.uint8)
    return tf.pad(tf.cast(head, tf.int64), [[0, offset + count - tf.size(head)]])[offset:]


def _spells(tf: Any, found: Any, text: str) -> Any:
    """Whether the int64 bytes `found` are the ASCII `text`."""
    return tf.reduce_all(tf.equal(found, tf.constant(list(text.encode("ascii")), tf.int64)))


def _substr(tf: Any, data: Any, start: Any, length: Any) -> Any:
    """tf.strings.substr that gives the empty string, not an error, for a start past the end."""
    return tf.strings.substr(data, tf.minimum(start, tf.cast(tf.strings.length(data), tf.int64)), length)


def _is_webp(tf: Any, data: Any) -> Any:
    head = _bytes_at(tf, data, 0, 12)
    return _spells(tf, head[:4], "RIFF") & _spells(tf, head[8:], "WEBP")


def _webp_rgb(tf: Any, data: Any) -> Any:
    """TensorFlow ops: a still WebP -> uint8 RGB, alpha dropped; an animated one -> InvalidArgumentError.

    channels=0, then the first three: decode_image(channels=3) refuses a WebP
    with alpha and channels=4 one without. An animated WebP (the VP8X chunk's
    animation flag) must never reach TensorFlow's WebP decoder: in TF 2.21 it
    fails on every such file and channels=0 crashed the process (munmap_chunk).
    """
    chunk = _bytes_at(tf, data, 12, 9)  # the first chunk's name, size and (in VP8X) flags
    animated = _spells(tf, chunk[:4], "VP8X") & tf.not_equal(tf.bitwise.bitwise_and(chunk[8], 0x02), 0)
    refuse = tf.debugging.Assert(tf.logical_not(animated), [
        "animated WebP is not supported by serving_bytes; send its first frame as PNG or JPEG"])
    with tf.control_dependencies([refuse]):
        return tf.io.decode_image(data, channels=0, expand_animations=False)[:, :, :3]


# A BMP's BITMAPFILEHEADER (14 bytes) and the BITMAPINFOHEADER fields read here, little-endian, from offset 0.
_BMP_HEADER = 54
_BMP_MIN_DIB = 40  # BITMAPINFOHEADER and its successors; the OS/2 12-byte header lays fields out otherwise


def _bmp_field(tf: Any, head: Any, offset: int, width: int, *, signed: bool = False) -> Any:
    """int64: the little-endian integer of `width` bytes at offset in the header bytes."""
    value = tf.reduce_sum(head[offset:offset + width] * tf.constant([256 ** i for i in range(width)], tf.int64))
    return value - tf.cast(value >= 2 ** (8 * width - 1), tf.int64) * 2 ** (8 * width) if signed else value


def _is_palette_bmp(tf: Any, data: Any) -> Any:
    """A BMP of 1, 4 or 8 bits per pixel: TensorFlow's decode_bmp returns wrong pixels or fails on these."""
    head = _bytes_at(tf, data, 0, _BMP_HEADER)
    bits = _bmp_field(tf, head, 28, 2)
    return (_spells(tf, head[:2], "BM") & (_bmp_field(tf, head, 14, 4) >= _BMP_MIN_DIB)
            & ((bits == 1) | (bits == 4) | (bits == 8)))


def _palette_bmp_rgb(tf: Any, data: Any) -> Any:
    """TensorFlow ops: an uncompressed BMP of 1, 4 or 8 bits per pixel -> uint8 RGB, as Pillow reads it.

    Rows are padded to 4 bytes and stored bottom-up unless the height is
    negative; within a byte the leftmost pixel is in the high bits. An index
    past the palette's colours is black, as in Pillow. RLE-compressed files
    are refused with an InvalidArgumentError.
    """
    head = _bytes_at(tf, data, 0, _BMP_HEADER)
    offset, dib = _bmp_field(tf, head, 10, 4), _bmp_field(tf, head, 14, 4)
    width, height = _bmp_field(tf, head, 18, 4, signed=True), _bmp_field(tf, head, 22, 4, signed=True)
    bits, compression, colours = _bmp_field(tf, head, 28, 2), _bmp_field(tf, head, 30, 4), _bmp_field(tf, head, 46, 4)
    colours = tf.where(tf.equal(colours, 0), tf.bitwise.left_shift(tf.constant(1, tf.int64), bits), colours)
    # A pixel offset pointing at the palette itself is taken to mean "right after it", as Pillow takes it.
    offset = tf.where(tf.equal(offset, 14 + dib), offset + 4 * colours, offset)
    rows, stride = tf.abs(height), (width * bits + 31) // 32 * 4
    stored = tf.io.decode_raw(_substr(tf, data, offset, rows * stride), tf.uint8)
    checks = [
        tf.debugging.Assert(tf.equal(compression, 0), [tf.strings.format(
            "compressed BMP (compression {}, e.g. RLE) is not supported by serving_bytes; send it as PNG",
            compression)]),
        tf.debugging.Assert((width > 0) & (rows > 0), [tf.strings.format(
            "corrupt BMP: its header gives a size of {} x {} pixels", [width, height])]),
        tf.debugging.Assert(tf.equal(tf.size(stored, out_type=tf.int64), rows * stride), [
            "truncated BMP: the file ends before its last row of pixels"]),
        # As training (Pillow) refuses it: a palette it calls unsupported. (A decompression bomb, a 32 MB 1-bit
        # BMP of 256 megapixels, is refused from its header before this branch: `_declared_pixels`.)
        tf.debugging.Assert(colours <= 65536, [tf.strings.format("corrupt BMP: a palette of {} colours", colours)]),
    ]
    with tf.control_dependencies(checks):
        per_byte = 8 // bits
        shifts = tf.cast(8 - bits * (1 + tf.range(per_byte)), tf.uint8)  # the leftmost pixel is in the high bits
        mask = tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), bits) - 1, tf.uint8)
        packed = tf.reshape(stored, [rows, stride, 1])  # uint8 throughout: a byte a pixel at most
        indices = tf.reshape(tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed, shifts), mask), [rows, -1])
        indices = indices[:, :width]
        indices = tf.cond(height > 0, lambda: tf.reverse(indices, axis=[0]), lambda: indices)
        return tf.gather(_bmp_palette(tf, data, start=14 + dib, colours=colours), tf.cast(indices, tf.int32))


def _bmp_palette(tf: Any, data: Any, *, start: Any, colours: Any) -> Any:
    """uint8 [256, 3] RGB: the palette's first `colours` entries (B, G, R, 0 each), then black."""
    entries = tf.io.decode_raw(_substr(tf, data, start, 4 * tf.minimum(colours, 256)), tf.uint8)
    entries = tf.reshape(tf.pad(entries, [[0, 1024 - tf.size(entries)]]), [256, 4])
    return tf.reverse(entries[:, :3], axis=[1])


# How much of a JPEG is searched for its EXIF segment: it comes before the image data, after at most a
# few other segments (JFIF, ICC profile: each at most 64 KiB).
_EXIF_SEARCH = 1 << 18
# The bytes of one number of each TIFF value type Pillow reads (by type, 0..16; 0: a type it skips).
_TIFF_UNITS = (0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4, 0, 0, 8)


def jpeg_orientation(tf: Any, data: Any) -> Any:
    """TensorFlow ops: a JPEG's EXIF orientation, int32 1..8, read as Pillow reads it for training.

    Walks the JPEG's segments to the first APP1 that starts `Exif\\0\\0`, then
    reads tag 0x0112 from its first IFD, in either byte order, as Pillow 13
    does: the first entry of a known type with a value, whose first number
    counts. Anything missing or malformed (no EXIF, a segment cut short, an
    IFD past the segment's end, a value outside 1..8) gives 1, the pixels as
    stored, as training falls back to.
    """
    head = tf.io.decode_raw(tf.strings.substr(data, 0, _EXIF_SEARCH), tf.uint8)
    size = tf.size(head, out_type=tf.int64)
    padded = tf.concat([tf.cast(head, tf.int64), tf.zeros([8], tf.int64)], 0)

    def at(offset: Any) -> Any:  # the byte at offset (a tensor of offsets: each); 0 past the end
        return tf.gather(padded, tf.clip_by_value(offset, 0, size + 7))

    one = tf.constant(1, tf.int64)
    exif_magic = tf.constant([ord(c) for c in "Exif"] + [0, 0], tf.int64)

    def segment(position: Any, start: Any, end: Any) -> tuple[Any, Any, Any]:
        """One step of the walk: past one marker, or stopped (-1) at the EXIF segment or the image data."""
        marker, length = at(position + 1), at(position + 2) * 256 + at(position + 3)
        standalone = tf.equal(marker, 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
        fill = tf.equal(marker, 0xFF)
        cut = tf.logical_not(standalone | fill) & ((length < 2) | (position + 2 + length > size))
        stop = tf.reduce_any(tf.stack([tf.not_equal(at(position), 0xFF), tf.equal(marker, 0xDA),
                                       tf.equal(marker, 0xD9), cut]))
        exif = tf.logical_not(stop) & tf.equal(marker, 0xE1) & tf.reduce_all(
            tf.equal(at(position + 4 + tf.range(6, dtype=tf.int64)), exif_magic))
        step = tf.where(fill, one, tf.where(standalone, 2 * one, 2 + length))
        return (tf.where(stop | exif, -one, position + step), tf.where(exif, position + 10, start),
                tf.where(exif, position + 2 + length, end))

    # After the SOI marker (FF D8); a few hundred steps reach far past any real EXIF segment.
    _, tiff, end = tf.while_loop(lambda position, start, end: position >= 0, segment,
                                 (2 * one, -one, -one), maximum_iterations=512)

    little = tf.equal(at(tiff), 0x49) & tf.equal(at(tiff + 1), 0x49)
    big = tf.equal(at(tiff), 0x4D) & tf.equal(at(tiff + 1), 0x4D)

    def number(offset: Any, width: int) -> Any:  # unsigned (8 bytes: the bits, in an int64)
        digits = tf.stack([at(offset + i) for i in range(width)], axis=-1)
        weights = [256 ** i for i in range(width)]
        return tf.where(little, tf.reduce_sum(digits * tf.constant(weights, tf.int64), -1),
                        tf.reduce_sum(digits * tf.constant(weights[::-1], tf.int64), -1))

    # The TIFF header Pillow takes: II or MM, then 42 in either byte order; IFD0 where it says.
    magic = at(tiff + 2) * 256 + at(tiff + 3)
    header = (tiff >= 0) & (little | big) & ((magic == 0x002A) | (magic == 0x2A00))
    ifd, limit = tiff + number(tiff + 4, 4), end - tiff  # (offsets count from the header; limit: its bytes)
    # Entries are read until the segment ends, even when the IFD says more (an EXIF block cut short: probe ZZ).
    count = tf.where(header & (ifd + 2 <= end), tf.minimum(number(ifd, 2), (end - ifd - 2) // 12), 0)
    entries = ifd + 2 + 12 * tf.range(tf.maximum(count, 0))
    units = tf.constant(_TIFF_UNITS, tf.int64)

    def size_of(entry: Any) -> Any:  # the bytes of an entry's value: 0 for a type Pillow skips
        kind = number(entry + 2, 2)
        return number(entry + 4, 4) * tf.gather(units, tf.where(kind < len(_TIFF_UNITS), kind, 0))

    lengths = size_of(entries)
    pointer = lengths > 4  # the value lies elsewhere: at an offset from the header, if within its bytes
    offsets = number(entries + 8, 4)
    seen = tf.cumsum(tf.where(pointer, lengths, 0))  # Pillow skips a value once the values so far pass the limit,
    past = pointer & (seen <= limit) & (offsets + lengths > limit)  # and stops at one that runs past the end
    readable = (lengths > 0) & (~pointer | ((seen <= limit) & ~past)) & tf.equal(tf.cumsum(
        tf.cast(past, tf.int64), exclusive=True), 0)
    # Pillow keeps the first entry of the tag that it reads; its first number is the orientation.
    first = tf.concat([tf.boolean_mask(entries, tf.equal(number(entries, 2), ORIENTATION_TAG) & readable), [-one]],
                      0)[0]
    kind = number(first + 2, 2)
    at_value = tf.where(size_of(first) > 4, tiff + number(first + 8, 4), first + 8)

    def signed(value: Any, bits: int) -> Any:
        return tf.where(value >= 2 ** (bits - 1), value - 2 ** bits, value)

    numerator, denominator = signed(number(at_value, 4), 32), signed(number(at_value + 4, 4), 32)
    unsigned_ratio = tf.equal(kind, 5)
    numerator = tf.where(unsigned_ratio, number(at_value, 4), numerator)
    denominator = tf.where(unsigned_ratio, number(at_value + 4, 4), denominator)
    safe = tf.where(tf.equal(denominator, 0), one, denominator)
    ratio = tf.where(tf.equal(denominator, 0) | tf.not_equal(tf.math.floormod(numerator, safe), 0), -one,
                     tf.math.floordiv(numerator, safe))
    single = tf.bitcast(tf.cast(number(at_value, 4), tf.uint32), tf.float32)
    double = tf.bitcast(number(at_value, 8), tf.float64)

    def whole(value: Any) -> Any:  # a float equal to a whole number 1..8 is that number (6.0 == 6 in Pillow)
        value = tf.cast(value, tf.float64)
        return tf.where(tf.equal(value, tf.round(value)) & (value >= 1) & (value <= 8), tf.cast(
            tf.clip_by_value(value, 0, 9), tf.int64), -one)

    # By type: SBYTE, SHORT, SSHORT, LONG, SLONG, IFD, LONG8, RATIONAL, SRATIONAL, FLOAT, DOUBLE give a number;
    # BYTE gives Pillow bytes, and ASCII and UNDEFINED text or bytes: no orientation.
    value = tf.switch_case(tf.cast(tf.clip_by_value(kind, 0, 17), tf.int32), [
        lambda: -one, lambda: -one, lambda: -one, lambda: number(at_value, 2), lambda: number(at_value, 4),
        lambda: ratio, lambda: at(at_value), lambda: -one, lambda: number(at_value, 2), lambda: number(at_value, 4),
        lambda: ratio, lambda: whole(single), lambda: whole(double), lambda: number(at_value, 4), lambda: -one,
        lambda: -one, lambda: number(at_value, 8), lambda: -one])
    return tf.cast(tf.where((first >= 0) & (value >= 1) & (value <= 8), value, one), tf.int32)
