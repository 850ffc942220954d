"""Today's export formats, checked on the real fixtures: TFLite (float and int8) and SavedModel bytes serving.

One module-scoped retraining of the fixture flower photos with the fastest real
module writes every export once; the tests compare them on the test split.
"""

from __future__ import annotations

import io
import json
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS, flags, flowers_config, frozen_graph_scores, invoke, make_colour_tree, require
from retrain.cli import retrain_command
from retrain.images import load_image

@pytest.fixture(scope="module")
def trained(flowers_export) -> dict:
    """The shared retraining of the flower photos (frozen graph, SavedModel and all four TFLite variants)."""
    config, result, stdout, seconds = flowers_export
    test_paths = list(result.splits["testing"].paths)
    images = np.stack([load_image(p, height=224, width=224) for p in test_paths])
    return {"config": config, "result": result, "out": config.output_graph.parent, "paths": test_paths,
            "images": images, "stdout": stdout, "seconds": seconds,
            "frozen": frozen_graph_scores(config.output_graph, images)}


@pytest.fixture(scope="module")
def saved_model(trained: dict):
    """The exported SavedModel, loaded once."""
    from retrain.tfenv import import_tensorflow

    return import_tensorflow().saved_model.load(str(trained["out"] / "saved_model"))


def _interpreter(path: Path):
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(model_path=str(path))


def _tflite_probabilities(path: Path, images: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """Run a whole batch through a TFLite model, (de)quantizing int8 input and output as the model says."""
    interpreter = _interpreter(path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], list(images.shape))
    interpreter.allocate_tensors()
    batch = images
    if source["dtype"] == np.int8:
        scale, zero = source["quantization"]
        batch = np.clip(np.round(images / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(source["index"], batch)
    interpreter.invoke()
    scores = interpreter.get_tensor(target["index"])
    if target["dtype"] == np.int8:
        scale, zero = target["quantization"]
        scores = (scores.astype(np.float32) - zero) * scale
    return scores, source, target


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))


def test_every_export_is_written_and_reported(trained: dict) -> None:
    out = trained["out"]
    expected = [out / "model.tflite", out / "model_float16.tflite", out / "model_dynamic.tflite"]
    assert list(trained["result"].written) == [out / "graph.pb", out / "labels.txt", out / "saved_model", *expected,
                                               out / "web", out / "report.json"]
    reported = re.findall(r"^Wrote (.+) \((\d+(?:\.\d)?) (MB|kB|bytes)\)$", trained["stdout"], re.M)
    assert [Path(path) for path, _size, _unit in reported] == list(trained["result"].written)
    for path, size, unit in reported:
        on_disk = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() \
            else Path(path).stat().st_size
        scale = {"MB": 1e6, "kB": 1e3, "bytes": 1}[unit]
        assert abs(float(size) * scale - on_disk) <= 0.05 * scale, path
    for path in expected:
        assert path.stat().st_size > 100_000, path
    sizes = {path.name: path.stat().st_size for path in expected}
    # Quantized variants are smaller than float32; float16 about half, dynamic (int8 weights) about a quarter.
    assert sizes["model_float16.tflite"] < 0.6 * sizes["model.tflite"]
    assert sizes["model_dynamic.tflite"] < 0.45 * sizes["model.tflite"]
    # Each holds its weights as it says: float16 ones, int8 ones (probe ZZI: a float16 variant converted as dynamic
    # range passed the size check above).
    kinds = {name: {np.dtype(t["dtype"]).name for t in _interpreter(out / name).get_tensor_details()}
             for name in ("model_float16.tflite", "model_dynamic.tflite")}
    assert "float16" in kinds["model_float16.tflite"] and "int8" not in kinds["model_float16.tflite"], kinds
    assert "int8" in kinds["model_dynamic.tflite"] and "float16" not in kinds["model_dynamic.tflite"], kinds
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files are left behind"
    print(f"\n[exports] retrain run with 3 TFLite conversions: {trained['seconds']:.1f} s; sizes: "
          f"graph.pb {trained['config'].output_graph.stat().st_size}, "
          + ", ".join(f"{name} {size}" for name, size in sizes.items()))


def test_float_tflite_agrees_with_frozen_graph(trained: dict) -> None:
    scores, source, target = _tflite_probabilities(trained["out"] / "model.tflite", trained["images"])
    assert source["dtype"] == np.float32 and target["dtype"] == np.float32
    assert list(source["shape_signature"]) == [-1, 224, 224, 3]
    agreement = _agreement(scores, trained["frozen"])
    print(f"\n[exports] float32 TFLite top-1 agreement {agreement:.3f} on {len(scores)} test images, "
          f"max |dp| {np.abs(scores - trained['frozen']).max():.2e}")
    assert len(scores) >= 30
    assert agreement >= 0.98
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-4)


@pytest.mark.parametrize("variant", ["float16", "dynamic"])
def test_float_input_variants_agree_with_frozen_graph(trained: dict, variant: str) -> None:
    scores, source, target = _tflite_probabilities(trained["out"] / f"model_{variant}.tflite", trained["images"])
    assert source["dtype"] == np.float32 and target["dtype"] == np.float32
    agreement = _agreement(scores, trained["frozen"])
    print(f"\n[exports] {variant} TFLite top-1 agreement {agreement:.3f}")
    assert agreement >= 0.95


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory, flowers_bottlenecks: Path) -> dict:
    """A retrain of the fixture flowers (as the shared one: same module, split and seed) writing the frozen graph
    and a fully integer TFLite model calibrated on the default 300 training images."""
    from retrain.pipeline import run

    out = tmp_path_factory.mktemp("int8")
    config = flowers_config(out, flowers_bottlenecks, output_tflite=out / "model.tflite", tflite_quantization=("int8",))
    result = run(config)
    paths = list(result.splits["testing"].paths)
    images = np.stack([load_image(p, height=224, width=224) for p in paths])
    return {"out": out, "paths": paths, "images": images,
            "frozen": frozen_graph_scores(config.output_graph, images)}


@pytest.mark.integration  # calibration runs 300 images through the TFLite calibrator: 20 s on 2 cores
def test_int8_tflite_agrees_with_frozen_graph(int8_run: dict) -> None:
    trained = int8_run
    model = trained["out"] / "model.tflite"  # the first variant asked for goes to --output_tflite itself
    assert model.stat().st_size < 0.35 * (trained["out"] / "graph.pb").stat().st_size
    scores, source, target = _tflite_probabilities(model, trained["images"])
    # Fully integer: int8 in and out. Photos span 0..255, so the input scale is 1/255 and the zero
    # point -128 (q = pixel - 128); the int8 softmax output is fixed at scale 1/256, zero point -128.
    assert source["dtype"] == np.int8 and target["dtype"] == np.int8
    assert source["quantization"][0] == pytest.approx(1 / 255, rel=1e-3) and source["quantization"][1] == -128
    assert target["quantization"] == (pytest.approx(1 / 256), -128)
    agreement = _agreement(scores, trained["frozen"])
    print(f"\n[exports] int8 TFLite top-1 agreement {agreement:.3f}, max |dp| "
          f"{np.abs(scores - trained['frozen']).max():.3f}")
    assert agreement >= 0.95
    # label-image reads the integer model as it is: it quantizes the pixels and dequantizes the scores itself.
    from retrain.cli import label_image_command

    result = invoke(label_image_command, ["--graph", str(model), "--labels", str(trained["out"] / "labels.txt"),
                                          "--json", *map(str, trained["paths"][:10])])
    labels = (trained["out"] / "labels.txt").read_text().splitlines()
    printed = np.array([[{p["label"]: p["score"] for p in record["predictions"]}[label] for label in labels]
                        for record in json.loads(result.stdout)])
    np.testing.assert_allclose(printed, scores[:10], atol=1e-6)
    assert set(np.round(printed.ravel() * 256, 3)) <= set(range(257))  # dequantized 8-bit steps of 1/256


def test_tflite_signature_matches_saved_model(trained: dict) -> None:
    interpreter = _interpreter(trained["out"] / "model.tflite")
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["prediction"]}}
    runner = interpreter.get_signature_runner("serving_default")
    single = trained["images"][:1]
    np.testing.assert_allclose(runner(image=single)["prediction"], trained["frozen"][:1], atol=1e-4)


def test_saved_model_bytes_signature_matches_image_signature(trained: dict, saved_model: object) -> None:
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    model = saved_model
    assert set(model.signatures) == {"serving_default", "serving_bytes"}
    pick = slice(0, None, 4)  # every fourth test JPEG: every class, a quarter of the forward passes
    from_bytes = model.signatures["serving_bytes"](
        image_bytes=tf.constant([p.read_bytes() for p in trained["paths"][pick]]))["prediction"].numpy()
    from_images = model.signatures["serving_default"](image=tf.constant(trained["images"][pick]))["prediction"].numpy()
    difference = np.abs(from_bytes - from_images).max()
    print(f"\n[exports] bytes vs image signature on {len(from_bytes)} test JPEGs: max |dp| {difference:.2e}")
    np.testing.assert_allclose(from_bytes, from_images, atol=1e-4)
    np.testing.assert_allclose(from_images, trained["frozen"][pick], atol=1e-4)


def test_bytes_signature_reads_other_formats(trained: dict, saved_model: object, tmp_path: Path) -> None:
    """BMP photos, PNG/GIF with alpha or a palette, and a big JPEG (decoded at reduced scale) match training."""
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    model = saved_model
    photo = Image.open(trained["paths"][0]).convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "alpha.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.gif")
    photo.convert("L").save(tmp_path / "grey.png")
    photo.resize((2000, 1500)).save(tmp_path / "phone.jpg", quality=90)
    for orientation in (3, 6, 8):  # a phone held upside down, upright, the other way: stored sideways + EXIF
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo.resize((1600, 1200)).save(tmp_path / f"turned_{orientation}.jpg", quality=90, exif=exif.tobytes())
    files = [require(PHOTOS / "bird.bmp"), require(PHOTOS / "sunflower.bmp"), require(PHOTOS / "cat_720p.jpg"),
             tmp_path / "alpha.png", tmp_path / "palette.gif", tmp_path / "grey.png", tmp_path / "phone.jpg",
             *(tmp_path / f"turned_{orientation}.jpg" for orientation in (3, 6, 8))]
    images = np.stack([load_image(p, height=224, width=224) for p in files])
    from_bytes = model.signatures["serving_bytes"](image_bytes=tf.constant([p.read_bytes() for p in files]))
    from_images = model.signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(from_bytes["prediction"].numpy(), from_images["prediction"].numpy(), atol=1e-4)


def _with_segments(jpeg: bytes, *segments: bytes) -> bytes:
    """The JPEG with these segments (marker and body) inserted right after its SOI marker."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _exif(entries: list[tuple[int, int, int, int]], order: str = "<", ifd_offset: int = 8) -> bytes:
    """An APP1 EXIF segment: a TIFF header, then one IFD of (tag, type, count, value) entries."""
    pack = lambda fmt, *values: struct.pack(order + fmt, *values)  # noqa: E731
    body = (b"II" if order == "<" else b"MM") + pack("HI", 42, ifd_offset) + pack("H", len(entries))
    for tag, kind, count, value in entries:
        body += pack("HHI", tag, kind, count) + (pack("HH", value, 0) if kind == 3 else pack("I", value))
    return _segment(0xE1, b"Exif\0\0" + body + b"\0\0\0\0")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on the broken cases (retrain.images hides it)
def test_bytes_signature_turns_jpegs_by_their_exif_orientation_as_training_does() -> None:
    """Phone photos are stored sideways with an EXIF orientation: the serving decode turns them as Pillow does
    for training, for all eight orientations, both byte orders, and EXIF that is odd or broken (then as stored)."""
    from retrain.exporters.saved_model import decode_like_training
    from retrain.images import decode_rgb
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 48, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95)
    plain = buffer.getvalue()
    cases = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())  # as Pillow (and cameras) write it
        cases[f"Pillow, orientation {orientation}"] = (buffer.getvalue(), orientation)
    short, long = 3, 4
    cases.update({
        "big-endian": (_with_segments(plain, _exif([(0x0112, short, 1, 6)], order=">")), 6),
        "a LONG value": (_with_segments(plain, _exif([(0x0110, 2, 4, 0), (0x0112, long, 1, 8)])), 8),
        "after a comment and fill bytes": (_with_segments(plain, _segment(0xFE, b"made by hand"), b"\xff",
                                                          _exif([(0x0112, short, 1, 5)])), 5),
        "a second EXIF segment (the first counts)": (
            _with_segments(plain, _exif([(0x0112, short, 1, 7)]), _exif([(0x0112, short, 1, 2)])), 7),
        "orientation 9": (_with_segments(plain, _exif([(0x0112, short, 1, 9)])), 1),
        "an unknown type": (_with_segments(plain, _exif([(0x0112, 99, 1, 6)])), 1),
        "IFD past the segment": (_with_segments(plain, _exif([(0x0112, short, 1, 6)], ifd_offset=4000)), 1),
        "not a TIFF header": (_with_segments(plain, _segment(0xE1, b"Exif\0\0XX*\0" + bytes(20))), 1),
        "an IFD cut short": (_with_segments(plain, _segment(0xE1, b"Exif\0\0II*\0\x08\0\0\0\x01")), 1),
    })
    decode = tf.function(lambda data: decode_like_training(tf, data, height=224, width=224))
    for name, (data, orientation) in cases.items():
        training = decode_rgb(data)
        served = decode(tf.constant(data)).numpy()
        assert served.shape == training.shape and np.array_equal(served, training), name
        # Each case is the one it claims: training's pixels are the stored ones turned by that orientation.
        turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}.get(orientation)
        upright = Image.fromarray(decode_rgb(plain))
        assert np.array_equal(training, np.asarray(upright if turn is None else upright.transpose(turn))), name


def _raw_exif(entries: list[tuple[int, int, int, bytes]], *, order: str = "<", count: int | None = None,
              after: bytes = b"", header: bytes | None = None, cut: int | None = None) -> bytes:
    """An APP1 EXIF segment written byte by byte: (tag, type, count, 4 value bytes) entries, the IFD's count
    (as many as given unless said), bytes after the IFD, another header, the TIFF bytes cut after `cut`."""
    pack = lambda fmt, *values: struct.pack(order + fmt, *values)  # noqa: E731
    body = (b"II" if order == "<" else b"MM") + pack("HI", 42, 8) + pack("H", len(entries) if count is None else count)
    body += b"".join(pack("HHI", tag, kind, number) + value for tag, kind, number, value in entries)
    body = ((header or b"") + (body + b"\0\0\0\0" + after)[len(header or b""):])[:cut]
    return _segment(0xE1, b"Exif\0\0" + body)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's, on the broken blocks (retrain.images hides them)
def test_bytes_signature_reads_the_exif_orientation_as_pillow_does_in_odd_and_broken_blocks() -> None:
    """Probe ZZ: EXIF cut short after the orientation entry (a block trimmed to fit 64 kB), an orientation
    stored as SSHORT, or as BYTE, were turned one way in training and the other in `serving_bytes` (a 0.79 score
    difference). The graph now reads the tag as Pillow 13 does: entries up to the segment's end, every numeric
    type by its first number (a BYTE gives Pillow bytes: none), values stored elsewhere in the block, the stop at
    one that runs past its end. Then 400 seeded random blocks, each decoded both ways."""
    import random

    from retrain.exporters.saved_model import decode_like_training
    from retrain.images import decode_rgb
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    stored = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8))
    plain = _encoded(stored, "JPEG", quality=95)
    le = lambda fmt, *values: struct.pack("<" + fmt, *values)  # noqa: E731
    cases = {
        "an IFD of 10 entries cut after 3": (_raw_exif([(0x010F, 2, 4, b"Acme"), (0x0112, 3, 1, le("HH", 6, 0)),
                                                        (0x011A, 4, 1, le("I", 72))], count=10), 6),
        "SSHORT": (_raw_exif([(0x0112, 8, 1, le("hh", 6, 0))]), 6),
        "BYTE (Pillow reads bytes)": (_raw_exif([(0x0112, 1, 1, bytes([6, 0, 0, 0]))]), 1),
        "RATIONAL 16/2, stored after the IFD": (_raw_exif([(0x0112, 5, 1, le("I", 26))], after=le("II", 16, 2)), 8),
        "3 SHORTs stored after the IFD": (_raw_exif([(0x0112, 3, 3, le("I", 26))], after=le("HHH", 3, 6, 6)), 3),
        "a value running past the end, then the orientation": (
            _raw_exif([(0x010F, 2, 8, le("I", 36)), (0x0112, 3, 1, le("HH", 6, 0))]), 1),  # (38 bytes in all)
        "a value longer than the block, skipped": (
            _raw_exif([(0x010F, 2, 40, le("I", 26)), (0x0112, 3, 1, le("HH", 6, 0))]), 6),
        "the header's 42 the other way round": (_raw_exif([(0x0112, 3, 1, le("HH", 6, 0))], header=b"II\0*"), 6),
    }
    rng = random.Random(7)
    for case in range(400):
        order = rng.choice("<>")
        entries = [(rng.choice([0x0112, 0x0112, 0x010F, 0x011A, rng.randrange(65536)]),
                    rng.choice([1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 0, 17]),
                    rng.choice([0, 1, 1, 2, 3, rng.randrange(100), rng.randrange(2 ** 32)]),
                    struct.pack(order + "I", rng.choice([1, 3, 6, 8, 9, rng.randrange(80), rng.randrange(2 ** 32)])))
                   for _ in range(rng.randrange(7))]
        cases[f"random block {case}"] = (_raw_exif(
            entries, order=order, count=rng.choice([None, None, rng.randrange(20)]),
            after=bytes(rng.randrange(256) for _ in range(rng.randrange(40))),
            cut=rng.choice([None, None, rng.randrange(12, 100)])), None)
    decode = tf.function(lambda data: decode_like_training(tf, data, height=224, width=224))
    turned = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
    upright = Image.fromarray(decode_rgb(plain))
    applied = []
    for name, (segment, orientation) in cases.items():
        data = _with_segments(plain, segment)
        training = decode_rgb(data)
        assert np.array_equal(decode(tf.constant(data)).numpy(), training), name
        if orientation is not None:  # each named case is the one it claims
            turn = turned.get(orientation)
            assert np.array_equal(training, np.asarray(upright if turn is None else upright.transpose(turn))), name
        applied.append(not np.array_equal(training, np.asarray(upright)))
    assert 10 < sum(applied[-400:]) < 390  # the random blocks turn some photos and not others


def _palette_bmp(indices: np.ndarray, palette: list[tuple[int, int, int]], bits: int, *,
                 top_down: bool = False, compression: int = 0) -> bytes:
    """A BMP written by hand (Pillow writes neither 4-bit nor top-down ones): 40-byte header, palette, rows."""
    height, width = indices.shape
    per_byte = 8 // bits
    padded = np.zeros((height, -(-width // per_byte) * per_byte), np.int64)
    padded[:, :width] = indices if top_down else indices[::-1]  # bottom-up unless the height is negative
    packed = sum(padded[:, i::per_byte] << (8 - bits * (i + 1)) for i in range(per_byte)).astype(np.uint8)
    stride = (width * bits + 31) // 32 * 4
    body = b"".join(row.tobytes().ljust(stride, b"\0") for row in packed)
    table = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    offset = 14 + 40 + len(table)
    return (b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, bits, compression,
                          len(body), 0, 0, len(palette), 0)
            + table + body)


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _bmp_and_webp_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (encoded file, the mode Pillow opens it in): the BMP and WebP kinds serving must decode as training."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (20, 13, 3), dtype=np.uint8))  # odd width: rows are padded
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (20, 13), dtype=np.uint8)))
    colours = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(256)]
    return {
        "8-bit palette BMP": (_encoded(photo.quantize(200), "BMP"), "P"),
        "1-bit BMP": (_encoded(photo.convert("1"), "BMP"), "1"),
        "8-bit grey BMP": (_encoded(photo.convert("L"), "BMP"), "L"),
        "24-bit BMP": (_encoded(photo, "BMP"), "RGB"),
        "32-bit BMP": (_encoded(rgba, "BMP"), "RGB"),
        "4-bit BMP, 16 colours": (_palette_bmp(rng.integers(0, 16, (20, 13)), colours[:16], 4), "P"),
        "1-bit BMP, two colours": (_palette_bmp(rng.integers(0, 2, (20, 13)), colours[:2], 1), "P"),
        "top-down 8-bit BMP": (_palette_bmp(rng.integers(0, 100, (20, 13)), colours[:100], 8, top_down=True), "P"),
        "top-down 4-bit BMP": (_palette_bmp(rng.integers(0, 16, (20, 13)), colours[:16], 4, top_down=True), "P"),
        "indices past the palette (black)": (_palette_bmp(rng.integers(0, 10, (20, 13)), colours[:5], 8), "P"),
        "WebP with alpha, lossless": (_encoded(rgba, "WEBP", lossless=True), "RGBA"),
        "WebP with alpha, lossy": (_encoded(rgba, "WEBP", quality=80), "RGBA"),
        "WebP, lossless": (_encoded(photo, "WEBP", lossless=True), "RGB"),
        "WebP, lossy": (_encoded(photo, "WEBP", quality=80), "RGB"),
    }


def test_bytes_signature_decodes_bmp_and_webp_as_training_does() -> None:
    """Palette BMPs (1, 4, 8 bits; bottom-up and top-down) and WebPs with or without alpha: the serving decode's
    pixels equal Pillow's; an animated WebP or an RLE BMP is refused with a message, not a crash."""
    from retrain.exporters.saved_model import decode_like_training
    from retrain.images import decode_rgb
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    decode = tf.function(lambda data: decode_like_training(tf, data, height=224, width=224))
    for name, (data, mode) in _bmp_and_webp_cases().items():
        assert Image.open(io.BytesIO(data)).mode == mode, name  # each case is the kind it claims
        training = decode_rgb(data)
        served = decode(tf.constant(data)).numpy()
        assert served.shape == training.shape and np.array_equal(served, training), name

    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "blue")]
    animated = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP is not supported by serving_bytes"):
        decode(tf.constant(animated))
    rle = _palette_bmp(np.zeros((4, 4), np.int64), [(0, 0, 0)], 8, compression=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"compressed BMP \(compression 1, e.g. RLE\) is not"):
        decode(tf.constant(rle))
    # What training refuses, serving refuses: a palette Pillow calls unsupported, and a decompression bomb (a
    # 1-bit BMP of 14,000 x 14,000, 24 MB, took 8 GB to serve).
    huge_palette = bytearray(_palette_bmp(np.zeros((4, 4), np.int64), [(0, 0, 0), (255, 255, 255)], 8))
    huge_palette[46:50] = struct.pack("<I", 4_000_000_000)
    bomb = _palette_bmp(np.zeros((1, 14_000), np.int64), [(0, 0, 0), (255, 255, 255)], 1)
    bomb = bomb[:22] + struct.pack("<i", 14_000) + bomb[26:] + bomb[-1_752:] * 13_999  # 14,000 equal rows
    # Headers that give more pixels than training decodes (probe BBB: a 196-megapixel PNG took 4 GB to serve):
    # refused before decoding, as training refuses them.
    png = bytearray(_encoded(Image.new("RGB", (8, 6)), "PNG"))
    png[16:24] = struct.pack(">II", 20_000, 20_000)
    gif = bytearray(_encoded(Image.new("P", (8, 6)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)
    jpeg = bytearray(_encoded(Image.new("RGB", (8, 6)), "JPEG"))
    at = jpeg.index(b"\xff\xc0") + 5  # the frame header's height and width
    jpeg[at:at + 4] = struct.pack(">HH", 20_000, 30_000)
    # WebPs too (probe HHH: a 38-byte lossless WebP of 196 megapixels took 4 GB to serve): each of its three
    # headers, a lossless frame (14-bit sides, minus 1), an extended file's canvas (24-bit), a lossy frame.
    lossless = bytearray(_encoded(Image.new("RGB", (8, 6)), "WEBP", lossless=True))
    lossless[21:25] = struct.pack("<I", 13_999 | 13_999 << 14)
    extended = bytearray(_encoded(Image.new("RGBA", (8, 6)), "WEBP"))
    extended[24:30] = struct.pack("<I", 19_999)[:3] + struct.pack("<I", 9_999)[:3]
    lossy = bytearray(_encoded(Image.new("RGB", (8, 6)), "WEBP"))
    lossy[26:30] = struct.pack("<HH", 16_383, 12_000)
    assert [bytes(data[12:16]) for data in (lossless, extended, lossy)] == [b"VP8L", b"VP8X", b"VP8 "]
    # Probe III: a GIF whose first frame is larger than its screen (read past a comment's sub-blocks), a 24-bit BMP;
    # probe KKK: the large frame after 5,000 sub-blocks, or second (TensorFlow makes every frame the largest's size).
    def with_frame(gif: bytes, sides: tuple[int, int], *, skip: int = 0) -> bytes:
        """The GIF with frame `skip` (its image descriptor, found by walking the blocks) of these sides at 0, 0."""
        gif, at, found = bytearray(gif), 13 + (3 << (gif[10] % 8 + 1) if gif[10] & 0x80 else 0), []
        while gif[at] != 0x3B:
            if gif[at] == 0x2C:
                found.append(at)
                at += 11 + (3 << (gif[at + 9] % 8 + 1) if gif[at + 9] & 0x80 else 0)
            else:
                at += 2
            while gif[at]:
                at += 1 + gif[at]
            at += 1
        gif[found[skip] + 1:found[skip] + 9] = struct.pack("<HHHH", 0, 0, *sides)
        return bytes(gif)

    framed = with_frame(_encoded(Image.new("P", (16, 16)), "GIF", comment=b"x" * 600), (15_000, 15_000))
    padded = bytearray(_encoded(Image.new("P", (16, 16)), "GIF"))
    padded[13 + 6:13 + 6] = b"\x21\xfe" + b"\x01x" * 5_000 + b"\x00"  # a comment of 5,000 one-byte sub-blocks
    padded = with_frame(bytes(padded), (13_500, 13_400))
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    second = with_frame(_encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50,
                                 disposal=1), (13_500, 13_400), skip=1)
    rgb_bmp = bytearray(_encoded(Image.new("RGB", (8, 6)), "BMP"))
    rgb_bmp[18:26] = struct.pack("<ii", 13_500, -13_400)  # (top-down rows)
    for data, message in ((bytes(huge_palette), "corrupt BMP: a palette of 4000000000 colours"),
                          (bomb, r"image too large to decode safely: 196000000 pixels \(at most 178956970"),
                          (bytes(png), r"image too large to decode safely: 400000000 pixels \(at most 178956970"),
                          (bytes(gif), r"image too large to decode safely: 4294836225 pixels \(at most 178956970"),
                          (bytes(jpeg), r"JPEG too large to decode safely: 600000000 pixels \(at most 357913940"),
                          (bytes(lossless), r"image too large to decode safely: 196000000 pixels \(at most"),
                          (bytes(extended), r"image too large to decode safely: 200000000 pixels \(at most"),
                          (bytes(lossy), r"image too large to decode safely: 196596000 pixels \(at most"),
                          (framed, r"GIF too large to decode safely: a canvas of 15000 x 15000 pixels"),
                          (padded, r"GIF too large to decode safely: a canvas of 13500 x 13400 pixels"),
                          (bytes(rgb_bmp), r"image too large to decode safely: 180900000 pixels \(at most")):
        with pytest.raises(Exception):
            decode_rgb(data, min_size=(224, 224))  # training's refusal
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            decode(tf.constant(data))
    # Training reads the first frame only; TensorFlow's decoder makes a canvas the largest frame's size. The walk
    # skips runs of full sub-blocks: noisy frames of 200 x 200 hold about 150 each, before the large one.
    noisy = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (200, 200, 3), dtype=np.uint8)).quantize(64)
             for i in range(3)]
    long = _encoded(noisy[0], "GIF", save_all=True, append_images=noisy[1:], duration=50)
    assert decode(tf.constant(long)).shape == (200, 200, 3)  # as it is: decoded
    for data in (second, with_frame(long, (13_500, 13_400), skip=2)):
        assert decode_rgb(data, min_size=(224, 224)).shape[2] == 3
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="GIF too large to decode safely: a canvas of 13500 x 13400 pixels"):
            decode(tf.constant(data))
    # Many frames are no more than their pixels (probe LLL: 250 frames of 1280 x 720 were refused as 250 canvases).
    moving = [Image.new("RGB", (1280, 720))]
    for i in range(1, 250):
        moving.append(moving[0].copy())
        moving[-1].paste((255, 255, 255), (4 * i, 100, 4 * i + 60, 160))
    assert decode(tf.constant(_encoded(moving[0], "GIF", save_all=True, append_images=moving[1:],
                                       duration=40))).shape[2] == 3
    # Sub-blocks of another length than 255 are skipped in runs too (probe OOO: a 4.7 MB GIF written in 64-byte
    # sub-blocks went past the walk's 65,536 steps and was refused).
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)).quantize(256)
    plain = _encoded(noise, "GIF")
    short = _rechunked(plain, 12)
    assert len(plain) > 12 * 70_000 and len(short) > len(plain)  # over 70,000 sub-blocks: once a step, refused
    np.testing.assert_array_equal(decode(tf.constant(short)).numpy(), decode(tf.constant(plain)).numpy())


def _rechunked(gif: bytes, size: int) -> bytes:
    """The GIF with each image's data written again in sub-blocks of `size` bytes (the last one shorter)."""
    at = 13 + (3 << (gif[10] % 8 + 1) if gif[10] & 0x80 else 0)
    out = bytearray(gif[:at])
    while gif[at] != 0x3B:
        image, start = gif[at] == 0x2C, at
        at += (11 + (3 << (gif[at + 9] % 8 + 1) if gif[at + 9] & 0x80 else 0)) if image else 2
        out += gif[start:at]
        start, data = at, bytearray()
        while gif[at]:
            data += gif[at + 1:at + 1 + gif[at]]
            at += 1 + gif[at]
        at += 1
        if not image:  # an extension's sub-blocks as they were
            out += gif[start:at]
            continue
        for i in range(0, len(data), size):
            out += bytes([len(data[i:i + size])]) + data[i:i + size]
        out.append(0)
    return bytes(out + b"\x3b")


def test_bytes_signature_box_reduces_large_images_as_training_does() -> None:
    """Probe HHH: training box-reduces an image still 4x the input size on both sides after decoding (a JPEG
    after its 1/8 decode: a 108-megapixel phone photo for a 224 input), and `serving_bytes` did not (scores 0.006
    to 0.019 off). Now its pixels equal training's: JPEGs (one turned by its EXIF orientation first), PNGs and
    WebPs, sides that leave the last blocks cut short, at two input sizes (small, to keep the images small)."""
    from retrain.exporters.saved_model import decode_like_training
    from retrain.images import decode_rgb
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(0)
    turned = Image.Exif()
    turned[0x0112] = 6
    cases = [("JPEG", (700, 530), {}), ("JPEG", (1203, 917), {"exif": turned.tobytes()}), ("PNG", (301, 203), {}),
             ("PNG", (97, 61), {}), ("WEBP", (333, 250), {"lossless": True}), ("JPEG", (130, 90), {})]
    reduced = 0
    for height, width in ((8, 8), (16, 12)):
        decode = tf.function(lambda data, h=height, w=width: decode_like_training(tf, data, height=h, width=w))
        for kind, size, options in cases:
            image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            data = _encoded(image, kind, **options)
            training = decode_rgb(data, min_size=(height, width))
            served = decode(tf.constant(data)).numpy()
            assert served.shape == training.shape and np.array_equal(served, training), (kind, size, height)
            decoded = Image.open(io.BytesIO(data))
            decoded.draft("RGB", (2 * width, 2 * height))  # a JPEG's reduced-scale size, before the reduction
            reduced += min(decoded.size) // (2 * max(height, width)) >= 2  # the case reaches the reduction
    assert reduced == 9  # (the smallest JPEG, and the smallest PNG at 16 x 12, are not: controls)


def test_bytes_signature_rejects_a_non_image(trained: dict, saved_model: object) -> None:
    from retrain.tfenv import import_tensorflow

    tf = import_tensorflow()
    model = saved_model
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))


def test_cli_writes_tflite_variants_and_reports_sizes(tmp_path: Path, tiny_module: Path) -> None:
    """Comma-separated and repeated --tflite-quantization, dashed flag, and the `Wrote PATH (size)` summary."""
    photos = make_colour_tree(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    args = flags(image_dir=photos, tfhub_module=tiny_module, output_graph=out / "g.pb", output_labels=out / "l.txt",
                 summaries_dir=out / "logs", bottleneck_dir=out / "b", checkpoint_path=out / "ckpt" / "c",
                 how_many_training_steps=50) + ["--output-tflite", str(out / "m.tflite"),
                                                "--tflite-quantization", "float16,int8", "--tflite_quantization", "dynamic",
                                                "--tflite_representative_images", "20"]
    result = invoke(retrain_command, args)
    assert "converted to TFLite (int8, calibrated on 20 training images)" in result.stderr
    # the slow calibration is said before it starts (it showed nothing for half a minute with MobileNet V2 1.0)
    announced = result.stderr.split("converting to TFLite (int8): calibrating on 20 training images")
    assert len(announced) == 2 and announced[1].split("converted to TFLite")[1].startswith(" (int8"), result.stderr
    # each variant is reported as it is written, not after the slower ones that follow (stdout and stderr as a
    # terminal interleaves them)
    shown = result.output
    assert shown.index(f"Wrote {out / 'm.tflite'} (") < shown.index("converted to TFLite (int8") \
        < shown.index(f"Wrote {out / 'm_int8.tflite'} (")
    for name in ("m.tflite", "m_int8.tflite", "m_dynamic.tflite"):
        path = out / name
        assert path.is_file()
        assert f"Wrote {path} (" in result.stdout
    assert not (out / "m_float16.tflite").exists()  # the first variant goes to --output_tflite itself
    assert _interpreter(out / "m_int8.tflite").get_input_details()[0]["dtype"] == np.int8
    assert _interpreter(out / "m.tflite").get_input_details()[0]["dtype"] == np.float32


@pytest.mark.parametrize("extra, message", [
    (["--tflite_quantization", "int4"], "--tflite_quantization int4: expected one or more of float32, float16, dynamic, int8"),
    (["--tflite_quantization", "int8,int8"], "each once"),
    (["--tflite_quantization", "int8"], "--tflite_quantization int8 has no effect without --output_tflite PATH; "
                                        "add it or drop --tflite_quantization"),
    (["--tflite_quantization", ""], "--tflite_quantization (empty): expected one or more of"),
    # what is missing, all of it (probe ZZJ: 'without int8' first, then, int8 added, 'needs --output_tflite')
    (["--tflite_representative_images", "50"], "--tflite_representative_images 50 has no effect without "
     "--output_tflite PATH and int8 in --tflite_quantization; add them or drop --tflite_representative_images"),
    # and the flag that needs it first (probe ZZK: 'drop --tflite_representative_images' led to a second refusal)
    (["--tflite_representative_images", "50", "--tflite_quantization", "int8"],
     "--tflite_quantization int8 has no effect without --output_tflite PATH; add it or drop --tflite_quantization"),
    # a wrong value is said as wrong, with or without --output_tflite (probe ZZK: 'has no effect')
    (["--tflite_quantization", "bogus"], "--tflite_quantization bogus: expected one or more of"),
    (["--tflite_quantization", "float32,dynamic", "--tflite_representative_images", "50"],
     "--tflite_representative_images 50 has no effect without int8 in --tflite_quantization"),
    (["--tflite_quantization", "int8", "--tflite_representative_images", "0"],
     "--tflite_representative_images must be positive, got 0"),
])
def test_bad_tflite_flags_are_usage_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    photos = make_colour_tree(tmp_path / "photos", per_class=2)
    out = tmp_path / "out"
    out.mkdir()
    args = flags(image_dir=photos, output_graph=out / "g.pb", output_labels=out / "l.txt", summaries_dir=out / "logs",
                 bottleneck_dir=out / "b", checkpoint_path=out / "ckpt" / "c")
    if "without --output_tflite" not in message and "bogus" not in message:
        args += ["--output_tflite", str(out / "m.tflite")]
    result = invoke(retrain_command, args + extra, expect=2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_output_tflite_in_a_missing_folder_fails_up_front(tmp_path: Path) -> None:
    photos = make_colour_tree(tmp_path / "photos", per_class=2)
    args = flags(image_dir=photos, output_graph=tmp_path / "g.pb", output_labels=tmp_path / "l.txt",
                 summaries_dir=tmp_path / "logs", bottleneck_dir=tmp_path / "b", checkpoint_path=tmp_path / "c" / "c",
                 output_tflite=tmp_path / "missing" / "m.tflite")
    result = invoke(retrain_command, args, expect=2)
    assert "--output_tflite" in result.stderr and "does not exist" in result.stderr


def test_tflite_runs_a_mix_of_modules_of_different_sizes_as_the_frozen_graph_does(mixed_sizes: dict) -> None:
    """The members' resize is in the graph as matrix products, which TFLite's builtin ops run (tf.image.resize's
    antialiased op is not one of them): TFLite's scores are the frozen graph's."""
    from retrain.tfenv import import_tensorflow

    graph_def = import_tensorflow().compat.v1.GraphDef.FromString(mixed_sizes["graph"].read_bytes())
    nodes = {node.name: node for node in graph_def.node}
    assert nodes["MatMul"].input[0] == "features" and nodes["add"].input[0] == "MatMul"  # the head's, as with one
    images = mixed_sizes["images"]
    expected = frozen_graph_scores(mixed_sizes["graph"], images)
    n = len(images) // 4  # random, ramps, the ramps mirrored, the ramps transposed
    assert np.abs(expected[n:2 * n] - expected[2 * n:3 * n]).max() > 1e-3
    assert np.abs(expected[n:2 * n] - expected[3 * n:]).max() > 1e-3
    scores, source, _ = _tflite_probabilities(mixed_sizes["tflite"], images)
    assert list(source["shape"][1:]) == [32, 32, 3]
    np.testing.assert_allclose(scores, expected, atol=1e-4)
