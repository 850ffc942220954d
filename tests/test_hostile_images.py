"""Hostile image files: every one is either used (converted to RGB) or skipped with its name and reason.

Each odd-but-valid format is decoded on its own and checked for the right
pixels; each broken file is checked for the reason it is refused; then one
real `python -m retrain` run over a class folder holding all of them proves
that the run goes on, names every skipped file, counts them in the final
"skipped N images" line and still trains on every good image.
"""

from __future__ import annotations

import io
import os
import ctypes
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.images import ImageError, decode_rgb, read_bytes
from tests.conftest import flags, make_colour_tree, run_script, unreadable

RED = (220, 40, 40)
SIZE = (40, 48)  # height, width


def red_pixels(seed: int = 0) -> np.ndarray:
    """A noisy red uint8 RGB array [40, 48, 3]."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array(RED) + rng.normal(0, 10, (*SIZE, 3)), 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, **kwargs: object) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


# --- files that must be decoded (name -> writer) -------------------------------------------------

def bmp_named_jpg(path: Path) -> Path:
    return _save(red_pixels(), path.with_name("bmp_named.jpg"), format="BMP")


def png_named_jpg(path: Path) -> Path:
    return _save(red_pixels(), path.with_name("png_named.jpg"), format="PNG")


def png_alpha(path: Path) -> Path:
    alpha = np.full(SIZE, 0, np.uint8)  # fully transparent: the colour must survive, alpha is dropped
    return _save(np.dstack([red_pixels(), alpha]), path.with_name("alpha.png"))


def palette_png(path: Path) -> Path:
    image = Image.fromarray(red_pixels()).convert("P", palette=Image.Palette.ADAPTIVE)
    # Per-entry transparency (tRNS as bytes): Pillow warns when such images go straight to RGB.
    image.save(path.with_name("palette.png"), transparency=bytes(range(256)))
    return path.with_name("palette.png")


def png_16bit(path: Path) -> Path:
    grey = (red_pixels()[:, :, 0].astype(np.uint16) * 257)  # 220 -> 56540 of 65535
    return _save(grey, path.with_name("grey16.png"))


def grey_jpeg(path: Path) -> Path:
    return _save(red_pixels()[:, :, 0], path.with_name("grey.jpg"), quality=95)


def cmyk_jpeg(path: Path) -> Path:
    Image.fromarray(red_pixels()).convert("CMYK").save(path.with_name("cmyk.jpg"), quality=95)
    return path.with_name("cmyk.jpg")


def animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(red_pixels())] + [Image.new("RGB", SIZE[::-1], (0, 0, 255))] * 2
    frames[0].save(path.with_name("anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path.with_name("anim.gif")


def webp(path: Path) -> Path:
    return _save(red_pixels(), path.with_name("photo.webp"), quality=95)


def exif_rotated(path: Path) -> Path:
    """Stored 48 wide x 40 high with a green left edge; EXIF orientation 6 means 'rotate 90 clockwise'."""
    pixels = red_pixels()
    pixels[:, :8] = (0, 200, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path.with_name("exif_rotated.jpg"), exif=exif, quality=95)
    return path.with_name("exif_rotated.jpg")


GOOD = [bmp_named_jpg, png_named_jpg, png_alpha, palette_png, png_16bit, grey_jpeg, cmyk_jpeg, animated_gif,
        webp, exif_rotated]


@pytest.mark.parametrize("make", GOOD, ids=lambda f: f.__name__)
def test_odd_formats_decode_to_rgb(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    import warnings

    path = make(tmp_path / "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning would reach the user's terminal
        rgb = decode_rgb(read_bytes(path), min_size=(32, 32))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    if make is exif_rotated:
        assert rgb.shape[:2] == (48, 40)  # upright: rotated to portrait
        assert rgb[:8, :, 1].mean() > 150 and rgb[-8:, :, 0].mean() > 150  # the green edge is now on top
        return
    assert rgb.shape[:2] == SIZE
    mean = rgb.reshape(-1, 3).mean(axis=0)
    if make in (png_16bit, grey_jpeg):
        assert abs(mean[0] - mean[1]) < 1 and abs(mean[0] - RED[0]) < 8  # grey, scaled to 8 bits properly
    else:
        assert np.abs(mean - np.array(RED)).max() < 12, mean  # still red: no inverted CMYK, no lost palette



def test_16_bit_greyscale_keeps_one_scale_as_serving_decodes_it() -> None:
    """A dark 16-bit PNG (no value over 255) was read as 8-bit, 257 times brighter than one that differs by a
    single count in one pixel; now both keep their high byte, as TensorFlow's PNG decoder (serving) does."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    dark = (red_pixels()[:, :, 0].astype(np.uint16))  # values up to 255 of 65535
    brighter = dark.copy()
    brighter[0, 0] = 256
    decoded = []
    for grey in (dark, brighter, dark * 257, np.arange(40 * 48, dtype=np.uint16).reshape(SIZE) * 34):
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format="PNG")
        assert Image.open(buffer).mode == "I;16"
        rgb = decode_rgb(buffer.getvalue())
        assert np.array_equal(rgb, tf.io.decode_png(buffer.getvalue(), channels=3).numpy())
        decoded.append(rgb)
    assert np.abs(decoded[0].astype(int) - decoded[1].astype(int)).max() <= 1  # one count apart: alike

def test_32_bit_greyscale_is_scaled_by_its_range() -> None:
    """Mode I and F images do not say their range: values up to 255 are 8-bit, larger ones 16-bit (probe ZZO: read
    as 8-bit whatever their values, a 16-bit scan came out white and passed the tests)."""
    from retrain.images import to_rgb

    wide = Image.fromarray(np.array([[0, 32768, 65535]], np.int32), mode="I")
    narrow = Image.fromarray(np.array([[0, 128, 255]], np.int32), mode="I")
    assert to_rgb(wide).getpixel((1, 0)) == (128, 128, 128) and to_rgb(wide).getpixel((2, 0)) == (255, 255, 255)
    assert to_rgb(narrow).getpixel((1, 0)) == (128, 128, 128)
    floats = Image.fromarray(np.array([[0.0, 1000.0, 65535.0]], np.float32), mode="F")
    assert to_rgb(floats).getpixel((1, 0)) == (4, 4, 4)


# --- files that must be refused with a reason -----------------------------------------------------

def _truncated_jpeg(path: Path) -> Path:
    """The first half of a real 200 x 200 photo: headers intact, scan data cut off."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _unreadable(path: Path) -> Path:
    return unreadable(path, b"\xff\xd8\xff")


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_jpeg": (_truncated_jpeg, "corrupt or truncated image data"),
    "zero_bytes": (lambda p: (p.write_bytes(b""), p)[1], "empty file (0 bytes)"),
    "text_named_jpg": (lambda p: (p.write_text("just some notes, not a photo\n"), p)[1],
                       "not a recognised image format"),
    "broken_symlink": (lambda p: (p.symlink_to(p.parent / "gone.jpg"), p)[1], "file not found (a broken link?)"),
    "symlink_loop": (lambda p: (p.symlink_to(p), p)[1], "cannot read: Too many levels of symbolic links"),
    "fifo_named_jpg": (lambda p: (os.mkfifo(p), p)[1], "not a regular file"),
    "no_read_permission": (_unreadable, "permission denied"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, name: str) -> None:
    make, reason = BAD[name]
    (tmp_path / "class").mkdir()
    path = make(tmp_path / "class" / f"{name}.jpg")
    with pytest.raises(ImageError) as error:
        decode_rgb(read_bytes(path), min_size=(32, 32))  # must raise, never hang (the FIFO) or crash
    assert reason in str(error.value)


def test_files_no_decoder_recognises_say_what_they_hold_when_their_first_bytes_tell() -> None:
    """Probe NNN: an iPhone's HEIC photo named .jpg, a PNG with a damaged header, a video were all only 'not a
    recognised image format'."""
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    damaged = bytearray(png.getvalue())
    damaged[29] ^= 0xFF  # inside IHDR: its CRC no longer matches
    cases = {b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(500): "it holds a HEIC/HEIF photo (as iPhones save them); "
                                                                "convert it to JPEG or PNG",
             b"\0\0\0\x1cftypavif" + bytes(300): "it holds an AVIF image; convert it to JPEG or PNG",
             b"\0\0\0\x14ftypqt  " + bytes(300): "it holds a video, not a photo",
             b"\0\0\0\x18ftypavc1" + bytes(300): "it holds a video, not a photo",
             b"\x1a\x45\xdf\xa3" + bytes(300): "it holds a video, not a photo",
             b"RIFF\0\0\0\0AVI LIST" + bytes(300): "it holds a video, not a photo",
             bytes(damaged): "it holds a damaged PNG image (its header does not read)",
             b"%PDF-1.7\n" + bytes(100): "it holds a PDF, not a photo",
             b"<html><body>not found</body></html>": ""}
    for data, held in cases.items():
        with pytest.raises(ImageError) as error:
            decode_rgb(data, min_size=(32, 32))
        assert str(error.value) == "not a recognised image format" + (f": {held}" if held else ""), data[:16]


def test_unreadable_by_permission_bits(tmp_path: Path) -> None:
    """The plain chmod 000 case. Root reads such files anyway, so as root this thread's file-system
    identity is switched to user `nobody` (setfsuid) while the file is read: the kernel's real check."""
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # traversable by anyone, unlike pytest's tmp_path
    folder.chmod(0o755)
    path = folder / "locked.jpg"
    _save(red_pixels(), path)
    libc = ctypes.CDLL(None, use_errno=True)

    def read_as_nobody() -> bytes:
        previous = libc.setfsuid(65534) if os.geteuid() == 0 else None
        try:
            return read_bytes(path)
        finally:
            if previous is not None:
                libc.setfsuid(previous)

    try:
        assert read_as_nobody()  # the control: readable while its bits allow it
        path.chmod(0)
        with pytest.raises(ImageError, match="permission denied"):
            read_as_nobody()
    finally:
        shutil.rmtree(folder)


def test_a_jpeg_over_the_decompression_bomb_limit_is_decoded_at_reduced_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200-megapixel phone photo (16,320 x 12,240) was skipped as "too large to decode safely (... could be
    decompression bomb DOS attack)" (probe ZZ), though a JPEG is decoded at reduced scale. Pillow's limit is
    lowered here to the scale of small images: a baseline JPEG up to JPEG_MAX_PIXELS decodes to the pixels it
    gives under the limit; a larger one, or another format over MAX_PIXELS, is refused in retrain's words."""
    from retrain import images

    photo = Image.fromarray(np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    data = {}
    for name, size in (("jpeg", (160, 120)), ("huge_jpeg", (400, 300)), ("png", (160, 120)),
                       ("progressive_jpeg", (160, 120))):
        buffer = io.BytesIO()
        photo.resize(size).save(buffer, format="PNG" if name == "png" else "JPEG", quality=90,
                                progressive=name.startswith("progressive"))
        data[name] = buffer.getvalue()
    expected = decode_rgb(data["jpeg"], min_size=(8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # Pillow refuses over 10,000 pixels
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    monkeypatch.setattr(images, "JPEG_MAX_PIXELS", 40_000)
    assert np.array_equal(decode_rgb(data["jpeg"], min_size=(8, 8)), expected)  # 19,200 pixels, read at 1/8
    # A progressive JPEG keeps its coefficients (2.7 GB at 342 megapixels, probe BBB): Pillow's limit stands.
    for name, pixels, kind in (("huge_jpeg", 120_000, "a JPEG"), ("png", 19_200, "a PNG image"),
                               ("progressive_jpeg", 19_200, "a progressive JPEG")):
        with pytest.raises(ImageError) as refused:
            decode_rgb(data[name], min_size=(8, 8))
        assert str(refused.value) == (f"too large to decode safely ({pixels:,} pixels, {kind}; retrain decodes up "
                                      "to 10,000 pixels, or 40,000 for a baseline JPEG)"), name
    with pytest.raises(ImageError, match="too large to decode safely"):  # not decoded at reduced scale: refused
        decode_rgb(data["jpeg"])


@pytest.mark.integration  # 3.6 s: 100-megapixel images decoded in a fresh process
def test_very_large_images_decode_in_bounded_memory(tmp_path: Path) -> None:
    """10,000 x 10,000 pixels: a JPEG is decoded at reduced scale, a PNG box-reduced right after decoding.

    Measured in a fresh process (peak RSS growth while loading one image at 224 x 224).
    Without the early reduction the PNG cost about 2 GB and 11 s here.
    """
    make = f"""
from PIL import Image
gradient = Image.linear_gradient("L").resize((10000, 10000))
big = Image.merge("RGB", (gradient, gradient.rotate(90), gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
big.save("{tmp_path}/big.jpg", quality=85)
big.save("{tmp_path}/big.png", compress_level=1)
big.resize((64, 64)).save("{tmp_path}/small.jpg")
"""
    run_script("-c", make, timeout=300)  # in its own process, so its 300 MB do not mask what is measured
    script = f"""
import resource, time
from pathlib import Path
from retrain.images import load_image
load_image(Path("{tmp_path}/small.jpg"), height=224, width=224)  # warm up the decoders
for name in ("big.jpg", "big.png"):  # ru_maxrss is a high-water mark: the smaller expected peak goes first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    pixels = load_image(Path("{tmp_path}") / name, height=224, width=224)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(name, pixels.shape, round(grown), round(time.monotonic() - start, 2))
"""
    result = run_script("-c", script, timeout=300)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    print(result.stdout)
    for name, limit_mb in (("big.jpg", 100), ("big.png", 600)):
        match = re.match(rf"{re.escape(name)} \(224, 224, 3\) (\d+) ", rows[name])
        assert match, rows[name]
        assert int(match.group(1)) < limit_mb, f"{name}: peak RSS grew {match.group(1)} MB"


# --- one real run over a class folder holding all of them ------------------------------------------

@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_module: Path):
    """A 3-class colour tree whose 'red' class also holds every hostile file, run once through `python -m retrain`."""
    root = tmp_path_factory.mktemp("hostile")
    tree = make_colour_tree(root / "photos", per_class=8)
    red = tree / "red"
    good = [make(red / "x") for make in GOOD]
    bad = {name: make(red / f"{name}.jpg") for name, (make, _reason) in BAD.items()}
    # Never images: hidden files, OS litter and notes are ignored, not "skipped".
    (red / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (red / "._red_000.jpg").write_bytes(b"\0\5\26\7")  # AppleDouble litter from macOS copies
    (red / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (red / "notes.txt").write_text("notes")
    (red / "folder.jpg").mkdir()  # a folder named like an image is walked as a nested folder
    Image.fromarray(red_pixels(5)).save(red / "folder.jpg" / "inner.jpg")
    out = root / "out"
    out.mkdir()
    args = flags(image_dir=tree, tfhub_module=tiny_module, how_many_training_steps=30, output_graph=out / "graph.pb",
                 output_labels=out / "labels.txt", summaries_dir=out / "logs", bottleneck_dir=out / "bottlenecks",
                 checkpoint_path=out / "ckpt" / "ckpt")
    result = run_script("-m", "retrain", *args, timeout=300, check=None)
    return result, tree, good, bad, out


def test_hostile_run_goes_on_and_trains(hostile_run) -> None:
    result, tree, good, bad, out = hostile_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Final test accuracy" in result.stdout
    assert (out / "labels.txt").read_text() == "blue\ngreen\nred\n"
    assert (out / "graph.pb").stat().st_size > 0


def test_hostile_run_names_each_skipped_file_with_its_reason(hostile_run) -> None:
    result, _tree, _good, bad, _out = hostile_run
    for name, path in bad.items():
        reason = BAD[name][1]
        assert f"skipping {path}: {reason}" in result.stderr, name
    skip_lines = [line for line in result.stderr.splitlines() if "skipping " in line]
    assert len(skip_lines) == len(bad)


def test_hostile_run_counts_skips_in_a_final_line(hostile_run) -> None:
    result, *_rest, bad, _out = hostile_run
    lines = result.stderr.strip().splitlines()
    assert f"skipped {len(bad)} image(s) that could not be read, decoded or used" in lines[-1]
    # The split sizes the walk logged are said again without the skipped images (they went stale: probe ZZ).
    found, using = (re.search(rf"{word} 3 classes.*: (\d+) training, (\d+) validation, (\d+) testing images",
                              result.stderr) for word in ("found", "using"))
    assert found and using, result.stderr
    assert sum(map(int, found.groups())) - sum(map(int, using.groups())) == len(bad), (found[0], using[0])
    assert f"skipped {len(bad)} image(s) (of " in result.stderr


def test_hostile_run_uses_every_good_image(hostile_run) -> None:
    """24 plain photos + the odd formats + the image inside folder.jpg/; litter and notes are ignored."""
    result, _tree, good, _bad, _out = hostile_run
    usable = 24 + len(good) + 1
    match = re.search(r"computed (\d+) new bottlenecks, (\d+) from cache", result.stderr)
    assert match, result.stderr
    assert int(match.group(1)) + int(match.group(2)) == usable
    for litter in (".DS_Store", "._red_000.jpg", "Thumbs.db", "notes.txt"):
        assert f"skipping {litter}" not in result.stderr and f"/{litter}:" not in result.stderr
    assert "ignored 1 non-image file(s)" in result.stderr  # notes.txt; hidden files and Thumbs.db silently
